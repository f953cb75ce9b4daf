package fault

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationRestartFDStore: nsbrokerd killed with SIGKILL and started
// again at once, as systemd's Restart= would, with the test playing the
// service manager's fd store: the daemon hands it every listening socket
// (FDSTORE=1, FDNAME=...) and the test passes them back to the next start
// (LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID). See testRestart for what must
// hold.
func TestIntegrationRestartFDStore(t *testing.T) {
	requireDaemon(t)
	testRestart(t, &fdStoreRestart{m: daemontest.NewServiceManager(t)})
}

// TestIntegrationRestartHandover: a planned upgrade. A second nsbrokerd
// started with the same admin socket directory and state file takes the
// first one's listening sockets over the handover socket; the first
// drains and exits. See testRestart for what must hold.
func TestIntegrationRestartHandover(t *testing.T) {
	requireDaemon(t)
	testRestart(t, &handoverRestart{})
}

// restarter starts nsbrokerd and replaces it by another process, in one
// of the two ways the listening sockets outlive a daemon.
type restarter interface {
	// start starts the first daemon with args and waits for READY=1.
	start(t *testing.T, admin string, args []string) *incarnation
	// restart replaces the running daemon and returns the new one once it
	// says READY=1 and the old one is gone.
	restart(t *testing.T) *incarnation
	// from is how the new daemon logs where its sockets came from.
	from() string
}

// incarnation is one nsbrokerd process.
type incarnation struct {
	pid  int
	log  *daemontest.SyncBuffer
	stop func(t *testing.T) // SIGTERM, and a clean exit
}

// testRestart runs nsbrokerd with three namespaces: one named by
// --attach, one attached through AttachNamespace by name, one by pid: (a
// process inside it). Squatters of uid 65534, one in each namespace, bind
// @nsbroker in a loop from then on; a raw publisher in the first
// namespace and tenants of the other two publishing through the daemon
// keep going; a tenant subscribes with a resume point. Then r restarts
// the daemon. It must hold that:
//   - no squatter ever binds @nsbroker, though each tried throughout the
//     restart;
//   - the new daemon took every listening socket from its predecessor, by
//     the way r says;
//   - every namespace is attached after, under the same name, as the same
//     namespace (inode, cookie), READY with its local socket OPEN, and its
//     tenant's @nsbroker answers from it;
//   - the subscriber's stream ends with UNAVAILABLE, and resumed from the
//     last number it saw, it accounts for every number the raw publisher
//     published since it subscribed: as an event or inside a gap with the
//     exact range, none twice;
//   - the publishers through the daemon publish again after the restart.
func testRestart(t *testing.T, r restarter) {
	const (
		loadGroup = 3
		interval  = 5 * time.Millisecond // each publisher's pace
		warm      = 20                   // events the subscriber gets before the restart
		after     = 50                   // raw publishes once the new daemon serves
		afterAPI  = 10                   // publishes through the daemon, each, after the restart
	)
	unit := requireDaemon(t)
	dir := t.TempDir()
	admin := filepath.Join(dir, "run", "nsbroker.sock")
	args := []string{"--state-file", filepath.Join(dir, "attachments.json")}

	listed, byName, forPID := newNetns(t), newNetns(t), newNetns(t)
	sleeper := exec.Command("ip", "netns", "exec", forPID.name, "sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pid := sleeper.Process.Pid
	eventually(t, waitTimeout, "the sleeper inside "+forPID.name, func() (bool, string) {
		ns, err := nsmgr.Open(nsmgr.Ref{PID: pid})
		if err != nil {
			return false, err.Error()
		}
		defer ns.Close()
		return ns.Inode() == forPID.inode, fmt.Sprintf("pid %d in net:[%d]", pid, ns.Inode())
	})

	old := r.start(t, admin, append(args, "--attach", listed.name))
	adminClient, adminConn := dial(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", admin)
	})
	type attachment struct {
		name  string
		inode uint32
		ref   nsmgr.Ref // how a process there is found
	}
	all := []attachment{
		{listed.name, listed.inode, nsmgr.Ref{Name: listed.name}},
		{byName.name, byName.inode, nsmgr.Ref{Name: byName.name}},
		{"by-pid", forPID.inode, nsmgr.Ref{PID: pid}},
	}
	for _, a := range []struct {
		name string
		ref  *nsbrokerv1.NamespaceRef
	}{
		{byName.name, &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: byName.name}}},
		{"by-pid", &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Pid{Pid: int32(pid)}}},
	} {
		if _, err := adminClient.AttachNamespace(rpcContext(t), &nsbrokerv1.AttachNamespaceRequest{Name: a.name, Ref: a.ref}); err != nil {
			t.Fatalf("attach %s: %v", a.name, err)
		}
	}
	for _, a := range all {
		waitServing(t, adminConn, a.name)
	}
	before := namespaces(t, adminClient)
	if len(before) != len(all) {
		t.Fatalf("attached before the restart: %q, want %d", before, len(all))
	}

	// The squatters start once the daemon holds every name: from now on
	// no bind of theirs may succeed.
	var squatters []*squatter
	for _, a := range all {
		squatters = append(squatters, startSquatter(t, a.name, a.ref, a.inode))
	}
	for _, sq := range squatters {
		eventually(t, waitTimeout, "the squatter in "+sq.ns+" trying", func() (bool, string) {
			c := sq.counts(t)
			return c.tries >= 100, c.String()
		})
	}

	tn := newTenant(t, listed.name)
	point := firstPoint(t, tn)
	ctx, stopStream := context.WithCancel(testContext(t))
	defer stopStream()
	first := recordStream(openStream(t, ctx, tn, point))
	raw := publishLoop(listed.name, interval, dialIn(t, unit, listed.name).publish(resumeGroup))
	apiPubs := map[string]*publisher{}
	for _, a := range all[1:] {
		apiPubs[a.name] = publishLoop(a.name, interval, daemonPublish(newTenantIn(t, a.ref), "", loadGroup))
	}
	first.waitEvents(t, warm)
	for name, p := range apiPubs {
		eventually(t, waitTimeout, "publishes through the daemon in "+name, func() (bool, string) {
			return p.count() >= afterAPI, fmt.Sprintf("%d", p.count())
		})
	}

	triesBefore := make([]squatCount, len(squatters))
	for i, sq := range squatters {
		triesBefore[i] = sq.counts(t)
	}
	began := time.Now()
	cur := r.restart(t)
	took := time.Since(began)
	if cur.pid == old.pid {
		t.Fatalf("pid %d serves before and after the restart", cur.pid)
	}
	for i, sq := range squatters {
		c := sq.counts(t)
		t.Logf("squatter in %s during the restart (%v): %d tries, %d wins", sq.ns, took.Round(time.Millisecond), c.tries-triesBefore[i].tries, c.wins-triesBefore[i].wins)
		if c.tries == triesBefore[i].tries {
			t.Errorf("squatter in %s did not try during the restart: the test proves nothing", sq.ns)
		}
	}
	restarted := time.Now()

	// The sockets came from the predecessor: admin, handover, and
	// @nsbroker and the filesystem socket of each namespace.
	if e := logLine(cur.log.String(), "inherited listening sockets"); e == nil || e["from"] != r.from() || e["count"] != float64(2+2*len(all)) {
		t.Errorf("new daemon: want %d sockets inherited from the %s, got log line %v", 2+2*len(all), r.from(), e)
	}
	if logLine(cur.log.String(), "local socket taken by another process; retrying") != nil {
		t.Errorf("new daemon found @nsbroker taken")
	}

	// The subscriber's stream ended with the old daemon.
	items, err := first.wait(t)
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("the stream on the old daemon ended with %v (%v), want %v", code, err, codes.Unavailable)
	}

	// The load goes on against the new daemon, then stops.
	eventually(t, waitTimeout, fmt.Sprintf("%d raw publishes after the restart", after), func() (bool, string) {
		n := publishedAfter(raw, restarted)
		return n >= after, fmt.Sprintf("%d", n)
	})
	for name, p := range apiPubs {
		eventually(t, waitTimeout, fmt.Sprintf("%d publishes through the new daemon in %s", afterAPI, name), func() (bool, string) {
			n := publishedAfter(p, restarted)
			p.mu.Lock()
			defer p.mu.Unlock()
			return n >= afterAPI, fmt.Sprintf("%d, %d failed (last: %v)", n, p.failed, p.last)
		})
	}
	for name, p := range apiPubs {
		ok := p.halt()
		t.Logf("%s: %d publishes through the daemon, %d failed during the restart", name, len(ok), p.failed)
	}
	published := raw.halt()
	var seqs []uint64
	for _, pub := range published {
		seqs = append(seqs, pub.seq)
	}
	want := accounting{from: point.Seq + 1, to: seqs[len(seqs)-1]}
	if !slices.Equal(seqs, seqRange(want.from, want.to)) {
		t.Fatalf("raw publishes got %d numbers, want consecutive %d..%d (the only publisher of the group there)", len(seqs), want.from, want.to)
	}

	// Resumed from the last number it saw, the subscriber accounts for
	// every number published since it subscribed.
	seen := lastAccounted(items, point.Seq)
	got1 := accountItems(t, items, accounting{from: want.from, to: seen}, items)
	resumed, _ := resume(t, tn, &nsbrokerv1.ResumePoint{Group: resumeGroup, Instance: point.Instance, Seq: seen}, want.to+1)
	got2 := account(t, resumed, accounting{from: seen + 1, to: want.to})
	t.Logf("subscriber: %d..%d before the restart (%d events, gaps %q); resumed from %d: %d..%d (%d events, gaps %q)",
		want.from, seen, got1.events, got1.gaps, seen, seen+1, want.to, got2.events, got2.gaps)
	if got1.events+got2.events == 0 {
		t.Errorf("the subscriber received no event at all")
	}

	// Every namespace is back, the same one under the same name, and
	// serves its tenant through @nsbroker.
	if after := namespaces(t, adminClient); !slices.Equal(after, before) {
		t.Errorf("namespaces after the restart:\n got %q\nwant %q", after, before)
	}
	for _, a := range all {
		tn := newTenantIn(t, a.ref)
		payload := []byte("after the restart: " + a.name)
		r, err := tn.Echo(rpcContext(t), &nsbrokerv1.EchoRequest{Payload: payload})
		if err != nil {
			t.Errorf("tenant Echo in %s: %v", a.name, err)
		} else if r.GetNetnsInode() != uint64(a.inode) || string(r.GetPayload()) != string(payload) {
			t.Errorf("tenant Echo in %s: net:[%d] %q, want net:[%d] %q", a.name, r.GetNetnsInode(), r.GetPayload(), a.inode, payload)
		}
		tn.close()
	}

	for _, sq := range squatters {
		c := sq.stop(t)
		t.Logf("squatter in %s (uid %d): %s", sq.ns, nobody, c)
		if c.wins != 0 {
			t.Errorf("squatter in %s bound @nsbroker %d times, the first at try %d", sq.ns, c.wins, c.firstWin)
		}
		if c.otherErrs != 0 {
			t.Errorf("squatter in %s: %d binds failed otherwise than EADDRINUSE, the last: %s", sq.ns, c.otherErrs, c.lastErr)
		}
	}
	cur.stop(t)
}

// namespaces lists the attached namespaces: name, inode, cookie, state
// and local socket state.
func namespaces(t *testing.T, admin nsbrokerv1.BrokerClient) []string {
	t.Helper()
	list, err := admin.ListNamespaces(rpcContext(t), &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ns := range list.GetNamespaces() {
		out = append(out, fmt.Sprintf("%s inode %d cookie %d %v local socket %v", ns.GetName(), ns.GetInode(), ns.GetCookie(),
			ns.GetState(), ns.GetLocalSocket().GetState()))
	}
	slices.Sort(out)
	return out
}

// publishedAfter counts p's publishes sent after t.
func publishedAfter(p *publisher, t time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, pub := range p.ok {
		if pub.started.After(t) {
			n++
		}
	}
	return n
}

// lastAccounted is the last number items account for (an event's, or the
// end of a gap), or from if none.
func lastAccounted(items []*nsbrokerv1.SubscribeResponse, from uint64) uint64 {
	for i := len(items) - 1; i >= 0; i-- {
		if ev := items[i].GetEvent(); ev != nil {
			return ev.GetSeq()
		}
		if g := items[i].GetGap(); g != nil {
			return g.GetToSeq()
		}
	}
	return from
}

// logLine returns the first JSON log line with message msg.
func logLine(log, msg string) map[string]any {
	for _, line := range strings.Split(log, "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["msg"] == msg {
			return e
		}
	}
	return nil
}

// streamRecord records what one Subscribe stream receives until it ends.
type streamRecord struct {
	changed chan struct{} // capacity 1: something was recorded

	mu    sync.Mutex
	items []*nsbrokerv1.SubscribeResponse // guarded by mu
	err   error                           // guarded by mu: how it ended
	done  bool                            // guarded by mu
}

func recordStream(s interface {
	Recv() (*nsbrokerv1.SubscribeResponse, error)
}) *streamRecord {
	r := &streamRecord{changed: make(chan struct{}, 1)}
	go func() {
		for {
			resp, err := s.Recv()
			r.mu.Lock()
			if err != nil {
				r.err, r.done = err, true
			} else {
				r.items = append(r.items, resp)
			}
			r.mu.Unlock()
			select {
			case r.changed <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// waitFor waits until cond holds for what was recorded.
func (r *streamRecord) waitFor(t *testing.T, what string, cond func(items []*nsbrokerv1.SubscribeResponse, done bool) bool) ([]*nsbrokerv1.SubscribeResponse, error) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		r.mu.Lock()
		items, err, done := slices.Clone(r.items), r.err, r.done
		r.mu.Unlock()
		if cond(items, done) {
			return items, err
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("waited %v for %s; got %d items, ended: %v", waitTimeout, what, len(items), err)
		}
	}
}

func (r *streamRecord) waitEvents(t *testing.T, n int) {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("%d events", n), func(items []*nsbrokerv1.SubscribeResponse, _ bool) bool {
		events := 0
		for _, it := range items {
			if it.GetEvent() != nil {
				events++
			}
		}
		return events >= n
	})
}

// wait waits until the stream ends, and returns what it received and how
// it ended.
func (r *streamRecord) wait(t *testing.T) ([]*nsbrokerv1.SubscribeResponse, error) {
	t.Helper()
	return r.waitFor(t, "the stream to end", func(_ []*nsbrokerv1.SubscribeResponse, done bool) bool { return done })
}

// The squatter is the test binary run again with squatterEnv set to the
// abstract socket name, as uid and gid 65534 inside a tenant namespace:
// what any process there may be. It binds the name in a loop, as fast as
// it can, closing the socket again at once when a bind succeeds (a win),
// and counts. Each line on its stdin asks for the counts, answered by a
// line on its stdout; at the end of its stdin it answers once more and
// exits.
const squatterEnv = "NSB_FAULT_SQUATTER"

func runSquatter(name string) int {
	if uid, gid := os.Getuid(), os.Getgid(); uid != nobody || gid != nobody {
		fmt.Fprintf(os.Stderr, "squatter: uid %d gid %d, want %d\n", uid, gid, nobody)
		return 2
	}
	var tries, wins, firstWin, otherErrs atomic.Uint64
	var lastErr atomic.Value
	lastErr.Store("")
	go func() {
		for {
			n := tries.Add(1)
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Bind(fd, &unix.SockaddrUnix{Name: name})
				unix.Close(fd)
			}
			switch {
			case err == nil:
				wins.Add(1)
				firstWin.CompareAndSwap(0, n)
			case errors.Is(err, unix.EADDRINUSE):
			default:
				otherErrs.Add(1)
				lastErr.Store(err.Error())
			}
		}
	}()
	report := func() {
		fmt.Printf("%d %d %d %d %q\n", tries.Load(), wins.Load(), firstWin.Load(), otherErrs.Load(), lastErr.Load())
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		report()
	}
	report()
	return 0
}

// squatCount is what a squatter counted.
type squatCount struct {
	tries, wins, firstWin, otherErrs uint64
	lastErr                          string
}

func (c squatCount) String() string {
	s := fmt.Sprintf("%d tries, %d wins", c.tries, c.wins)
	if c.wins > 0 {
		s += fmt.Sprintf(", the first at try %d", c.firstWin)
	}
	return s
}

// squatter is a running squatter process.
type squatter struct {
	ns     string
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *daemontest.SyncBuffer
}

// startSquatter starts a squatter in the namespace ref names (attached as
// name, inode ino): forked from a thread inside it, so that it is there
// from its start, and dropping to uid and gid 65534 with no
// supplementary groups before it executes the test binary.
func startSquatter(t *testing.T, name string, ref nsmgr.Ref, ino uint32) *squatter {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := nsmgr.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	sq := &squatter{ns: name, stderr: &daemontest.SyncBuffer{}}
	sq.cmd = exec.Command(exe, "-test.run=^$")
	sq.cmd.Env = append(os.Environ(), squatterEnv+"=@nsbroker")
	sq.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	sq.cmd.Stderr = sq.stderr
	if sq.in, err = sq.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := sq.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sq.out = bufio.NewReader(out)
	if err := ns.Do(sq.cmd.Start); err != nil {
		t.Fatalf("start the squatter in %s: %v", name, err)
	}
	t.Cleanup(func() {
		sq.cmd.Process.Kill()
		sq.cmd.Wait()
	})
	// What it is: in the namespace, and nobody.
	p := sq.cmd.Process.Pid
	st, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", p))
	if err != nil {
		t.Fatalf("squatter %d: %v", p, err)
	}
	if got := st.Sys().(*syscall.Stat_t).Ino; got != uint64(ino) {
		t.Fatalf("squatter %d: in net:[%d], want %s's net:[%d]", p, got, name, ino)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) != 4 || slices.ContainsFunc(f, func(id string) bool { return id != strconv.Itoa(nobody) }) {
				t.Fatalf("squatter %d: uids %q, want %d", p, rest, nobody)
			}
		}
	}
	return sq
}

// counts asks the squatter what it counted so far.
func (sq *squatter) counts(t *testing.T) squatCount {
	t.Helper()
	if _, err := io.WriteString(sq.in, "\n"); err != nil {
		t.Fatalf("squatter in %s: %v; stderr: %s", sq.ns, err, sq.stderr)
	}
	return sq.read(t)
}

func (sq *squatter) read(t *testing.T) squatCount {
	t.Helper()
	line, err := sq.out.ReadString('\n')
	if err != nil {
		t.Fatalf("squatter in %s: %v; stderr: %s", sq.ns, err, sq.stderr)
	}
	var c squatCount
	if _, err := fmt.Sscanf(line, "%d %d %d %d %q", &c.tries, &c.wins, &c.firstWin, &c.otherErrs, &c.lastErr); err != nil {
		t.Fatalf("squatter in %s said %q: %v", sq.ns, line, err)
	}
	return c
}

// stop ends the squatter and returns its final counts.
func (sq *squatter) stop(t *testing.T) squatCount {
	t.Helper()
	sq.in.Close()
	c := sq.read(t)
	if err := sq.cmd.Wait(); err != nil {
		t.Errorf("squatter in %s: %v; stderr: %s", sq.ns, err, sq.stderr)
	}
	return c
}

// handoverRestart starts the daemons with the test's own $NOTIFY_SOCKET
// and no fd store; a new one takes over from the running one.
type handoverRestart struct {
	admin string
	args  []string
	cur   *daemon
}

func (h *handoverRestart) from() string { return "handover" }

func (h *handoverRestart) start(t *testing.T, admin string, args []string) *incarnation {
	h.admin, h.args = admin, args
	h.cur = startDaemon(t, admin, args...)
	return h.incarnation()
}

func (h *handoverRestart) incarnation() *incarnation {
	d := h.cur
	return &incarnation{pid: d.Pid(), log: d.Log, stop: func(t *testing.T) { d.Stop(t, waitTimeout) }}
}

func (h *handoverRestart) restart(t *testing.T) *incarnation {
	t.Helper()
	old := h.cur
	h.cur = startDaemon(t, h.admin, h.args...)
	select {
	case <-old.Exited():
	case <-time.After(waitTimeout):
		t.Fatalf("the old daemon still runs %v after its successor said READY=1", waitTimeout)
	}
	if logLine(old.Log.String(), "successor serves; draining") == nil {
		t.Errorf("the old daemon did not log that it drains for its successor")
	}
	return h.incarnation()
}

// fdStoreRestart runs the daemons under a service manager with an fd
// store; a restart is kill -9 and a new start with what the store holds.
type fdStoreRestart struct {
	m     *daemontest.ServiceManager
	admin string
	args  []string
	cur   *daemontest.Managed
}

func (f *fdStoreRestart) from() string { return "service manager" }

func (f *fdStoreRestart) start(t *testing.T, admin string, args []string) *incarnation {
	t.Helper()
	f.admin, f.args = admin, args
	f.cur = f.m.Start(t, startTimeout, nil, append([]string{"nsbrokerd",
		"--admin-socket", admin, "--log-format", "json", "--log-level", "debug"}, args...)...)
	d := f.cur
	return &incarnation{pid: d.Pid(), log: d.Log, stop: func(t *testing.T) { d.Stop(t, waitTimeout) }}
}

func (f *fdStoreRestart) restart(t *testing.T) *incarnation {
	t.Helper()
	f.cur.Kill(t, waitTimeout)
	names := f.m.Names()
	t.Logf("the fd store holds %d descriptors: %s", len(names), strings.Join(names, " "))
	return f.start(t, f.admin, f.args)
}
