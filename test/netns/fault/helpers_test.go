package fault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/metadata"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Bounds on waiting; generous because the VM emulates its CPUs. The bounds
// the tests assert are their own constants.
const (
	startTimeout = 60 * time.Second // daemon start-up
	waitTimeout  = 30 * time.Second // a state the system reaches by itself
	rpcTimeout   = 30 * time.Second // one request-reply rpc
	leakTimeout  = 60 * time.Second // pernet exits run in a workqueue
)

// requireDaemon fails (in the VM) or skips unless the module is loaded and
// nsbrokerd and ip are on PATH. It returns the module's unit.
func requireDaemon(t *testing.T) int {
	t.Helper()
	unit := testenv.RequireModule(t)
	for _, name := range []string{"nsbrokerd", "ip"} {
		if _, err := exec.LookPath(name); err != nil {
			if testenv.InVM() {
				t.Fatalf("inside the test VM but %s is not on PATH (VM_BINS): %v", name, err)
			}
			t.Skipf("%s is not on PATH: %v", name, err)
		}
	}
	return unit
}

// testContext is cancelled when the test ends.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// rpcContext bounds one request-reply rpc.
func rpcContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}

// netns is a named namespace the test made with ip netns add.
type netns struct {
	name  string
	inode uint32
}

// newNetns creates a named namespace, deleted when the test ends unless
// the test deleted it.
func newNetns(t *testing.T) netns {
	t.Helper()
	name := testenv.NetnsName()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(nsmgr.NetnsDir, name)); err == nil {
			delNetns(t, name)
		}
	})
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	return netns{name, ns.Inode()}
}

func delNetns(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", name, err, out)
	}
}

// delNetnsTimed runs ip netns del and returns when the name was removed,
// as an inotify watch on the directory saw it: the moment the daemon can
// notice, without the time the command took to start.
func delNetnsTimed(t *testing.T, name string) (removed, started time.Time) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, nsmgr.NetnsDir, unix.IN_DELETE); err != nil {
		t.Fatal(err)
	}
	seen := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			at := time.Now()
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				if strings.TrimRight(string(nameBytes), "\x00") == name {
					seen <- at
					return
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
	}()
	started = time.Now()
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", name, err, out)
	}
	select {
	case removed = <-seen:
	case <-time.After(waitTimeout):
		t.Fatalf("ip netns del %s returned but no IN_DELETE for it", name)
	}
	return removed, started
}

// daemon is a running nsbrokerd whose admin socket path the test chose,
// so that a restart with the same arguments serves the same path.
type daemon struct {
	*daemontest.Daemon
	admin string
	args  []string
}

// startDaemon starts nsbrokerd with its admin socket at admin and the
// other args, and waits for READY=1.
func startDaemon(t *testing.T, admin string, args ...string) *daemon {
	t.Helper()
	all := append([]string{"--admin-socket", admin}, args...)
	return &daemon{daemontest.Start(t, startTimeout, all...), admin, args}
}

// restart starts a new nsbrokerd with the same arguments.
func (d *daemon) restart(t *testing.T) *daemon {
	t.Helper()
	return startDaemon(t, d.admin, d.args...)
}

// pid asks the kernel who serves the admin socket (SO_PEERCRED).
func (d *daemon) pid(t *testing.T) int {
	t.Helper()
	return daemontest.ListenerPID(t, d.admin)
}

// kill sends SIGKILL and waits until the process is gone.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(d.pid(t), syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL nsbrokerd: %v", err)
	}
	select {
	case <-d.Exited():
	case <-time.After(waitTimeout):
		t.Fatalf("nsbrokerd still running %v after SIGKILL", waitTimeout)
	}
}

// fastBackoff makes a client re-dial a restarted daemon promptly instead
// of after gRPC's default back-off of up to two minutes.
var fastBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
	MinConnectTimeout: 5 * time.Second,
})

// client dials the admin socket; the connection is closed when the test
// ends.
func (d *daemon) client(t *testing.T) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	return dial(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.admin)
	})
}

// tenant is a client inside a namespace, reaching the daemon through the
// namespace's local socket "@nsbroker" as a process there would. Its
// sockets live in the namespace (and keep it alive) until close.
type tenant struct {
	nsbrokerv1.BrokerClient
	conn *grpc.ClientConn
	ns   *nsmgr.Namespace
}

func newTenant(t *testing.T, name string) *tenant {
	t.Helper()
	return newTenantIn(t, nsmgr.Ref{Name: name})
}

// newTenantIn is newTenant for a namespace named any way.
func newTenantIn(t *testing.T, ref nsmgr.Ref) *tenant {
	t.Helper()
	ns, err := nsmgr.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	client, conn := dial(t, func(ctx context.Context) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "unix", "@nsbroker")
			return err
		})
		return c, err
	})
	tn := &tenant{client, conn, ns}
	t.Cleanup(tn.close)
	return tn
}

func (tn *tenant) close() {
	tn.conn.Close()
	tn.ns.Close()
}

func dial(t *testing.T, dialer func(context.Context) (net.Conn, error)) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	return daemontest.Dial(t, dialer, fastBackoff)
}

// waitServing waits until the daemon's health service says name is SERVING.
func waitServing(t *testing.T, conn *grpc.ClientConn, name string) {
	t.Helper()
	daemontest.WaitServing(t, conn, name, waitTimeout)
}

// waitSubscribers waits until the namespace has n subscriptions.
func waitSubscribers(t *testing.T, admin nsbrokerv1.BrokerClient, name string, n uint32) {
	t.Helper()
	eventually(t, waitTimeout, fmt.Sprintf("namespace %s with %d subscribers", name, n), func() (bool, string) {
		ns, err := admin.GetNamespace(rpcContext(t), &nsbrokerv1.GetNamespaceRequest{Namespace: name})
		if err != nil {
			return false, err.Error()
		}
		return ns.GetSubscribers() == n, fmt.Sprintf("%d subscribers", ns.GetSubscribers())
	})
}

// eventually polls cond until it holds, failing with its last word after
// timeout. For states that announce themselves by no signal the test can
// wait on (a kernel counter, a peer's bookkeeping).
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// moduleInstances is the module's count of live per-namespace instances,
// asked in the initial namespace.
func moduleInstances(t *testing.T) uint32 {
	t.Helper()
	c, err := family.Dial(nil)
	if err != nil {
		t.Fatalf("dial the module in the initial namespace: %v", err)
	}
	defer c.Close()
	st, err := c.Stats()
	if err != nil {
		t.Fatalf("STATS: %v", err)
	}
	return st.Instances
}

// waitInstances waits until the module counts at most want live
// instances, and returns the count and how long that took; the pernet
// exit of a deleted namespace runs asynchronously.
func waitInstances(t *testing.T, want uint32) (uint32, time.Duration) {
	t.Helper()
	start := time.Now()
	var got uint32
	eventually(t, leakTimeout, fmt.Sprintf("at most %d live module instances (leak check)", want), func() (bool, string) {
		got = moduleInstances(t)
		return got <= want, fmt.Sprintf("%d instances", got)
	})
	return got, time.Since(start)
}

// item is one thing a subscription received.
type item struct {
	ev  *nsbrokerv1.Event
	gap *nsbrokerv1.Gap
}

func (it item) String() string {
	if it.gap != nil {
		g := it.gap
		return fmt.Sprintf("gap %d-%d %s", g.FromSeq, g.ToSeq, strings.TrimPrefix(g.Reason.String(), "LOSS_REASON_"))
	}
	return fmt.Sprintf("event %d", it.ev.Seq)
}

// generation is one Subscribe stream of a subscriber.
type generation struct {
	started time.Time // when its headers came: the subscription was in place
	items   []item
	err     error     // how it ended; nil while it runs
	ended   time.Time // when
}

// subscriber subscribes to one group of a namespace and records what it
// receives. A resubscribing one subscribes again whenever its stream ends,
// as a client of a restarting daemon does.
type subscriber struct {
	who     string
	tenant  bool          // its namespace is its own: it came through the local socket
	changed chan struct{} // capacity 1: something was recorded

	mu      sync.Mutex
	gens    []*generation // guarded by mu
	refused []error       // guarded by mu: Subscribe calls that failed before their headers
	done    bool          // guarded by mu: the goroutine returned
}

// subscribe starts a subscriber until ctx ends. ns is the request's
// namespace field ("" for a tenant's own).
func subscribe(ctx context.Context, who string, client nsbrokerv1.BrokerClient, ns string, group uint32, resubscribe bool) *subscriber {
	s := &subscriber{who: who, tenant: ns == "", changed: make(chan struct{}, 1)}
	go s.run(ctx, client, &nsbrokerv1.SubscribeRequest{Namespace: ns, Groups: []uint32{group}}, resubscribe)
	return s
}

func (s *subscriber) run(ctx context.Context, client nsbrokerv1.BrokerClient, req *nsbrokerv1.SubscribeRequest, resubscribe bool) {
	defer s.update(func() { s.done = true })
	for ctx.Err() == nil {
		stream, err := client.Subscribe(ctx, req, grpc.WaitForReady(true))
		if err == nil {
			// Headers mean the subscription is in place; a stream that
			// failed before has none, and Recv says why.
			var md metadata.MD
			if md, err = stream.Header(); err == nil && md == nil {
				_, err = stream.Recv()
				if err == nil {
					err = errors.New("an item before the headers")
				}
			}
		}
		if err != nil {
			if !resubscribe {
				g := &generation{err: err, ended: time.Now()}
				s.update(func() { s.gens = append(s.gens, g) })
				return
			}
			// Not attached yet after a restart, say: try again soon.
			s.update(func() { s.refused = append(s.refused, err) })
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		g := &generation{started: time.Now()}
		s.update(func() { s.gens = append(s.gens, g) })
		for {
			r, err := stream.Recv()
			if err != nil {
				s.update(func() { g.err, g.ended = err, time.Now() })
				break
			}
			s.update(func() { g.items = append(g.items, item{r.GetEvent(), r.GetGap()}) })
		}
		if !resubscribe {
			return
		}
	}
}

func (s *subscriber) update(f func()) {
	s.mu.Lock()
	f()
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// snapshot returns copies of the generations.
func (s *subscriber) snapshot() []generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]generation, len(s.gens))
	for i, g := range s.gens {
		out[i] = *g
		out[i].items = append([]item(nil), g.items...)
	}
	return out
}

// refusals returns the errors of the Subscribe calls that failed before
// their headers.
func (s *subscriber) refusals() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.refused...)
}

// waitFor waits until cond holds for the generations, on every change the
// subscriber records.
func (s *subscriber) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]generation) bool) []generation {
	t.Helper()
	deadline := time.After(timeout)
	for {
		gens := s.snapshot()
		if cond(gens) {
			return gens
		}
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("%s: waited %v for %s; got %s", s.who, timeout, what, describe(gens))
		}
	}
}

// describe summarises generations for failure messages.
func describe(gens []generation) string {
	var b strings.Builder
	for i, g := range gens {
		fmt.Fprintf(&b, "[stream %d: %d items", i+1, len(g.items))
		if n := len(g.items); n > 0 {
			fmt.Fprintf(&b, ", first %v, last %v", g.items[0], g.items[n-1])
		}
		if g.err != nil {
			fmt.Fprintf(&b, ", ended: %v", g.err)
		}
		b.WriteString("] ")
	}
	if len(gens) == 0 {
		return "no stream"
	}
	return b.String()
}

// split returns the sequence numbers of a generation's events, and its
// gaps.
func (g generation) split() (seqs []uint64, gaps []*nsbrokerv1.Gap) {
	for _, it := range g.items {
		if it.gap != nil {
			gaps = append(gaps, it.gap)
		} else {
			seqs = append(seqs, it.ev.Seq)
		}
	}
	return seqs, gaps
}

// published is one publish that succeeded.
type published struct {
	seq     uint64
	started time.Time // when the publish was sent
}

// publisher publishes to a group in a loop until stopped and records
// every publish that succeeded; failures (a daemon being restarted) are
// counted and retried.
type publisher struct {
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	ok     []published // guarded by mu
	failed int         // guarded by mu
	last   error       // guarded by mu
}

// publishFunc publishes one payload and returns its sequence number.
type publishFunc func(payload []byte) (uint64, error)

// publishLoop publishes every interval (back to back if zero) until stop.
func publishLoop(name string, interval time.Duration, publish publishFunc) *publisher {
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(max(interval, time.Microsecond))
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			start := time.Now()
			seq, err := publish(fmt.Appendf(nil, "%s load %d", name, i))
			p.mu.Lock()
			if err != nil {
				p.failed++
				p.last = err
			} else {
				p.ok = append(p.ok, published{seq, start})
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// halt stops the loop and returns what it published.
func (p *publisher) halt() []published {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]published(nil), p.ok...)
}

// count is how many publishes succeeded so far.
func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ok)
}

// daemonPublish publishes through the daemon.
func daemonPublish(client nsbrokerv1.BrokerClient, ns string, group uint32) publishFunc {
	return func(payload []byte) (uint64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		r, err := client.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: ns, Group: group, Payload: payload})
		if err != nil {
			return 0, err
		}
		return r.GetSeq(), nil
	}
}

// rawConn is a socket to the module inside a namespace, as a process there
// would open it, so the test knows exactly what was published.
type rawConn struct {
	*family.Conn
}

func dialIn(t *testing.T, unit int, name string) rawConn {
	t.Helper()
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := family.Dial(&family.Config{Unit: unit, NetNS: ns.Fd()})
	if err != nil {
		t.Fatalf("dial the module in %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return rawConn{c}
}

func (c rawConn) publish(group uint32) publishFunc {
	return func(payload []byte) (uint64, error) {
		r, err := c.Publish(group, payload)
		if err != nil {
			return 0, err
		}
		return r.Seq, nil
	}
}

// publishN publishes n payloads and returns their sequence numbers.
func (c rawConn) publishN(t *testing.T, group uint32, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		r, err := c.Publish(group, fmt.Appendf(nil, "message %d", i+1))
		if err != nil {
			t.Fatalf("publish %d: %v", i+1, err)
		}
		seqs = append(seqs, r.Seq)
	}
	return seqs
}

// seqRange is lo..hi.
func seqRange(lo, hi uint64) []uint64 {
	var s []uint64
	for q := lo; q <= hi; q++ {
		s = append(s, q)
	}
	return s
}
