package abuse

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Bounds on waiting; generous because the VM emulates its CPUs.
const (
	startTimeout = 60 * time.Second // daemon start-up
	waitTimeout  = 30 * time.Second // a state the daemon reaches by itself
	rpcTimeout   = 30 * time.Second // one rpc, or one phase of a test
)

// daemon is a running nsbrokerd with its admin socket in a temporary
// directory and its metrics on a loopback port.
type daemon struct {
	*daemontest.Daemon
	pid     int    // its process id
	metrics string // host:port of its metrics listener
}

// startDaemon starts nsbrokerd with args added to the test's own and
// waits until it reports READY=1.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonIn(t, "", args...)
}

// startDaemonIn is startDaemon with the daemon created inside the cgroup
// v2 directory cgroup ("" for the test's own).
func startDaemonIn(t *testing.T, cgroup string, args ...string) *daemon {
	t.Helper()
	testenv.RequireModule(t)
	for _, name := range []string{"nsbrokerd", "ip"} {
		if _, err := exec.LookPath(name); err != nil {
			if testenv.InVM() {
				t.Fatalf("inside the test VM but %s is not on PATH (VM_BINS): %v", name, err)
			}
			t.Skipf("%s is not on PATH: %v", name, err)
		}
	}
	// Not a log line per rpc: thousands of them would cost as much as
	// what is measured.
	dt := daemontest.StartIn(t, startTimeout, cgroup, append([]string{"--metrics-listen", "127.0.0.1:0", "--log-level", "info"}, args...)...)
	d := &daemon{Daemon: dt, pid: listenerPid(t, dt.Admin), metrics: metricsAddr(t, dt.Log)}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", d.pid)); err != nil || strings.TrimSpace(string(comm)) != "nsbrokerd" {
		t.Fatalf("process %d behind the admin socket: comm %q, %v; want nsbrokerd", d.pid, comm, err)
	}
	return d
}

// listenerPid returns the pid of the process listening on a unix socket.
func listenerPid(t *testing.T, path string) int {
	t.Helper()
	return daemontest.ListenerPID(t, path)
}

// metricsAddr finds the metrics address in the daemon's start-up log
// line. The line is written before READY=1 but copied from the daemon's
// stderr pipe by a goroutine of the test, so it may arrive just after.
func metricsAddr(t *testing.T, log *daemontest.SyncBuffer) string {
	t.Helper()
	var addr string
	if !waitFor(waitTimeout, func() bool {
		for _, line := range strings.Split(log.String(), "\n") {
			var l struct{ Msg, Metrics string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "nsbrokerd serving" && l.Metrics != "" {
				addr = l.Metrics
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no metrics address in the daemon's log after %v:\n%s", waitTimeout, log)
	}
	return addr
}

// metric returns the value of the sample whose name and labels are
// exactly series (for example `go_goroutines` or
// `nsbroker_subscribers{namespace="x"}`), or -1 if it is absent.
func (d *daemon) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return v
		}
	}
	return -1
}

// rssKiB is the daemon's resident set size (VmRSS, KiB).
func (d *daemon) rssKiB(t *testing.T) int {
	t.Helper()
	return procStatus(t, d.pid, "VmRSS")
}

// procStatus reads a "kB" or count field of /proc/PID/status.
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			v, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("/proc/%d/status %s: %v", pid, field, err)
			}
			return v
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

// fds lists the daemon's open file descriptors.
func (d *daemon) fds(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid))
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatalf("/proc/%d/fd/%s: %v", d.pid, e.Name(), err)
		}
		fds = append(fds, n)
	}
	slices.Sort(fds)
	return fds
}

// admin dials the admin socket.
func (d *daemon) admin(t *testing.T, opts ...grpc.DialOption) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	return dial(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.Admin)
	}, opts...)
}

// tenant dials the local socket "@nsbroker" inside the namespace, as a
// process there would.
func tenant(t *testing.T, name string, opts ...grpc.DialOption) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	ns := openNetns(t, name)
	return dial(t, func(ctx context.Context) (net.Conn, error) { return dialLocal(ctx, ns) }, opts...)
}

// openNetns opens a named namespace for the rest of the test.
func openNetns(t *testing.T, name string) *nsmgr.Namespace {
	t.Helper()
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// dialLocal connects to @nsbroker inside ns.
func dialLocal(ctx context.Context, ns *nsmgr.Namespace) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "unix", "@nsbroker")
		return err
	})
	return c, err
}

func dial(t *testing.T, dialer func(context.Context) (net.Conn, error), opts ...grpc.DialOption) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	return daemontest.Dial(t, dialer, opts...)
}

// newNetns creates a named namespace, deleted when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	name := testenv.NetnsName()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(nsmgr.NetnsDir, name)); err == nil {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		}
	})
	return name
}

// attach creates a namespace, has the daemon attach it and waits until
// its local socket serves.
func (d *daemon) attach(t *testing.T) string {
	t.Helper()
	name := newNetns(t)
	admin, conn := d.admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	ns, err := admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{
		Name: name,
		Ref:  &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}},
	})
	if err != nil || ns.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY {
		t.Fatalf("AttachNamespace %s: got %v, %v; want a ready namespace", name, ns, err)
	}
	waitServing(t, conn, name)
	return name
}

// waitServing waits until the daemon's health service says name is SERVING.
func waitServing(t *testing.T, conn *grpc.ClientConn, name string) {
	t.Helper()
	daemontest.WaitServing(t, conn, name, waitTimeout)
}

// stats returns the namespace's counters.
func stats(t *testing.T, admin nsbrokerv1.BrokerClient, name string) *nsbrokerv1.NamespaceStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := admin.Stats(ctx, &nsbrokerv1.StatsRequest{Namespace: name})
	if err != nil || len(resp.GetNamespaces()) != 1 {
		t.Fatalf("Stats %s: got %v, %v; want one namespace", name, resp, err)
	}
	return resp.GetNamespaces()[0]
}

// waitFor polls cond every 10 ms until it holds or timeout passes, and
// reports whether it held.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// waitSubscribers waits until the namespace has n subscriptions, that is
// until every subscriber started has joined its groups in the kernel.
func waitSubscribers(t *testing.T, admin nsbrokerv1.BrokerClient, name string, n uint32) {
	t.Helper()
	var got uint32
	if !waitFor(waitTimeout, func() bool {
		got = stats(t, admin, name).GetDaemon().GetSubscribers()
		return got == n
	}) {
		t.Fatalf("namespace %s: %d subscribers after %v, want %d", name, got, waitTimeout, n)
	}
}

// rawPublisher opens a netlink socket to the module inside the named
// namespace, bypassing the daemon: it publishes as fast as the kernel
// takes it.
func rawPublisher(t *testing.T, name string) *family.Conn {
	t.Helper()
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := family.Dial(&family.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// publishRaw publishes n payloads of size bytes to group and returns the
// last sequence number.
func publishRaw(t *testing.T, c *family.Conn, group uint32, n, size int) uint64 {
	t.Helper()
	payload := make([]byte, size)
	var last uint64
	for i := range n {
		r, err := c.Publish(group, payload)
		if err != nil {
			t.Fatalf("raw publish %d of %d: %v", i+1, n, err)
		}
		last = r.Seq
	}
	return last
}

// subscribe opens a Subscribe stream and waits for its response headers,
// after which every publish reaches it.
func subscribe(t *testing.T, ctx context.Context, c nsbrokerv1.BrokerClient, name string, groups ...uint32) grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse] {
	t.Helper()
	stream, err := openSubscribe(ctx, c, name, groups...)
	if err != nil {
		t.Fatalf("Subscribe %s %v: %v", name, groups, err)
	}
	return stream
}

// openSubscribe opens a Subscribe stream and returns it once its response
// headers came, or the status it ended with instead (a refusal comes
// without headers).
func openSubscribe(ctx context.Context, c nsbrokerv1.BrokerClient, name string, groups ...uint32) (grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse], error) {
	stream, err := c.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: name, Groups: groups})
	if err != nil {
		return nil, err
	}
	md, err := stream.Header()
	if err != nil {
		return nil, err
	}
	if md == nil { // ended without headers: Recv has its status
		_, err := stream.Recv()
		if err == nil {
			err = fmt.Errorf("stream ended without headers but with a message")
		}
		return nil, err
	}
	return stream, nil
}

// median returns the median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// coverage checks a subscriber's stream against the sequence numbers of
// its groups: every number must arrive exactly once, as an event or
// inside a gap, in order. A number that is skipped is a silent loss.
type coverage struct {
	next   map[uint32]uint64 // per group: the number expected next
	events uint64            // events received
	lost   map[nsbrokerv1.LossReason]uint64
	gaps   int
	errs   []string // violations, as want/got
}

func newCoverage(first map[uint32]uint64) *coverage {
	return &coverage{next: first, lost: map[nsbrokerv1.LossReason]uint64{}}
}

func (c *coverage) add(resp *nsbrokerv1.SubscribeResponse) {
	if ev := resp.GetEvent(); ev != nil {
		c.events++
		g, seq := ev.GetGroup(), ev.GetSeq()
		if want, ok := c.next[g]; !ok || seq != want {
			c.errs = append(c.errs, fmt.Sprintf("group %d: got event seq %d, want seq %d (or a gap from it)", g, seq, want))
		}
		c.next[g] = seq + 1
		return
	}
	gap := resp.GetGap()
	g := gap.GetGroup()
	c.gaps++
	if want, ok := c.next[g]; !ok || gap.GetFromSeq() != want || gap.GetToSeq() < gap.GetFromSeq() {
		c.errs = append(c.errs, fmt.Sprintf("group %d: got gap %d-%d (%v), want a closed gap from %d", g, gap.GetFromSeq(), gap.GetToSeq(), gap.GetReason(), want))
	}
	if gap.GetToSeq() >= gap.GetFromSeq() {
		c.lost[gap.GetReason()] += gap.GetToSeq() - gap.GetFromSeq() + 1
		c.next[g] = gap.GetToSeq() + 1
	}
}

// covered reports whether every number up to last[group] has been
// accounted for.
func (c *coverage) covered(last map[uint32]uint64) bool {
	for g, l := range last {
		if c.next[g] <= l {
			return false
		}
	}
	return true
}

// lostTotal is the number of events the gaps reported.
func (c *coverage) lostTotal() uint64 {
	var n uint64
	for _, v := range c.lost {
		n += v
	}
	return n
}
