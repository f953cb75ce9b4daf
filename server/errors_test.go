package server

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// wantStatus fails unless err has the code and its message contains part.
func wantStatus(t *testing.T, what string, err error, code codes.Code, part string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code || !strings.Contains(st.Message(), part) {
		t.Fatalf("%s: got %v %q, want %v containing %q", what, st.Code(), st.Message(), code, part)
	}
}

func byName(name string) *nsbrokerv1.NamespaceRef {
	return &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}}
}

func TestIntegrationErrorMapping(t *testing.T) {
	e := newEnv(t, nil)
	admin := e.adminClient()
	ctx := testContext(t)
	a := e.names["A"]

	t.Run("unavailable while the module is missing", func(t *testing.T) {
		e.k.SetLoaded(false)
		name, ns := newNamed(t)
		r, err := admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: byName(name)})
		if err != nil || r.State != nsbrokerv1.NamespaceState_NAMESPACE_STATE_UNAVAILABLE || r.Reason == "" {
			t.Fatalf("AttachNamespace with the module missing: got %v (%v), want state UNAVAILABLE with a reason", r, err)
		}
		_, err = admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: name})
		wantStatus(t, "Echo with the module missing", err, codes.Unavailable, "module unavailable")
		st, err := admin.Stats(ctx, &nsbrokerv1.StatsRequest{Namespace: name})
		if err != nil || len(st.Namespaces) != 1 || st.Namespaces[0].Kernel != nil || st.Namespaces[0].Daemon == nil {
			t.Fatalf("Stats with the module missing: got %v (%v), want daemon counters only", st, err)
		}
		e.k.SetLoaded(true)
		deadline := time.Now().Add(waitLimit)
		for {
			r, err := admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: name, Payload: []byte("back")})
			if err == nil {
				if r.NetnsInode != uint64(ns.Inode()) {
					t.Fatalf("Echo after the module came: inode got %d, want %d", r.NetnsInode, ns.Inode())
				}
				break
			}
			if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
				t.Fatalf("Echo after the module came: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Run("kernel rejection keeps its text", func(t *testing.T) {
		// The fake module refuses this payload with EPERM and an extended ACK.
		_, err := admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: a, Payload: []byte("reject")})
		wantStatus(t, "Echo rejected by the module", err, codes.PermissionDenied, "operation not permitted: fake rejection")
	})
	t.Run("invalid arguments", func(t *testing.T) {
		_, err := admin.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: a, Group: 33})
		wantStatus(t, "Publish to group 33", err, codes.InvalidArgument, "group")
		_, err = admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: a, Payload: make([]byte, 16385)})
		wantStatus(t, "Echo of 16385 bytes", err, codes.InvalidArgument, "16385")
		sub, err := admin.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: a})
		if err == nil {
			_, err = sub.Recv()
		}
		wantStatus(t, "Subscribe to no group", err, codes.InvalidArgument, "no groups")
		_, err = admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: "x"})
		wantStatus(t, "AttachNamespace without a ref", err, codes.InvalidArgument, "invalid namespace reference")
		_, err = admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: "x",
			Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Path{Path: "/etc/hostname"}}})
		wantStatus(t, "AttachNamespace of a regular file", err, codes.InvalidArgument, "not a network namespace")
	})
	t.Run("not found", func(t *testing.T) {
		_, err := admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Ref: byName("nsb-test-no-such")})
		wantStatus(t, "AttachNamespace of a missing name", err, codes.NotFound, "nsb-test-no-such")
		_, err = admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: "nope"})
		wantStatus(t, "DetachNamespace of an unknown name", err, codes.NotFound, `namespace "nope" not attached`)
	})
	t.Run("already exists", func(t *testing.T) {
		_, err := admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: a, Ref: byName(a)})
		wantStatus(t, "AttachNamespace under a taken name", err, codes.AlreadyExists, "already attached")
		_, err = admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{Name: "again", Ref: byName(a)})
		wantStatus(t, "AttachNamespace of an attached namespace", err, codes.AlreadyExists, a)
	})
	t.Run("deadline", func(t *testing.T) {
		e.k.HoldReplies(e.inode("B"), 1<<30) // replies never come
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := admin.Echo(short, &nsbrokerv1.EchoRequest{Namespace: e.names["B"]})
		wantStatus(t, "Echo without a reply", err, codes.DeadlineExceeded, "")
	})
}

// A tenant cannot tell a namespace it may not reach from one that does not
// exist: the code and message are the same, but for the name.
func TestIntegrationForeignNamespaceLooksMissing(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testContext(t)
	calls := map[string]func(c nsbrokerv1.BrokerClient, ns string) error{
		"GetNamespace": func(c nsbrokerv1.BrokerClient, ns string) error {
			_, err := c.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: ns})
			return err
		},
		"Echo": func(c nsbrokerv1.BrokerClient, ns string) error {
			_, err := c.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: ns})
			return err
		},
		"Publish": func(c nsbrokerv1.BrokerClient, ns string) error {
			_, err := c.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: ns, Group: 1})
			return err
		},
		"PublishStream": func(c nsbrokerv1.BrokerClient, ns string) error {
			s, err := c.PublishStream(ctx)
			if err != nil {
				return err
			}
			s.Send(&nsbrokerv1.PublishRequest{Namespace: ns, Group: 1})
			_, err = s.CloseAndRecv()
			return err
		},
		"Subscribe": func(c nsbrokerv1.BrokerClient, ns string) error {
			s, err := c.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: ns, Groups: []uint32{1}})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"Stats": func(c nsbrokerv1.BrokerClient, ns string) error {
			_, err := c.Stats(ctx, &nsbrokerv1.StatsRequest{Namespace: ns})
			return err
		},
	}
	const missing = "nsb-test-missing"
	foreign := e.names["B"]
	clients := map[string]nsbrokerv1.BrokerClient{
		"tenantA": e.localClient("A"),
		"tlsA":    e.tlsClient(e.pki.client("acme")),
		"tlsDuo":  e.tlsClient(e.pki.client("duo")), // its list names a namespace not attached
	}
	admin := e.adminClient()
	for rpc, call := range calls {
		// What the admin gets for a namespace that does not exist.
		ref := status.Convert(call(admin, missing))
		if ref.Code() != codes.NotFound || ref.Message() != `namespace "`+missing+`" not attached` {
			t.Fatalf("admin %s(missing): got %v %q, want NotFound", rpc, ref.Code(), ref.Message())
		}
		for who, c := range clients {
			for _, ns := range []string{missing, foreign, "nsb-not-attached"} {
				got := status.Convert(call(c, ns))
				msg := strings.ReplaceAll(got.Message(), ns, missing)
				if got.Code() != ref.Code() || msg != ref.Message() {
					t.Errorf("%s %s(%s): got %v %q, want %v %q", who, rpc, ns, got.Code(), got.Message(), ref.Code(), ref.Message())
				}
			}
		}
	}
}

// An empty namespace means the tenant's own only when it has exactly one.
func TestIntegrationEmptyNamespaceNeedsOneNamespace(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testContext(t)
	_, err := e.tlsClient(e.pki.client("duo")).Echo(ctx, &nsbrokerv1.EchoRequest{})
	wantStatus(t, "Echo() by a tenant of two namespaces", err, codes.InvalidArgument, "namespace is required")
	r, err := e.tlsClient(e.pki.client("duo")).Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: e.names["A"]})
	if err != nil || r.NetnsInode != uint64(e.inode("A")) {
		t.Fatalf("Echo(A) by a tenant of A: got %v (%v), want inode %d", r, err, e.inode("A"))
	}
}

// A reloaded tenant map applies to new connections.
func TestIntegrationTenantMapReload(t *testing.T) {
	e := newEnv(t, nil)
	ctx := testContext(t)
	_, err := e.tlsClient(e.pki.client("newcomer")).Echo(ctx, &nsbrokerv1.EchoRequest{})
	wantStatus(t, "Echo by an unmapped certificate", err, codes.Unavailable, "")
	e.setTenants(cnMap{"newcomer": {e.names["B"]}})
	r, err := e.tlsClient(e.pki.client("newcomer")).Echo(ctx, &nsbrokerv1.EchoRequest{})
	if err != nil || r.NetnsInode != uint64(e.inode("B")) {
		t.Fatalf("Echo() after the reload: got %v (%v), want inode %d", r, err, e.inode("B"))
	}
}

func TestIntegrationStreamLimits(t *testing.T) {
	// One request slot per tenant: a streaming rpc gives its back once
	// it holds a stream slot, or the second Subscribe could not start.
	e := newEnv(t, &Config{Budget: NewBudget(&Limits{MaxStreamsPerTenant: 2, MaxStreams: 4, AdminStreams: 1,
		MaxRequestsPerTenant: 1, MaxRequests: 3, AdminRequests: 1}, nil)})
	ctx := testContext(t)
	subscribe := func(c nsbrokerv1.BrokerClient, ns string) (context.CancelFunc, error) {
		sctx, cancel := context.WithCancel(ctx)
		s, err := c.Subscribe(sctx, &nsbrokerv1.SubscribeRequest{Namespace: ns, Groups: []uint32{1}})
		if err == nil {
			if md, _ := s.Header(); md == nil {
				_, err = s.Recv()
			}
		}
		if err != nil {
			cancel()
		}
		return cancel, err
	}
	tenantA, tenantB, admin := e.localClient("A"), e.localClient("B"), e.adminClient()
	first, err := subscribe(tenantA, "")
	if err != nil {
		t.Fatalf("first subscription of tenant A: %v", err)
	}
	if _, err := subscribe(tenantA, ""); err != nil {
		t.Fatalf("second subscription of tenant A: %v", err)
	}
	_, err = subscribe(tenantA, "")
	wantStatus(t, "third subscription of tenant A", err, codes.ResourceExhausted, "too many streams: the tenant of namespace")
	wantStatus(t, "third subscription of tenant A", err, codes.ResourceExhausted, "holds 2, its limit (max_streams_per_tenant)")
	if _, err := subscribe(tenantB, ""); err != nil {
		t.Fatalf("first subscription of tenant B: %v", err)
	}
	// Tenants hold 3 of 4; the last is the admin's reserve.
	_, err = subscribe(tenantB, "")
	wantStatus(t, "fourth subscription in all, by a tenant", err, codes.ResourceExhausted, "tenants hold 3, all the server's limit of 4 (max_streams) leaves them")
	// Unary rpcs have a pool of their own: tenants holding every stream
	// they may do not keep one from its Echo.
	if _, err := tenantB.Echo(ctx, &nsbrokerv1.EchoRequest{}); err != nil {
		t.Fatalf("an Echo while tenants hold all their streams: %v", err)
	}
	adminCancel, err := subscribe(admin, e.names["A"])
	if err != nil {
		t.Fatalf("the admin's subscription in its reserve: %v", err)
	}
	_, err = subscribe(admin, e.names["A"])
	wantStatus(t, "fifth subscription in all", err, codes.ResourceExhausted, "the server's limit of 4 (max_streams) is reached")
	adminCancel()

	// A cancelled subscription gives its slot back once the server has
	// seen the cancellation.
	first()
	deadline := time.Now().Add(waitLimit)
	for {
		_, err := subscribe(tenantA, "")
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("subscription of tenant A after cancelling one: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIntegrationRequestLimits: rpcs whose request is still being read,
// and unary rpcs until answered, count against max_requests per tenant;
// other tenants and the admin are not held up.
func TestIntegrationRequestLimits(t *testing.T) {
	e := newEnv(t, &Config{Budget: NewBudget(&Limits{MaxRequestsPerTenant: 1, MaxRequests: 3, AdminRequests: 1}, nil)})
	ctx := testContext(t)
	// An Echo of tenant A held by the fake kernel, in flight: retried
	// while the polling below holds the tenant's one slot.
	e.k.HoldReplies(e.inode("A"), 1000)
	held, cancelHeld := context.WithCancel(ctx)
	defer cancelHeld()
	tenantA := e.localClient("A")
	go func() {
		for held.Err() == nil {
			if _, err := tenantA.Echo(held, &nsbrokerv1.EchoRequest{}); status.Code(err) != codes.ResourceExhausted {
				return
			}
		}
	}()
	deadline := time.Now().Add(waitLimit)
	var err error
	for time.Now().Before(deadline) {
		_, err = tenantA.Stats(ctx, &nsbrokerv1.StatsRequest{})
		if status.Code(err) == codes.ResourceExhausted {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantStatus(t, "an rpc of tenant A with one in flight", err, codes.ResourceExhausted, "too many requests: the tenant of namespace")
	wantStatus(t, "an rpc of tenant A with one in flight", err, codes.ResourceExhausted, "holds 1, its limit (max_requests_per_tenant)")
	// Every rpc is a request first: a Subscribe too.
	sub, err := tenantA.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Groups: []uint32{1}})
	if err == nil {
		_, err = sub.Recv()
	}
	wantStatus(t, "tenant A's Subscribe with its one request in flight", err, codes.ResourceExhausted, "(max_requests_per_tenant)")
	if _, err := e.localClient("B").Stats(ctx, &nsbrokerv1.StatsRequest{}); err != nil {
		t.Fatalf("tenant B's rpc: %v", err)
	}
	if _, err := e.adminClient().Stats(ctx, &nsbrokerv1.StatsRequest{Namespace: e.names["A"]}); err != nil {
		t.Fatalf("the admin's rpc: %v", err)
	}
}

func TestIntegrationConnectionLimits(t *testing.T) {
	e := newEnv(t, &Config{Budget: NewBudget(&Limits{MaxConnectionsPerTenant: 2, MaxConnections: 4, AdminConnections: 1}, nil)})
	ctx := testContext(t)
	echo := func(c nsbrokerv1.BrokerClient) error {
		_, err := c.Echo(ctx, &nsbrokerv1.EchoRequest{})
		return err
	}
	// Each client is a connection of its own, held while the test runs.
	for i := range 2 {
		if err := echo(e.localClient("A")); err != nil {
			t.Fatalf("connection %d of tenant A: %v", i+1, err)
		}
	}
	third := e.localClient("A")
	err := echo(third)
	wantStatus(t, "third connection of tenant A", err, codes.ResourceExhausted, "too many connections: the tenant of namespace")
	wantStatus(t, "third connection of tenant A", err, codes.ResourceExhausted, "its limit (max_connections_per_tenant)")
	if err := echo(e.localClient("B")); err != nil {
		t.Fatalf("first connection of tenant B: %v", err)
	}
	err = echo(e.localClient("B"))
	wantStatus(t, "a tenant's connection into the admin's reserve", err, codes.ResourceExhausted, "(max_connections) leaves them")
	adminEcho := func(c nsbrokerv1.BrokerClient) error {
		_, err := c.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: e.names["A"]})
		return err
	}
	if err := adminEcho(e.adminClient()); err != nil {
		t.Fatalf("the admin's connection in its reserve: %v", err)
	}
	err = adminEcho(e.adminClient())
	wantStatus(t, "a connection past the total", err, codes.ResourceExhausted, "the server's limit of 4 (max_connections) is reached")
}

func TestIntegrationRequestRate(t *testing.T) {
	e := newEnv(t, &Config{Budget: NewBudget(&Limits{RequestRate: 0.001, RequestBurst: 2}, nil)})
	ctx := testContext(t)
	tenantA, tenantB, admin := e.localClient("A"), e.localClient("B"), e.adminClient()
	for i := range 2 {
		if _, err := tenantA.Echo(ctx, &nsbrokerv1.EchoRequest{}); err != nil {
			t.Fatalf("rpc %d of tenant A within the burst: %v", i+1, err)
		}
	}
	_, err := tenantA.Stats(ctx, &nsbrokerv1.StatsRequest{})
	wantStatus(t, "third rpc of tenant A", err, codes.ResourceExhausted, "request rate limit exceeded")
	wantStatus(t, "third rpc of tenant A", err, codes.ResourceExhausted, "(request_rate)")
	if _, err := tenantB.Echo(ctx, &nsbrokerv1.EchoRequest{}); err != nil {
		t.Fatalf("tenant B's first rpc: %v", err)
	}
	for i := range 5 {
		if _, err := admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: e.names["A"]}); err != nil {
			t.Fatalf("rpc %d of the admin: %v", i+1, err)
		}
	}
}

// TestIntegrationPendingHandshakes: a client address holds at most its
// limit of TLS handshakes in progress; the next connection is closed at
// once, and a handshake that completes frees its place.
func TestIntegrationPendingHandshakes(t *testing.T) {
	e := newEnv(t, &Config{Budget: NewBudget(&Limits{MaxPendingHandshakesPerAddr: 1}, nil)})
	idle, err := net.Dial("tcp", e.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// The server sees the idle connection before the next one.
	time.Sleep(100 * time.Millisecond)
	next, err := net.Dial("tcp", e.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	next.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := next.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("second handshake from one address: read got %v, want EOF (closed by the server)", err)
	}
	idle.Close()
	ctx := testContext(t)
	deadline := time.Now().Add(waitLimit)
	for {
		_, err := e.tlsClient(e.pki.client("acme")).Echo(ctx, &nsbrokerv1.EchoRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a TLS client once the idle handshake is gone: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIntegrationPublishRate(t *testing.T) {
	e := newEnv(t, &Config{Budget: NewBudget(&Limits{PublishRate: 0.001, PublishBurst: 2}, nil)})
	ctx := testContext(t)
	publish := func(c nsbrokerv1.BrokerClient, ns string) error {
		_, err := c.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: ns, Group: 1})
		return err
	}
	tenantA, admin := e.localClient("A"), e.adminClient()
	for i := range 2 {
		if err := publish(tenantA, ""); err != nil {
			t.Fatalf("publish %d of tenant A within the burst: %v", i+1, err)
		}
	}
	wantStatus(t, "third publish of tenant A", publish(tenantA, ""), codes.ResourceExhausted, "publish rate limit exceeded")
	for i := range 5 {
		if err := publish(admin, e.names["A"]); err != nil {
			t.Fatalf("publish %d of the admin: %v", i+1, err)
		}
	}

	// PublishStream spends the same tokens, per message: tenant B's third
	// message fails the stream, and the first two stay published.
	sub, err := e.subscribe(ctx, e.names["B"], []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.localClient("B").PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if s.Send(&nsbrokerv1.PublishRequest{Group: 1}) != nil {
			break
		}
	}
	_, err = s.CloseAndRecv()
	wantStatus(t, "PublishStream of three messages", err, codes.ResourceExhausted, "publish rate limit exceeded")
	probe := e.k.Publish(e.inode("B"), 1, []byte("probe"))
	for seq := uint64(1); seq <= 3; seq++ {
		ev := <-sub
		if ev.Message.Seq != seq {
			t.Fatalf("namespace B: got seq %d, want %d", ev.Message.Seq, seq)
		}
	}
	if probe != 3 {
		t.Fatalf("probe seq: got %d, want 3 (two publishes went through)", probe)
	}
}
