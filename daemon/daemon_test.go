package daemon

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// watchHealth opens a health Watch of svc.
func watchHealth(t *testing.T, cc grpc.ClientConnInterface, svc string) healthpb.Health_WatchClient {
	t.Helper()
	w, err := healthpb.NewHealthClient(cc).Watch(ctxTimeout(t), &healthpb.HealthCheckRequest{Service: svc})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// nextHealth checks the next status a health Watch reports.
func nextHealth(t *testing.T, w healthpb.Health_WatchClient, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	resp, err := w.Recv()
	if err != nil {
		t.Fatalf("health watch: want %v, got error %v", want, err)
	}
	if resp.Status != want {
		t.Fatalf("health watch: want %v, got %v", want, resp.Status)
	}
}

// waitServing waits until the namespace's health service is SERVING.
func waitServing(t *testing.T, cc grpc.ClientConnInterface, name string) {
	t.Helper()
	w := watchHealth(t, cc, namespaceService(name))
	for {
		resp, err := w.Recv()
		if err != nil {
			t.Fatalf("health watch of %s: %v", name, err)
		}
		if resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: want code %v, got %v (%v)", what, want, got, err)
	}
}

// TestIntegrationLocalSocket connects to "@nsbroker" from inside an
// attached namespace and checks that the connection is that namespace's
// tenant, and that detaching closes the socket and the connection.
func TestIntegrationLocalSocket(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	_, other := newNamespace(t)
	d := startDaemon(t, func(c *Config) { c.Attach = []string{name, other, "never-created-" + name} })
	adminCC := dialUnix(t, d.cfg.AdminSocket)
	// Both: the follower reports each namespace in its own time.
	waitServing(t, adminCC, name)
	waitServing(t, adminCC, other)
	ctx := ctxTimeout(t)

	cc, err := dialInNamespace(ns, "@nsbroker")
	if err != nil {
		t.Fatalf("dial @nsbroker inside %s: %v", name, err)
	}
	defer cc.Close()
	tenant := nsbrokerv1.NewBrokerClient(cc)
	echo, err := tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("hello")})
	if err != nil {
		t.Fatalf("Echo from inside: %v", err)
	}
	if echo.NetnsInode != uint64(ns.Inode()) || string(echo.Payload) != "hello" {
		t.Errorf("Echo from inside: want inode %d payload %q, got inode %d payload %q", ns.Inode(), "hello", echo.NetnsInode, echo.Payload)
	}
	list, err := tenant.ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Namespaces) != 1 || list.Namespaces[0].Name != name || list.Namespaces[0].Inode != uint64(ns.Inode()) {
		t.Errorf("tenant's list: want only %s (inode %d), got %v", name, ns.Inode(), list.Namespaces)
	}
	_, err = tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: other, Payload: []byte("x")})
	wantCode(t, "Echo to another namespace", err, codes.NotFound)
	_, err = tenant.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name})
	wantCode(t, "tenant detaching", err, codes.PermissionDenied)

	// Health: the tenant sees its own namespace, not the other one.
	hc := healthpb.NewHealthClient(cc)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: namespaceService(name)}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("tenant's health of its namespace: want SERVING, got %v, %v", resp, err)
	}
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: namespaceService(other)})
	wantCode(t, "tenant's health of another namespace", err, codes.NotFound)
	if _, err := healthpb.NewHealthClient(adminCC).Check(ctx, &healthpb.HealthCheckRequest{Service: namespaceService(other)}); err != nil {
		t.Errorf("admin's health of %s: %v", other, err)
	}

	// The socket exists inside the namespace only.
	if c, err := net.Dial("unix", "@nsbroker"); err == nil {
		c.Close()
		t.Errorf("@nsbroker is reachable from the test's own namespace")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial @nsbroker outside: want ECONNREFUSED, got %v", err)
	}
	// A namespace that cannot be attached is logged; the others serve.
	failed := d.logs.waitCount(msgIs("cannot attach namespace"), 1)
	if failed.attrs["namespace"] != "never-created-"+name {
		t.Errorf("attach failure logged for %q, want never-created-%s", failed.attrs["namespace"], name)
	}

	// Detaching closes the socket and cuts the tenant's connection.
	w := watchHealth(t, adminCC, namespaceService(name))
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVING)
	if _, err := d.admin().DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
		t.Fatal(err)
	}
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	// The connection lives connGrace longer, for its streams to end with
	// their status; its requests find the namespace gone meanwhile.
	cutBy := time.Now().Add(connGrace + 5*time.Second)
	for {
		_, err = tenant.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("after")})
		if status.Code(err) == codes.Unavailable {
			break
		}
		if status.Code(err) != codes.NotFound || time.Now().After(cutBy) {
			t.Fatalf("Echo after detach: want NotFound until the connection is cut, then Unavailable; got %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c, err := dialInNamespace(ns, "@nsbroker"); err == nil {
		c.Close()
		t.Errorf("@nsbroker still open inside %s after detach", name)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial @nsbroker after detach: want ECONNREFUSED, got %v", err)
	}

	// Attached again, it gets a socket again.
	if _, err := d.admin().AttachNamespace(ctx, attachRef(name)); err != nil {
		t.Fatal(err)
	}
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVING)
	cc2, err := dialInNamespace(ns, "@nsbroker")
	if err != nil {
		t.Fatalf("dial @nsbroker after attaching again: %v", err)
	}
	defer cc2.Close()
	if echo, err := nsbrokerv1.NewBrokerClient(cc2).Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("again")}); err != nil || echo.NetnsInode != uint64(ns.Inode()) {
		t.Errorf("Echo after attaching again: want inode %d, got %v, %v", ns.Inode(), echo, err)
	}
}

// TestIntegrationHealth follows a namespace's health service through
// attach (module missing), ready and detach.
func TestIntegrationHealth(t *testing.T) {
	testenv.RequireRoot(t)
	_, name := newNamespace(t)
	d := startDaemon(t, nil)
	cc := dialUnix(t, d.cfg.AdminSocket)
	ctx := ctxTimeout(t)
	hc := healthpb.NewHealthClient(cc)
	for _, svc := range []string{"", brokerService} {
		if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: want SERVING, got %v, %v", svc, resp, err)
		}
	}

	w := watchHealth(t, cc, namespaceService(name))
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	d.kernel.SetLoaded(false)
	admin := nsbrokerv1.NewBrokerClient(cc)
	if _, err := admin.AttachNamespace(ctx, attachRef(name)); err != nil {
		t.Fatal(err)
	}
	nextHealth(t, w, healthpb.HealthCheckResponse_NOT_SERVING)
	d.kernel.SetLoaded(true)
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVING)
	if _, err := admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
		t.Fatal(err)
	}
	nextHealth(t, w, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: namespaceService(name)})
	wantCode(t, "health of a detached namespace", err, codes.NotFound)
}

// TestIntegrationShutdown checks that stopping ends a Subscribe stream
// with UNAVAILABLE "server shutting down" well before the deadline, and
// that Run then returns cleanly and removes the admin socket.
func TestIntegrationShutdown(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	d := startDaemon(t, func(c *Config) { c.Attach = []string{name} })
	cc := dialUnix(t, d.cfg.AdminSocket)
	waitServing(t, cc, name)
	admin := nsbrokerv1.NewBrokerClient(cc)
	ctx := ctxTimeout(t)
	sub, err := admin.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: name, Groups: []uint32{3}})
	if err != nil {
		t.Fatal(err)
	}
	health := watchHealth(t, cc, "")
	nextHealth(t, health, healthpb.HealthCheckResponse_SERVING)
	syncSubscription(t, d, ns.Inode(), 3, sub)
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- d.stop() }()
	nextHealth(t, health, healthpb.HealthCheckResponse_NOT_SERVING)
	_, err = sub.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "server shutting down" {
		t.Errorf("Subscribe at shutdown: want Unavailable %q, got %v %q", "server shutting down", st.Code(), st.Message())
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: want nil after a clean stop, got %v", err)
	}
	if took := time.Since(start); took >= d.cfg.ShutdownTimeout {
		t.Errorf("stop took %v, the whole shutdown timeout: the stream was not ended", took)
	}
	if n := d.logs.count(msgIs("shutdown timeout reached; cutting the remaining rpcs")); n != 0 {
		t.Errorf("the shutdown timeout was reached %d times; want 0", n)
	}
	if _, err := os.Stat(d.cfg.AdminSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket after stop: want it removed, got %v", err)
	}
}

// TestIntegrationShutdownTimeout checks that a client-streaming rpc still
// open at shutdown gets the deadline and is then cut.
func TestIntegrationShutdownTimeout(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	d := startDaemon(t, func(c *Config) {
		c.Attach = []string{name}
		c.ShutdownTimeout = 300 * time.Millisecond
	})
	cc := dialUnix(t, d.cfg.AdminSocket)
	waitServing(t, cc, name)
	admin := nsbrokerv1.NewBrokerClient(cc)
	ctx := ctxTimeout(t)
	sub, err := admin.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: name, Groups: []uint32{1}})
	if err != nil {
		t.Fatal(err)
	}
	// Once the subscription is in place, a PublishStream publishes
	// through it: its handler is running once the event arrives.
	last, _ := syncSubscription(t, d, ns.Inode(), 1, sub)
	pub, err := admin.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Send(&nsbrokerv1.PublishRequest{Namespace: name, Group: 1, Payload: []byte("open")}); err != nil {
		t.Fatal(err)
	}
	if resp, err := sub.Recv(); err != nil || resp.GetEvent().GetSeq() != last+1 || string(resp.GetEvent().GetPayload()) != "open" {
		t.Fatalf("want the stream's event seq %d, got %v, %v", last+1, resp, err)
	}

	start := time.Now()
	if err := d.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if took := time.Since(start); took < d.cfg.ShutdownTimeout {
		t.Errorf("stop took %v, less than the shutdown timeout %v, with a PublishStream open", took, d.cfg.ShutdownTimeout)
	}
	_, err = pub.CloseAndRecv()
	wantCode(t, "PublishStream cut at the deadline", err, codes.Unavailable)
	if n := d.logs.count(msgIs("shutdown timeout reached; cutting the remaining rpcs")); n != 1 {
		t.Errorf("shutdown timeout logged %d times, want 1", n)
	}
}

// syncSubscription publishes to group in namespace inum until an event
// reaches sub, which proves the subscription is in place, and reads the
// events up to the last one published; it returns that one's sequence
// number and how many events sub received.
func syncSubscription(t *testing.T, d *testDaemon, inum, group uint32, sub nsbrokerv1.Broker_SubscribeClient) (last uint64, received int) {
	t.Helper()
	stop := make(chan struct{})
	published := make(chan uint64, 1)
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			last := d.kernel.Publish(inum, group, []byte("sync"))
			select {
			case <-stop:
				published <- last
				return
			case <-tick.C:
			}
		}
	}()
	resp, err := sub.Recv()
	close(stop)
	last = <-published
	for {
		if err != nil {
			t.Fatalf("subscription: %v", err)
		}
		ev := resp.GetEvent()
		if ev == nil || ev.NetnsInode != uint64(inum) || ev.Group != group {
			t.Fatalf("subscription: want an event of group %d from inode %d, got %v", group, inum, resp)
		}
		received++
		if ev.Seq == last {
			return last, received
		}
		resp, err = sub.Recv()
	}
}

// attachRef is an AttachNamespace request for a named namespace, under
// its name.
func attachRef(name string) *nsbrokerv1.AttachNamespaceRequest {
	return &nsbrokerv1.AttachNamespaceRequest{Name: name, Ref: &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}}}
}

// TestIntegrationHealthFollowsTheNamespace: a tenant's connection lives
// on for a moment after its namespace is detached; if the name is
// attached again meanwhile, to another namespace, that connection may not
// read its health: health follows the rule of every rpc (the namespace
// the connection lives in), not the name alone.
func TestIntegrationHealthFollowsTheNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	_, other := newNamespace(t)
	d := startDaemon(t, func(c *Config) { c.Attach = []string{name} })
	adminCC := dialUnix(t, d.cfg.AdminSocket)
	waitServing(t, adminCC, name)
	ctx := ctxTimeout(t)
	cc, err := dialInNamespace(ns, "@nsbroker")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	svc := namespaceService(name)
	if resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("tenant's health of its namespace: got %v, %v; want SERVING", resp, err)
	}
	admin := nsbrokerv1.NewBrokerClient(adminCC)
	if _, err := admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
		t.Fatal(err)
	}
	req := attachRef(other)
	req.Name = name // the same name, another namespace
	if _, err := admin.AttachNamespace(ctx, req); err != nil {
		t.Fatal(err)
	}
	waitServing(t, adminCC, name)
	// Within the connection's grace: the old tenant asks.
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	wantCode(t, "the old tenant's health of the name now attached to another namespace", err, codes.NotFound)
}
