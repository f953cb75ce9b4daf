package daemon

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// scrape fetches and parses the metrics endpoint.
func scrape(t *testing.T, d *testDaemon) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + d.addrs.Metrics.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// sample finds the series of name with exactly these labels.
func sample(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (*dto.Metric, bool) {
	mf, ok := mfs[name]
	if !ok {
		return nil, false
	}
next:
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
				continue next
			}
		}
		return m, true
	}
	return nil, false
}

// value is a counter's or gauge's value, or a histogram's sample count.
func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return -1
}

// TestIntegrationMetrics makes a few rpcs, a delivered event, a gap and
// a forged event, and reads the counters back from the metrics endpoint; detaching the
// namespace removes its series.
func TestIntegrationMetrics(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	d := startDaemon(t, func(c *Config) {
		c.Attach = []string{name}
		c.MetricsListen = "127.0.0.1:0"
		c.RequestRate, c.RequestBurst = 0.001, 1
	})
	cc := dialUnix(t, d.cfg.AdminSocket)
	waitServing(t, cc, name)
	admin := nsbrokerv1.NewBrokerClient(cc)
	ctx := ctxTimeout(t)

	// The tenant's second rpc is refused by its request rate, and counted.
	tcc, err := dialInNamespace(ns, "@nsbroker")
	if err != nil {
		t.Fatal(err)
	}
	defer tcc.Close()
	tenant := nsbrokerv1.NewBrokerClient(tcc)
	if _, err := tenant.Stats(ctx, &nsbrokerv1.StatsRequest{}); err != nil {
		t.Fatalf("the tenant's first rpc: %v", err)
	}
	_, err = tenant.Stats(ctx, &nsbrokerv1.StatsRequest{})
	wantCode(t, "the tenant's second rpc, past its request rate", err, codes.ResourceExhausted)

	for range 3 {
		if _, err := admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: name, Payload: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: "no-such-namespace", Payload: []byte("m")})
	wantCode(t, "Echo to an unknown namespace", err, codes.NotFound)

	sub, err := admin.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: name, Groups: []uint32{5}})
	if err != nil {
		t.Fatal(err)
	}
	synced, received := syncSubscription(t, d, ns.Inode(), 5, sub)
	// One event lost to a kernel overrun, one forged (dropped and counted,
	// not received), then one delivered after a gap.
	d.kernel.DropEvents(ns.Inode(), 1)
	d.kernel.Publish(ns.Inode(), 5, []byte("dropped"))
	d.kernel.Forge(ns.Inode(), 5, 4242, synced+2, []byte("forged"))
	d.kernel.Publish(ns.Inode(), 5, []byte("kept"))
	resp, err := sub.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if g := resp.GetGap(); g == nil || g.FromSeq != synced+1 || g.ToSeq != synced+1 || g.Reason != nsbrokerv1.LossReason_LOSS_REASON_KERNEL_OVERRUN {
		t.Fatalf("want a kernel-overrun gap of seq %d, got %v", synced+1, resp)
	}
	if resp, err := sub.Recv(); err != nil || resp.GetEvent().GetSeq() != synced+2 {
		t.Fatalf("want event seq %d after the gap, got %v, %v", synced+2, resp, err)
	}

	mfs := scrape(t, d)
	const echo = "nsbroker.v1.Broker/Echo"
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"nsbroker_rpc_requests_total", map[string]string{"rpc": echo, "namespace": name}, 3},
		{"nsbroker_rpc_requests_total", map[string]string{"rpc": echo, "namespace": ""}, 1},
		{"nsbroker_rpc_requests_total", map[string]string{"rpc": "nsbroker.v1.Broker/Subscribe", "namespace": name}, 1},
		{"nsbroker_rpc_errors_total", map[string]string{"rpc": echo, "namespace": "", "code": "NotFound"}, 1},
		{"nsbroker_rpc_duration_seconds", map[string]string{"rpc": echo, "namespace": name}, 3},
		{"nsbroker_events_delivered_total", map[string]string{"namespace": name}, float64(received + 1)},
		{"nsbroker_gaps_total", map[string]string{"namespace": name, "reason": "kernel_overrun"}, 1},
		{"nsbroker_events_lost_total", map[string]string{"namespace": name, "reason": "kernel_overrun"}, 1},
		{"nsbroker_subscribers", map[string]string{"namespace": name}, 1},
		{"nsbroker_namespace_ready", map[string]string{"namespace": name}, 1},
		{"nsbroker_netlink_events_received_total", map[string]string{"namespace": name}, float64(received + 1)},
		{"nsbroker_netlink_overruns_total", map[string]string{"namespace": name}, 1},
		{"nsbroker_forged_datagrams_total", map[string]string{"namespace": name}, 1},
		{"nsbroker_local_sockets", map[string]string{}, 1},
		{"nsbroker_limit_refusals_total", map[string]string{"tenant": "namespace:" + name, "limit": "request_rate"}, 1},
	} {
		m, ok := sample(mfs, c.name, c.labels)
		if !ok {
			t.Errorf("%s%v: missing", c.name, c.labels)
			continue
		}
		if got := value(m); got != c.want {
			t.Errorf("%s%v: want %v, got %v", c.name, c.labels, c.want, got)
		}
	}
	if _, ok := sample(mfs, "nsbroker_rpc_errors_total", map[string]string{"rpc": echo, "namespace": name, "code": "NotFound"}); ok {
		t.Errorf("errors counted for %s, whose rpcs all succeeded", name)
	}
	if _, ok := mfs["go_goroutines"]; !ok {
		t.Errorf("the Go runtime metrics are missing")
	}
	// The daemon's metrics stay off the global registry.
	global, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range global {
		if strings.HasPrefix(mf.GetName(), "nsbroker_") {
			t.Errorf("%s is registered globally", mf.GetName())
		}
	}

	// Detached, the namespace's series go.
	w := watchHealth(t, cc, namespaceService(name))
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVING)
	if _, err := admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
		t.Fatal(err)
	}
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	if _, err := sub.Recv(); err == nil {
		t.Errorf("Subscribe after detach: want the stream ended, got an item")
	}
	after := scrape(t, d)
	for fam, mf := range after {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == name {
					t.Errorf("%s still has a series for the detached %s: %v", fam, name, m)
				}
			}
		}
	}
	if m, ok := sample(after, "nsbroker_local_sockets", map[string]string{}); !ok || value(m) != 0 {
		t.Errorf("nsbroker_local_sockets after the detach: want 0, got %v", m)
	}
}

// TestMetricsForget: forgetting a namespace deletes each series it has,
// of every vector, and only its own.
func TestMetricsForget(t *testing.T) {
	m := newMetrics(nil)
	for _, ns := range []string{"red", "blue"} {
		m.track(ns)
		m.started("/nsbroker.v1.Broker/Echo", ns)
		m.finished("/nsbroker.v1.Broker/Echo", ns, codes.NotFound, time.Millisecond)
		m.finished("/nsbroker.v1.Broker/Publish", ns, codes.ResourceExhausted, time.Millisecond)
		m.squat(ns, true)
		var delivered prometheus.Counter
		m.sent(&nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Event{Event: &nsbrokerv1.Event{Namespace: ns}}}, &delivered)
		m.sent(&nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Gap{Gap: &nsbrokerv1.Gap{
			Namespace: ns, Reason: nsbrokerv1.LossReason_LOSS_REASON_QUEUE_FULL, FromSeq: 1, ToSeq: 3}}}, &delivered)
	}
	series := func(ns string) int {
		n := 0
		for _, c := range []prometheus.Collector{m.requests, m.errors, m.duration, m.delivered, m.gaps, m.lost, m.squatted} {
			ch := make(chan prometheus.Metric, 64)
			c.Collect(ch)
			close(ch)
			for metric := range ch {
				var pb dto.Metric
				metric.Write(&pb)
				for _, l := range pb.GetLabel() {
					if l.GetName() == "namespace" && l.GetValue() == ns {
						n++
					}
				}
			}
		}
		return n
	}
	// requests 1, errors 2, duration 2, delivered 1, gaps 1, lost 1, squatted 1
	if red, blue := series("red"), series("blue"); red != 9 || blue != 9 {
		t.Fatalf("series before forget: red %d, blue %d; want 9 each", red, blue)
	}
	m.forget("red")
	if red, blue := series("red"), series("blue"); red != 0 || blue != 9 {
		t.Fatalf("series after forgetting red: red %d, blue %d; want 0 and 9", red, blue)
	}
}
