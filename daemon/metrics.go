package daemon

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
	"github.com/nsbroker/nsbroker/server"
)

// metrics are the daemon's Prometheus metrics, on a registry of their
// own. Series labelled with a namespace are deleted when it is detached,
// so that namespaces coming and going do not grow the set without bound.
type metrics struct {
	reg *prometheus.Registry

	requests  *prometheus.CounterVec   // rpc, namespace
	errors    *prometheus.CounterVec   // rpc, namespace, code
	duration  *prometheus.HistogramVec // rpc, namespace
	delivered *prometheus.CounterVec   // namespace
	gaps      *prometheus.CounterVec   // namespace, reason
	lost      *prometheus.CounterVec   // namespace, reason
	local     prometheus.Gauge
	squatted  *prometheus.GaugeVec   // namespace
	reloads   *prometheus.CounterVec // result
	refusals  *prometheus.CounterVec // tenant, limit
	// own are the collectors above, and the broker's.
	own []prometheus.Collector

	// mu orders recording a namespace's series against deleting them:
	// series are recorded under the read lock, and only for names in
	// attached; forget deletes under the write lock.
	mu       sync.RWMutex
	attached map[string]bool
	// rpcs are the rpc label values used so far (the methods the server
	// serves: a handful), for forget.
	rpcs sync.Map
}

// Histogram buckets from 50µs (a unary rpc on a unix socket) to 13s.
var durationBuckets = prometheus.ExponentialBuckets(50e-6, 4, 10)

func newMetrics(b *broker.Broker) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nsbroker_rpc_requests_total",
			Help: "Rpcs started, by method and namespace.",
		}, []string{"rpc", "namespace"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nsbroker_rpc_errors_total",
			Help: "Rpcs that ended with an error, by method, namespace and gRPC status code.",
		}, []string{"rpc", "namespace", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nsbroker_rpc_duration_seconds",
			Help:    "How long rpcs took (streams: how long they lasted), by method and namespace.",
			Buckets: durationBuckets,
		}, []string{"rpc", "namespace"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nsbroker_events_delivered_total",
			Help: "Events sent to Subscribe streams, by namespace.",
		}, []string{"namespace"}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nsbroker_gaps_total",
			Help: "Gap markers sent to Subscribe streams, by namespace and loss reason.",
		}, []string{"namespace", "reason"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nsbroker_events_lost_total",
			Help: "Events that gap markers told Subscribe streams they lost (where the range was known), by namespace and loss reason.",
		}, []string{"namespace", "reason"}),
		local: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nsbroker_local_sockets",
			Help: "Namespace-local sockets open.",
		}),
		squatted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nsbroker_local_socket_squatted",
			Help: "1 while another process listens on the namespace's local socket name (@nsbroker) and the daemon waits for it to be free, else 0.",
		}, []string{"namespace"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nsbroker_reloads_total",
			Help: "Reloads of the tenants and the TLS certificate (SIGHUP), by result (ok or error).",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nsbroker_limit_refusals_total",
			Help: "Requests and connections a limit refused, by tenant (namespace:NAME for a namespace's tenant, tls:NAME, admin) and limit (its configuration key).",
		}, []string{"tenant", "limit"}),
		attached: make(map[string]bool),
	}
	m.own = []prometheus.Collector{m.requests, m.errors, m.duration, m.delivered, m.gaps, m.lost, m.local, m.squatted, m.reloads, m.refusals,
		&brokerCollector{b: b}}
	m.reg.MustRegister(m.own...)
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// track starts labelling series with name.
func (m *metrics) track(name string) {
	m.mu.Lock()
	m.attached[name] = true
	m.mu.Unlock()
}

// forget deletes name's series; later ones are labelled "". Each series
// is deleted by its full labels, every value the other labels can take:
// a delete by a partial match scans every series of the vector, and with
// every namespace holding a series (squatted), detaching n namespaces
// cost n² label comparisons (38% of a 10,000-namespace attach's profile).
func (m *metrics) forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.attached, name)
	m.squatted.DeleteLabelValues(name)
	m.delivered.DeleteLabelValues(name)
	m.rpcs.Range(func(k, _ any) bool {
		rpc := k.(string)
		m.requests.DeleteLabelValues(rpc, name)
		m.duration.DeleteLabelValues(rpc, name)
		for c := codes.OK; c <= codes.Unauthenticated; c++ {
			m.errors.DeleteLabelValues(rpc, name, c.String())
		}
		return true
	})
	for r := range nsbrokerv1.LossReason_name {
		reason := lossReason(nsbrokerv1.LossReason(r))
		m.gaps.DeleteLabelValues(name, reason)
		m.lost.DeleteLabelValues(name, reason)
	}
	// Only refused tenants have these.
	m.refusals.DeletePartialMatch(prometheus.Labels{"tenant": "namespace:" + name})
}

// squat records whether namespace name's local socket is taken.
func (m *metrics) squat(name string, on bool) {
	v := 0.0
	if on {
		v = 1
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.attached[name] {
		m.squatted.WithLabelValues(name).Set(v)
	}
}

// refused counts a refusal by a limit.
func (m *metrics) refused(r server.Refusal) {
	id := r.Identity
	switch {
	case id.Role == server.RoleAdmin:
		m.refusals.WithLabelValues("admin", r.Limit).Inc()
	case r.Local:
		m.record(id.Tenant, func(ns string) { m.refusals.WithLabelValues("namespace:"+ns, r.Limit).Inc() })
	default:
		m.refusals.WithLabelValues("tls:"+id.Tenant, r.Limit).Inc()
	}
}

// record runs fn with the label for namespace name: name while it is
// attached, else "" (unknown names must not create series).
func (m *metrics) record(name string, fn func(label string)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.attached[name] {
		name = ""
	}
	fn(name)
}

// started counts an rpc.
func (m *metrics) started(rpc, ns string) {
	m.knowRPC(rpc)
	m.record(ns, func(ns string) { m.requests.WithLabelValues(rpc, ns).Inc() })
}

// knowRPC adds rpc to the label values forget deletes.
func (m *metrics) knowRPC(rpc string) {
	if _, ok := m.rpcs.Load(rpc); !ok {
		m.rpcs.Store(rpc, struct{}{})
	}
}

// finished records an rpc's outcome.
func (m *metrics) finished(rpc, ns string, code codes.Code, took time.Duration) {
	m.knowRPC(rpc)
	m.record(ns, func(ns string) {
		m.duration.WithLabelValues(rpc, ns).Observe(took.Seconds())
		if code != codes.OK {
			m.errors.WithLabelValues(rpc, ns, code.String()).Inc()
		}
	})
}

// sent accounts for one message sent on a Subscribe stream.
func (m *metrics) sent(msg *nsbrokerv1.SubscribeResponse, delivered *prometheus.Counter) {
	switch item := msg.GetItem().(type) {
	case *nsbrokerv1.SubscribeResponse_Event:
		m.deliveredTo(item.Event.GetNamespace(), delivered)
	case *nsbrokerv1.SubscribeResponse_Gap:
		g := item.Gap
		reason := lossReason(g.GetReason())
		m.record(g.GetNamespace(), func(ns string) {
			m.gaps.WithLabelValues(ns, reason).Inc()
			if g.GetToSeq() >= g.GetFromSeq() && g.GetToSeq() != 0 {
				m.lost.WithLabelValues(ns, reason).Add(float64(g.GetToSeq() - g.GetFromSeq() + 1))
			}
		})
	}
}

// deliveredTo counts an event of namespace name delivered on a Subscribe
// stream whose counter is *delivered, looked up on its first event.
func (m *metrics) deliveredTo(name string, delivered *prometheus.Counter) {
	if *delivered == nil {
		m.record(name, func(ns string) { *delivered = m.delivered.WithLabelValues(ns) })
	}
	(*delivered).Inc()
}

// lossReason is the label for a loss reason: kernel_overrun, queue_full,
// released, module_reloaded.
func lossReason(r nsbrokerv1.LossReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "LOSS_REASON_"))
}

// brokerCollector reports the broker's per-namespace state at each scrape.
type brokerCollector struct {
	b *broker.Broker
}

// brokerMetric is one metric of brokerCollector.
type brokerMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(broker.Info) float64
}

var brokerMetrics = []brokerMetric{
	{prometheus.NewDesc("nsbroker_namespace_ready",
		"1 if the namespace is connected to the module, 0 if it is unavailable.", []string{"namespace"}, nil),
		prometheus.GaugeValue, func(in broker.Info) float64 {
			if in.State == broker.StateReady {
				return 1
			}
			return 0
		}},
	{prometheus.NewDesc("nsbroker_subscribers",
		"Current subscriptions, by namespace.", []string{"namespace"}, nil),
		prometheus.GaugeValue, func(in broker.Info) float64 { return float64(in.Subscribers) }},
	{prometheus.NewDesc("nsbroker_netlink_events_received_total",
		"Events received from the module since the namespace was attached.", []string{"namespace"}, nil),
		prometheus.CounterValue, func(in broker.Info) float64 { return float64(in.Received) }},
	{prometheus.NewDesc("nsbroker_netlink_overruns_total",
		"Receive-buffer overruns (ENOBUFS) of the namespace's netlink socket since it was attached.", []string{"namespace"}, nil),
		prometheus.CounterValue, func(in broker.Info) float64 { return float64(in.Overruns) }},
	{prometheus.NewDesc("nsbroker_netlink_overrun_events_lost_total",
		"Events the kernel dropped in those overruns.", []string{"namespace"}, nil),
		prometheus.CounterValue, func(in broker.Info) float64 { return float64(in.OverrunLost) }},
	{prometheus.NewDesc("nsbroker_forged_datagrams_total",
		"Datagrams the namespace's netlink socket dropped since it was attached because their source port id was not the kernel's (0): forged by a process with CAP_NET_ADMIN over the namespace.", []string{"namespace"}, nil),
		prometheus.CounterValue, func(in broker.Info) float64 { return float64(in.Forged) }},
}

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, bm := range brokerMetrics {
		ch <- bm.desc
	}
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, in := range c.b.List() {
		for _, bm := range brokerMetrics {
			ch <- prometheus.MustNewConstMetric(bm.desc, bm.typ, bm.value(in), in.Name)
		}
	}
}
