package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nsbroker/nsbroker/daemon"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
	"github.com/nsbroker/nsbroker/server"
)

// env is one boot's worth of things to measure: a namespace, the daemon
// (in this process) with the namespace attached, and a bare gRPC server
// listening on the same kinds of socket.
type env struct {
	unit  int
	name  string
	ns    *nsmgr.Namespace
	dir   string
	admin string // the daemon's admin socket
	local string // the daemon's socket inside ns
	bare  *bareServer
	// budgeted is the bare server's filesystem socket of a second server
	// built with the budget's gRPC options (server.Budget.GRPCOptions)
	// behind an admin listener: what the daemon's gRPC transport costs
	// before its own interceptors and handlers.
	budgeted string
}

const localSocket = "@nsbroker"

func newEnv(t *testing.T) *env {
	unit := testenv.RequireModule(t)
	// Thousands of attached namespaces hold several descriptors each (and
	// the by-hand comparison as many again): lift the limit as far as the
	// kernel allows.
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}); err != nil {
		t.Logf("RLIMIT_NOFILE stays: %v", err)
	}
	e := &env{unit: unit, name: testenv.NetnsName(), dir: t.TempDir(), local: localSocket}
	ns, err := nsmgr.NewNamed(e.name)
	if err != nil {
		t.Fatal(err)
	}
	e.ns = ns
	t.Cleanup(func() { ns.Close(); nsmgr.DeleteNamed(e.name) })
	e.admin = filepath.Join(e.dir, "admin.sock")

	cfg := daemon.Defaults()
	cfg.AdminSocket = e.admin
	cfg.LocalSocket = localSocket
	cfg.Attach = []string{e.name}
	cfg.StateFile = ""
	cfg.MaxStreams = 1 << 16
	cfg.MaxStreamsPerTenant = 1 << 16
	// The bench measures the paths, not the tenants' rate limits.
	cfg.PublishRate, cfg.RequestRate = 0, 0
	cfg.Logger = slog.New(slog.DiscardHandler)
	ready := make(chan struct{})
	cfg.Ready = func(daemon.Addrs) { close(ready) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon.Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon.Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready after 30 s")
	}
	e.bare = startBare(t, e)
	e.budgeted = startBudgeted(t, e)
	return e
}

// adminClient connects to the daemon's admin socket.
func (e *env) adminClient(t testing.TB) nsbrokerv1.BrokerClient {
	return dialUnix(t, e.admin, nil)
}

// localClient connects to the daemon's socket inside the namespace, as a
// workload there would.
func (e *env) localClient(t testing.TB) nsbrokerv1.BrokerClient {
	return dialUnix(t, e.local, e.ns)
}

// dialUnix opens a gRPC client on a unix socket, dialled inside ns if it
// is not nil, and waits until the connection is up.
func dialUnix(t testing.TB, addr string, ns *nsmgr.Namespace) nsbrokerv1.BrokerClient {
	t.Helper()
	conn := dialConn(t, addr, ns)
	t.Cleanup(func() { conn.Close() })
	return nsbrokerv1.NewBrokerClient(conn)
}

// dialConn is dialUnix returning the connection, for the caller to close.
func dialConn(t testing.TB, addr string, ns *nsmgr.Namespace) *grpc.ClientConn {
	t.Helper()
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		if ns == nil {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "unix", addr)
			return err
		})
		return c, err
	}
	// The local socket appears when the daemon has attached the namespace;
	// nothing announces it, so wait until it accepts.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := dial(context.Background(), "")
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("passthrough:///bench", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dial))
	if err != nil {
		t.Fatal(err)
	}
	conn.Connect()
	return conn
}

// bareServer is a grpc-go server with the nsbroker API and nothing behind
// it: gRPC's own floor on the same kinds of socket.
type bareServer struct {
	nsbrokerv1.UnimplementedBrokerServer
	path, abstract string // a filesystem socket, and an abstract one inside the namespace
	seq            atomic.Uint64
	// What Subscribe streams: count events of size bytes each.
	count, size atomic.Int64
	// gate, closed by the run, holds every stream until all subscribed.
	gate atomic.Pointer[chan struct{}]
}

func startBare(t *testing.T, e *env) *bareServer {
	b := &bareServer{path: filepath.Join(e.dir, "bare.sock"), abstract: "@nsbroker-bare"}
	srv := grpc.NewServer(grpc.MaxConcurrentStreams(1024))
	nsbrokerv1.RegisterBrokerServer(srv, b)
	lf, err := net.Listen("unix", b.path)
	if err != nil {
		t.Fatal(err)
	}
	var la net.Listener
	if err := e.ns.Do(func() error {
		var err error
		la, err = net.Listen("unix", b.abstract)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lf)
	go srv.Serve(la)
	t.Cleanup(func() { srv.Stop(); os.Remove(b.path) })
	return b
}

// startBudgeted serves the bare server's API with the options that
// enforce the daemon's budget, with the bench's limits (rates unlimited,
// as the daemon's here), on a filesystem socket whose connections are
// admin, as the daemon's admin socket's are.
func startBudgeted(t *testing.T, e *env) string {
	path := filepath.Join(e.dir, "budgeted.sock")
	budget := server.NewBudget(&server.Limits{MaxStreams: 1 << 16, MaxStreamsPerTenant: 1 << 16, PublishRate: -1, RequestRate: -1}, nil)
	srv := grpc.NewServer(append(budget.GRPCOptions(server.Credentials(nil, nil)), grpc.MaxConcurrentStreams(1024))...)
	nsbrokerv1.RegisterBrokerServer(srv, e.bare)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(server.AdminListener(l, nil))
	t.Cleanup(func() { srv.Stop(); os.Remove(path) })
	return path
}

// Echo returns the payload.
func (b *bareServer) Echo(_ context.Context, r *nsbrokerv1.EchoRequest) (*nsbrokerv1.EchoResponse, error) {
	return &nsbrokerv1.EchoResponse{Payload: r.GetPayload()}, nil
}

// Publish numbers the request as the module would.
func (b *bareServer) Publish(_ context.Context, r *nsbrokerv1.PublishRequest) (*nsbrokerv1.PublishResponse, error) {
	return &nsbrokerv1.PublishResponse{Group: r.GetGroup(), Seq: b.seq.Add(1)}, nil
}

// PublishStream counts what it receives.
func (b *bareServer) PublishStream(s grpc.ClientStreamingServer[nsbrokerv1.PublishRequest, nsbrokerv1.PublishStreamResponse]) error {
	var n uint64
	for {
		_, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&nsbrokerv1.PublishStreamResponse{Published: n})
		}
		if err != nil {
			return err
		}
		n++
	}
}

// Subscribe streams count events numbered from 1, as fast as the stream
// takes them.
func (b *bareServer) Subscribe(r *nsbrokerv1.SubscribeRequest, s grpc.ServerStreamingServer[nsbrokerv1.SubscribeResponse]) error {
	if err := s.SendHeader(nil); err != nil {
		return err
	}
	if g := b.gate.Load(); g != nil {
		select {
		case <-*g:
		case <-s.Context().Done():
			return s.Context().Err()
		}
	}
	payload := make([]byte, b.size.Load())
	n := uint64(b.count.Load())
	for seq := uint64(1); seq <= n; seq++ {
		ev := &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Event{Event: &nsbrokerv1.Event{Group: 1, Seq: seq, Payload: payload}}}
		if err := s.Send(ev); err != nil {
			return err
		}
	}
	return nil
}
