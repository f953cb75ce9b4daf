package server

import (
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/internal/quote"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// Limits bound what each tenant, and all tenants together, can make the
// server hold. Each total keeps a reserve that only the admin may use, so
// that no set of tenants can lock the admin out; the admin has no
// per-tenant bound. The zero value of a field means its default
// (DefaultLimits); docs/operations.md adds the defaults up.
type Limits struct {
	// MaxConnections bounds the open connections of everyone;
	// AdminConnections of them are the admin's alone.
	MaxConnections, MaxConnectionsPerTenant, AdminConnections int
	// MaxRequests bounds the rpcs whose request is being read, and
	// unary rpcs until they are answered: every rpc is a request first.
	MaxRequests, MaxRequestsPerTenant, AdminRequests int
	// MaxStreams bounds the open streaming rpcs (Subscribe,
	// WatchNamespaces, health Watch, PublishStream), which a tenant holds
	// for as long as it likes. A separate pool from the requests', so
	// that tenants holding every stream they may do not keep the others
	// from their unary rpcs.
	MaxStreams, MaxStreamsPerTenant, AdminStreams int
	// MaxQueuedBytes bounds the bytes queued for Subscribe streams,
	// payload and per-event overhead.
	MaxQueuedBytes, MaxQueuedBytesPerTenant, AdminQueuedBytes int64
	// MaxPendingHandshakes bounds the TLS handshakes in progress, in all
	// and per client address. (Unix socket connections need none: their
	// listener establishes who they are.)
	MaxPendingHandshakes, MaxPendingHandshakesPerAddr int
	// PublishRate is how many publishes per second each tenant may make,
	// Publish and every message of PublishStream alike, with bursts of up
	// to PublishBurst. RequestRate and RequestBurst do the same for every
	// rpc a tenant starts. A negative rate means unlimited; a burst of
	// zero, the rate rounded up.
	PublishRate  float64
	PublishBurst int
	RequestRate  float64
	RequestBurst int
}

// DefaultLimits are the limits a zero Limits field stands for.
var DefaultLimits = Limits{
	MaxConnections:              512,
	MaxConnectionsPerTenant:     64,
	AdminConnections:            32,
	MaxRequests:                 256,
	MaxRequestsPerTenant:        32,
	AdminRequests:               16,
	MaxStreams:                  384,
	MaxStreamsPerTenant:         64,
	AdminStreams:                32,
	MaxQueuedBytes:              64 << 20,
	MaxQueuedBytesPerTenant:     8 << 20,
	AdminQueuedBytes:            8 << 20,
	MaxPendingHandshakes:        64,
	MaxPendingHandshakesPerAddr: 8,
	PublishRate:                 5000,
	PublishBurst:                5000,
	RequestRate:                 2000,
	RequestBurst:                2000,
}

func (l *Limits) withDefaults() Limits {
	var c Limits
	if l != nil {
		c = *l
	}
	d := DefaultLimits
	for _, f := range []struct{ v, def *int }{
		{&c.MaxConnections, &d.MaxConnections},
		{&c.MaxConnectionsPerTenant, &d.MaxConnectionsPerTenant},
		{&c.AdminConnections, &d.AdminConnections},
		{&c.MaxRequests, &d.MaxRequests},
		{&c.MaxRequestsPerTenant, &d.MaxRequestsPerTenant},
		{&c.AdminRequests, &d.AdminRequests},
		{&c.MaxStreams, &d.MaxStreams},
		{&c.MaxStreamsPerTenant, &d.MaxStreamsPerTenant},
		{&c.AdminStreams, &d.AdminStreams},
		{&c.MaxPendingHandshakes, &d.MaxPendingHandshakes},
		{&c.MaxPendingHandshakesPerAddr, &d.MaxPendingHandshakesPerAddr},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	for _, f := range []struct{ v, def *int64 }{
		{&c.MaxQueuedBytes, &d.MaxQueuedBytes},
		{&c.MaxQueuedBytesPerTenant, &d.MaxQueuedBytesPerTenant},
		{&c.AdminQueuedBytes, &d.AdminQueuedBytes},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if c.PublishRate == 0 {
		c.PublishRate = d.PublishRate
	}
	if c.RequestRate == 0 {
		c.RequestRate = d.RequestRate
	}
	if c.PublishBurst <= 0 {
		c.PublishBurst = max(1, int(math.Ceil(c.PublishRate)))
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = max(1, int(math.Ceil(c.RequestRate)))
	}
	return c
}

// Validate reports a combination of limits that cannot work: a reserve
// that leaves the tenants nothing.
func (l *Limits) Validate() error {
	c := l.withDefaults()
	if c.AdminConnections >= c.MaxConnections {
		return fmt.Errorf("admin_connections (%d) must be less than max_connections (%d)", c.AdminConnections, c.MaxConnections)
	}
	if c.AdminRequests >= c.MaxRequests {
		return fmt.Errorf("admin_requests (%d) must be less than max_requests (%d)", c.AdminRequests, c.MaxRequests)
	}
	if c.AdminStreams >= c.MaxStreams {
		return fmt.Errorf("admin_streams (%d) must be less than max_streams (%d)", c.AdminStreams, c.MaxStreams)
	}
	if c.AdminQueuedBytes >= c.MaxQueuedBytes {
		return fmt.Errorf("admin_queued_bytes (%d) must be less than max_queued_bytes (%d)", c.AdminQueuedBytes, c.MaxQueuedBytes)
	}
	return nil
}

// The limits, as refusals and metrics name them: each is also the key of
// the daemon's configuration that sets it.
const (
	limitConnections          = "max_connections"
	limitConnectionsPerTenant = "max_connections_per_tenant"
	limitRequests             = "max_requests"
	limitRequestsPerTenant    = "max_requests_per_tenant"
	limitStreams              = "max_streams"
	limitStreamsPerTenant     = "max_streams_per_tenant"
	limitHandshakes           = "max_pending_handshakes"
	limitHandshakesPerAddr    = "max_pending_handshakes_per_addr"
	limitPublishRate          = "publish_rate"
	limitRequestRate          = "request_rate"
)

// tenantKey identifies a tenant for its budgets: the network namespace a
// namespace-local connection lives in, or the TLS tenant's entry. Never a
// name alone: a TLS tenant named like a namespace has a budget of its own.
type tenantKey struct {
	netns nsmgr.ID
	tls   string
}

// key is the identity's budget key; the admin's is the zero key.
func (id Identity) key() tenantKey {
	switch {
	case id.Role != RoleTenant:
		return tenantKey{}
	case id.netns != (nsmgr.ID{}):
		return tenantKey{netns: id.netns}
	}
	return tenantKey{tls: id.Tenant}
}

// Refusal is a request the limits turned away, as reported to the
// refusal hook.
type Refusal struct {
	// Identity is who was refused; Limit the configuration key of the
	// limit that refused it.
	Identity Identity
	Limit    string
	// Local is true for the tenant of a namespace-local socket, false
	// for a TLS tenant and the admin.
	Local bool
	// ShutOut is, when the refusal shut the tenant out, for how long
	// (see RefusalBurst); 0 otherwise.
	ShutOut time.Duration
}

// Budget enforces Limits. It bounds connections through the transport
// credentials it wraps, every rpc through a tap on new streams and the
// streaming ones through an interceptor (GRPCOptions), publishes and
// queued bytes in the handlers. Every refusal
// is RESOURCE_EXHAUSTED with a message that names the limit, and is
// reported to the refusal hook.
type Budget struct {
	limits  Limits
	refused func(Refusal) // nil: not reported

	conns      *slots
	requests   *slots
	streams    *slots
	handshakes *slots

	publishRate *rateLimits
	requestRate *rateLimits
	shutOuts    shutOuts // tenants that went on after refusals

	queuedAll     *broker.ByteBudget // everyone's queued bytes
	queuedTenants *broker.ByteBudget // the tenants' share of queuedAll

	mu          sync.Mutex // guards the fields below
	queued      map[tenantKey]*tenantQueue
	refusingNow int // connections kept to be refused
}

// tenantQueue is a tenant's queued-bytes budget, kept while one of its
// subscriptions uses it.
type tenantQueue struct {
	budget *broker.ByteBudget
	users  int
}

// NewBudget returns a Budget enforcing l (nil: DefaultLimits); refused,
// if not nil, is told of every refusal.
func NewBudget(l *Limits, refused func(Refusal)) *Budget {
	c := l.withDefaults()
	all := broker.NewByteBudget(c.MaxQueuedBytes, nil)
	return &Budget{
		limits:        c,
		refused:       refused,
		conns:         newSlots("connections", limitConnections, limitConnectionsPerTenant, c.MaxConnections, c.MaxConnectionsPerTenant, c.AdminConnections),
		requests:      newSlots("requests", limitRequests, limitRequestsPerTenant, c.MaxRequests, c.MaxRequestsPerTenant, c.AdminRequests),
		streams:       newSlots("streams", limitStreams, limitStreamsPerTenant, c.MaxStreams, c.MaxStreamsPerTenant, c.AdminStreams),
		handshakes:    newSlots("pending handshakes", limitHandshakes, limitHandshakesPerAddr, c.MaxPendingHandshakes, c.MaxPendingHandshakesPerAddr, 0),
		publishRate:   newRateLimits(limitPublishRate, "publish", c.PublishRate, c.PublishBurst),
		requestRate:   newRateLimits(limitRequestRate, "request", c.RequestRate, c.RequestBurst),
		shutOuts:      shutOuts{now: time.Now},
		queuedAll:     all,
		queuedTenants: broker.NewByteBudget(c.MaxQueuedBytes-c.AdminQueuedBytes, all),
		queued:        make(map[tenantKey]*tenantQueue),
	}
}

// Limits returns the limits in force, defaults filled in.
func (b *Budget) Limits() Limits { return b.limits }

// refuse reports a refusal and returns its status.
func (b *Budget) refuse(id Identity, err *limitError) error {
	if b.refused != nil {
		b.refused(Refusal{Identity: id, Limit: err.limit, Local: id.netns != (nsmgr.ID{})})
	}
	return status.Error(codes.ResourceExhausted, err.msg)
}

// GRPCOptions are the server options that enforce the budget: creds (the
// server's transport credentials, Credentials) wrapped to bound
// connections, the tap that bounds rpcs, and HTTP/2 settings that bound
// what one stream can make the server hold. Every gRPC server in front of
// this Server must be built with them.
func (b *Budget) GRPCOptions(creds credentials.TransportCredentials) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(&budgetCreds{TransportCredentials: creds, b: b}),
		grpc.InTapHandle(b.tap),
		grpc.ChainUnaryInterceptor(b.requestDone),
		grpc.ChainStreamInterceptor(b.streamSlot),
		// gRPC C-core's and Java's default; grpc-go's own is 16 MiB, and
		// every header of a list is an allocation of its own.
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		// Fixed windows: the dynamic ones grow to 16 MiB per stream for
		// a peer that sends what the server does not read.
		grpc.InitialWindowSize(StreamWindow),
		grpc.InitialConnWindowSize(ConnWindow),
		grpc.ReadBufferSize(ConnBufferSize),
		grpc.WriteBufferSize(ConnBufferSize),
	}
}

// What one connection and one stream may make the server hold, besides
// the messages themselves; docs/operations.md adds them up.
const (
	// MaxHeaderListSize bounds the header list of one request, in bytes.
	MaxHeaderListSize = 8 << 10
	// StreamWindow and ConnWindow are the HTTP/2 flow-control windows:
	// how much a peer may send that the server has not read yet.
	StreamWindow = 64 << 10
	ConnWindow   = 256 << 10
	// ConnBufferSize is each connection's read and write buffer.
	ConnBufferSize = 16 << 10
	// StreamWriteQuota is how much grpc-go queues for one stream whose
	// peer does not read, before the sender waits (its defaultWriteQuota).
	StreamWriteQuota = 64 << 10
)

// tap runs when an rpc opens, before its request is read: it refuses
// the rpcs of a connection that is over its limit, bounds every tenant's
// request rate, and holds a request slot until the rpc ends or, for a
// streaming rpc, until it has a stream slot (streamSlot).
func (b *Budget) tap(ctx context.Context, _ *tap.Info) (context.Context, error) {
	ai, ok := peerAuth(ctx)
	if !ok {
		return ctx, status.Error(codes.Unauthenticated, "the connection has no nsbroker identity")
	}
	id := ai.Identity
	if ai.guard.shut() {
		// What was read before the connection was closed for its
		// refusals: refused again, without counting.
		return ctx, errShutOut
	}
	if r := ai.refusal; r != nil {
		b.charge(ai)
		return ctx, status.Error(codes.ResourceExhausted, r.msg)
	}
	if err := b.requestRate.allow(id); err != nil {
		b.charge(ai)
		return ctx, b.refuse(id, err)
	}
	release, err := b.requests.acquire(tenantLabel(id), id.key())
	if err != nil {
		b.charge(ai)
		return ctx, b.refuse(id, err)
	}
	// The rpc's context ends when the rpc does, whichever way.
	stop := context.AfterFunc(ctx, release)
	return context.WithValue(ctx, requestSlotKey{}, &requestSlot{release: release, stop: stop}), nil
}

// requestSlot is the request slot an rpc holds, in its context.
type requestSlot struct {
	release func()      // gives the slot back (once)
	stop    func() bool // stops the release at the rpc's end
}

type requestSlotKey struct{}

// releaseRequest gives the request slot of the rpc of ctx back now,
// rather than when gRPC ends the rpc's context, which it does only after
// the answer is on its way: a client's next rpc may come first.
func releaseRequest(ctx context.Context) {
	if rs, ok := ctx.Value(requestSlotKey{}).(*requestSlot); ok {
		rs.stop()
		rs.release()
	}
}

// requestDone gives a unary rpc's request slot back as its handler
// returns.
func (b *Budget) requestDone(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	defer releaseRequest(ctx)
	return handler(ctx, req)
}

// streamSlot trades a streaming rpc's request slot for a stream slot,
// which it holds until it ends.
func (b *Budget) streamSlot(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	id, _ := IdentityFromContext(ctx)
	release, err := b.streams.acquire(tenantLabel(id), id.key())
	releaseRequest(ctx)
	if err != nil {
		ai, _ := peerAuth(ctx)
		b.charge(ai)
		return b.refuse(id, err)
	}
	defer release()
	return handler(srv, ss)
}

// allowPublish takes one publish from the tenant's rate.
func (b *Budget) allowPublish(id Identity) error {
	if err := b.publishRate.allow(id); err != nil {
		return b.refuse(id, err)
	}
	return nil
}

// queueBudget returns the byte budget id's subscriptions share, and the
// function that gives it back when a subscription ends.
func (b *Budget) queueBudget(id Identity) (*broker.ByteBudget, func()) {
	if id.Role != RoleTenant {
		return b.queuedAll, func() {}
	}
	k := id.key()
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queued[k]
	if q == nil {
		q = &tenantQueue{budget: broker.NewByteBudget(b.limits.MaxQueuedBytesPerTenant, b.queuedTenants)}
		b.queued[k] = q
	}
	q.users++
	var once sync.Once
	return q.budget, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if q.users--; q.users == 0 {
				delete(b.queued, k)
			}
		})
	}
}

// limitError is a refusal by one limit.
type limitError struct {
	limit string // configuration key
	msg   string
}

// slots counts one resource held by each tenant and by everyone, with a
// reserve of the total that only holders without a key (the admin) may
// take.
type slots struct {
	what                string // "connections"
	totalKey, perKey    string // the limits' configuration keys
	total, per, reserve int

	mu                sync.Mutex // guards the fields below
	used, tenantsUsed int
	byTenant          map[tenantKey]int
}

func newSlots(what, totalKey, perKey string, total, per, reserve int) *slots {
	return &slots{what: what, totalKey: totalKey, perKey: perKey, total: total, per: per, reserve: reserve, byTenant: make(map[tenantKey]int)}
}

// acquire takes a slot for the holder key, named who in a refusal. The
// zero key (the admin) counts only against the total.
func (s *slots) acquire(who string, key tenantKey) (release func(), err *limitError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tenant := key != (tenantKey{})
	switch {
	case s.used >= s.total:
		return nil, &limitError{s.totalKey, fmt.Sprintf("too many %s: the server's limit of %d (%s) is reached", s.what, s.total, s.totalKey)}
	case tenant && s.tenantsUsed >= s.total-s.reserve:
		return nil, &limitError{s.totalKey, fmt.Sprintf("too many %s: tenants hold %d, all the server's limit of %d (%s) leaves them", s.what, s.tenantsUsed, s.total, s.totalKey)}
	case tenant && s.byTenant[key] >= s.per:
		return nil, &limitError{s.perKey, fmt.Sprintf("too many %s: %s holds %d, its limit (%s)", s.what, who, s.per, s.perKey)}
	}
	s.used++
	if tenant {
		s.tenantsUsed++
		s.byTenant[key]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.used--
			if tenant {
				s.tenantsUsed--
				if s.byTenant[key]--; s.byTenant[key] == 0 {
					delete(s.byTenant, key)
				}
			}
		})
	}, nil
}

// tenantLabel names a tenant in a refusal: what the caller knows itself as.
func tenantLabel(id Identity) string {
	if id.Role == RoleAdmin {
		return "the admin"
	}
	if id.netns != (nsmgr.ID{}) {
		return fmt.Sprintf("the tenant of namespace %s", quote.String(id.Tenant))
	}
	return fmt.Sprintf("tenant %s", quote.String(id.Tenant))
}

// budgetCreds bounds connections: it takes a connection slot for each
// connection the wrapped credentials identify, and bounds the TLS
// handshakes in progress.
type budgetCreds struct {
	credentials.TransportCredentials
	b *Budget
}

// refusalGrace is how long a connection over its limit is kept, so that
// its rpcs can be told why (RESOURCE_EXHAUSTED naming the limit).
const refusalGrace = time.Second

// maxRefusing bounds the connections kept open for refusalGrace; past it
// a connection over its limit is closed at once. Each costs a transport,
// so few: the first ones tell a client that loops why it is refused.
const maxRefusing = 16

func (c *budgetCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if _, tagged := raw.(*taggedConn); !tagged {
		// A TLS handshake: bounded before anyone is known.
		addr := hostOf(raw.RemoteAddr())
		release, err := c.b.handshakes.acquire("address "+addr, tenantKey{tls: addr})
		if err != nil {
			return nil, nil, fmt.Errorf("connection from %v refused: %s", raw.RemoteAddr(), err.msg)
		}
		defer release()
	}
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	ai, ok := info.(AuthInfo)
	if !ok {
		return conn, info, nil
	}
	if d := c.b.shutOuts.left(ai.Identity.key()); d > 0 {
		conn.Close()
		return nil, nil, shutOutError(ai.Identity, d)
	}
	release, lerr := c.b.conns.acquire(tenantLabel(ai.Identity), ai.Identity.key())
	if lerr == nil {
		bc := &budgetConn{Conn: conn, release: release}
		ai.guard = newConnGuard(ai.Identity, bc)
		return bc, ai, nil
	}
	c.b.refuse(ai.Identity, lerr)
	done, ok := c.b.refusing()
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("connection of %s refused: %s", ai.Identity.Peer, lerr.msg)
	}
	ai.refusal = lerr
	bc := &budgetConn{Conn: conn, release: done}
	ai.guard = newConnGuard(ai.Identity, bc)
	time.AfterFunc(refusalGrace, func() { bc.Close() })
	return bc, ai, nil
}

func (c *budgetCreds) Clone() credentials.TransportCredentials {
	return &budgetCreds{TransportCredentials: c.TransportCredentials.Clone(), b: c.b}
}

// refusing takes one of the maxRefusing places of connections kept only
// to be told that they are over a limit.
func (b *Budget) refusing() (release func(), ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refusingNow >= maxRefusing {
		return nil, false
	}
	b.refusingNow++
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.refusingNow--
			b.mu.Unlock()
		})
	}, true
}

// hostOf is the host part of an address ("" for a unix socket's).
func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// budgetConn gives its slot back when it is closed.
type budgetConn struct {
	net.Conn
	release func()
	once    sync.Once
}

func (c *budgetConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
