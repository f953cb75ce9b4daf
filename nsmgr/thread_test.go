package nsmgr

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDoRunsInsideAndRestores(t *testing.T) {
	ns := newTestNamed(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := threadNetnsIno()
	if err != nil {
		t.Fatal(err)
	}
	if before == ns.ID().Ino {
		t.Fatalf("test thread already in %v", ns)
	}
	var inside uint64
	sentinel := errors.New("from fn")
	err = ns.Do(func() error {
		var err error
		inside, err = threadNetnsIno()
		if err != nil {
			return err
		}
		return sentinel
	})
	if err != sentinel {
		t.Errorf("Do = %v, want fn's error %v unchanged", err, sentinel)
	}
	if inside != ns.ID().Ino {
		t.Errorf("fn ran in net:[%d], want net:[%d]", inside, ns.ID().Ino)
	}
	after, err := threadNetnsIno()
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("calling thread moved from net:[%d] to net:[%d]", before, after)
	}
}

func TestDoCurrentInside(t *testing.T) {
	ns := newTestNamed(t)
	var got ID
	err := ns.Do(func() error {
		cur, err := Current()
		if err != nil {
			return err
		}
		got = cur.ID()
		return cur.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	if got != ns.ID() {
		t.Errorf("Current() inside Do = %v, want %v", got, ns.ID())
	}
}

func TestDoPanicRestoresThread(t *testing.T) {
	ns := newTestNamed(t)
	host := statIno(t, "/proc/self/ns/net")
	var tid int
	func() {
		defer func() {
			if r := recover(); r != "inside" {
				t.Errorf("recovered %v, want the panic value %q", r, "inside")
			}
		}()
		ns.Do(func() error {
			tid = unix.Gettid()
			panic("inside")
		})
	}()
	// The thread was restored and unlocked, so it lives on in the pool.
	ino, err := taskNetnsIno(tid)
	if err != nil {
		t.Fatalf("thread %d that ran the panicking fn: %v", tid, err)
	}
	if ino != host {
		t.Errorf("thread %d left in net:[%d], want net:[%d]", tid, ino, host)
	}
}

func taskNetnsIno(tid int) (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", tid), &st)
	return st.Ino, err
}

// TestDoUnderLoadLeavesNoThreadInForeignNamespace runs 1,000 Do calls from
// several goroutines while busy goroutines spin, allocate and yield. The
// busy goroutines check the namespace of whatever thread runs them, and at
// the end every thread of the process must be back in the host namespace.
func TestDoUnderLoadLeavesNoThreadInForeignNamespace(t *testing.T) {
	targets := []*Namespace{newTestNamed(t), newTestNamed(t)}
	host := statIno(t, "/proc/self/ns/net")

	stop := make(chan struct{})
	var busy sync.WaitGroup
	var foreign atomic.Int64
	var foreignIno atomic.Uint64
	for i := range 8 {
		busy.Go(func() {
			var keep [][]byte
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				keep = append(keep, make([]byte, 512+n%1024))
				if len(keep) > 128 {
					keep = keep[:0]
				}
				if i%2 == 0 {
					runtime.Gosched()
				}
				if n%32 == 0 {
					if ino, err := threadNetnsIno(); err == nil && ino != host {
						foreign.Add(1)
						foreignIno.Store(ino)
					}
				}
			}
		})
	}

	const callers, perCaller = 4, 250
	var calls atomic.Int64
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := range perCaller {
				ns := targets[(c+i)%len(targets)]
				err := ns.Do(func() error {
					_ = make([]byte, 4096)
					runtime.Gosched() // a locked goroutine keeps its thread
					ino, err := threadNetnsIno()
					if err != nil {
						return err
					}
					if ino != ns.ID().Ino {
						return fmt.Errorf("fn ran in net:[%d], want net:[%d]", ino, ns.ID().Ino)
					}
					if tid := unix.Gettid(); tid == os.Getpid() {
						return fmt.Errorf("fn ran on the main thread %d", tid)
					}
					calls.Add(1)
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	busy.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := calls.Load(); got != callers*perCaller {
		t.Errorf("fn ran correctly %d times, want %d", got, callers*perCaller)
	}
	if n := foreign.Load(); n > 0 {
		t.Errorf("busy goroutines ran %d times on a thread in net:[%d], want always net:[%d]", n, foreignIno.Load(), host)
	}

	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, task := range tasks {
		var tid int
		fmt.Sscan(task.Name(), &tid)
		ino, err := taskNetnsIno(tid)
		if errors.Is(err, unix.ENOENT) {
			continue // the thread exited meanwhile
		}
		if err != nil {
			t.Fatal(err)
		}
		checked++
		if ino != host {
			t.Errorf("thread %d is in net:[%d], want net:[%d]", tid, ino, host)
		}
	}
	if checked < 2 {
		t.Errorf("checked %d threads, want at least 2", checked)
	}
	t.Logf("%d threads checked", checked)
}

// TestDoFailedRestoreRetiresThread makes the switch back fail by dropping
// CAP_SYS_ADMIN from the thread inside fn. Do must report it, and the
// thread, still in the foreign namespace, must stay locked and die with its
// goroutine instead of returning to the scheduler.
func TestDoFailedRestoreRetiresThread(t *testing.T) {
	ns := newTestNamed(t)
	var tid int
	err := ns.Do(func() error {
		tid = unix.Gettid()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_ADMIN
		return unix.Capset(&hdr, &data[0])
	})
	var e *Error
	if !errors.As(err, &e) || e.Op != "restore" || !errors.Is(err, unix.EPERM) {
		t.Fatalf("Do = %v, want *Error{Op: restore} matching EPERM", err)
	}
	if tid == os.Getpid() {
		t.Fatalf("fn ran on the main thread %d, which the runtime cannot retire", tid)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ino, err := taskNetnsIno(tid)
		if errors.Is(err, unix.ENOENT) {
			return // the thread is gone
		}
		if err == nil && ino != ns.ID().Ino {
			t.Fatalf("thread %d moved to net:[%d]; it should have stayed in net:[%d] and exited", tid, ino, ns.ID().Ino)
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d still alive after 5s in net:[%d], want it retired", tid, ino)
		}
		time.Sleep(5 * time.Millisecond) // polling for the thread's exit, which has no signal
	}
}
