package server

import (
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// waitLimit bounds every wait of these tests.
const waitLimit = 10 * time.Second

// localSocket is the abstract socket the tests open in each namespace, as
// the daemon does.
const localSocket = "@nsbroker"

// env is a Server over a broker on a fake kernel, with namespaces "A" and
// "B" attached under fresh names, served by one gRPC server on an admin
// socket, a local socket in each namespace and TCP with mutual TLS.
type env struct {
	t     *testing.T
	srv   *Server
	k     *brokertest.Kernel
	b     *broker.Broker
	g     *grpc.Server
	pki   *pki
	ns    map[string]*nsmgr.Namespace // by label
	names map[string]string           // attach name by label
	admin string                      // admin socket path
	tcp   string                      // TCP address
	acc   *Acceptor                   // serves the local sockets, as the daemon's does

	mu      sync.Mutex // guards tenants
	tenants TenantMap
}

// newEnv starts an env whose server has the given config.
func newEnv(t *testing.T, cfg *Config) *env {
	t.Helper()
	testenv.RequireRoot(t)
	k := brokertest.NewKernel()
	e := &env{
		t:     t,
		k:     k,
		b:     broker.New(&broker.Config{Unit: family.DefaultUnit, ModuleIdentity: k.Identity, Dial: k.Dial, RetryInterval: 10 * time.Millisecond}),
		pki:   newPKI(t),
		ns:    map[string]*nsmgr.Namespace{},
		names: map[string]string{},
	}
	t.Cleanup(func() { e.b.Close() })
	for _, label := range []string{"A", "B"} {
		e.attach(label)
	}
	// Tenant "acme" reaches A through TCP; "duo" reaches A and a
	// namespace that is not attached.
	e.setTenants(cnMap{"acme": {e.names["A"]}, "duo": {e.names["A"], "nsb-not-attached"}})

	srv := New(e.b, cfg)
	e.srv = srv
	e.g = grpc.NewServer(srv.Budget().GRPCOptions(Credentials(e.pki.serverTLS(), e.tenantMap))...)
	srv.Register(e.g)
	t.Cleanup(e.g.Stop)

	e.admin = filepath.Join(t.TempDir(), "admin.sock")
	e.serve(AdminListener(e.listen("unix", e.admin), nil))
	for _, label := range []string{"A", "B"} {
		e.serveLocal(label)
	}
	tl := e.listen("tcp", "127.0.0.1:0")
	e.tcp = tl.Addr().String()
	e.serve(tl)
	return e
}

func (e *env) tenantMap() TenantMap {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tenants
}

func (e *env) setTenants(m TenantMap) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenants = m
}

// newNamed makes a named namespace removed when the test ends.
func newNamed(t *testing.T) (string, *nsmgr.Namespace) {
	t.Helper()
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		t.Fatalf("NewNamed(%q): %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		nsmgr.DeleteNamed(name)
	})
	return name, ns
}

// attach makes a namespace and attaches it under its name, as label.
func (e *env) attach(label string) {
	e.t.Helper()
	name, ns := newNamed(e.t)
	if _, err := e.b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
		e.t.Fatalf("Attach(%q): %v", name, err)
	}
	e.ns[label], e.names[label] = ns, name
}

func (e *env) inode(label string) uint32 { return e.ns[label].Inode() }

func (e *env) listen(network, addr string) net.Listener {
	e.t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		e.t.Fatalf("listen %s %s: %v", network, addr, err)
	}
	return l
}

// serve serves l until the test ends.
func (e *env) serve(l net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.g.Serve(l)
	}()
	e.t.Cleanup(func() {
		e.g.Stop()
		<-done
	})
}

// serveLocal opens the local socket inside the namespace labelled label
// and serves its tenant there.
func (e *env) serveLocal(label string) {
	e.t.Helper()
	var l net.Listener
	err := e.ns[label].Do(func() error {
		var err error
		l, err = net.Listen("unix", localSocket)
		return err
	})
	if err != nil {
		e.t.Fatalf("listen on %s in namespace %s: %v", localSocket, label, err)
	}
	if e.acc == nil {
		acc, err := NewAcceptor()
		if err != nil {
			e.t.Fatal(err)
		}
		e.acc = acc
		e.serve(acc)
	}
	err = e.acc.Add(l.(*net.UnixListener), func(fed net.Listener) net.Listener {
		return e.srv.Budget().Gate(TenantListener(fed, e.names[label]))
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// client connects with the given options and closes when the test ends.
func (e *env) client(target string, opts ...grpc.DialOption) nsbrokerv1.BrokerClient {
	e.t.Helper()
	cc, err := grpc.NewClient(target, opts...)
	if err != nil {
		e.t.Fatalf("NewClient(%s): %v", target, err)
	}
	e.t.Cleanup(func() { cc.Close() })
	return nsbrokerv1.NewBrokerClient(cc)
}

// adminClient connects to the admin socket.
func (e *env) adminClient() nsbrokerv1.BrokerClient {
	return e.client("unix://"+e.admin, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// localClient connects from inside the namespace labelled label to its
// local socket, as a process there would.
func (e *env) localClient(label string) nsbrokerv1.BrokerClient {
	ns := e.ns[label]
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "unix", localSocket)
			return err
		})
		return c, err
	}
	return e.client("passthrough:///local-"+label, grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// tlsClient connects over TCP with TLS, presenting cert if it is not nil.
func (e *env) tlsClient(cert *tls.Certificate) nsbrokerv1.BrokerClient {
	cfg := &tls.Config{RootCAs: e.pki.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return e.client("passthrough:///"+e.tcp, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
}

// plainTCPClient connects over TCP without TLS.
func (e *env) plainTCPClient() nsbrokerv1.BrokerClient {
	return e.client("passthrough:///"+e.tcp, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// waitReady waits until every namespace of e is ready.
func (e *env) waitReady() {
	e.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for label, name := range e.names {
		for {
			in, err := e.b.Get(name)
			if err == nil && in.State == broker.StateReady {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("namespace %s (%s): state %v err %v, want ready", label, name, in.State, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// cnMap maps a certificate's common name to a tenant of that name.
type cnMap map[string][]string

func (m cnMap) Lookup(name ClientName) (string, []string, bool) {
	ns, ok := m[name.CommonName]
	return name.CommonName, ns, ok && name.CommonName != ""
}

// ctx returns a context bounded by waitLimit.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// subscribe subscribes the broker itself, beside the server, to groups of
// a namespace: a goroutine reads the subscription into the channel, which
// is closed at the end (after a KindEnd event, or once ctx is cancelled).
func (e *env) subscribe(ctx context.Context, name string, groups []uint32) (<-chan broker.Event, error) {
	sub, err := e.b.NewSubscription(ctx, name, groups, nil)
	if err != nil {
		return nil, err
	}
	out := make(chan broker.Event)
	go func() {
		defer close(out)
		defer sub.Close()
		for {
			ev, ok := sub.Next()
			if !ok {
				return
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
