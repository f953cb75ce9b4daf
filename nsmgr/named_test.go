package nsmgr

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

func TestNewNamedDeleteNamed(t *testing.T) {
	testenv.RequireRoot(t)
	name := testenv.NetnsName()
	ns, err := NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); DeleteNamed(name) })

	if !netnsDirShared(t) {
		t.Errorf("%s is not a shared mount point in /proc/self/mountinfo", NetnsDir)
	}
	if want := statIno(t, "/proc/self/ns/net"); ns.ID().Ino == want {
		t.Fatalf("NewNamed gave the host namespace net:[%d]", want)
	}
	if got := statIno(t, filepath.Join(NetnsDir, name)); got != ns.ID().Ino {
		t.Errorf("%s/%s is net:[%d], want net:[%d]", NetnsDir, name, got, ns.ID().Ino)
	}
	byName, err := Open(Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	if byName.ID() != ns.ID() {
		t.Errorf("Open(name:%s).ID() = %v, want %v", name, byName.ID(), ns.ID())
	}
	byName.Close()
	if _, err := NewNamed(name); !errors.Is(err, fs.ErrExist) {
		t.Errorf("NewNamed(%q) again = %v, want fs.ErrExist", name, err)
	}

	if err := DeleteNamed(name); err != nil {
		t.Fatalf("DeleteNamed: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(NetnsDir, name)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after DeleteNamed, stat = %v, want fs.ErrNotExist", err)
	}
	if _, err := Open(Ref{Name: name}); !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrNotNetns) {
		t.Errorf("Open after DeleteNamed = %v, want ErrNotNetns and fs.ErrNotExist", err)
	}
	if err := DeleteNamed(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("DeleteNamed again = %v, want fs.ErrNotExist", err)
	}
	// The open descriptor keeps the namespace alive and usable.
	err = ns.Do(func() error {
		if ino, err := threadNetnsIno(); err != nil || ino != ns.ID().Ino {
			return fmt.Errorf("inside net:[%d] (%v), want net:[%d]", ino, err, ns.ID().Ino)
		}
		return nil
	})
	if err != nil {
		t.Errorf("Do after DeleteNamed: %v", err)
	}
	if _, err := NewNamed("a/b"); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("NewNamed(a/b) = %v, want ErrInvalidRef", err)
	}
}

// TestNamedInteropIproute2 checks both directions: ip sees and enters what
// NewNamed made, and Open and DeleteNamed handle what ip netns add made.
func TestNamedInteropIproute2(t *testing.T) {
	ours := newTestNamed(t)
	ip := ipCommand(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ip, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	listed := func() []string {
		var names []string
		for line := range strings.Lines(run("netns", "list")) {
			if f := strings.Fields(line); len(f) > 0 {
				names = append(names, f[0])
			}
		}
		return names
	}
	// ip netns exec enters the namespace; readlink shows which one.
	inodeSeenByIP := func(name string) string {
		return strings.TrimSpace(run("netns", "exec", name, "readlink", "/proc/self/ns/net"))
	}

	if names := listed(); !slices.Contains(names, ours.Ref().Name) {
		t.Errorf("ip netns list = %q, want it to contain %q", names, ours.Ref().Name)
	}
	if got, want := inodeSeenByIP(ours.Ref().Name), fmt.Sprintf("net:[%d]", ours.Inode()); got != want {
		t.Errorf("ip netns exec %s sees %s, want %s", ours.Ref().Name, got, want)
	}

	theirs := testenv.NetnsName()
	run("netns", "add", theirs)
	t.Cleanup(func() { exec.Command(ip, "netns", "del", theirs).Run() })
	ns, err := Open(Ref{Name: theirs})
	if err != nil {
		t.Fatalf("Open a namespace made by ip netns add: %v", err)
	}
	defer ns.Close()
	if got, want := inodeSeenByIP(theirs), fmt.Sprintf("net:[%d]", ns.Inode()); got != want {
		t.Errorf("Open(name:%s) is net:[%d], but ip netns exec sees %s", theirs, ns.Inode(), got)
	} else if ns.ID() == ours.ID() {
		t.Errorf("two namespaces share ID %v", ns.ID())
	}
	if err := DeleteNamed(theirs); err != nil {
		t.Fatalf("DeleteNamed of a namespace made by ip: %v", err)
	}
	if names := listed(); slices.Contains(names, theirs) {
		t.Errorf("after DeleteNamed, ip netns list = %q still has %q", names, theirs)
	}
	run("netns", "del", ours.Ref().Name)
	if _, err := Open(ours.Ref()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open after ip netns del = %v, want fs.ErrNotExist", err)
	}
}

// netnsDirShared reports whether NetnsDir is a mount point with shared
// propagation, as iproute2 makes it.
func netnsDirShared(t *testing.T) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	shared := false
	for line := range strings.Lines(string(b)) {
		// Fields: id parent major:minor root mountpoint options optional... - ...
		f := strings.Fields(line)
		if len(f) > 6 && f[4] == NetnsDir {
			shared = false // the last mount on top decides
			for _, opt := range f[6:] {
				if opt == "-" {
					break
				}
				shared = shared || strings.HasPrefix(opt, "shared:")
			}
		}
	}
	return shared
}
