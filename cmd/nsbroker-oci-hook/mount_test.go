package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/attacher/attachertest"
	"github.com/nsbroker/nsbroker/client"
	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Run as the container in TestIntegrationCreateContainer: the test
// binary with containerEnv set runs the createContainer hook with
// stateEnv on stdin, then reports what the container sees.
const (
	containerEnv = "NSB_OCI_HOOK_TEST_CONTAINER"
	stateEnv     = "NSB_OCI_HOOK_TEST_STATE"
	rootEnv      = "NSB_OCI_HOOK_TEST_ROOT"
)

// seen is what a process in the container reports.
type seen struct {
	Netns   uint64 // its network namespace's inode
	Echo    uint64 // the namespace that answered its Echo through the socket
	Options string // the socket directory's mount options
}

// echoInode echoes through the filesystem socket at path and returns
// the inode of the namespace that answered.
func echoInode(path string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := client.New(ctx, &client.Config{Endpoint: client.Socket(path)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	resp, err := c.Broker().Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("hello")})
	if err != nil {
		return 0, err
	}
	return resp.GetNetnsInode(), nil
}

// mountOptions returns the per-mount options of the mount at dir.
func mountOptions(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	opts := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 5 && fields[4] == dir {
			opts = fields[5] // the last one mounted there is on top
		}
	}
	if opts == "" {
		return "", fmt.Errorf("nothing mounted on %s", dir)
	}
	return opts, sc.Err()
}

// containerMain waits for stdin to close, runs the createContainer hook,
// and reports what the container then sees.
func containerMain() int {
	io.Copy(io.Discard, os.Stdin)
	if code := run(os.Args[1:], strings.NewReader(os.Getenv(stateEnv)), os.Stderr); code != exitOK {
		return code
	}
	return report(filepath.Join(os.Getenv(rootEnv), containerSocketDir))
}

// report prints, as JSON, what a process sees of the socket directory
// mounted at dir.
func report(dir string) int {
	var s seen
	id, err := ownNetns()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	s.Netns = id.Ino
	if s.Echo, err = echoInode(filepath.Join(dir, "nsbroker.sock")); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 3
	}
	if s.Options, err = mountOptions(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	json.NewEncoder(os.Stdout).Encode(&s)
	return 0
}

// checkSeen checks what a process in net:[ino] saw: its namespace
// answered through the socket, mounted read-only and so on.
func checkSeen(t *testing.T, s seen, ino uint64) {
	t.Helper()
	if s.Netns != ino || uint64(s.Echo) != ino {
		t.Errorf("the container in net:[%d] echoed through %s and net:[%d] answered; want its own net:[%d]", s.Netns, containerSocket, s.Echo, ino)
	}
	for _, o := range []string{"ro", "nosuid", "nodev", "noexec"} {
		if !strings.Contains(","+s.Options+",", ","+o+",") {
			t.Errorf("the socket directory is mounted %q, want %s among the options", s.Options, o)
		}
	}
}

// newBundle makes a bundle whose config.json names the root file system
// "rootfs" (empty), and returns it and the root.
func newBundle(t *testing.T) (bundle, root string) {
	t.Helper()
	bundle = t.TempDir()
	root = filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion": "1.0.2", "root": {"path": "rootfs"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return bundle, root
}

// stateJSON is the state a runtime gives a hook.
func stateJSON(id string, pid int, bundle string) string {
	return fmt.Sprintf(`{"ociVersion": "1.0.2", "id": %q, "status": "creating", "pid": %d, "bundle": %q}`, id, pid, bundle)
}

// The whole way, as a runtime takes it: createRuntime attaches the
// namespace of a process in a network and mount namespace of its own,
// and createContainer, run by that process, mounts the namespace's
// socket directory in its root; through it the process is its
// namespace's tenant. The mount stays in the container's mount namespace.
func TestIntegrationCreateContainer(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	stateDir := t.TempDir()
	bundle, root := newBundle(t)
	const id = "ctr1"

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--state-dir", stateDir, "createContainer")
	cmd.Env = append(os.Environ(), containerEnv+"=1", stateEnv+"="+stateJSON(id, 1, bundle), rootEnv+"="+root)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Unshareflags makes the new mount namespace's mounts private.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Unshareflags: syscall.CLONE_NEWNS}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ctr, _, err := containerNetns(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}

	if code, stderr := hook(stateJSON(id, cmd.Process.Pid, bundle), "--socket", d.Socket, "--state-dir", stateDir, "createRuntime"); code != exitOK {
		t.Fatalf("createRuntime: exit %d: %s", code, stderr)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("createContainer in the container: %v: %s", err, stderr.String())
	}
	var s seen
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("the container's report %q: %v (stderr %s)", stdout.String(), err, stderr.String())
	}
	checkSeen(t, s, ctr.Ino)
	// Made in the root; mounted only in the container's mount namespace.
	entries, err := os.ReadDir(filepath.Join(root, containerSocketDir))
	if err != nil || len(entries) != 0 {
		t.Errorf("outside the container %s holds %v (%v), want an empty directory", filepath.Join(root, containerSocketDir), entries, err)
	}
}

// createContainer mounts nothing unless createRuntime left a note for a
// namespace it runs in, with a socket.
func TestCreateContainerRefuses(t *testing.T) {
	own, err := ownNetns()
	if err != nil {
		t.Fatal(err)
	}
	bundle, root := newBundle(t)
	for _, tc := range []struct {
		name string
		note *note // nil: none
		want string
	}{
		{"no note", nil, "no note from the createRuntime hook"},
		{"another namespace", &note{Dev: own.Dev, Ino: own.Ino + 1, Name: "oci-c1", Socket: "/run/nsbroker/ns/oci-c1/nsbroker.sock"},
			fmt.Sprintf("createRuntime saw the container in net:[%d] (dev %d), this hook runs in net:[%d] (dev %d)", own.Ino+1, own.Dev, own.Ino, own.Dev)},
		{"no socket", &note{Dev: own.Dev, Ino: own.Ino, Name: "oci-c1"}, `nsbrokerd serves no filesystem socket for "oci-c1"`},
		{"no socket there", &note{Dev: own.Dev, Ino: own.Ino, Name: "oci-c1", Socket: filepath.Join(t.TempDir(), "nsbroker.sock")},
			"nsbroker.sock: no such file or directory"},
	} {
		stateDir := t.TempDir()
		if tc.note != nil {
			if err := writeNote(stateDir, "c1", tc.note); err != nil {
				t.Fatal(err)
			}
		}
		code, stderr := hook(stateJSON("c1", 1, bundle), "--state-dir", stateDir, "createContainer")
		if code != exitFailure || !strings.HasPrefix(stderr, `nsbroker-oci-hook: createContainer: container "c1": `) || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", tc.name, code, stderr, exitFailure, tc.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after the refusals the root holds /run (%v), want nothing made", err)
	}
}

// The mount point is made inside the root: links in the image are
// resolved as if the root were "/", also those that climb out or are
// absolute.
func TestMountPoint(t *testing.T) {
	for _, link := range []string{"/var/run", "../../../../var/run", "var/run"} {
		top := t.TempDir()
		root := filepath.Join(top, "rootfs")
		if err := os.MkdirAll(filepath.Join(root, "var/run"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(top, "var/run"), 0o755); err != nil { // the bait
			t.Fatal(err)
		}
		if err := os.Symlink(link, filepath.Join(root, "run")); err != nil {
			t.Fatal(err)
		}
		rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := mountPoint(rootFd, containerSocketDir)
		unix.Close(rootFd)
		if err != nil {
			t.Errorf("run -> %s: %v", link, err)
			continue
		}
		var got, want unix.Stat_t
		unix.Fstat(fd, &got)
		unix.Close(fd)
		if err := unix.Stat(filepath.Join(root, "var/run/nsbroker"), &want); err != nil || got.Ino != want.Ino {
			t.Errorf("run -> %s: the mount point is inode %d, want %s/var/run/nsbroker (%v)", link, got.Ino, root, err)
		}
		if fi, err := os.Stat(filepath.Join(root, "var/run/nsbroker")); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("run -> %s: the mount point %v, %v; want mode 0755", link, fi, err)
		}
		if _, err := os.Lstat(filepath.Join(top, "var/run/nsbroker")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run -> %s: made %s outside the root (%v)", link, filepath.Join(top, "var/run/nsbroker"), err)
		}
	}

	// A link to nowhere in the root is an error, not a directory made
	// elsewhere.
	root := t.TempDir()
	if err := os.Symlink("/nowhere", filepath.Join(root, "run")); err != nil {
		t.Fatal(err)
	}
	rootFd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rootFd)
	if fd, err := mountPoint(rootFd, containerSocketDir); !errors.Is(err, unix.ENOENT) {
		unix.Close(fd)
		t.Errorf("run -> /nowhere: %v, want ENOENT", err)
	}
}
