package main

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/nsbroker/nsbroker/attacher/attachertest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// runc is a runc with its state in a temporary directory.
type runc struct {
	t    *testing.T
	root string
}

// requireRunc skips unless runc and a static busybox are installed, and
// returns the busybox.
func requireRunc(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skipf("runc is not installed (Debian: apt-get install runc): %v", err)
	}
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		f, err := elf.Open(p)
		if err != nil {
			continue
		}
		static := true
		for _, prog := range f.Progs {
			static = static && prog.Type != elf.PT_INTERP
		}
		f.Close()
		if static {
			return p
		}
	}
	t.Skip("no static busybox for the container's root file system (Debian: apt-get install busybox-static)")
	return ""
}

// run runs runc with args, its output going to a file (a pipe would be
// held open by the container it starts).
func (r *runc) run(args ...string) (string, error) {
	out, err := os.CreateTemp(r.t.TempDir(), "runc-out")
	if err != nil {
		r.t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("runc", append([]string{"--root", r.root}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	data, _ := os.ReadFile(out.Name())
	return string(data), err
}

// echoEnv makes the test binary, run as a container's process, report
// what it sees through containerSocket.
const echoEnv = "NSB_OCI_HOOK_TEST_ECHO"

// bundle makes a bundle running sleep in busybox with the example hooks,
// pointed at socket, at a state directory of the test's and at this test
// binary.
func bundle(t *testing.T, r *runc, busybox, socket string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(bin, "sleep")); err != nil {
		t.Fatal(err)
	}
	if out, err := r.run("spec", "--bundle", dir); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}

	var spec specs.Spec
	readJSON(t, filepath.Join(dir, "config.json"), &spec)
	spec.Process.Terminal = false
	spec.Process.Args = []string{"sleep", "600"}
	var hooks specs.Hooks
	readJSON(t, exampleRuncHooks, &hooks)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stateDir := t.TempDir()
	for _, h := range []*specs.Hook{&hooks.CreateRuntime[0], &hooks.CreateContainer[0], &hooks.Poststop[0]} {
		h.Path = self
		h.Env = []string{hookEnv + "=1", "GORACE=atexit_sleep_ms=0"}
		for i, a := range h.Args {
			if a == "/run/nsbroker/nsbroker.sock" {
				h.Args[i] = socket
			}
		}
		h.Args = slices.Insert(h.Args, 1, "--state-dir", stateDir)
	}
	spec.Hooks = &hooks
	data, err = json.Marshal(&spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The example hooks run by runc: the container's namespace is attached
// once runc create returns, gone when its process is killed, and runc
// delete runs the poststop hook without error.
func TestIntegrationRunc(t *testing.T) {
	busybox := requireRunc(t)
	d := attachertest.Start(t)
	r := &runc{t: t, root: t.TempDir()}
	b := bundle(t, r, busybox, d.Socket)
	id := testenv.NetnsName()
	t.Cleanup(func() { r.run("delete", "--force", id) })

	if out, err := r.run("create", "--bundle", b, id); err != nil {
		t.Fatalf("runc create: %v: %s", err, out)
	}
	out, err := r.run("state", id)
	if err != nil {
		t.Fatalf("runc state: %v: %s", err, out)
	}
	var state specs.State
	if err := json.Unmarshal([]byte(out), &state); err != nil {
		t.Fatalf("runc state: %v: %s", err, out)
	}
	ctr, err := nsmgr.Open(nsmgr.Ref{PID: state.Pid})
	if err != nil {
		t.Fatal(err)
	}
	ctrID := ctr.ID()
	ctr.Close()
	name := "oci-" + id
	ns := d.Get(t, name)
	if ns == nil || ns.GetInode() != ctrID.Ino || ns.GetRef().GetPid() != int32(state.Pid) {
		t.Fatalf("after runc create the daemon lists %q (%v), want %s for pid %d net:[%d]", d.Names(t), ns, name, state.Pid, ctrID.Ino)
	}

	watch, err := d.Client.WatchNamespaces(context30s(t), &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := r.run("kill", id, "KILL"); err != nil {
		t.Fatalf("runc kill: %v: %s", err, out)
	}
	watchGone(t, watch, name)
	if out, err := r.run("delete", id); err != nil {
		t.Fatalf("runc delete (poststop): %v: %s", err, out)
	}
	if got := d.Names(t); len(got) != 0 {
		t.Errorf("after runc delete the daemon lists %q, want nothing", got)
	}
}

// A createRuntime hook that fails fails the container's creation, with
// the hook's message.
func TestIntegrationRuncDaemonDown(t *testing.T) {
	busybox := requireRunc(t)
	r := &runc{t: t, root: t.TempDir()}
	socket := filepath.Join(t.TempDir(), "nsbroker.sock")
	b := bundle(t, r, busybox, socket)
	id := testenv.NetnsName()
	t.Cleanup(func() { r.run("delete", "--force", id) })

	out, err := r.run("create", "--bundle", b, id)
	want := `nsbroker-oci-hook: createRuntime: container \"` + id + `\": nsbrokerd is not running: ` + socket
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("runc create without a daemon: %v: %s\nwant a failure containing %s", err, out, want)
	}
	if out, err := r.run("state", id); err == nil {
		t.Errorf("runc state after the failed create: %s, want no such container", out)
	}
}

// editSpec changes the config.json of bundle b.
func editSpec(t *testing.T, b string, edit func(*specs.Spec)) {
	t.Helper()
	var spec specs.Spec
	readJSON(t, filepath.Join(b, "config.json"), &spec)
	edit(&spec)
	data, err := json.Marshal(&spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The example hooks give a container run by runc its namespace's
// filesystem socket at /run/nsbroker/nsbroker.sock: this test binary,
// as the container's process, echoes through it, and its own namespace
// answers. The container sees the host's /usr (read-only) for the test
// binary's libraries.
func TestIntegrationRuncSocket(t *testing.T) {
	busybox := requireRunc(t)
	d := attachertest.Start(t)
	r := &runc{t: t, root: t.TempDir()}
	b := bundle(t, r, busybox, d.Socket)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(b, "rootfs")
	for _, lib := range []string{"/lib", "/lib64"} {
		if target, err := os.Readlink(lib); err == nil {
			if err := os.Symlink(target, filepath.Join(rootfs, lib)); err != nil {
				t.Fatal(err)
			}
		}
	}
	editSpec(t, b, func(spec *specs.Spec) {
		spec.Process.Args = []string{"/nsb-test"}
		spec.Process.Env = append(spec.Process.Env, echoEnv+"=1")
		bind := func(src, dst string) specs.Mount {
			return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "ro"}}
		}
		spec.Mounts = append(spec.Mounts, bind(self, "/nsb-test"), bind("/usr", "/usr"))
		for _, lib := range []string{"/lib", "/lib64"} {
			if fi, err := os.Lstat(lib); err == nil && fi.IsDir() {
				spec.Mounts = append(spec.Mounts, bind(lib, lib))
			}
		}
	})
	id := testenv.NetnsName()
	t.Cleanup(func() { r.run("delete", "--force", id) })

	// The container's network namespace is gone with it: the namespace
	// that answered is known by what the daemon attached.
	watch, err := d.Client.WatchNamespaces(context30s(t), &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.run("run", "--bundle", b, id)
	if err != nil {
		t.Fatalf("runc run: %v: %s", err, out)
	}
	var attached uint64
	for attached == 0 {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatalf("waiting for oci-%s: %v", id, err)
		}
		if ns := ev.GetNamespace(); ns.GetName() == "oci-"+id && ev.GetKind() == nsbrokerv1.NamespaceEvent_KIND_ATTACHED {
			attached = ns.GetInode()
		}
	}
	var s seen
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("the container's report %q: %v", out, err)
	}
	checkSeen(t, s, attached)
	if got := d.Names(t); len(got) != 0 {
		t.Errorf("after runc run the daemon lists %q, want nothing", got)
	}
}
