package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// bindNamespace makes path a name of ns (a bind mount of its nsfs file),
// as container runtimes do; the mount is removed when the test ends.
func bindNamespace(t *testing.T, ns *nsmgr.Namespace, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(filepath.Join(nsmgr.NetnsDir, ns.Ref().Name), path, "none", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unbindNamespace(path) })
}

func unbindNamespace(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return err
	}
	err := os.Remove(path)
	if os.IsNotExist(err) {
		return nil
	}
	return err
}

// nextNamespaceEvent reads the next namespace event that is not a state
// change (ready, unavailable, which may come in any order around an
// attach) and checks it.
func nextNamespaceEvent(t *testing.T, w nsbrokerv1.Broker_WatchNamespacesClient, kind nsbrokerv1.NamespaceEvent_Kind, name string, inode uint32) {
	t.Helper()
	ev, err := w.Recv()
	for err == nil && (ev.Kind == nsbrokerv1.NamespaceEvent_KIND_READY || ev.Kind == nsbrokerv1.NamespaceEvent_KIND_UNAVAILABLE) {
		ev, err = w.Recv()
	}
	if err != nil {
		t.Fatalf("watch: want %v %s, got error %v", kind, name, err)
	}
	if ev.Kind != kind || ev.Namespace.GetName() != name || ev.Namespace.GetInode() != uint64(inode) {
		t.Fatalf("watch: want %v %s inode %d, got %v %s inode %d", kind, name, inode, ev.Kind, ev.Namespace.GetName(), ev.Namespace.GetInode())
	}
}

// TestIntegrationDiscover checks that --discover attaches the namespaces
// present in its directory at start-up and those that appear later, with
// a local socket each, and that the broker detaches one whose name goes.
func TestIntegrationDiscover(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	first, _ := newNamespace(t)
	second, _ := newNamespace(t)
	bindNamespace(t, first, filepath.Join(dir, "first"))
	d := startDaemon(t, func(c *Config) {
		c.Discover = true
		c.DiscoverDirs = []string{dir}
	})
	admin := d.admin()
	ctx := ctxTimeout(t)
	w, err := admin.WatchNamespaces(ctx, &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	firstName := "path:" + filepath.Join(dir, "first")
	secondName := "path:" + filepath.Join(dir, "second")
	// Present at start-up: attached before the daemon was ready.
	nextNamespaceEvent(t, w, nsbrokerv1.NamespaceEvent_KIND_ATTACHED, firstName, first.Inode())

	bindNamespace(t, second, filepath.Join(dir, "second"))
	nextNamespaceEvent(t, w, nsbrokerv1.NamespaceEvent_KIND_ATTACHED, secondName, second.Inode())
	waitServing(t, dialUnix(t, d.cfg.AdminSocket), secondName)
	cc, err := dialInNamespace(second, "@nsbroker")
	if err != nil {
		t.Fatalf("local socket of a discovered namespace: %v", err)
	}
	defer cc.Close()
	echo, err := nsbrokerv1.NewBrokerClient(cc).Echo(ctx, &nsbrokerv1.EchoRequest{Payload: []byte("found")})
	if err != nil || echo.NetnsInode != uint64(second.Inode()) {
		t.Errorf("Echo inside the discovered namespace: want inode %d, got %v, %v", second.Inode(), echo, err)
	}

	health := watchHealth(t, dialUnix(t, d.cfg.AdminSocket), namespaceService(firstName))
	nextHealth(t, health, healthpb.HealthCheckResponse_SERVING)
	if err := unbindNamespace(filepath.Join(dir, "first")); err != nil {
		t.Fatal(err)
	}
	nextNamespaceEvent(t, w, nsbrokerv1.NamespaceEvent_KIND_GONE, firstName, first.Inode())
	// Its local socket is closed: nothing holds the namespace but the test.
	nextHealth(t, health, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	if c, err := dialInNamespace(first, "@nsbroker"); err == nil {
		c.Close()
		t.Errorf("the gone namespace's local socket is still open")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial the gone namespace's socket: want ECONNREFUSED, got %v", err)
	}
}
