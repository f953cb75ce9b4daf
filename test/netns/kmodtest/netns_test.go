package kmodtest

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The suite's namespaces are anonymous: a handle (and any socket opened in
// one) keeps it alive, and closing the last of them destroys it, so a test
// that dies half-way leaves no name in /run/netns behind.

// createNetns creates an anonymous network namespace. The thread that
// unshares is locked, switched back, and only returned to the scheduler
// once it is back in the original namespace; if switching back fails, the
// goroutine exits still locked and the runtime discards the thread.
func createNetns() (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{netns.None(), err}
			return
		}
		defer orig.Close()
		h, err := netns.New()
		// Switch back whatever New did: it may fail after unsharing.
		if serr := netns.Set(orig); serr != nil {
			h.Close()
			done <- result{netns.None(), fmt.Errorf("return to the original namespace: %w", serr)}
			return
		}
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{netns.None(), fmt.Errorf("new namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{h, nil}
	}()
	r := <-done
	return r.h, r.err
}

// newNetns creates an anonymous network namespace whose handle is closed
// when the test ends.
func newNetns(t testing.TB) netns.NsHandle {
	t.Helper()
	h, err := createNetns()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// openNetns opens a namespace file such as /proc/thread-self/ns/net.
func openNetns(t testing.TB, path string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// inode returns the inode number of a namespace: the kernel's ns.inum, the
// value the module reports as NSB_A_NETNS_INUM.
func inode(t testing.TB, h netns.NsHandle) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		t.Fatalf("fstat namespace handle: %v", err)
	}
	return uint32(st.Ino)
}

// initInode returns the inode of the namespace the test process runs in.
func initInode(t testing.TB) uint32 {
	t.Helper()
	return inode(t, openNetns(t, "/proc/thread-self/ns/net"))
}
