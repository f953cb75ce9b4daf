package nsmgr

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

// newTestNamed creates a named namespace nsb-test-<pid>-N that is closed
// and deleted when the test ends.
func newTestNamed(t *testing.T) *Namespace {
	t.Helper()
	testenv.RequireRoot(t)
	name := testenv.NetnsName()
	ns, err := NewNamed(name)
	if err != nil {
		t.Fatalf("NewNamed(%q): %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cleanup: DeleteNamed(%q): %v", name, err)
		}
	})
	return ns
}

// statIno returns the inode path resolves to.
func statIno(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

// threadNetnsIno returns the network namespace inode of the calling thread.
func threadNetnsIno() (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/thread-self/ns/net", &st)
	return st.Ino, err
}

// bindNetns bind-mounts the namespace file src onto a new file dst, the
// way container runtimes pin namespaces, and undoes it at the end.
func bindNetns(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.WriteFile(dst, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s on %s: %v", src, dst, err)
	}
	t.Cleanup(func() { unbind(t, dst) })
}

// unbind detaches and removes a file bindNetns made; it tolerates a file
// already gone.
func unbind(t *testing.T, dst string) {
	t.Helper()
	if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		t.Errorf("umount %s: %v", dst, err)
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove %s: %v", dst, err)
	}
}

// startSleeper starts sleep 30, inside ns if it is not nil, and kills it at
// the end of the test.
func startSleeper(t *testing.T, ns *Namespace) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	start := cmd.Start
	if ns != nil {
		// The child inherits the namespace of the thread that forks it.
		start = func() error { return ns.Do(cmd.Start) }
	}
	if err := start(); err != nil {
		t.Fatalf("start sleep: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// fdCount returns how many descriptors the process has open.
func fdCount(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// ipCommand returns the path of iproute2's ip, or skips the part of the
// test that needs it.
func ipCommand(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("iproute2's ip is not installed (looked in /usr/sbin and /sbin)")
	return ""
}

// nextEvent waits up to a bounded time for the next event matching keep.
func nextEvent(t *testing.T, w *Watcher, keep func(WatchEvent) bool) WatchEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatal("events channel closed")
			}
			if ev.Op == Failed {
				t.Fatalf("watcher failed: %v", ev)
			}
			if keep(ev) {
				return ev
			}
		case <-timeout:
			t.Fatal("no matching watch event within 5s")
		}
	}
}

// refIs matches events about one of refs.
func refIs(refs ...Ref) func(WatchEvent) bool {
	return func(ev WatchEvent) bool {
		for _, r := range refs {
			if ev.Ref == r {
				return true
			}
		}
		return false
	}
}

func tempPath(t *testing.T, name string) string { return filepath.Join(t.TempDir(), name) }
