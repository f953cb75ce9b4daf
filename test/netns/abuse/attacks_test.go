package abuse

import (
	"bufio"
	"context"
	"fmt"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	nsbrokerd "github.com/nsbroker/nsbroker/daemon"
	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The attacks of issue 12: a hostile tenant, an unprivileged process in an
// attached namespace that reaches nothing but @nsbroker, tries to take the
// shared daemon down. Each test runs the daemon with its default flags in
// a memory cgroup as small as the deployment's, attacks it, and passes
// when the daemon survives (no OOM kill), stays under its memory bound,
// another tenant's echo keeps its speed and the admin can still attach
// and detach.

// deploymentMemory is the memory the deployment gives nsbrokerd: the
// memory limit of the DaemonSet and of the systemd unit.
const deploymentMemory = 512 << 20

// memoryBound is what the daemon can hold with every default limit filled
// at once (nsbrokerd --print-memory-budget): its RSS must stay below it
// under every attack.
func memoryBound() int64 { return nsbrokerd.MemoryBound(nil) }

const (
	nobody = 65534 // the attacker's uid and gid

	attackWindow       = 20 * time.Second // an attack runs at least this long
	attackReadyTimeout = 30 * time.Second // for the attackers to establish their attack (and how long they keep at it)
	adminDeadline      = 10 * time.Second // for one admin attach + detach
	adminEvery         = time.Second      // between two of them
	echoSamples        = 50               // the other tenant's echoes, idle and under attack
	echoTimeout        = 2 * time.Second  // one echo
	echoSpacing        = 20 * time.Millisecond
	// Under attack the echoes are spread over most of the attack window:
	// what is bounded is the other tenant's service while the attack
	// lasts. The burst that establishes an attack (20,000 stream opens in
	// a third of a second) slows the echoes of the next 1-2 s, up to
	// about 200 ms on the test VM; the attack's log line reports the
	// slowest.
	attackEchoSpacing = 300 * time.Millisecond
)

// TestIntegrationAttackHeaderFlood: HTTP/2 header blocks that repeat one
// HPACK-indexed binary header thousands of times, about 7 KB each on the
// wire, decoded by the server into megabytes per stream.
func TestIntegrationAttackHeaderFlood(t *testing.T) {
	runAttack(t, attackSpec{name: "HeaderFlood", kind: attackHeaderFlood, procs: 1})
}

// TestIntegrationAttackAcceptEncoding: requests whose grpc-accept-encoding
// values, repeated through HPACK indexing, cost the server quadratic time.
func TestIntegrationAttackAcceptEncoding(t *testing.T) {
	runAttack(t, attackSpec{name: "AcceptEncoding", kind: attackAcceptEncoding, procs: 1})
}

// TestIntegrationAttackConnections: 20,000 connections held open, from as
// many attacker processes as the descriptor limit of an unprivileged
// process needs.
func TestIntegrationAttackConnections(t *testing.T) {
	const total = 20000
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	per := int(min(lim.Max, total+64)) - 64 // the attacker's own descriptors
	procs := (total + per - 1) / per
	t.Logf("%d attacker processes (descriptor hard limit %d)", procs, lim.Max)
	runAttack(t, attackSpec{name: "Connections", kind: attackConnections, procs: procs, count: func(i int) int {
		return min(per, total-i*per)
	}})
}

// TestIntegrationAttackWatchStreams: 20,000 WatchNamespaces streams on 20
// connections.
func TestIntegrationAttackWatchStreams(t *testing.T) {
	runAttack(t, attackSpec{name: "WatchStreams", kind: attackWatchStreams, procs: 1, count: func(int) int { return 20000 }})
}

// TestIntegrationAttackRPCFlood: Echo rpcs opened without pause for the
// whole attack on 16 connections, by a client that ignores every refusal.
func TestIntegrationAttackRPCFlood(t *testing.T) {
	runAttack(t, attackSpec{name: "RPCFlood", kind: attackRPCFlood, procs: 1, count: func(int) int { return 16 }})
}

// TestIntegrationAttackStuckSubscribers: 64 Subscribe streams that never
// read, each followed by 300 publishes of 16 KiB to their group.
func TestIntegrationAttackStuckSubscribers(t *testing.T) {
	runAttack(t, attackSpec{name: "StuckSubscribers", kind: attackStuck, procs: 1, count: func(int) int { return 64 }})
}

// TestIntegrationAttackManyNamespaces: one user's 64 pods, each in its own
// attached namespace with 64 subscribers. The admin must still be able to
// subscribe.
func TestIntegrationAttackManyNamespaces(t *testing.T) {
	const pods, subscribers = 64, 64
	runAttack(t, attackSpec{
		name: "ManyNamespaces", kind: attackSubscribers, procs: pods, namespaces: pods,
		count: func(int) int { return subscribers },
		check: func(d *daemon, victim string) error {
			admin, conn := dialAdmin(d)
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), adminDeadline)
			defer cancel()
			if _, err := openSubscribe(ctx, admin, victim, 1); err != nil {
				return fmt.Errorf("admin Subscribe %s: got %v, want a stream", victim, err)
			}
			return nil
		},
	})
}

// attackSpec says how to run one attack.
type attackSpec struct {
	name       string
	kind       string          // the attack the attacker processes run
	procs      int             // attacker processes
	namespaces int             // attacker namespaces (0: 1); process i runs in namespace i mod namespaces
	count      func(i int) int // the count given to process i (nil: none)
	// check, if set, is run once the attack is established and says
	// what the attack denied that it must not.
	check func(d *daemon, victim string) error
}

// runAttack runs one attack against a daemon with default flags in a
// memory cgroup of deploymentMemory and checks what it must not achieve.
func runAttack(t *testing.T, spec attackSpec) {
	testenv.SkipOnDebugKernel(t)
	testenv.RequireModule(t)
	cg := memoryCgroup(t, deploymentMemory)
	d := startDaemonIn(t, cg)
	if got, want := procCgroup(t, d.pid), "/"+filepath.Base(cg); got != want {
		t.Fatalf("nsbrokerd (pid %d) is in cgroup %q, want %q", d.pid, got, want)
	}

	tenantCG := tenantCgroup(t)

	victim := d.attach(t)
	nns := max(spec.namespaces, 1)
	attackNS := make([]string, nns)
	for i := range attackNS {
		attackNS[i] = d.attach(t)
	}
	other, _ := tenant(t, victim)
	echo(context.Background(), other, 5, echoSpacing) // the connection is up and warm

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	rss := startRSSProbe(ctx, d.pid)
	adm := startAdminProbe(ctx, d)

	idle, idleErrs := echo(context.Background(), other, echoSamples, echoSpacing)
	if len(idleErrs) > 0 {
		t.Fatalf("other tenant's echo before the attack: %d of %d failed, first: %v", len(idleErrs), echoSamples, idleErrs[0])
	}

	start := time.Now()
	daemonCPU := cpuSeconds(d.pid)
	adm.attacking.Store(true)
	var attackers []*attacker
	for i := range spec.procs {
		var env []string
		if spec.count != nil {
			env = append(env, envCount+"="+strconv.Itoa(spec.count(i)))
		}
		env = append(env, envFor+"="+attackReadyTimeout.String())
		attackers = append(attackers, startAttacker(t, attackNS[i%nns], tenantCG, spec.kind, env...))
	}
	readyIn := waitReady(t, attackers, attackReadyTimeout+5*time.Second)
	readyAt := time.Now()
	var checkErr error
	if spec.check != nil {
		checkErr = spec.check(d, victim)
	}
	attacked, attackErrs := echo(context.Background(), other, echoSamples, attackEchoSpacing)
	time.Sleep(time.Until(start.Add(attackWindow)))
	adm.waitIteration(readyAt, 2*adminDeadline+rpcTimeout)
	stop()
	adm.wait()
	rss.wait()
	attackTook := time.Since(start)
	daemonCPU = cpuSeconds(d.pid) - daemonCPU
	var attackerCPU float64
	for _, a := range attackers {
		attackerCPU += cpuSeconds(a.cmd.Process.Pid)
	}
	for _, a := range attackers {
		a.kill()
	}

	alive := true
	select {
	case <-d.Exited():
		alive = false
	default:
		if hwm, err := procStatusField(d.pid, "VmHWM"); err == nil {
			rss.add(hwm)
		}
	}
	// Idle again once the attackers are gone: the host's own load drifts
	// during a run, so idle is bracketed, before and after.
	var after []float64
	if alive {
		time.Sleep(2 * time.Second)
		after, _ = echo(context.Background(), other, echoSamples, echoSpacing)
	}
	oom := cgroupEvent(t, cg, "oom_kill")
	peak := rss.peak()
	idleP50, attackP50 := max(median(idle), median(after)), median(attacked)
	adminMax := adm.maxDuring()
	t.Logf("attack %s: peak RSS %d MiB, other tenant echo p50 idle %.0f µs / under attack %.0f µs, admin attach+detach %d ms, oom_kill %d",
		spec.name, peak>>10, idleP50, attackP50, adminMax.Milliseconds(), oom)
	t.Logf("attack %s: other tenant echo p50 idle before %.0f µs, after %.0f µs; slowest under attack %.0f µs", spec.name, median(idle), median(after), slices.Max(attacked))
	t.Logf("attack %s: CPU over its %v: daemon %.1f s, attackers %.1f s", spec.name, attackTook.Round(time.Second), daemonCPU, attackerCPU)
	t.Logf("attack %s: established in %v; admin attach+detach before the attack: %d, median %v; during: %d, max %v",
		spec.name, readyIn.Round(time.Millisecond), len(adm.before), medianDuration(adm.before), len(adm.during), adminMax)

	if !alive {
		t.Errorf("nsbrokerd (pid %d): exited during the attack; want it running", d.pid)
	}
	if oom != 0 {
		t.Errorf("memory.events oom_kill: got %d, want 0", oom)
	}
	if bound := memoryBound(); int64(peak)<<10 >= bound {
		t.Errorf("peak RSS: got %d MiB, want under %d MiB", peak>>10, bound>>20)
	}
	if len(attackErrs) > 0 {
		t.Errorf("other tenant's echo under attack: %d of %d failed, first: %v; want none", len(attackErrs), echoSamples, attackErrs[0])
	}
	if attackP50 > 2*idleP50 {
		t.Errorf("other tenant's echo p50 under attack: got %.0f µs, want at most 2 × %.0f µs (idle, the larger of before and after)", attackP50, idleP50)
	}
	for _, err := range adm.errs() {
		t.Errorf("admin attach+detach: %v; want it to succeed within %v", err, adminDeadline)
	}
	if n := adm.completedAfter(readyAt); n == 0 {
		t.Errorf("admin attach+detach after the attack was established: got none completed, want at least one")
	}
	if checkErr != nil {
		t.Errorf("under attack: %v", checkErr)
	}
	logReady(t, attackers)
	if t.Failed() {
		for i, a := range attackers {
			if i < 4 || i == len(attackers)-1 {
				t.Logf("attacker %d (pid %d) output:\n%s", i, a.cmd.Process.Pid, a.out)
			}
		}
	}
}

// memoryCgroup creates a cgroup (see childCgroup) with memory.max set to
// limit: the daemon's, as the deployment holds it.
func memoryCgroup(t *testing.T, limit int64) string {
	t.Helper()
	dir := childCgroup(t, "")
	max := filepath.Join(dir, "memory.max")
	if err := os.WriteFile(max, []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		t.Fatalf("write %s: %v", max, err)
	}
	got, err := os.ReadFile(max)
	if err != nil || strings.TrimSpace(string(got)) != strconv.FormatInt(limit, 10) {
		t.Fatalf("%s: got %q, %v; want %d", max, got, err, limit)
	}
	return dir
}

// tenantCgroup creates the cgroup the attackers run in (see childCgroup),
// as a container platform runs every pod in one of its own. Its default
// cpu.weight shares the CPUs fairly between the attacker's processes, all
// together, and the daemon: a tenant's own busy loops take no more than
// its share from the processes it attacks, which is what a host that
// schedules tenants by cgroup promises, not the daemon.
func tenantCgroup(t *testing.T) string {
	t.Helper()
	return childCgroup(t, "-tenant")
}

// childCgroup creates a cgroup v2 child of /sys/fs/cgroup named after the
// test's namespace prefix and suffix, with the memory and cpu controllers,
// removed when the test ends (after the processes in it, which are started
// later, are gone).
func childCgroup(t *testing.T, suffix string) string {
	t.Helper()
	const root = "/sys/fs/cgroup"
	var fs unix.Statfs_t
	if err := unix.Statfs(root, &fs); err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		t.Fatalf("%s is not a cgroup v2 hierarchy (statfs: type %#x, %v); the test VM's init mounts one", root, fs.Type, err)
	}
	controllers, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"memory", "cpu"} {
		if !slices.Contains(strings.Fields(string(controllers)), c) {
			t.Fatalf("%s/cgroup.controllers: %q; want the %s controller", root, controllers, c)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+memory +cpu"), 0); err != nil {
		t.Fatalf("enable the memory and cpu controllers for %s's children: %v", root, err)
	}
	dir := filepath.Join(root, testenv.NetnsName()+suffix)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The kernel frees a cgroup's last process a moment after it
		// was reaped.
		var err error
		if !waitFor(waitTimeout, func() bool { err = os.Remove(dir); return err == nil }) {
			t.Errorf("remove cgroup %s: %v", dir, err)
		}
	})
	return dir
}

// procCgroup returns the cgroup v2 path of a process.
func procCgroup(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	t.Fatalf("/proc/%d/cgroup has no cgroup v2 line: %q", pid, b)
	return ""
}

// cgroupEvent returns a counter of the cgroup's memory.events.
func cgroupEvent(t *testing.T, cg, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg, "memory.events"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s/memory.events: %q: %v", cg, line, err)
			}
			return n
		}
	}
	t.Fatalf("%s/memory.events has no %s: %q", cg, name, b)
	return 0
}

// echo makes n echoes, spacing apart, and returns their round trips
// in µs and the errors (a failed echo counts as echoTimeout or what it
// took).
func echo(ctx context.Context, c nsbrokerv1.BrokerClient, n int, spacing time.Duration) ([]float64, []error) {
	var times []float64
	var errs []error
	for i := range n {
		if i > 0 {
			time.Sleep(spacing)
		}
		ectx, cancel := context.WithTimeout(ctx, echoTimeout)
		start := time.Now()
		_, err := c.Echo(ectx, &nsbrokerv1.EchoRequest{Payload: []byte("other tenant")})
		times = append(times, float64(time.Since(start).Microseconds()))
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return times, errs
}

// rssProbe samples a process's VmRSS every 100 ms.
type rssProbe struct {
	done chan struct{}
	max  atomic.Int64 // KiB
}

func startRSSProbe(ctx context.Context, pid int) *rssProbe {
	p := &rssProbe{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			v, err := procStatusField(pid, "VmRSS")
			if err != nil {
				return // gone
			}
			p.add(v)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *rssProbe) add(kib int) {
	for {
		cur := p.max.Load()
		if int64(kib) <= cur || p.max.CompareAndSwap(cur, int64(kib)) {
			return
		}
	}
}

func (p *rssProbe) wait()     { <-p.done }
func (p *rssProbe) peak() int { return int(p.max.Load()) }

// procStatusField reads a "kB" field of /proc/PID/status.
// cpuSeconds is the CPU time (user and system) a process has used, 0 if
// it is gone.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command, which is in parentheses: state is
	// the first, utime the 12th and stime the 13th.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func procStatusField(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// adminProbe attaches and detaches a fresh namespace again and again,
// each time on a fresh admin connection as nsbrokerctl would, and times
// it.
type adminProbe struct {
	attacking atomic.Bool // set when the attack starts
	done      chan struct{}

	mu       sync.Mutex // guards the fields below
	before   []time.Duration
	during   []time.Duration
	finished []time.Time // when each iteration during the attack ended
	failures []error
}

func startAdminProbe(ctx context.Context, d *daemon) *adminProbe {
	p := &adminProbe{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			attacking := p.attacking.Load()
			took, err := adminAttachDetach(d)
			p.mu.Lock()
			if err != nil {
				p.failures = append(p.failures, err)
			} else if attacking {
				p.during = append(p.during, took)
			} else {
				p.before = append(p.before, took)
			}
			if attacking {
				p.finished = append(p.finished, time.Now())
			}
			p.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(adminEvery):
			}
		}
	}()
	return p
}

// adminAttachDetach creates a namespace, has the admin attach and detach
// it within adminDeadline, deletes it, and returns how long the two rpcs
// took.
func adminAttachDetach(d *daemon) (time.Duration, error) {
	name := testenv.NetnsName()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	admin, conn := dialAdmin(d)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), adminDeadline)
	defer cancel()
	start := time.Now()
	ns, err := admin.AttachNamespace(ctx, &nsbrokerv1.AttachNamespaceRequest{
		Name: name,
		Ref:  &nsbrokerv1.NamespaceRef{Kind: &nsbrokerv1.NamespaceRef_Name{Name: name}},
	})
	if err != nil || ns.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY {
		return 0, fmt.Errorf("AttachNamespace %s after %v: got %v, %v; want a ready namespace", name, time.Since(start).Round(time.Millisecond), ns.GetState(), err)
	}
	if _, err := admin.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
		return 0, fmt.Errorf("DetachNamespace %s after %v: %v", name, time.Since(start).Round(time.Millisecond), err)
	}
	return time.Since(start), nil
}

// dialAdmin makes a client of the admin socket; the caller closes it.
func dialAdmin(d *daemon) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	conn, err := grpc.NewClient("passthrough:///nsbroker",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.Admin)
		}))
	if err != nil {
		panic(err) // only for a malformed target or options
	}
	return nsbrokerv1.NewBrokerClient(conn), conn
}

// waitIteration waits up to timeout for an iteration that started after
// t0 to end, so that every attack is measured by at least one.
func (p *adminProbe) waitIteration(t0 time.Time, timeout time.Duration) {
	waitFor(timeout, func() bool { return p.completedAfter(t0) > 0 })
}

// completedAfter counts the iterations during the attack that ended after
// t0 (successful or not).
func (p *adminProbe) completedAfter(t0 time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, at := range p.finished {
		if at.After(t0) {
			n++
		}
	}
	return n
}

func (p *adminProbe) wait() { <-p.done }

func (p *adminProbe) errs() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.failures)
}

// maxDuring is the slowest successful attach+detach during the attack.
func (p *adminProbe) maxDuring() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m time.Duration
	for _, d := range p.during {
		m = max(m, d)
	}
	return m
}

func medianDuration(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// attacker is this test binary running TestAttackerHelper as uid and gid
// 65534 in a tenant namespace.
type attacker struct {
	cmd    *exec.Cmd
	out    *daemontest.SyncBuffer // its standard output and error
	ready  chan struct{}          // closed at its attack-ready line
	exited chan struct{}          // closed once it has been reaped
}

// startAttacker starts an attacker of kind in the named namespace: the
// process is forked from a thread inside the namespace, so it is there
// from its start, and drops to uid and gid 65534, with no supplementary
// groups, before it executes the test binary.
func startAttacker(t *testing.T, name, cgroup, kind string, env ...string) *attacker {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ns := openNetns(t, name)
	a := &attacker{out: &daemontest.SyncBuffer{}, ready: make(chan struct{}), exited: make(chan struct{})}
	a.cmd = exec.Command(self, "-test.run=^TestAttackerHelper$")
	a.cmd.Env = append(append(os.Environ(), envAttack+"="+kind), env...)
	cg, err := os.Open(cgroup)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close() // the child has it once Start returns
	a.cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}},
		UseCgroupFD: true,
		CgroupFD:    int(cg.Fd()),
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stdout, a.cmd.Stderr = w, w
	err = ns.Do(a.cmd.Start)
	w.Close()
	if err != nil {
		r.Close()
		t.Fatalf("start attacker in %s: %v", name, err)
	}
	go func() {
		defer r.Close()
		s := bufio.NewScanner(r)
		once := sync.Once{}
		for s.Scan() {
			fmt.Fprintln(a.out, s.Text())
			if strings.HasPrefix(s.Text(), readyPrefix) {
				once.Do(func() { close(a.ready) })
			}
		}
	}()
	go func() {
		a.cmd.Wait()
		close(a.exited)
	}()
	t.Cleanup(a.kill)

	// What the attacker is: in the namespace, and nobody.
	pid := a.cmd.Process.Pid
	st, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatalf("attacker %d: %v\n%s", pid, err, a.out)
	}
	if ino := st.Sys().(*syscall.Stat_t).Ino; ino != ns.ID().Ino {
		t.Fatalf("attacker %d: network namespace inode %d, want %d (%s)", pid, ino, ns.ID().Ino, name)
	}
	for _, field := range []string{"Uid", "Gid"} {
		ids, err := procIDs(pid, field)
		if err != nil || len(ids) != 4 || slices.ContainsFunc(ids, func(id int) bool { return id != nobody }) {
			t.Fatalf("attacker %d: %s %v, %v; want %d four times", pid, field, ids, err, nobody)
		}
	}
	if got, want := procCgroup(t, pid), "/"+filepath.Base(cgroup); got != want {
		t.Fatalf("attacker %d is in cgroup %q, want %q", pid, got, want)
	}
	return a
}

// logReady logs what the attackers said they established, each distinct
// line once with how many said it.
func logReady(t *testing.T, attackers []*attacker) {
	t.Helper()
	var lines []string
	count := map[string]int{}
	for _, a := range attackers {
		for _, line := range strings.Split(a.out.String(), "\n") {
			if rest, ok := strings.CutPrefix(line, readyPrefix); ok {
				if count[rest]++; count[rest] == 1 {
					lines = append(lines, rest)
				}
			}
		}
	}
	for _, l := range lines {
		t.Logf("%d attacker(s): %s", count[l], l)
	}
}

// kill ends the attacker and waits for it.
func (a *attacker) kill() {
	select {
	case <-a.exited:
	default:
		a.cmd.Process.Kill()
		<-a.exited
	}
}

// waitReady waits until every attacker has established its attack, or
// exited, or timeout passed, and returns how long that took. An attacker
// that is not ready by then is reported but not fatal: an attack that
// stalls the daemon may also stall the attacker.
func waitReady(t *testing.T, attackers []*attacker, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var late int
	for _, a := range attackers {
		select {
		case <-a.ready:
		case <-a.exited:
			t.Errorf("attacker (pid %d) exited before its attack was established: %v\n%s", a.cmd.Process.Pid, a.cmd.ProcessState, a.out)
		case <-time.After(time.Until(deadline)):
			late++
		}
	}
	if late > 0 {
		t.Logf("%d of %d attackers had not established their attack after %v", late, len(attackers), timeout)
	}
	return time.Since(start)
}
