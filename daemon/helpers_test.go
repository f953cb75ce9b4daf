package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// childEnv makes the test binary act as a client child process (see
// runChild) instead of running the tests.
const childEnv = "NSB_DAEMON_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

// testDaemon is a daemon run by Run in this process, on the fake kernel.
type testDaemon struct {
	t      *testing.T
	cfg    *Config
	kernel *brokertest.Kernel
	addrs  Addrs
	logs   *logRecorder
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startDaemon runs a daemon with an admin socket in a temporary
// directory, the fake kernel, and cfg edited by edit; it is stopped when
// the test ends.
func startDaemon(t *testing.T, edit func(*Config)) *testDaemon {
	t.Helper()
	k := brokertest.NewKernel()
	logs := newLogRecorder(t)
	cfg := Defaults()
	cfg.AdminSocket = filepath.Join(t.TempDir(), "run", "nsbroker.sock")
	cfg.StateFile = filepath.Join(filepath.Dir(cfg.AdminSocket), "attachments.json")
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.BrokerConfig = &broker.Config{Unit: family.DefaultUnit, ModuleIdentity: k.Identity, Dial: k.Dial,
		RetryInterval: 10 * time.Millisecond}
	cfg.Logger = slog.New(logs)
	ready := make(chan Addrs, 1)
	cfg.Ready = func(a Addrs) { ready <- a }
	if edit != nil {
		edit(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &testDaemon{t: t, cfg: cfg, kernel: k, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- Run(ctx, cfg) }()
	select {
	case d.addrs = <-ready:
	case err := <-d.done:
		cancel()
		t.Fatalf("Run ended before it was ready: %v", err)
	case <-time.After(waitTimeout):
		cancel()
		t.Fatalf("daemon not ready after %v", waitTimeout)
	}
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		logs.close()
	})
	return d
}

// stop cancels the daemon's context and returns what Run returned.
func (d *testDaemon) stop() error {
	d.once.Do(func() {
		d.cancel()
		select {
		case d.err = <-d.done:
		case <-time.After(waitTimeout + d.cfg.ShutdownTimeout):
			d.err = errors.New("Run did not return after its context was cancelled")
		}
	})
	return d.err
}

// admin returns a client on the admin socket.
func (d *testDaemon) admin() nsbrokerv1.BrokerClient {
	return nsbrokerv1.NewBrokerClient(dialUnix(d.t, d.cfg.AdminSocket))
}

// dialUnix connects to a unix socket; the connection is closed when the
// test ends.
func dialUnix(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// dialInNamespace connects to the abstract socket name from inside ns:
// the socket is created on a thread inside the namespace, so it reaches
// that namespace's abstract socket. The gRPC connection uses this one
// socket and cannot reconnect.
func dialInNamespace(ns *nsmgr.Namespace, name string) (*grpc.ClientConn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = net.Dial("unix", name)
		return err
	})
	if err != nil {
		return nil, err
	}
	var used atomic.Bool
	dial := func(context.Context, string) (net.Conn, error) {
		if used.CompareAndSwap(false, true) {
			return c, nil
		}
		return nil, errors.New("the namespace-local connection was used up")
	}
	cc, err := grpc.NewClient("passthrough:///nsbroker-local", grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.Close()
		return nil, err
	}
	return cc, nil
}

// newNamespace creates a named namespace, removed when the test ends.
func newNamespace(t *testing.T) (*nsmgr.Namespace, string) {
	t.Helper()
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := nsmgr.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return ns, name
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// logEntry is one log record, attributes flattened to strings.
type logEntry struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (e logEntry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.level, e.msg)
	for _, k := range slices.Sorted(maps.Keys(e.attrs)) {
		fmt.Fprintf(&b, " %s=%q", k, e.attrs[k])
	}
	return b.String()
}

// logRecorder is a slog.Handler that writes to the test log and lets a
// test wait for a record.
type logRecorder struct {
	t     *testing.T
	attrs []slog.Attr

	shared *logShared
}

type logShared struct {
	mu      sync.Mutex // guards the fields below
	entries []logEntry
	changed chan struct{} // closed and replaced at each record
	closed  bool          // the test is over: no more t.Log
}

func newLogRecorder(t *testing.T) *logRecorder {
	return &logRecorder{t: t, shared: &logShared{changed: make(chan struct{})}}
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	e := logEntry{level: rec.Level, msg: rec.Message, attrs: make(map[string]string)}
	add := func(a slog.Attr) bool {
		e.attrs[a.Key] = a.Value.Resolve().String()
		return true
	}
	for _, a := range r.attrs {
		add(a)
	}
	rec.Attrs(add)
	s := r.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, e)
	close(s.changed)
	s.changed = make(chan struct{})
	if !s.closed {
		r.t.Log(e.String())
	}
	return nil
}

func (r *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *r
	c.attrs = append(append([]slog.Attr(nil), r.attrs...), attrs...)
	return &c
}

func (r *logRecorder) WithGroup(string) slog.Handler { return r }

func (r *logRecorder) close() {
	r.shared.mu.Lock()
	r.shared.closed = true
	r.shared.mu.Unlock()
}

// count returns how many records match.
func (r *logRecorder) count(match func(logEntry) bool) int {
	s := r.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.entries {
		if match(e) {
			n++
		}
	}
	return n
}

// waitCount waits until at least n records match and returns the last.
func (r *logRecorder) waitCount(match func(logEntry) bool, n int) logEntry {
	r.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		s := r.shared
		s.mu.Lock()
		var found []logEntry
		for _, e := range s.entries {
			if match(e) {
				found = append(found, e)
			}
		}
		changed := s.changed
		s.mu.Unlock()
		if len(found) >= n {
			return found[len(found)-1]
		}
		select {
		case <-changed:
		case <-deadline:
			r.t.Fatalf("no log record #%d of the kind awaited after %v", n, waitTimeout)
		}
	}
}

// msgIs matches records with that message.
func msgIs(msg string) func(logEntry) bool {
	return func(e logEntry) bool { return e.msg == msg }
}

// childEnviron is the environment for a child run of the test binary:
// the race detector, if on, is told not to linger a second at exit.
func childEnviron() []string {
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// copyExecutable copies the test binary into a directory every user may
// read, for children that run under another uid.
func copyExecutable(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(dir, "daemon.test")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
