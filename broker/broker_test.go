package broker

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
)

const waitLimit = 10 * time.Second

// newNamed makes a named namespace removed when the test ends.
func newNamed(t *testing.T) (string, *nsmgr.Namespace) {
	t.Helper()
	testenv.RequireRoot(t)
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

// fakeSetup attaches n fresh namespaces to a broker on a fake kernel.
// fakeConfig wires a broker to a fake kernel.
func fakeConfig(k *brokertest.Kernel) *Config {
	return &Config{
		Unit:           family.DefaultUnit,
		RetryInterval:  10 * time.Millisecond,
		ModuleIdentity: k.Identity,
		Dial:           k.Dial,
	}
}

func fakeSetup(t *testing.T, n int, mutate func(*Config)) (*Broker, *brokertest.Kernel, []string, []uint32) {
	t.Helper()
	k := brokertest.NewKernel()
	cfg := fakeConfig(k)
	if mutate != nil {
		mutate(cfg)
	}
	b := New(cfg)
	t.Cleanup(func() { b.Close() })
	var names []string
	var inums []uint32
	for range n {
		name, ns := newNamed(t)
		in, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name})
		if err != nil {
			t.Fatalf("Attach(%q): %v", name, err)
		}
		if in.State != StateReady || in.Inode != ns.Inode() {
			t.Fatalf("Attach(%q) = state %v inode %d, want ready inode %d", name, in.State, in.Inode, ns.Inode())
		}
		names = append(names, name)
		inums = append(inums, ns.Inode())
	}
	return b, k, names, inums
}

func recv(t *testing.T, ch <-chan Event) Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed early")
		}
		return ev
	case <-time.After(waitLimit):
		t.Fatal("no event within the time limit")
	}
	return Event{}
}

func wantMessage(t *testing.T, ev Event, group uint32, seq uint64) {
	t.Helper()
	if ev.Kind != KindMessage || ev.Message.Group != group || ev.Message.Seq != seq {
		t.Fatalf("got %v group %d seq %d gap %v, want message group %d seq %d",
			ev.Kind, ev.Message.Group, ev.Message.Seq, ev.Gap, group, seq)
	}
}

// wantGap checks a gap; a want without Instance ignores the gap's.
func wantGap(t *testing.T, ev Event, want Gap) {
	t.Helper()
	got := ev.Gap
	if want.Instance == 0 {
		got.Instance = 0
	}
	if ev.Kind != KindGap || got != want {
		t.Fatalf("got %v %+v (message seq %d), want gap %+v", ev.Kind, ev.Gap, ev.Message.Seq, want)
	}
}

func TestEchoAnsweredByTheRightNamespace(t *testing.T) {
	b, _, names, inums := fakeSetup(t, 3, nil)
	for i, name := range names {
		r, err := b.Echo(context.Background(), name, []byte(name))
		if err != nil {
			t.Fatalf("Echo(%s): %v", name, err)
		}
		if r.NetnsInum != inums[i] || string(r.Payload) != name {
			t.Fatalf("Echo(%s) = inode %d payload %q, want %d %q", name, r.NetnsInum, r.Payload, inums[i], name)
		}
	}
	if _, err := b.Echo(context.Background(), "no-such", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Echo(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestConcurrentRequestsRepliedOutOfOrder(t *testing.T) {
	const n = 64
	b, k, names, inums := fakeSetup(t, 1, nil)
	k.HoldReplies(inums[0], n) // all 64 replies come back reversed

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			want := fmt.Sprintf("request-%d", i)
			r, err := b.Echo(ctx, names[0], []byte(want))
			switch {
			case err != nil:
				errs <- err
			case string(r.Payload) != want:
				errs <- fmt.Errorf("request %d got reply %q", i, r.Payload)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestKernelRejectionKeepsErrnoAndMessage(t *testing.T) {
	b, _, names, _ := fakeSetup(t, 1, nil)
	_, err := b.Echo(context.Background(), names[0], []byte("reject"))
	var fe *family.Error
	if !errors.As(err, &fe) || !errors.Is(err, unix.EPERM) || fe.Message != "fake rejection" {
		t.Fatalf("error = %v, want *family.Error EPERM \"fake rejection\"", err)
	}
}

func TestPublishSubscribeScopedToNamespace(t *testing.T) {
	b, _, names, inums := fakeSetup(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subA, err := subscribe(ctx, b, names[0], []uint32{7})
	if err != nil {
		t.Fatal(err)
	}
	subB, err := subscribe(ctx, b, names[1], []uint32{7})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		r, err := b.Publish(ctx, names[0], 7, []byte{byte(i)})
		if err != nil || r.Seq != uint64(i) {
			t.Fatalf("Publish #%d = %+v, %v; want seq %d", i, r, err, i)
		}
	}
	if _, err := b.Publish(ctx, names[1], 7, []byte("b")); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		ev := recv(t, subA)
		wantMessage(t, ev, 7, uint64(i))
		if ev.Message.NetnsInum != inums[0] || ev.Namespace != names[0] {
			t.Fatalf("A got event of inode %d (%s), want %d", ev.Message.NetnsInum, ev.Namespace, inums[0])
		}
	}
	ev := recv(t, subB)
	wantMessage(t, ev, 7, 1)
	if ev.Message.NetnsInum != inums[1] || string(ev.Message.Payload) != "b" {
		t.Fatalf("B got %+v, want its own namespace's event", ev.Message)
	}
	select {
	case ev := <-subB:
		t.Fatalf("B received a second event: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := subscribe(ctx, b, names[0], []uint32{0}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Subscribe(group 0) error = %v, want ErrInvalid", err)
	}
}

func TestKernelOverrunBecomesGap(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	k.Publish(inums[0], 1, nil) // 1
	k.Publish(inums[0], 1, nil) // 2
	k.DropEvents(inums[0], 3)   // 3, 4, 5 dropped with ENOBUFS
	for range 5 {
		k.Publish(inums[0], 1, nil)
	}
	wantMessage(t, recv(t, sub), 1, 1)
	wantMessage(t, recv(t, sub), 1, 2)
	wantGap(t, recv(t, sub), Gap{Group: 1, From: 3, To: 5, Reason: LossKernelOverrun})
	wantMessage(t, recv(t, sub), 1, 6)
	wantMessage(t, recv(t, sub), 1, 7)
	in, _ := b.Get(names[0])
	if in.Overruns == 0 || in.OverrunLost != 3 {
		t.Fatalf("Info overruns %d lost %d, want >0 and 3", in.Overruns, in.OverrunLost)
	}
}

func TestSlowSubscriberDoesNotDelayFastOne(t *testing.T) {
	const queueLen, total = 16, 2000
	b, k, names, inums := fakeSetup(t, 1, func(c *Config) { c.QueueLen = queueLen })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := subscribe(ctx, b, names[0], []uint32{2})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := subscribe(ctx, b, names[0], []uint32{2})
	if err != nil {
		t.Fatal(err)
	}
	// Publish in lockstep with the fast subscriber: every event must reach
	// it while the slow one's queue is full and never drained.
	timeout := time.After(waitLimit)
	for i := 1; i <= total; i++ {
		k.Publish(inums[0], 2, []byte("x"))
		select {
		case ev, ok := <-fast:
			if !ok || ev.Kind != KindMessage || ev.Message.Seq != uint64(i) {
				t.Fatalf("fast subscriber got %v seq %d (gap %v), want message seq %d", ev.Kind, ev.Message.Seq, ev.Gap, i)
			}
		case <-timeout:
			t.Fatalf("the fast subscriber was held up by the slow one at event %d", i)
		}
	}
	// The slow one now reads: what fitted, then one gap for the rest. Every
	// sequence number is accounted for, in order, exactly once.
	next, gaps := uint64(1), 0
	for next <= total {
		ev := recv(t, slow)
		switch ev.Kind {
		case KindMessage:
			wantMessage(t, ev, 2, next)
			next++
		case KindGap:
			gaps++
			wantGap(t, ev, Gap{Group: 2, From: next, To: ev.Gap.To, Reason: LossQueueFull})
			if ev.Gap.To < next || ev.Gap.To > total {
				t.Fatalf("gap %v runs past the last event %d", ev.Gap, total)
			}
			next = ev.Gap.To + 1
		default:
			t.Fatalf("unexpected %v", ev.Kind)
		}
	}
	// Usually one gap; two when Subscribe's goroutine took its first
	// event only after the queue had overflowed (the first gap then fits,
	// later losses start another).
	if gaps == 0 {
		t.Fatal("slow subscriber saw no gap, want its losses reported")
	}
	// And the stream goes on after the gap.
	k.Publish(inums[0], 2, nil)
	wantMessage(t, recv(t, slow), 2, total+1)
}

func TestDetachFailsInFlightRequests(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	k.HoldReplies(inums[0], 1000) // never answered
	sent, _ := k.Requests(inums[0])
	errs := make(chan error, 10)
	for range 10 {
		go func() {
			_, err := b.Echo(context.Background(), names[0], []byte("x"))
			errs <- err
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{3})
	if err != nil {
		t.Fatal(err)
	}
	// One waits on the request socket, the others on the shared one.
	waitPending(t, b, names[0], 9)
	waitUntil(t, func() bool { d, _ := k.Requests(inums[0]); return d >= sent+10 })
	if err := b.Detach(names[0]); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrDetached) {
				t.Fatalf("in-flight Echo error = %v, want ErrDetached", err)
			}
		case <-time.After(waitLimit):
			t.Fatal("an in-flight request hung after Detach")
		}
	}
	if ev := recv(t, sub); ev.Kind != KindEnd || !errors.Is(ev.Err, ErrDetached) {
		t.Fatalf("subscription ended with %+v, want KindEnd ErrDetached", ev)
	}
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("%d sockets still open after Detach, want 0", n)
	}
	if _, err := b.Get(names[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Detach = %v, want ErrNotFound", err)
	}
}

func waitPending(t *testing.T, b *Broker, name string, n int) {
	t.Helper()
	c, err := b.lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for {
		c.mu.Lock()
		got := len(c.pending)
		c.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests pending, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRequestHonoursContextDeadline(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	k.HoldReplies(inums[0], 1000)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.Echo(ctx, names[0], nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Echo error = %v, want DeadlineExceeded", err)
	}
}

func TestNamespaceDeletedDetachesAndEndsSubscriptions(t *testing.T) {
	b, k, names, _ := fakeSetup(t, 2, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := b.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := subscribe(ctx, b, names[0], []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	if err := nsmgr.DeleteNamed(names[0]); err != nil {
		t.Fatal(err)
	}
	if ev := recv(t, sub); ev.Kind != KindEnd || !errors.Is(ev.Err, ErrNamespaceGone) {
		t.Fatalf("subscription ended with %+v, want KindEnd ErrNamespaceGone", ev)
	}
	for {
		select {
		case ev := <-watch:
			if ev.Kind == NamespaceGone {
				if ev.Info.Name != names[0] {
					t.Fatalf("gone event for %q, want %q", ev.Info.Name, names[0])
				}
				goto gone
			}
		case <-time.After(waitLimit):
			t.Fatal("no NamespaceGone event")
		}
	}
gone:
	if got := b.List(); len(got) != 1 || got[0].Name != names[1] {
		t.Fatalf("List after deletion = %+v, want only %s", got, names[1])
	}
	if n := k.OpenSockets(); n != 1 {
		t.Fatalf("%d fake sockets open, want 1 (the other namespace)", n)
	}
}

func TestProcessExitDetachesPidAttachedNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare(1) not found")
	}
	cmd := exec.Command(unshare, "--net", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	k := brokertest.NewKernel()
	b := New(fakeConfig(k))
	defer b.Close()
	// unshare has to switch namespaces before exec'ing sleep.
	self, _ := nsmgr.Current()
	defer self.Close()
	deadline := time.Now().Add(waitLimit)
	for {
		ns, err := nsmgr.Open(nsmgr.Ref{PID: cmd.Process.Pid})
		if err == nil && ns.ID() != self.ID() {
			ns.Close()
			break
		}
		if ns != nil {
			ns.Close()
		}
		if time.Now().After(deadline) {
			t.Fatal("child never entered a new namespace")
		}
		time.Sleep(5 * time.Millisecond)
	}
	in, err := b.Attach(context.Background(), "", nsmgr.Ref{PID: cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, in.Name, []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if ev := recv(t, sub); ev.Kind != KindEnd || !errors.Is(ev.Err, ErrNamespaceGone) {
		t.Fatalf("subscription ended with %+v, want ErrNamespaceGone", ev)
	}
	if n := len(b.List()); n != 0 {
		t.Fatalf("%d namespaces attached after the process exited, want 0", n)
	}
}

func TestAttachTwiceRefused(t *testing.T) {
	b, _, names, _ := fakeSetup(t, 1, nil)
	if _, err := b.Attach(context.Background(), names[0], nsmgr.Ref{Name: names[0]}); !errors.Is(err, ErrExists) {
		t.Fatalf("second Attach by name = %v, want ErrExists", err)
	}
	path := nsmgr.NetnsDir + "/" + names[0]
	if _, err := b.Attach(context.Background(), "other", nsmgr.Ref{Path: path}); !errors.Is(err, ErrExists) {
		t.Fatalf("Attach of the same namespace under another name = %v, want ErrExists", err)
	}
	if _, err := b.Attach(context.Background(), "x", nsmgr.Ref{Path: "/etc/hostname"}); !errors.Is(err, nsmgr.ErrNotNetns) {
		t.Fatalf("Attach of a regular file = %v, want nsmgr.ErrNotNetns", err)
	}
	// Once detached, the namespace may be attached under another name.
	if err := b.Detach(names[0]); err != nil {
		t.Fatal(err)
	}
	if in, err := b.Attach(context.Background(), "other", nsmgr.Ref{Path: path}); err != nil || in.Name != "other" {
		t.Fatalf("Attach under another name after Detach = %+v, %v; want attached as \"other\"", in, err)
	}
}

func TestModuleMissingThenLoaded(t *testing.T) {
	k := brokertest.NewKernel()
	k.SetLoaded(false)
	b := New(fakeConfig(k))
	defer b.Close()
	name, _ := newNamed(t)
	in, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if in.State != StateUnavailable {
		t.Fatalf("state with the module missing = %v, want unavailable", in.State)
	}
	if _, err := b.Echo(context.Background(), name, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Echo with the module missing = %v, want ErrUnavailable", err)
	}
	k.SetLoaded(true)
	waitState(t, b, name, StateReady)
	if _, err := b.Echo(context.Background(), name, nil); err != nil {
		t.Fatalf("Echo after the module came: %v", err)
	}
}

func waitState(t *testing.T, b *Broker, name string, want State) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		in, err := b.Get(name)
		if err == nil && in.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s state %v (%v), want %v", name, in.State, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReleaseReloadRecoveryReportsGaps(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{4})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		k.Publish(inums[0], 4, nil)
	}
	for i := uint64(1); i <= 3; i++ {
		wantMessage(t, recv(t, sub), 4, i)
	}

	b.Release()
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("%d sockets open after Release, want 0", n)
	}
	wantGap(t, recv(t, sub), Gap{Group: 4, From: 4, Reason: LossReleased})
	// Released and still loaded: the broker must not re-dial.
	time.Sleep(50 * time.Millisecond)
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("broker re-dialed before the module was reloaded (%d sockets)", n)
	}
	k.SetLoaded(false)
	waitUntil(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.sawAbsent })
	k.Reload()
	k.Publish(inums[0], 4, nil) // seq 1 and 2 of the new instance: missed
	k.Publish(inums[0], 4, nil)
	k.SetLoaded(true)
	waitState(t, b, names[0], StateReady)
	k.Publish(inums[0], 4, nil)
	wantGap(t, recv(t, sub), Gap{Group: 4, From: 1, To: 2, Reason: LossModuleReloaded})
	ev := recv(t, sub)
	wantMessage(t, ev, 4, 3)
	if ev.Epoch != 2 {
		t.Fatalf("epoch after recovery = %d, want 2", ev.Epoch)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestCloseEndsEverythingWithoutLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	b, k, names, _ := fakeSetup(t, 2, nil)
	ctx := context.Background()
	sub, err := subscribe(ctx, b, names[0], []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if ev := recv(t, sub); ev.Kind != KindEnd || !errors.Is(ev.Err, ErrClosed) {
		t.Fatalf("subscription ended with %+v, want ErrClosed", ev)
	}
	if _, ok := <-sub; ok {
		t.Fatal("subscription channel not closed after the end event")
	}
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("%d sockets open after Close", n)
	}
	waitUntil(t, func() bool { return runtime.NumGoroutine() <= before+1 })
}

func TestReplyLostInOverrunFailsRequest(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	old := replyLossGrace
	replyLossGrace = 50 * time.Millisecond
	defer func() { replyLossGrace = old }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := subscribe(ctx, b, names[0], []uint32{1}); err != nil {
		t.Fatal(err)
	}
	k.HoldReplies(inums[0], 1000) // the reply never comes
	// The request socket busy: the request takes the shared one, which
	// the overrun hits.
	c, err := b.lookup(names[0])
	if err != nil {
		t.Fatal(err)
	}
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	errc := make(chan error, 1)
	go func() {
		_, err := b.Echo(context.Background(), names[0], nil)
		errc <- err
	}()
	waitPending(t, b, names[0], 1)
	k.DropEvents(inums[0], 1) // an overrun: ENOBUFS on the socket
	k.Publish(inums[0], 1, nil)
	select {
	case err := <-errc:
		if !errors.Is(err, ErrReplyLost) || !errors.Is(err, unix.ENOBUFS) {
			t.Fatalf("Echo error = %v, want ErrReplyLost matching ENOBUFS", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("a request whose reply was lost hung")
	}
}

func TestAttachDefaultNames(t *testing.T) {
	k := brokertest.NewKernel()
	b := New(fakeConfig(k))
	defer b.Close()
	name, _ := newNamed(t)
	in, err := b.Attach(context.Background(), "", nsmgr.Ref{Name: name})
	if err != nil || in.Name != name {
		t.Fatalf("Attach(name ref, no name) = %q, %v; want %q", in.Name, err, name)
	}
	other, _ := newNamed(t)
	path := nsmgr.NetnsDir + "/" + other
	in, err = b.Attach(context.Background(), "", nsmgr.Ref{Path: path})
	if err != nil || in.Name != "path:"+path {
		t.Fatalf("Attach(path ref, no name) = %q, %v; want %q", in.Name, err, "path:"+path)
	}
}

func TestWatchReportsAttachOnceAndFirst(t *testing.T) {
	k := brokertest.NewKernel()
	k.SetLoaded(false) // the recovery loop will also be dialing
	b := New(fakeConfig(k))
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watch, err := b.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name, _ := newNamed(t)
	if _, err := b.Attach(ctx, name, nsmgr.Ref{Name: name}); err != nil {
		t.Fatal(err)
	}
	k.SetLoaded(true)
	var kinds []NamespaceEventKind
	for len(kinds) < 2 {
		select {
		case ev := <-watch:
			kinds = append(kinds, ev.Kind)
		case <-time.After(waitLimit):
			t.Fatalf("events so far %v, want attached then ready", kinds)
		}
	}
	if kinds[0] != NamespaceAttached || kinds[1] != NamespaceReady {
		t.Fatalf("events %v, want [attached ready]", kinds)
	}
	// A second watcher's snapshot has it once, as attached and ready.
	w2, err := b.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := <-w2
	if ev.Kind != NamespaceAttached || ev.Info.Name != name || ev.Info.State != StateReady {
		t.Fatalf("snapshot %v %s %v, want attached %s ready", ev.Kind, ev.Info.Name, ev.Info.State, name)
	}
	select {
	case ev := <-w2:
		t.Fatalf("unexpected second event %v for %s", ev.Kind, ev.Info.Name)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestAttachNameBound attaches under a name of MaxNameLen bytes and
// refuses one byte more, given or derived from the reference, before the
// namespace is opened: nothing is attached, and the error shows only a
// bounded part of the name.
func TestAttachNameBound(t *testing.T) {
	k := brokertest.NewKernel()
	b := New(fakeConfig(k))
	defer b.Close()
	name, ns := newNamed(t)
	ref := nsmgr.Ref{Name: name}
	for _, over := range []string{strings.Repeat("o", MaxNameLen+1), strings.Repeat("o", 100*1024)} {
		_, err := b.Attach(context.Background(), over, ref)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), fmt.Sprint(MaxNameLen)) || len(err.Error()) > 300 {
			t.Errorf("Attach under a name of %d bytes: %.400v; want a short ErrInvalid naming the limit", len(over), err)
		}
	}
	// The same slashes make a path that is the same file, and too long a
	// derived name.
	long := nsmgr.NetnsDir + strings.Repeat("/", MaxNameLen) + name
	if _, err := b.Attach(context.Background(), "", nsmgr.Ref{Path: long}); !errors.Is(err, ErrInvalid) || len(err.Error()) > 300 {
		t.Errorf("Attach of a path of %d bytes under its derived name: %.400v; want a short ErrInvalid", len(long), err)
	}
	if n := len(b.List()); n != 0 {
		t.Fatalf("%d namespaces attached after refused attaches, want 0", n)
	}
	longest := strings.Repeat("m", MaxNameLen)
	in, err := b.Attach(context.Background(), longest, nsmgr.Ref{Path: long})
	if err != nil || in.Name != longest || in.Inode != ns.Inode() {
		t.Fatalf("Attach under a name of %d bytes = %q inode %d, %v; want attached, inode %d", MaxNameLen, in.Name, in.Inode, err, ns.Inode())
	}
	if _, err := b.Get(longest); err != nil {
		t.Fatalf("Get of the name of %d bytes: %v", MaxNameLen, err)
	}
}

func TestClosed(t *testing.T) {
	b, _, _, _ := fakeSetup(t, 1, nil)
	if b.Closed() {
		t.Fatal("Closed() before Close: true, want false")
	}
	b.Close()
	if !b.Closed() {
		t.Fatal("Closed() after Close: false, want true")
	}
}

// TestAttachHonoursContext: an Attach whose context has ended attaches
// nothing and says why.
func TestAttachHonoursContext(t *testing.T) {
	b, _, _, _ := fakeSetup(t, 0, nil)
	name, _ := newNamed(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Attach(ctx, name, nsmgr.Ref{Name: name}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Attach with a cancelled context: got %v, want context.Canceled", err)
	}
	if _, err := b.Get(name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after the cancelled Attach: got %v, want ErrNotFound", err)
	}
}

// TestPinnedToNamespace: under WithNamespaceID, a name acts only while it
// is attached to that namespace; attached anew to another one, it is not
// found, and nothing reaches the other namespace.
func TestPinnedToNamespace(t *testing.T) {
	b, _, names, _ := fakeSetup(t, 2, nil)
	ctx := context.Background()
	first, err := b.Get(names[0])
	if err != nil {
		t.Fatal(err)
	}
	pinned := WithNamespaceID(ctx, first.ID)
	if _, err := b.Echo(pinned, names[0], []byte("x")); err != nil {
		t.Fatalf("pinned Echo while the name is the pinned namespace's: %v", err)
	}
	// The name moves to the second namespace.
	second, err := b.Get(names[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := b.Detach(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Attach(ctx, names[0], nsmgr.Ref{Path: nsmgr.NetnsDir + "/" + names[1]}); err != nil {
		t.Fatal(err)
	}
	if in, _ := b.Get(names[0]); in.ID != second.ID {
		t.Fatalf("%s now names %v, want the second namespace %v", names[0], in.ID, second.ID)
	}
	if _, err := b.Echo(pinned, names[0], []byte("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pinned Echo once the name is another namespace's: %v, want ErrNotFound", err)
	}
	if _, err := b.Publish(pinned, names[0], 1, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pinned Publish: %v, want ErrNotFound", err)
	}
	if _, err := b.Stats(pinned, names[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pinned Stats: %v, want ErrNotFound", err)
	}
	if _, err := b.NewSubscription(pinned, names[0], []uint32{1}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pinned NewSubscription: %v, want ErrNotFound", err)
	}
	if _, err := b.PublishBatch(pinned, names[0], []Publication{{Group: 1}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pinned PublishBatch: %v, want ErrNotFound", err)
	}
	ran := false
	if err := b.Do(pinned, names[0], func() error { ran = true; return nil }); !errors.Is(err, ErrNotFound) || ran {
		t.Fatalf("pinned Do: %v, ran %v; want ErrNotFound, not run", err, ran)
	}
	var inside nsmgr.ID
	if err := b.Do(WithNamespaceID(ctx, second.ID), names[0], func() error {
		var st unix.Stat_t
		err := unix.Stat("/proc/thread-self/ns/net", &st)
		inside = nsmgr.ID{Dev: st.Dev, Ino: st.Ino}
		return err
	}); err != nil || inside != second.ID {
		t.Fatalf("Do in the namespace the name now names: ran in %v (%v), want %v", inside, err, second.ID)
	}
	if _, err := b.Echo(WithNamespaceID(ctx, second.ID), names[0], []byte("x")); err != nil {
		t.Fatalf("Echo pinned to the namespace the name now names: %v", err)
	}
	if _, err := b.Echo(ctx, names[0], []byte("x")); err != nil {
		t.Fatalf("Echo by name alone: %v", err)
	}
}
