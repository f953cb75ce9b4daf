package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// These tests need the real module; they run in the VM (make vmtest).

// TestMain lets the test binary double as a process that sits in a new
// network namespace until killed (for attach-by-pid).
func TestMain(m *testing.M) {
	if os.Getenv("NSB_BROKER_SLEEPER") == "1" {
		fmt.Println("ready")
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startSleeper starts a child process in a new network namespace.
func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "NSB_BROKER_SLEEPER=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil {
		t.Fatalf("sleeper did not start: %v", err)
	}
	return cmd
}

// moduleInstances asks the module in the initial namespace how many
// per-namespace instances are alive.
func moduleInstances(t *testing.T) uint32 {
	t.Helper()
	c, err := family.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.Instances
}

func waitInstances(t *testing.T, want uint32) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := moduleInstances(t)
		if got == want {
			t.Logf("module instances back to %d", got)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("module instances = %d, want %d", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestIntegrationAttachByNamePathPidAndEcho(t *testing.T) {
	testenv.RequireModule(t)
	b := New(nil)
	defer b.Close()

	nameA, nsA := newNamed(t)
	nameB, nsB := newNamed(t)
	sleeper := startSleeper(t)
	nsC, err := nsmgr.Open(nsmgr.Ref{PID: sleeper.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	defer nsC.Close()

	refs := []struct {
		name   string
		ref    nsmgr.Ref
		inode  uint32
		cookie uint64
	}{
		{"by-name", nsmgr.Ref{Name: nameA}, nsA.Inode(), nsA.Cookie()},
		{"by-path", nsmgr.Ref{Path: nsmgr.NetnsDir + "/" + nameB}, nsB.Inode(), nsB.Cookie()},
		{"by-pid", nsmgr.Ref{PID: sleeper.Process.Pid}, nsC.Inode(), nsC.Cookie()},
	}
	for _, r := range refs {
		in, err := b.Attach(context.Background(), r.name, r.ref)
		if err != nil {
			t.Fatalf("Attach %s: %v", r.ref, err)
		}
		if in.State != StateReady || in.Inode != r.inode {
			t.Fatalf("Attach %s = %v inode %d, want ready inode %d", r.ref, in.State, in.Inode, r.inode)
		}
		// The cookie the broker learned from its module socket is the
		// one a socket of the namespace's own tells.
		if in.Cookie == 0 || in.Cookie != r.cookie {
			t.Errorf("Attach %s: cookie %d, want %d (a socket made in the namespace)", r.ref, in.Cookie, r.cookie)
		}
	}

	// 3 namespaces x 50 concurrent echoes on each one connection.
	var wg sync.WaitGroup
	var failures atomic.Int32
	for _, r := range refs {
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				want := fmt.Sprintf("%s-%d", r.name, i)
				rep, err := b.Echo(ctx, r.name, []byte(want))
				if err != nil || rep.NetnsInum != r.inode || string(rep.Payload) != want {
					failures.Add(1)
					t.Errorf("Echo %s #%d = %+v, %v; want inode %d payload %q", r.name, i, rep, err, r.inode, want)
				}
			}()
		}
	}
	wg.Wait()
	t.Logf("150 concurrent echoes in 3 namespaces answered by their own inodes (%d, %d, %d), %d failures",
		refs[0].inode, refs[1].inode, refs[2].inode, failures.Load())
}

func TestIntegrationPublishSubscribeScoping(t *testing.T) {
	testenv.RequireModule(t)
	b := New(nil)
	defer b.Close()
	var names []string
	var inodes []uint32
	for range 3 {
		name, ns := newNamed(t)
		if _, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		inodes = append(inodes, ns.Inode())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	subs := make([]<-chan Event, 3)
	for i, name := range names {
		var err error
		if subs[i], err = subscribe(ctx, b, name, []uint32{5}); err != nil {
			t.Fatal(err)
		}
	}
	// Namespace i publishes i+1 events.
	for i, name := range names {
		for j := 0; j <= i; j++ {
			r, err := b.Publish(ctx, name, 5, []byte(fmt.Sprintf("%s/%d", name, j)))
			if err != nil || r.Seq != uint64(j+1) || !r.Listeners {
				t.Fatalf("Publish %s #%d = %+v, %v; want seq %d with listeners", name, j, r, err, j+1)
			}
		}
	}
	for i := range names {
		for j := 0; j <= i; j++ {
			ev := recv(t, subs[i])
			wantMessage(t, ev, 5, uint64(j+1))
			if ev.Message.NetnsInum != inodes[i] || string(ev.Message.Payload) != fmt.Sprintf("%s/%d", names[i], j) {
				t.Fatalf("subscriber %s got %+v, want its own namespace's event %d", names[i], ev.Message, j)
			}
		}
		select {
		case ev := <-subs[i]:
			t.Fatalf("subscriber %s got an extra event: %+v", names[i], ev)
		case <-time.After(500 * time.Millisecond):
		}
		t.Logf("%s (inode %d) received exactly its own %d events", names[i], inodes[i], i+1)
	}
}

// settledInstances waits until namespaces torn down by earlier tests are
// gone (the kernel frees them asynchronously) and returns the count.
func settledInstances(t *testing.T) uint32 {
	t.Helper()
	last, stable := moduleInstances(t), 0
	for deadline := time.Now().Add(30 * time.Second); stable < 5; {
		if time.Now().After(deadline) {
			t.Fatalf("module instance count never settled (last %d)", last)
		}
		time.Sleep(100 * time.Millisecond)
		if n := moduleInstances(t); n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
	return last
}

func TestIntegrationNetnsDeleteDetachesAndFreesInstance(t *testing.T) {
	testenv.RequireModule(t)
	baseline := settledInstances(t)
	b := New(nil)
	defer b.Close()
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	if _, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
		t.Fatal(err)
	}
	if got := moduleInstances(t); got != baseline+1 {
		t.Fatalf("instances with the namespace attached = %d, want %d", got, baseline+1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, name, []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatalf("ip not found: %v", err)
	}
	if out, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v: %s", err, out)
	}
	ev := recv(t, sub)
	if ev.Kind != KindEnd || !errors.Is(ev.Err, ErrNamespaceGone) {
		t.Fatalf("subscription ended with %+v, want ErrNamespaceGone", ev)
	}
	t.Logf("subscription ended: %v", ev.Err)
	if n := len(b.List()); n != 0 {
		t.Fatalf("%d namespaces still attached", n)
	}
	waitInstances(t, baseline)
}

func TestIntegrationReleaseReloadRecovers(t *testing.T) {
	testenv.RequireModule(t)
	modPath := os.Getenv("NSB_MODULE")
	image, err := os.ReadFile(modPath)
	if err != nil {
		t.Fatalf("read the module image (NSB_MODULE=%q): %v", modPath, err)
	}
	var gate atomic.Bool
	gate.Store(true)
	// No identity: only seeing the module gone and back ends the release.
	b := New(&Config{ModuleIdentity: func() (uint64, bool) { return 0, gate.Load() && moduleLoaded() }})
	defer b.Close()
	name, ns := newNamed(t)
	if _, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, name, []uint32{9})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		if _, err := b.Publish(ctx, name, 9, nil); err != nil {
			t.Fatal(err)
		}
		wantMessage(t, recv(t, sub), 9, i)
	}

	b.Release()
	gate.Store(false)
	wantGap(t, recv(t, sub), Gap{Group: 9, From: 4, Reason: LossReleased})
	// The broker resumes only after it has seen the module gone; a reload
	// quicker than its poll would go unseen (see the note on Release).
	waitUntil(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.sawAbsent })
	if err := unix.DeleteModule("nsbroker", 0); err != nil {
		t.Fatalf("rmmod after Release: %v", err)
	}
	t.Cleanup(func() {
		if !moduleLoaded() {
			unix.InitModule(image, "")
		}
	})
	if err := unix.InitModule(image, ""); err != nil {
		t.Fatalf("insmod: %v", err)
	}
	// Two events the broker cannot see: it has not re-dialed yet.
	raw, err := family.Dial(&family.Config{NetNS: ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 2; i++ {
		r, err := raw.Publish(9, nil)
		if err != nil || r.Seq != i {
			t.Fatalf("raw publish after reload = %+v, %v; want seq %d", r, err, i)
		}
	}
	raw.Close()
	gate.Store(true)
	waitState(t, b, name, StateReady)
	if _, err := b.Publish(ctx, name, 9, nil); err != nil {
		t.Fatal(err)
	}
	wantGap(t, recv(t, sub), Gap{Group: 9, From: 1, To: 2, Reason: LossModuleReloaded})
	ev := recv(t, sub)
	wantMessage(t, ev, 9, 3)
	t.Logf("after reload: gap 1..2 (module-reloaded), then seq 3 in epoch %d", ev.Epoch)
}

// TestIntegrationQuickReloadEndsRelease: an rmmod and insmod that no look
// of the broker sees (a look waits while the test reloads) end the
// Release, because the module's sysfs directory, and so the default module
// identity, is new after every load.
func TestIntegrationQuickReloadEndsRelease(t *testing.T) {
	testenv.RequireModule(t)
	modPath := os.Getenv("NSB_MODULE")
	image, err := os.ReadFile(modPath)
	if err != nil {
		t.Fatalf("read the module image (NSB_MODULE=%q): %v", modPath, err)
	}
	// The default identity, but a look waits while the test reloads.
	var reloading sync.Mutex
	identity := func() (uint64, bool) {
		reloading.Lock()
		defer reloading.Unlock()
		return moduleIdentity()
	}
	b := New(&Config{RetryInterval: time.Hour, ModuleIdentity: identity})
	defer b.Close()
	name, _ := newNamed(t)
	if _, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
		t.Fatal(err)
	}
	before, loaded := moduleIdentity()
	if !loaded || before == 0 {
		t.Fatalf("module identity before the reload: want loaded with an inode, got %d, %v", before, loaded)
	}
	b.Release()
	waitState(t, b, name, StateUnavailable)
	t.Cleanup(func() {
		if !moduleLoaded() {
			unix.InitModule(image, "")
		}
	})
	reload := func() error {
		reloading.Lock()
		defer reloading.Unlock()
		if err := unix.DeleteModule("nsbroker", 0); err != nil {
			return fmt.Errorf("rmmod after Release: %w", err)
		}
		if err := unix.InitModule(image, ""); err != nil {
			return fmt.Errorf("insmod: %w", err)
		}
		return nil
	}
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	after, loaded := moduleIdentity()
	if !loaded || after == before {
		t.Fatalf("module identity after the reload: want loaded and not %d, got %d, %v", before, after, loaded)
	}
	b.kickRecovery() // a look after the reload
	waitState(t, b, name, StateReady)
	b.mu.Lock()
	sawAbsent := b.sawAbsent
	b.mu.Unlock()
	if sawAbsent {
		t.Fatal("the broker saw the module absent; the test means it never does")
	}
	t.Logf("module identity %d before the reload, %d after", before, after)
}
