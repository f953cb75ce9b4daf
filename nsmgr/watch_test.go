package nsmgr

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

// openable checks that an Added event names a namespace that opens as want.
func openable(t *testing.T, ev WatchEvent, want ID) {
	t.Helper()
	ns, err := Open(ev.Ref)
	if err != nil {
		t.Fatalf("event %v: Open: %v", ev, err)
	}
	defer ns.Close()
	if ns.ID() != want {
		t.Errorf("event %v: namespace %v, want %v", ev, ns.ID(), want)
	}
}

func TestWatcherNamed(t *testing.T) {
	before := newTestNamed(t)
	w, err := NewWatcher(NetnsDir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	ev := nextEvent(t, w, refIs(before.Ref()))
	if ev.Op != Added {
		t.Fatalf("first event for a namespace present at start = %v, want added", ev)
	}

	name := testenv.NetnsName()
	ns, err := NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); DeleteNamed(name) })
	ev = nextEvent(t, w, refIs(Ref{Name: name}))
	if ev.Op != Added {
		t.Fatalf("event after NewNamed = %v, want added name:%s", ev, name)
	}
	openable(t, ev, ns.ID())

	if err := DeleteNamed(name); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, w, refIs(Ref{Name: name})); ev.Op != Removed {
		t.Fatalf("event after DeleteNamed = %v, want removed name:%s", ev, name)
	}
}

// TestWatcherDirAppearsLater watches a directory two levels below anything
// that exists, creates it, pins a namespace there the way ip netns add does
// (empty file first, bind mount second), and removes and recreates the
// directory.
func TestWatcherDirAppearsLater(t *testing.T) {
	src := newTestNamed(t)
	srcPath := filepath.Join(NetnsDir, src.Ref().Name)
	root := t.TempDir()
	dir := filepath.Join(root, "a", "b", "netns")
	w, err := NewWatcher(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	plain := Ref{Path: filepath.Join(dir, "plain")}
	first := Ref{Path: filepath.Join(dir, "first")}
	if err := os.WriteFile(plain.Path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bindNetns(t, srcPath, first.Path)
	ev := nextEvent(t, w, refIs(plain, first))
	if ev != (WatchEvent{Op: Added, Ref: first}) {
		t.Fatalf("event = %v, want added %v (and nothing for the plain file)", ev, first)
	}
	openable(t, ev, src.ID())

	unbind(t, first.Path)
	if ev := nextEvent(t, w, refIs(plain, first)); ev != (WatchEvent{Op: Removed, Ref: first}) {
		t.Fatalf("event = %v, want removed %v", ev, first)
	}

	// Remove the whole tree and make it again: the watcher must fall back
	// to an ancestor and find the directory again.
	if err := os.RemoveAll(filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	second := Ref{Path: filepath.Join(dir, "second")}
	bindNetns(t, srcPath, second.Path)
	ev = nextEvent(t, w, refIs(plain, first, second))
	if ev != (WatchEvent{Op: Added, Ref: second}) {
		t.Fatalf("event = %v, want added %v", ev, second)
	}
	openable(t, ev, src.ID())
}

func TestWatcherClose(t *testing.T) {
	testenv.RequireRoot(t)
	w, err := NewWatcher(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- w.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return within 5s")
	}
	if ev, ok := <-w.Events(); ok {
		t.Errorf("received %v after Close, want a closed channel", ev)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestWatcherNotADirectory(t *testing.T) {
	file := tempPath(t, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(file)
	if !errors.Is(err, syscall.ENOTDIR) {
		if w != nil {
			w.Close()
		}
		t.Fatalf("NewWatcher(regular file) = %v, want ENOTDIR", err)
	}
}

func TestWatchEventString(t *testing.T) {
	for _, tt := range []struct {
		ev   WatchEvent
		want string
	}{
		{WatchEvent{Op: Added, Ref: Ref{Name: "x"}}, "added name:x"},
		{WatchEvent{Op: Removed, Ref: Ref{Path: "/p"}}, "removed path:/p"},
		{WatchEvent{Op: Failed, Ref: Ref{Path: "/d"}, Err: syscall.ENOSPC}, "failed path:/d: no space left on device"},
	} {
		if got := tt.ev.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

// TestWatcherDirReplacedByUnmount watches a directory that is a tmpfs
// mount holding a pinned namespace; detaching the tmpfs reveals the empty
// directory below, and the name must be reported removed.
func TestWatcherDirReplacedByUnmount(t *testing.T) {
	src := newTestNamed(t)
	dir := filepath.Join(t.TempDir(), "netns")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	pinned := Ref{Path: filepath.Join(dir, "pinned")}
	bindNetns(t, filepath.Join(NetnsDir, src.Ref().Name), pinned.Path)

	w, err := NewWatcher(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if ev := nextEvent(t, w, refIs(pinned)); ev != (WatchEvent{Op: Added, Ref: pinned}) {
		t.Fatalf("event = %v, want added %v", ev, pinned)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, w, refIs(pinned)); ev != (WatchEvent{Op: Removed, Ref: pinned}) {
		t.Fatalf("event = %v, want removed %v", ev, pinned)
	}
}
