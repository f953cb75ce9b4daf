package kmodtest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// moduleEnv names the module file in the guest, for reloading it.
const moduleEnv = "NSB_MODULE"

const moduleName = "nsbroker"

// TestIntegrationUnloadReload: the module cannot be removed while a user
// socket is open (each holds a reference on it), can be once they are
// closed even with namespaces alive, and a second load serves existing and
// new namespaces again. The file sorts last, so the tests before it run
// with the module the harness loaded; if this one fails half-way, its
// cleanup loads the module again.
func TestIntegrationUnloadReload(t *testing.T) {
	unit := testenv.RequireModule(t)
	path := os.Getenv(moduleEnv)
	if path == "" {
		if testenv.InVM() {
			t.Fatalf("%s is not set inside the test VM", moduleEnv)
		}
		t.Skipf("%s is not set", moduleEnv)
	}
	image, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Reload with the unit it was loaded with.
	params := fmt.Sprintf("unit=%d", unit)
	t.Cleanup(func() {
		if _, err := testenv.ModuleUnit(); err == nil {
			return
		}
		if err := unix.InitModule(image, params); err != nil {
			t.Errorf("cleanup: load %s again: %v", path, err)
		}
	})

	before := newNetns(t) // lives through unload and reload
	c := dial(t, unit, before)
	c.echo([]byte("before unload"))
	oldID := c.stats().instanceID

	err = unix.DeleteModule(moduleName, 0)
	t.Logf("delete_module with a user socket open: %v", err)
	if !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("delete_module with a user socket open: %v, want EWOULDBLOCK/EAGAIN", err)
	}
	if got, want := c.echo([]byte("still here")).u32(t, attrNetnsInum), inode(t, before); got != want {
		t.Fatalf("echo after the refused unload answered by inode %d, want %d", got, want)
	}

	c.close()
	if err := unix.DeleteModule(moduleName, 0); err != nil {
		t.Fatalf("delete_module with no user socket open: %v", err)
	}
	if _, err := testenv.ModuleUnit(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("module parameters after unload: %v, want them gone", err)
	}
	t.Logf("unloaded with namespace inode %d alive", inode(t, before))

	// Nothing serves the unit now, unless a modprobe helper loads the module
	// on demand.
	if !modprobeHelper() {
		if nl, err := netlink.Dial(unit, nil); !errors.Is(err, unix.EPROTONOSUPPORT) {
			if err == nil {
				nl.Close()
			}
			t.Fatalf("socket on unit %d with the module unloaded: %v, want EPROTONOSUPPORT", unit, err)
		}
	}

	during := newNetns(t) // created while the module is out
	if err := unix.InitModule(image, params); err != nil {
		t.Fatalf("load %s again with %q: %v", path, params, err)
	}
	unit2 := testenv.RequireModule(t)
	if unit2 != unit {
		t.Fatalf("reloaded on unit %d, want %d", unit2, unit)
	}

	for _, ns := range []struct {
		name string
		h    netns.NsHandle
	}{{"alive through the unload", before}, {"created while unloaded", during}, {"initial", netns.None()}} {
		want := initInode(t)
		if ns.h.IsOpen() {
			want = inode(t, ns.h)
		}
		c := dial(t, unit2, ns.h)
		if got := c.echo([]byte("after reload")).u32(t, attrNetnsInum); got != want {
			t.Errorf("%s namespace: echo after reload answered by inode %d, want %d", ns.name, got, want)
		}
		st := c.stats()
		if ns.h == before && st.instanceID == oldID {
			t.Errorf("%s namespace: NSB_A_INSTANCE_ID %#x unchanged by the reload", ns.name, oldID)
		}
		if st.counters[statsEcho] != 1 {
			t.Errorf("%s namespace: ECHO counter %d after reload, want 1 (fresh state)", ns.name, st.counters[statsEcho])
		}
		// The initial namespace and the two above, at least.
		if st.instances < 3 {
			t.Errorf("instances after reload = %d, want at least 3", st.instances)
		}
		t.Logf("%s namespace: echo answered after reload, instances %d", ns.name, st.instances)
	}
}

// modprobeHelper reports whether the kernel's module loader helper exists,
// in which case opening a socket on the unit may load the module again.
func modprobeHelper() bool {
	b, err := os.ReadFile("/proc/sys/kernel/modprobe")
	if err != nil {
		return false
	}
	_, err = os.Stat(strings.TrimSpace(string(b)))
	return err == nil
}
