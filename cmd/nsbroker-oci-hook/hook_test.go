package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/attacher/attachertest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// hookEnv makes the test binary the hook, for runc to run.
const hookEnv = "NSB_OCI_HOOK_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(hookEnv) == "1" {
		main()
	}
	if os.Getenv(containerEnv) == "1" {
		os.Exit(containerMain())
	}
	if os.Getenv(echoEnv) == "1" {
		os.Exit(report(containerSocketDir))
	}
	os.Exit(m.Run())
}

const timeout = 30 * time.Second

// hook runs the hook in this process with stdin and returns its exit
// status and what it wrote to stderr.
func hook(stdin string, args ...string) (int, string) {
	var stderr bytes.Buffer
	code := run(args, strings.NewReader(stdin), &stderr)
	return code, stderr.String()
}

// recorded returns the state runc wrote to a hook at stage (testdata),
// for the process pid.
func recorded(t *testing.T, stage string, pid int) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "runc-"+stage+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(data), `"pid":23454`, `"pid":`+strconv.Itoa(pid), 1)
}

// netnsChild starts a process in a network namespace of its own, killed
// when the test ends, and returns its pid and namespace.
func netnsChild(t *testing.T) (int, nsmgr.ID) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ns, err := nsmgr.Open(nsmgr.Ref{PID: cmd.Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	return cmd.Process.Pid, ns.ID()
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"createRuntime", "poststop"},
		{"startContainer"},
		{"--state-dir", "run/oci", "poststop"},
		{"--timeout", "0s", "poststop"},
		{"--socket", "", "poststop"},
		{"--bogus", "poststop"},
	} {
		code, stderr := hook(`{"id": "x", "pid": 1}`, args...)
		if code != exitUsage || !strings.HasPrefix(stderr, "nsbroker-oci-hook: ") {
			t.Errorf("args %q: exit %d, stderr %q; want %d and a message", args, code, stderr, exitUsage)
		}
	}
}

func TestBadState(t *testing.T) {
	for _, tc := range []struct{ stdin, msg string }{
		{"", "reading the container state on stdin: EOF"},
		{`{"id": 7}`, "reading the container state on stdin: json: cannot unmarshal number"},
		{`{"status": "creating", "pid": 1}`, "the container state on stdin has no id"},
	} {
		code, stderr := hook(tc.stdin, "--socket", "/nonexistent/nsbroker.sock", "createRuntime")
		if code != exitFailure || !strings.Contains(stderr, "nsbroker-oci-hook: createRuntime: "+tc.msg) {
			t.Errorf("state %q: exit %d, stderr %q; want %d and %q", tc.stdin, code, stderr, exitFailure, tc.msg)
		}
	}
	code, stderr := hook(`{"id": "c1", "status": "creating"}`, "--socket", "/nonexistent/nsbroker.sock", "createRuntime")
	if want := `container "c1": the container state has no process id (pid 0)`; code != exitFailure || !strings.Contains(stderr, want) {
		t.Errorf("state without pid: exit %d, stderr %q; want %d and %q", code, stderr, exitFailure, want)
	}
}

// The state runc writes, recorded, for a process in a namespace of its
// own: createRuntime attaches the namespace, poststop detaches it.
func TestIntegrationRecordedState(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	pid, id := netnsChild(t)
	stateDir := t.TempDir()
	socket := []string{"--socket", d.Socket, "--state-dir", stateDir}

	for i := range 2 { // the second time finds it attached
		if code, stderr := hook(recorded(t, "createRuntime", pid), append(socket, "createRuntime")...); code != exitOK {
			t.Fatalf("createRuntime #%d: exit %d: %s", i+1, code, stderr)
		}
	}
	ns := d.Get(t, "oci-rec1")
	if ns == nil {
		t.Fatalf("after createRuntime the daemon lists %q, want oci-rec1", d.Names(t))
	}
	if ns.GetInode() != id.Ino || ns.GetDev() != id.Dev || ns.GetRef().GetPid() != int32(pid) {
		t.Errorf("attached net:[%d] dev %d ref %v; want net:[%d] dev %d pid %d", ns.GetInode(), ns.GetDev(), ns.GetRef(), id.Ino, id.Dev, pid)
	}
	// The note for createContainer: the namespace, and its socket.
	n, err := readNote(stateDir, "rec1")
	want := &note{Dev: id.Dev, Ino: id.Ino, Name: "oci-rec1", Socket: filepath.Join(filepath.Dir(d.Socket), "ns", "oci-rec1", "nsbroker.sock")}
	if err != nil || *n != *want {
		t.Errorf("note after createRuntime: %+v, %v; want %+v", n, err, want)
	}

	// The process is still there: only the hook can detach it now.
	for i := range 2 { // the second time finds it detached
		if code, stderr := hook(recorded(t, "poststop", 0), append(socket, "poststop")...); code != exitOK {
			t.Fatalf("poststop #%d: exit %d: %s", i+1, code, stderr)
		}
		if got := d.Names(t); len(got) != 0 {
			t.Fatalf("after poststop #%d the daemon lists %q, want nothing", i+1, got)
		}
		if _, err := readNote(stateDir, "rec1"); !errors.Is(err, errNoNote) {
			t.Fatalf("note after poststop #%d: %v, want none", i+1, err)
		}
	}

	// prestart, the deprecated stage, attaches too; with another prefix.
	if code, stderr := hook(recorded(t, "createRuntime", pid), "--socket", d.Socket, "--state-dir", stateDir, "--name-prefix", "ctr/", "prestart"); code != exitOK {
		t.Fatalf("prestart: exit %d: %s", code, stderr)
	}
	if ns := d.Get(t, "ctr/rec1"); ns.GetInode() != id.Ino {
		t.Errorf("after prestart the daemon lists %q, want ctr/rec1 for net:[%d]", d.Names(t), id.Ino)
	}
}

// A container in the runtime's own network namespace is not attached:
// that would attach the host's.
func TestIntegrationHostNetwork(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	stateDir := t.TempDir()
	code, stderr := hook(recorded(t, "createRuntime", os.Getpid()), "--socket", d.Socket, "--state-dir", stateDir, "createRuntime")
	if want := "oci-rec1 shares the runtime's network namespace; not attached"; code != exitOK || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr %q; want 0 and %q", code, stderr, want)
	}
	if got := d.Names(t); len(got) != 0 {
		t.Errorf("the daemon lists %q, want nothing", got)
	}
	// createContainer, in the same namespace, mounts nothing.
	code, stderr = hook(recorded(t, "createContainer", 1), "--state-dir", stateDir, "createContainer")
	if want := "rec1 shares the runtime's network namespace; no socket mounted"; code != exitOK || !strings.Contains(stderr, want) {
		t.Errorf("createContainer: exit %d, stderr %q; want 0 and %q", code, stderr, want)
	}
}

func TestIntegrationDaemonDown(t *testing.T) {
	testenv.RequireRoot(t)
	pid, _ := netnsChild(t)
	socket := filepath.Join(t.TempDir(), "nsbroker.sock")
	stateDir := t.TempDir()
	code, stderr := hook(recorded(t, "createRuntime", pid), "--socket", socket, "--state-dir", stateDir, "createRuntime")
	want := `nsbroker-oci-hook: createRuntime: container "rec1": nsbrokerd is not running: ` + socket + ": connect: no such file or directory\n"
	if code != exitFailure || stderr != want {
		t.Errorf("createRuntime without a daemon: exit %d, stderr\n%q\nwant %d and\n%q", code, stderr, exitFailure, want)
	}
	if _, err := readNote(stateDir, "rec1"); !errors.Is(err, errNoNote) {
		t.Errorf("note after a failed createRuntime: %v, want none", err)
	}
	if code, stderr := hook(recorded(t, "poststop", 0), "--socket", socket, "--state-dir", stateDir, "poststop"); code != exitOK || stderr != "" {
		t.Errorf("poststop without a daemon: exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
}

// watchGone waits until the daemon reports name gone on watch.
func watchGone(t *testing.T, watch nsbrokerv1.Broker_WatchNamespacesClient, name string) {
	t.Helper()
	for {
		ev, err := watch.Recv()
		if err != nil {
			t.Fatalf("waiting for %s to be gone: %v", name, err)
		}
		if ev.GetNamespace().GetName() == name && ev.GetKind() == nsbrokerv1.NamespaceEvent_KIND_GONE {
			return
		}
	}
}

func context30s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}
