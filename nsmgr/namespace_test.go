package nsmgr

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestOpenByNamePathPIDSameID(t *testing.T) {
	ns := newTestNamed(t)
	name := ns.Ref().Name
	pid := startSleeper(t, ns).Process.Pid
	bound := tempPath(t, "pinned")
	bindNetns(t, "/proc/"+strconv.Itoa(pid)+"/ns/net", bound)

	for _, ref := range []Ref{
		{Name: name},
		{Path: filepath.Join(NetnsDir, name)},
		{PID: pid},
		{Path: "/proc/" + strconv.Itoa(pid) + "/ns/net"},
		{Path: bound},
	} {
		got, err := Open(ref)
		if err != nil {
			t.Errorf("Open(%v): %v", ref, err)
			continue
		}
		if got.ID() != ns.ID() {
			t.Errorf("Open(%v).ID() = %v, want %v", ref, got.ID(), ns.ID())
		}
		if got.Ref() != ref {
			t.Errorf("Open(%v).Ref() = %v, want %v", ref, got.Ref(), ref)
		}
		if err := got.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestDifferentNamespacesDifferentIDs(t *testing.T) {
	a, b := newTestNamed(t), newTestNamed(t)
	cur, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if want := statIno(t, "/proc/self/ns/net"); cur.ID().Ino != want {
		t.Errorf("Current().ID().Ino = %d, want %d (/proc/self/ns/net)", cur.ID().Ino, want)
	}
	ids := map[ID]string{}
	for _, ns := range []*Namespace{a, b, cur} {
		if prev, dup := ids[ns.ID()]; dup {
			t.Errorf("%v has the same ID %v as %s", ns, ns.ID(), prev)
		}
		ids[ns.ID()] = ns.String()
	}
}

func TestInodeMatchesFstat(t *testing.T) {
	ns := newTestNamed(t)
	var st unix.Stat_t
	if err := unix.Fstat(ns.Fd(), &st); err != nil {
		t.Fatal(err)
	}
	if ns.Inode() != uint32(st.Ino) || ns.ID() != (ID{Dev: st.Dev, Ino: st.Ino}) {
		t.Errorf("Inode() = %d, ID() = %v; want %d, %d:%d from fstat", ns.Inode(), ns.ID(), st.Ino, st.Dev, st.Ino)
	}
	link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("net:[%d]", ns.Inode()); link != want {
		t.Errorf("fd links to %q, want %q", link, want)
	}
	if got, want := ns.ID().String(), fmt.Sprintf("%d:%d", st.Dev, st.Ino); got != want {
		t.Errorf("ID().String() = %q, want %q", got, want)
	}
}

func TestOpenNotNetns(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// An empty file under NetnsDir is what a failed ip netns add leaves.
	stale := testenv.NetnsName()
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(NetnsDir, stale), nil, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(NetnsDir, stale)) })
	gone := startSleeper(t, nil)
	gone.Process.Kill()
	gone.Wait()

	tests := []struct {
		ref     Ref
		missing bool
	}{
		{Ref{Path: regular}, false},
		{Ref{Path: fifo}, false},
		{Ref{Path: dir}, false},
		{Ref{Path: "/proc/self/ns/mnt"}, false},
		{Ref{Path: "/proc/self/ns/uts"}, false},
		{Ref{Name: stale}, false},
		{Ref{Path: filepath.Join(dir, "missing")}, true},
		{Ref{Path: filepath.Join(regular, "below")}, false}, // ENOTDIR
		{Ref{Name: testenv.NetnsName()}, true},
		{Ref{PID: gone.Process.Pid}, true},
	}
	for _, tt := range tests {
		ns, err := Open(tt.ref)
		if err == nil {
			ns.Close()
			t.Errorf("Open(%v) succeeded, want error matching ErrNotNetns", tt.ref)
			continue
		}
		if !errors.Is(err, ErrNotNetns) {
			t.Errorf("Open(%v) = %v, want error matching ErrNotNetns", tt.ref, err)
		}
		if errors.Is(err, fs.ErrNotExist) != tt.missing {
			t.Errorf("Open(%v) = %v: matches fs.ErrNotExist = %v, want %v", tt.ref, err, !tt.missing, tt.missing)
		}
		var e *Error
		if !errors.As(err, &e) || e.Op != "open" || e.Namespace != tt.ref.String() {
			t.Errorf("Open(%v) = %#v, want *Error{Op: open, Namespace: %q}", tt.ref, err, tt.ref.String())
		}
	}
}

func TestCloseTwice(t *testing.T) {
	ns := newTestNamed(t)
	ns2, err := Open(ns.Ref())
	if err != nil {
		t.Fatal(err)
	}
	if err := ns2.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := ns2.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close = %v, want os.ErrClosed", err)
	}
	if fd := ns2.Fd(); fd != -1 {
		t.Errorf("Fd() after Close = %d, want -1", fd)
	}
	if err := ns2.Do(func() error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Do after Close = %v, want os.ErrClosed", err)
	}
	if ns2.ID() != ns.ID() {
		t.Errorf("ID() after Close = %v, want %v", ns2.ID(), ns.ID())
	}
}

func TestCookie(t *testing.T) {
	a, b := newTestNamed(t), newTestNamed(t)
	cur, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()

	// The host namespace's cookie read without Do, from a plain socket.
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	hostCookie, err := unix.GetsockoptUint64(s, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	unix.Close(s)
	if errors.Is(err, unix.ENOPROTOOPT) {
		if c := a.Cookie(); c != 0 {
			t.Errorf("Cookie() = %d on a kernel without SO_NETNS_COOKIE, want 0", c)
		}
		t.Skip("kernel has no SO_NETNS_COOKIE (before 5.14)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := cur.Cookie(); got != hostCookie {
		t.Errorf("Current().Cookie() = %d, want %d from a socket made here", got, hostCookie)
	}

	ca := a.Cookie()
	if ca == 0 {
		t.Fatal("Cookie() = 0, want the namespace's cookie")
	}
	if again := a.Cookie(); again != ca {
		t.Errorf("second Cookie() = %d, want %d", again, ca)
	}
	reopened, err := Open(a.Ref())
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if got := reopened.Cookie(); got != ca {
		t.Errorf("Cookie() of %v opened again = %d, want %d", a.Ref(), got, ca)
	}
	if cb := b.Cookie(); cb == ca || cb == 0 || cb == hostCookie {
		t.Errorf("Cookie() of a second namespace = %d; want nonzero and unlike %d (first) and %d (host)", cb, ca, hostCookie)
	}
}

func TestNoFDLeak(t *testing.T) {
	ns := newTestNamed(t)
	dir := t.TempDir()
	cycle := func() {
		n, err := Open(ns.Ref())
		if err != nil {
			t.Fatal(err)
		}
		n.Cookie()
		if err := n.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(Ref{Path: "/proc/self/ns/mnt"}); err == nil {
			t.Fatal("opened a mount namespace as a network namespace")
		}
		cur, err := Current()
		if err != nil {
			t.Fatal(err)
		}
		cur.Close()
		if _, err := Discover(NetnsDir, dir); err != nil {
			t.Fatal(err)
		}
	}
	watch := func() {
		w, err := NewWatcher(dir, filepath.Join(dir, "missing"))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cycle()
	watch() // the runtime's poller opens its descriptors on first use
	before := fdCount(t)
	for i := range 100 {
		cycle()
		if i%20 == 0 { // closing an inotify instance waits for an SRCU grace period
			watch()
		}
	}
	if after := fdCount(t); after != before {
		t.Errorf("open descriptors after 100 cycles = %d, want %d", after, before)
	}
}

// TestSetCookie: a cookie set is what Cookie returns, without entering the
// namespace (here closed, so it could not); zero sets nothing.
func TestSetCookie(t *testing.T) {
	ns := newTestNamed(t)
	closed, err := Open(ns.Ref())
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	closed.SetCookie(0)
	if got := closed.Cookie(); got != 0 {
		t.Errorf("Cookie() of a closed namespace, nothing set: got %d, want 0", got)
	}
	closed.SetCookie(42)
	if got := closed.Cookie(); got != 42 {
		t.Errorf("Cookie() after SetCookie(42): got %d, want 42", got)
	}
}
