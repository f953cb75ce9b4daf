package attacher_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/attacher"
	"github.com/nsbroker/nsbroker/attacher/attachertest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
)

const timeout = 10 * time.Second

func context10s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// newNamed makes a named namespace, deleted when the test ends, and
// returns its reference by path and its identity.
func newNamed(t *testing.T) (nsmgr.Ref, nsmgr.ID) {
	t.Helper()
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	id := ns.ID()
	ns.Close()
	t.Cleanup(func() { nsmgr.DeleteNamed(name) })
	return nsmgr.Ref{Path: filepath.Join(nsmgr.NetnsDir, name)}, id
}

func TestIntegrationAttachIsIdempotent(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	ctx := context10s(t)
	c, err := attacher.Dial(ctx, d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ref1, id1 := newNamed(t)
	ref2, id2 := newNamed(t)

	ns, err := c.Attach(ctx, "ctr-1", ref1)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if ns.GetName() != "ctr-1" || ns.GetInode() != id1.Ino || ns.GetDev() != id1.Dev {
		t.Fatalf("Attach = %q %d:%d, want %q %v", ns.GetName(), ns.GetDev(), ns.GetInode(), "ctr-1", id1)
	}
	// Again under the same name (a retried ADD), and under another name
	// (a second interface, a daemon that discovered it first): the
	// attachment that exists is the answer.
	for _, name := range []string{"ctr-1", "other"} {
		ns, err := c.Attach(ctx, name, ref1)
		if err != nil {
			t.Fatalf("Attach again as %q: %v", name, err)
		}
		if ns.GetName() != "ctr-1" || ns.GetInode() != id1.Ino {
			t.Errorf("Attach again as %q = %q net:[%d], want the existing %q net:[%d]", name, ns.GetName(), ns.GetInode(), "ctr-1", id1.Ino)
		}
	}
	if got := d.Names(t); len(got) != 1 || got[0] != "ctr-1" {
		t.Fatalf("attached names = %q, want [ctr-1]", got)
	}

	_, err = c.Attach(ctx, "ctr-1", ref2)
	if !errors.Is(err, attacher.ErrNameTaken) {
		t.Fatalf("Attach of another namespace as ctr-1: got %v, want ErrNameTaken", err)
	}
	if want := "net:[" + itoa(id1.Ino) + "], not net:[" + itoa(id2.Ino) + "]"; !strings.Contains(err.Error(), want) {
		t.Errorf("ErrNameTaken message %q does not contain %q", err, want)
	}

	if ns, err := c.Check(ctx, "ctr-1", ref1); err != nil || ns.GetInode() != id1.Ino {
		t.Errorf("Check(ctr-1, ns1) = net:[%d], %v; want net:[%d], nil", ns.GetInode(), err, id1.Ino)
	}
	if _, err := c.Check(ctx, "ctr-2", ref2); !errors.Is(err, attacher.ErrNotAttached) {
		t.Errorf("Check(ctr-2, ns2): got %v, want ErrNotAttached", err)
	}
	if _, err := c.Check(ctx, "ctr-1", ref2); !errors.Is(err, attacher.ErrNameTaken) {
		t.Errorf("Check(ctr-1, ns2): got %v, want ErrNameTaken", err)
	}

	detached, err := c.Detach(ctx, "ctr-1")
	if err != nil || !detached {
		t.Fatalf("Detach = %v, %v; want true, nil", detached, err)
	}
	detached, err = c.Detach(ctx, "ctr-1")
	if err != nil || detached {
		t.Fatalf("second Detach = %v, %v; want false, nil", detached, err)
	}
	if got := d.Names(t); len(got) != 0 {
		t.Fatalf("attached names after Detach = %q, want none", got)
	}
	if err := c.Serving(ctx); err != nil {
		t.Errorf("Serving: %v", err)
	}
}

func TestIntegrationAttachMissingNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	ctx := context10s(t)
	c, err := attacher.Dial(ctx, d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	missing := nsmgr.Ref{Path: filepath.Join(t.TempDir(), "gone")}
	if _, err := c.Attach(ctx, "x", missing); !errors.Is(err, attacher.ErrNoNamespace) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Attach of a missing file: got %v, want ErrNoNamespace and ErrNotExist", err)
	}
	if _, err := c.Check(ctx, "x", missing); !errors.Is(err, attacher.ErrNoNamespace) {
		t.Errorf("Check of a missing file: got %v, want ErrNoNamespace", err)
	}
}

// FileSocket waits for the namespace's filesystem socket, and names the
// one the daemon listens on for that namespace.
func TestIntegrationFileSocket(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	ctx := context10s(t)
	c, err := attacher.Dial(ctx, d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ref, _ := newNamed(t)
	if _, err := c.Attach(ctx, "ctr-1", ref); err != nil {
		t.Fatal(err)
	}
	// Asked at once: the daemon may not have opened it yet.
	path, err := c.FileSocket(ctx, "ctr-1")
	if want := filepath.Join(filepath.Dir(d.Socket), "ns", "ctr-1", "nsbroker.sock"); err != nil || path != want {
		t.Fatalf("FileSocket = %q, %v; want %q", path, err, want)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("%s: %v, %v; want a socket", path, fi, err)
	}
	_, err = c.FileSocket(ctx, "nope")
	if status.Code(err) != codes.NotFound || !strings.HasPrefix(err.Error(), `get namespace "nope": nsbrokerd answered NotFound`) {
		t.Errorf("FileSocket of a name not attached: %v, want NotFound", err)
	}
}

func TestIntegrationRPCError(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	ctx := context10s(t)
	c, err := attacher.Dial(ctx, d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Detach(ctx, "")
	var rerr *attacher.RPCError
	if !errors.As(err, &rerr) || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Detach(\"\"): got %v (code %v), want an RPCError with InvalidArgument", err, status.Code(err))
	}
	if want := `detach "": nsbrokerd answered InvalidArgument: `; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("message %q, want the prefix %q", err, want)
	}
}

func TestDialDaemonDown(t *testing.T) {
	ctx := context10s(t)
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.sock")
	_, err := attacher.Dial(ctx, missing)
	if !errors.Is(err, attacher.ErrDaemonDown) || !errors.Is(err, unix.ENOENT) {
		t.Errorf("Dial of a missing socket: got %v, want ErrDaemonDown and ENOENT", err)
	}
	if want := "nsbrokerd is not running: " + missing + ": connect: no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("message\ngot  %v\nwant %s", err, want)
	}

	// A socket file left behind by a daemon that died.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := attacher.Dial(ctx, stale); !errors.Is(err, attacher.ErrDaemonDown) || !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("Dial of a stale socket: got %v, want ErrDaemonDown and ECONNREFUSED", err)
	}

	// Not a daemon that is down: a path that cannot be a socket.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = attacher.Dial(ctx, filepath.Join(file, "nsbroker.sock"))
	if errors.Is(err, attacher.ErrDaemonDown) || !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("Dial below a regular file: got %v, want ENOTDIR and not ErrDaemonDown", err)
	}
}

func TestIntegrationDialStoppedDaemon(t *testing.T) {
	testenv.RequireRoot(t)
	d := attachertest.Start(t)
	d.Stop(t)
	if _, err := attacher.Dial(context10s(t), d.Socket); !errors.Is(err, attacher.ErrDaemonDown) {
		t.Errorf("Dial after the daemon stopped: got %v, want ErrDaemonDown", err)
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
