package nlfuzz

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

var (
	flagMessages = flag.Int64("nlfuzz.messages", 1_000_000,
		"requests the senders hand the module: netlink messages it parses, several per datagram "+
			"(fewer if the test's -test.timeout comes first)")
	flagSeed     = flag.Uint64("nlfuzz.seed", 0, "random seed; 0 picks one from the clock")
	flagSenders  = flag.Int("nlfuzz.senders", 4, "sending goroutines; with two or more, the last one runs as nobody")
	flagNetns    = flag.Int("nlfuzz.netns", 4, "namespaces in use at a time, the initial one included")
	flagCheck    = flag.Int64("nlfuzz.check", 10_000, "datagrams between ECHO probes")
	flagCrashers = flag.String("nlfuzz.crashers", "testdata/crashers", "directory of datagrams to replay first")
	flagPartial  = flag.Bool("nlfuzz.partial", false,
		"a run the test's deadline cut short passes (by default it fails: CI asks for the whole count)")
	flagChurn = flag.Int64("nlfuzz.churn", 2000,
		"datagrams between namespace replacements (each also creates a short-lived namespace); 0: none")
)

const (
	joinEvery = 20 // datagrams between group operations
	// A sender that has not finished a datagram for this long is stuck
	// in the kernel: every datagram is handled before sendto returns.
	stallLimit = 60 * time.Second
	// Time kept after fuzzing, before the test's deadline, for the final
	// checks (namespace teardown is slow under emulation).
	finalMargin = 90 * time.Second
)

// Random streams other than the senders' generators (stream = sender id).
const (
	streamFlash = 1000 + iota // datagrams in short-lived namespaces
	streamChurn               // which namespace to replace, socket options
	streamJoin                // group operations
	streamPick                // + sender id: where each sender sends
)

// slot is one place a namespace is in use; the churner replaces its
// namespace now and then. Senders hold mu shared while they use the
// target's sockets, the churner exclusively while it swaps it.
type slot struct {
	mu sync.RWMutex
	t  *target
}

// fuzz is one run.
type fuzz struct {
	unit      int
	seed      uint64
	target    int64        // requests the senders hand the module
	handled   atomic.Int64 // requests handed to the module so far
	datagrams atomic.Int64 // datagrams the senders began
	slots     []*slot
	senders   []*sender
	churner   *sender
	churnRand *rand.Rand // the churner's: namespaces to replace, socket options
	others    *counts    // the joiner's
	churnTick chan struct{}
	joinTick  chan struct{}

	stopping atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup // the churner and the joiner

	mu       sync.Mutex
	failures []string // guarded by mu
	reported bool     // a kernel report was taken apart; guarded by mu
}

func TestIntegrationFuzzModule(t *testing.T) {
	unit := testenv.RequireModule(t)
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -nlfuzz.seed=%d), %d requests, %d senders, %d namespaces at a time",
		seed, seed, *flagMessages, *flagSenders, *flagNetns)
	if *flagSenders < 1 || *flagNetns < 1 || *flagCheck < 1 || *flagChurn < 0 {
		t.Fatal("-nlfuzz.senders, -nlfuzz.netns and -nlfuzz.check must be positive, -nlfuzz.churn not negative")
	}
	// An oops in a sender's system call then kills only that thread, so
	// the test can still name the datagram; the VM harness fails the run
	// on the oops all the same.
	setSysctl(t, "/proc/sys/kernel/panic_on_oops", "0")
	before, err := instances(unit)
	if err != nil {
		t.Fatalf("STATS before the run: %v", err)
	}

	replayCrashers(t, unit, *flagCrashers)

	f, err := newFuzz(unit, seed, *flagMessages, *flagSenders, *flagNetns)
	if err != nil {
		t.Fatal(err)
	}
	stopAt := time.Time{}
	if d, ok := t.Deadline(); ok {
		stopAt = d.Add(-finalMargin)
	}
	start := time.Now()
	finished := f.run(t, stopAt)
	took := time.Since(start)
	f.summary(t, took)
	for _, msg := range f.failed() {
		t.Error(msg)
	}
	if t.Failed() {
		return
	}
	if !finished {
		msg := fmt.Sprintf("the test's deadline came first: stopped after %d of %d requests", f.handled.Load(), f.target)
		if !*flagPartial {
			t.Error(msg + " (give it a longer -test.timeout, or -nlfuzz.partial)")
		} else {
			t.Log(msg)
		}
	}
	// The senders read the kernel log while they ran; from here on, the
	// teardown of the namespaces may report something.
	after, err := openKmsg()
	if err != nil {
		t.Fatal(err)
	}
	defer after.close()
	if err := f.finalProbes(); err != nil {
		t.Fatal(err)
	}
	f.closeAll()
	if err := waitInstances(unit, before, 60*time.Second); err != nil {
		t.Error(err)
	}
	if first, err := after.scan(); err != nil {
		t.Error(err)
	} else if first != "" {
		t.Errorf("the kernel log has a report from after the run, when the namespaces were torn down:\n  %s",
			strings.Join(after.collect(first, 60, 2*time.Second, 10*time.Second), "\n  "))
	}
}

// setSysctl writes value to a /proc/sys file until the test ends.
func setSysctl(t *testing.T, path, value string) {
	t.Helper()
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", path, err)
		}
	})
}

func newFuzz(unit int, seed uint64, target int64, senders, netns int) (*fuzz, error) {
	f := &fuzz{
		unit: unit, seed: seed, target: target,
		others:    newCounts(),
		churnTick: make(chan struct{}, 1),
		joinTick:  make(chan struct{}, 1),
		stop:      make(chan struct{}),
	}
	for i := range senders {
		f.senders = append(f.senders, newSender(i, senders > 1 && i == senders-1))
	}
	f.churner = newSender(senders, false)
	f.churnRand = rand.New(rand.NewPCG(seed, streamChurn))
	r := f.churnRand
	// Slot 0 is the initial namespace, for the whole run.
	initial, err := openTarget(unit, senders, r)
	if err != nil {
		return nil, err
	}
	f.slots = append(f.slots, &slot{t: initial})
	for range netns - 1 {
		t, err := newTarget(unit, senders, r)
		if err != nil {
			f.closeAll()
			return nil, err
		}
		f.slots = append(f.slots, &slot{t: t})
	}
	return f, nil
}

// halt tells every goroutine of the run to stop.
func (f *fuzz) halt() {
	f.stopOnce.Do(func() {
		f.stopping.Store(true)
		close(f.stop)
	})
}

func (f *fuzz) fail(msg string) {
	f.mu.Lock()
	f.failures = append(f.failures, msg)
	f.mu.Unlock()
	f.halt()
}

func (f *fuzz) failed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.failures...)
}

// run sends until the senders have sent the target, something fails, or
// stopAt (if set); it reports whether the target was reached.
func (f *fuzz) run(t *testing.T, stopAt time.Time) bool {
	var senders sync.WaitGroup
	for i, s := range f.senders {
		senders.Add(1)
		go func() {
			defer senders.Done()
			f.runSender(s, newGenerator(f.seed, uint64(i)), rand.New(rand.NewPCG(f.seed, streamPick+uint64(i))))
		}()
	}
	f.wg.Add(2)
	go f.churn(f.churnRand, newGenerator(f.seed, streamFlash))
	go f.join(rand.New(rand.NewPCG(f.seed, streamJoin)))
	// When the senders are done, so are the churner and the joiner.
	done := make(chan struct{})
	go func() {
		senders.Wait()
		f.halt()
		f.wg.Wait()
		close(done)
	}()

	start := time.Now()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	nextLog := f.target / 10
	byDeadline := false
	for {
		select {
		case <-done:
			return !byDeadline && f.handled.Load() >= f.target
		case <-f.stop:
			if !f.awaitStop(done) {
				return false
			}
			return !byDeadline && f.handled.Load() >= f.target
		case now := <-ticker.C:
			if n := f.handled.Load(); n >= nextLog && nextLog > 0 {
				secs := time.Since(start).Seconds()
				t.Logf("%d requests in %d datagrams, %.0f s, %.0f requests/s",
					n, f.datagrams.Load(), secs, float64(n)/secs)
				nextLog += f.target / 10
			}
			f.checkStalls(now)
			if !stopAt.IsZero() && now.After(stopAt) {
				byDeadline = true
				f.halt()
			}
		}
	}
}

// awaitStop waits a bounded time for the goroutines to stop: a sender
// stuck in the kernel never will. It reports whether all did.
func (f *fuzz) awaitStop(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-time.After(30 * time.Second):
		f.fail("goroutines still running 30 s after the run was stopped (stuck in the kernel?)")
		return false
	}
}

// checkStalls fails the run if a sender has been stuck. (The churner is
// not watched: it waits for pokes. A module that hangs hangs the senders.)
func (f *fuzz) checkStalls(now time.Time) {
	for _, s := range f.senders {
		if s.done.Load() {
			continue
		}
		if last := time.Unix(0, s.progress.Load()); s.progress.Load() != 0 && now.Sub(last) > stallLimit {
			f.fail(fmt.Sprintf("sender %d (thread %d) has been stuck for %v after its %v",
				s.id, s.tid, now.Sub(last).Round(time.Second), s.last.Load()))
		}
	}
}

func (f *fuzz) runSender(s *sender, gen *generator, pick *rand.Rand) {
	defer s.done.Store(true)
	// The thread stays locked: a goroutine that exits locked takes its
	// thread along, which a sender without privileges must.
	if err := s.start(); err != nil {
		f.fail(fmt.Sprintf("sender %d: %v", s.id, err))
		return
	}
	defer s.kmsg.close()
	if s.unpriv {
		if err := f.ownInitialSockets(s); err != nil {
			f.fail(fmt.Sprintf("sender %d: %v", s.id, err))
			return
		}
	}
	for !f.stopping.Load() && f.handled.Load() < f.target {
		n := f.datagrams.Add(1)
		if *flagChurn > 0 && n%*flagChurn == 0 {
			poke(f.churnTick)
		}
		if n%joinEvery == 0 {
			poke(f.joinTick)
		}
		if n%*flagCheck == 0 {
			if err := f.probe(pick.IntN(len(f.slots)), uint32(n)); err != nil {
				f.fail(fmt.Sprintf("sender %d: %v", s.id, err))
				return
			}
			s.counts.mu.Lock()
			s.counts.probes++
			s.counts.mu.Unlock()
		}
		k, data := gen.next()
		sl := f.slots[pick.IntN(len(f.slots))]
		sl.mu.RLock()
		socks := sl.t.socks[s.id]
		err := s.sendOne(socks[pick.IntN(len(socks))], sl.t.inum, k.String(), data)
		sl.mu.RUnlock()
		if err != nil {
			f.senderFailed(s, err)
			return
		}
		_, handled := requests(data)
		f.handled.Add(int64(handled))
	}
}

// poke wakes a goroutine waiting on c without ever blocking.
func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ownInitialSockets replaces the unprivileged sender's sockets in the
// initial namespace with ones it opens itself, as nobody.
func (f *fuzz) ownInitialSockets(s *sender) error {
	r := rand.New(rand.NewPCG(f.seed, streamPick+uint64(s.id)+100))
	var mine []*fsock
	for range socksPerSender {
		sock, err := openSock(f.unit, r)
		if err != nil {
			return fmt.Errorf("open a socket as nobody: %w", err)
		}
		mine = append(mine, sock)
	}
	sl := f.slots[0]
	sl.mu.Lock()
	old := sl.t.socks[s.id]
	sl.t.socks[s.id] = mine
	sl.mu.Unlock()
	for _, sock := range old {
		unix.Close(sock.fd)
	}
	return nil
}

// senderFailed handles a sender's error. For a kernel report, it reads
// the rest of the report and names the datagram of the sender whose
// thread the report names.
func (f *fuzz) senderFailed(s *sender, err error) {
	var kr *errKernelReport
	if !errors.As(err, &kr) {
		f.fail(fmt.Sprintf("sender %d: %v", s.id, err))
		return
	}
	f.halt()
	f.mu.Lock()
	first := !f.reported
	f.reported = true
	f.mu.Unlock()
	if !first {
		return
	}
	lines := s.kmsg.collect(kr.first, 400, 2*time.Second, 15*time.Second)
	var b strings.Builder
	fmt.Fprintf(&b, "kernel report:\n  %s\n", strings.Join(lines[:min(len(lines), 60)], "\n  "))
	tids := reportTIDs(lines)
	if culprit := f.senderByTID(tids); culprit != nil {
		last := culprit.last.Load()
		fmt.Fprintf(&b, "caused by sender %d (thread %d), its %v;\nkeep it with:\n%s",
			culprit.id, culprit.tid, last, last.saveHint())
	} else {
		fmt.Fprintf(&b, "the report names no sender's thread (threads %v); the senders' last datagrams:", tids)
		for _, o := range append(f.senders, f.churner) {
			if last := o.last.Load(); last != nil {
				fmt.Fprintf(&b, "\nsender %d (thread %d), %v:\n%s", o.id, o.tid, last, last.saveHint())
			}
		}
	}
	f.fail(b.String())
}

func (f *fuzz) senderByTID(tids []int) *sender {
	for _, tid := range tids {
		for _, s := range append(f.senders, f.churner) {
			if s.tid == tid && s.last.Load() != nil {
				return s
			}
		}
	}
	return nil
}

// probe checks that the module answers ECHO in slot i's namespace.
func (f *fuzz) probe(i int, seq uint32) error {
	sl := f.slots[i]
	sl.mu.RLock()
	defer sl.mu.RUnlock()
	sl.t.probeMu.Lock()
	defer sl.t.probeMu.Unlock()
	return echoProbe(sl.t.probe, sl.t.inum, seq)
}

func (f *fuzz) finalProbes() error {
	for i := range f.slots {
		if err := f.probe(i, uint32(i+1)); err != nil {
			return fmt.Errorf("after the run: %w", err)
		}
	}
	return nil
}

func (f *fuzz) closeAll() {
	for _, sl := range f.slots {
		sl.mu.Lock()
		sl.t.close()
		sl.mu.Unlock()
	}
}

// churn replaces a namespace in use with a new one whenever the senders
// poke it, and each time also sends a few datagrams in a namespace that
// lives only for them.
func (f *fuzz) churn(r *rand.Rand, gen *generator) {
	defer f.wg.Done()
	s := f.churner
	if err := s.start(); err != nil {
		f.fail(fmt.Sprintf("churner: %v", err))
		return
	}
	defer s.kmsg.close()
	for {
		select {
		case <-f.stop:
			return
		case <-f.churnTick:
		}
		if err := f.replaceNetns(r); err != nil {
			f.fail(fmt.Sprintf("churner: %v", err))
			return
		}
		if err := f.flashNetns(s, r, gen); err != nil {
			f.senderFailed(s, err)
			return
		}
	}
}

func (f *fuzz) replaceNetns(r *rand.Rand) error {
	if len(f.slots) == 1 {
		return nil
	}
	sl := f.slots[1+r.IntN(len(f.slots)-1)]
	t, err := newTarget(f.unit, len(f.senders), r)
	if err != nil {
		return err
	}
	sl.mu.Lock()
	old := sl.t
	sl.t = t
	sl.mu.Unlock()
	old.close()
	f.churner.counts.mu.Lock()
	f.churner.counts.netnsMade++
	f.churner.counts.mu.Unlock()
	return nil
}

// flashNetns creates a namespace, sends a valid ECHO and three fuzzed
// datagrams there, and closes it.
func (f *fuzz) flashNetns(s *sender, r *rand.Rand, gen *generator) error {
	var sock *fsock
	var inum uint32
	err := inNewNetns(func() (err error) {
		if inum, err = threadNetns(); err != nil {
			return err
		}
		sock, err = openSock(f.unit, r)
		return err
	})
	if err != nil {
		return err
	}
	defer unix.Close(sock.fd)
	s.counts.mu.Lock()
	s.counts.netnsMade++
	s.counts.flashes++
	s.counts.mu.Unlock()
	for i := range 4 {
		k, data := gen.next()
		if i == 0 {
			k, data = kindValid, gen.valid(nil)
		}
		if err := s.sendOne(sock, inum, k.String(), data); err != nil {
			return err
		}
	}
	return nil
}

// join joins and leaves groups, or rebinds with a group mask, on the
// senders' sockets whenever the senders poke it.
func (f *fuzz) join(r *rand.Rand) {
	defer f.wg.Done()
	for {
		select {
		case <-f.stop:
			return
		case <-f.joinTick:
		}
		sl := f.slots[r.IntN(len(f.slots))]
		sl.mu.RLock()
		socks := sl.t.socks[r.IntN(len(sl.t.socks))]
		result := groupOp(socks[r.IntN(len(socks))].fd, r)
		sl.mu.RUnlock()
		f.others.mu.Lock()
		f.others.joins[result]++
		f.others.mu.Unlock()
	}
}

// groupOp joins or leaves a group, or rebinds with a group mask, and
// returns what it did and the errno ("join EINVAL").
func groupOp(fd int, r *rand.Rand) string {
	g := (&generator{r: r}).group()
	var op string
	var err error
	switch r.IntN(3) {
	case 0:
		op, err = "join", unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(int32(g)))
	case 1:
		op, err = "leave", unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_DROP_MEMBERSHIP, int(int32(g)))
	default:
		op = "bind"
		var sa unix.Sockaddr
		if sa, err = unix.Getsockname(fd); err == nil {
			pid := sa.(*unix.SockaddrNetlink).Pid
			err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: pid, Groups: r.Uint32()})
		}
	}
	return op + " " + errnoName(err)
}

// errnoName names an error's errno: "ok" for none, "ack" in answers.
func errnoName(err error) string {
	var e unix.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, unix.EOPNOTSUPP):
		return "EOPNOTSUPP" // the same number as ENOTSUP, the name the protocol uses
	case errors.As(err, &e):
		if name := unix.ErrnoName(e); name != "" {
			return name
		}
	}
	return err.Error()
}

// summary logs what the run sent and what came back.
func (f *fuzz) summary(t *testing.T, took time.Duration) {
	all := newCounts()
	for _, s := range append(f.senders, f.churner) {
		all.add(s.counts)
	}
	all.add(f.others)
	var sent int64
	var kinds []string
	for k := range numKinds {
		n := all.sent[k.String()]
		sent += n
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	t.Logf("sent %d datagrams holding %d messages, %d of them requests the module handled, in %.1f s "+
		"(%.0f requests/s, %.0f datagrams/s)", sent, all.walked, all.handled, took.Seconds(),
		float64(all.handled)/took.Seconds(), float64(sent)/took.Seconds())
	t.Logf("datagrams by kind: %s; %d of them in %d short-lived namespaces",
		strings.Join(kinds, ", "), f.churner.counts.sentTotal(), all.flashes)
	t.Logf("sendmsg errors: %s", formatErrnos(all.sendErrs, "none"))
	t.Logf("answers: ECHO %d, PUBLISH %d, STATS %d, GROUPS %d, EVENT %d; NLMSG_ERROR: %s; no answer %d; ENOBUFS %d",
		all.replies[family.MsgEcho], all.replies[family.MsgPublish], all.replies[family.MsgStats],
		all.replies[family.MsgGroups], all.replies[family.MsgEvent], formatErrnos(all.errnos, "none"), all.silent, all.overruns)
	var joins []string
	for op, n := range all.joins {
		joins = append(joins, fmt.Sprintf("%s %d", op, n))
	}
	slices.Sort(joins)
	t.Logf("namespaces created %d; group operations: %s; ECHO probes answered %d",
		all.netnsMade, strings.Join(joins, ", "), all.probes)
}

func (c *counts) sentTotal() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, v := range c.sent {
		n += v
	}
	return n
}

func formatErrnos(m map[unix.Errno]int64, none string) string {
	var parts []string
	for e, n := range m {
		name := "ack"
		if e != 0 {
			name = errnoName(e)
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	if len(parts) == 0 {
		return none
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
