package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationFileSocket: an attached namespace gets a filesystem
// socket in directories that are root's, mode 0755; the socket is mode
// 0666. A client inside the namespace that connects through it is that
// namespace's tenant, exactly as through @nsbroker; a client of the
// host's namespace that reaches the same path is refused and logged. The
// socket and its directory go when the namespace is detached.
func TestIntegrationFileSocket(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	_, other := newNamespace(t)
	d := startDaemon(t, func(c *Config) { c.Attach = []string{name, other} })
	cc := dialUnix(t, d.cfg.AdminSocket)
	waitServing(t, cc, name)
	dir := d.cfg.runPath(d.cfg.FileSocketDir)
	path := FileSocketPath(dir, name)
	if want := filepath.Join(dir, name, "nsbroker.sock"); path != want {
		t.Errorf("FileSocketPath: want %s, got %s", want, path)
	}
	admin := nsbrokerv1.NewBrokerClient(cc)
	if in, err := admin.GetNamespace(ctxTimeout(t), &nsbrokerv1.GetNamespaceRequest{Namespace: name}); err != nil || in.GetLocalSocket().GetPath() != path {
		t.Errorf("GetNamespace: want local_socket.path %s, got %v, %v", path, in, err)
	}
	for _, p := range []string{dir, filepath.Dir(path)} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || fi.Mode().Perm() != 0o755 || st.Uid != 0 {
			t.Errorf("%s: want a directory of uid 0, mode 0755; got %v uid %d", p, fi.Mode(), st.Uid)
		}
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o666 {
		t.Errorf("%s: want a socket, mode 0666; got %v, %v", path, fi.Mode(), err)
	}

	// From inside the namespace: its tenant.
	tc, err := dialInNamespace(ns, path)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tenant := nsbrokerv1.NewBrokerClient(tc)
	own, err := tenant.GetNamespace(ctxTimeout(t), &nsbrokerv1.GetNamespaceRequest{})
	if err != nil || own.GetName() != name || own.GetInode() != uint64(ns.Inode()) {
		t.Errorf("through %s: want namespace %s inode %d, got %v, %v", path, name, ns.Inode(), own, err)
	}
	list, err := tenant.ListNamespaces(ctxTimeout(t), &nsbrokerv1.ListNamespacesRequest{})
	if err != nil || len(list.GetNamespaces()) != 1 || list.Namespaces[0].GetName() != name {
		t.Errorf("through %s: want to see %s only, got %v, %v", path, name, list, err)
	}
	_, err = tenant.GetNamespace(ctxTimeout(t), &nsbrokerv1.GetNamespaceRequest{Namespace: other})
	wantCode(t, "another namespace through the filesystem socket", err, codes.NotFound)

	// From the host's namespace, by the same path: refused.
	hc := dialUnix(t, path)
	_, err = nsbrokerv1.NewBrokerClient(hc).GetNamespace(ctxTimeout(t), &nsbrokerv1.GetNamespaceRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("from the host through %s: want UNAVAILABLE (connection closed), got %v", path, err)
	}
	e := d.logs.waitCount(msgIs("local socket: connection from another namespace refused"), 1)
	if e.attrs["namespace"] != name || !strings.Contains(e.attrs["err"], "not the served") {
		t.Errorf("refusal log: got %v", e)
	}

	if _, err := admin.DetachNamespace(ctxTimeout(t), &nsbrokerv1.DetachNamespaceRequest{Namespace: name}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the filesystem socket's directory removed", func() bool {
		_, err := os.Lstat(filepath.Dir(path))
		return errors.Is(err, os.ErrNotExist)
	})
}

// eventually polls cond until it holds, or fails after waitTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
