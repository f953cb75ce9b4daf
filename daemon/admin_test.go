package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// socketEnv tells a child which socket to use, argsEnv the arguments
// for Main, one per line.
const (
	socketEnv = "NSB_DAEMON_TEST_SOCKET"
	argsEnv   = "NSB_DAEMON_TEST_ARGS"
)

// runChild is the test binary run as a child process. Mode "main" runs
// Main with the arguments in argsEnv. Mode "admin" connects to the admin
// socket and reports on stdout either "dial <errno>" or "rpc <code>" of a
// ListNamespaces call.
func runChild(mode string) int {
	switch mode {
	case "main":
		return Main(strings.Split(os.Getenv(argsEnv), "\n"))
	case "admin":
	case "squat":
		return squat(os.Getenv(netnsEnv), os.Getenv(socketEnv))
	case "fake-main":
		return runFakeMain()
	default:
		fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
		return 2
	}
	c, err := net.Dial("unix", os.Getenv(socketEnv))
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			fmt.Printf("dial %s\n", unix.ErrnoName(errno))
		} else {
			fmt.Printf("dial %v\n", err)
		}
		return 0
	}
	var used atomic.Bool
	cc, err := grpc.NewClient("passthrough:///admin",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if used.CompareAndSwap(false, true) {
				return c, nil
			}
			return nil, errors.New("connection used up")
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = nsbrokerv1.NewBrokerClient(cc).ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	fmt.Printf("rpc %s\n", status.Code(err))
	return 0
}

// asNobody runs the admin child as uid 65534 and, unless groups name
// others, gid 65534 against socket.
func asNobody(t *testing.T, exe, socket string, groups ...uint32) string {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = append(childEnviron(), childEnv+"=admin", socketEnv+"="+socket)
	cred := &syscall.Credential{Uid: 65534, Gid: 65534}
	if len(groups) > 0 {
		cred.Gid, cred.Groups = groups[0], groups[1:]
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v (stdout %q)", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestIntegrationAdminSocket checks the admin socket's directory and
// modes, and that peers are admitted by credentials: root yes; uid 65534
// not through the file mode, and not by SO_PEERCRED either when the mode
// lets it connect; a member of the admin group yes.
func TestIntegrationAdminSocket(t *testing.T) {
	testenv.RequireRoot(t)
	// A tree uid 65534 may enter, with the test binary in it.
	top, err := os.MkdirTemp("", "nsbrokerd-admin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := copyExecutable(t, top)
	socket := filepath.Join(top, "run", "nsbroker.sock")

	t.Run("root only", func(t *testing.T) {
		d := startDaemon(t, func(c *Config) { c.AdminSocket = socket })
		checkMode(t, filepath.Dir(socket), os.ModeDir|0o755, 0)
		checkMode(t, socket, os.ModeSocket|0o600, 0)

		ctx := ctxTimeout(t)
		if _, err := d.admin().ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{}); err != nil {
			t.Errorf("root: ListNamespaces: %v", err)
		}
		if got, want := asNobody(t, exe, socket), "dial EACCES"; got != want {
			t.Errorf("uid 65534 on a 0600 socket: want %q, got %q", want, got)
		}
		// With the file mode out of the way, SO_PEERCRED still refuses.
		if err := os.Chmod(socket, 0o666); err != nil {
			t.Fatal(err)
		}
		if got, want := asNobody(t, exe, socket), "rpc Unavailable"; got != want {
			t.Errorf("uid 65534 on a 0666 socket: want %q, got %q", want, got)
		}
		refusal := d.logs.waitCount(msgIs("admin socket: peer refused"), 1)
		if refusal.attrs["uid"] != "65534" {
			t.Errorf("refusal logged for uid %q, want 65534", refusal.attrs["uid"])
		}
	})
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket after stop: want it removed, got %v", err)
	}

	t.Run("admin group", func(t *testing.T) {
		d := startDaemon(t, func(c *Config) { c.AdminSocket, c.AdminGroup = socket, "65534" })
		checkMode(t, socket, os.ModeSocket|0o660, 65534)
		if got, want := asNobody(t, exe, socket), "rpc OK"; got != want {
			t.Errorf("admin group as primary group: want %q, got %q", want, got)
		}
		if got, want := asNobody(t, exe, socket, 65533, 65534), "rpc OK"; got != want {
			t.Errorf("admin group as supplementary group: want %q, got %q", want, got)
		}
		// Past the file mode (group 65534 only), a peer outside the group.
		if err := os.Chmod(socket, 0o666); err != nil {
			t.Fatal(err)
		}
		if got, want := asNobody(t, exe, socket, 65533, 65532), "rpc Unavailable"; got != want {
			t.Errorf("outside the admin group: want %q, got %q", want, got)
		}
		refusal := d.logs.waitCount(msgIs("admin socket: peer refused"), 1)
		if want := "uid 65534 is neither root nor in group 65534"; refusal.attrs["err"] != want {
			t.Errorf("refusal: want %q, got %q", want, refusal.attrs["err"])
		}
	})

	t.Run("in use", func(t *testing.T) {
		startDaemon(t, func(c *Config) { c.AdminSocket = socket })
		cfg := Defaults()
		cfg.AdminSocket = socket
		cfg.HandoverSocket = "" // with it, the second daemon would take over (TestIntegrationHandover)
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		err := Run(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "is in use: is another nsbrokerd running?") {
			t.Errorf("second daemon on the same socket: want an in-use error, got %v", err)
		}
	})

	t.Run("stale socket", func(t *testing.T) {
		// A socket file nobody listens on, as a killed daemon leaves.
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		d := startDaemon(t, func(c *Config) { c.AdminSocket = socket })
		if _, err := d.admin().ListNamespaces(ctxTimeout(t), &nsbrokerv1.ListNamespacesRequest{}); err != nil {
			t.Errorf("over a stale socket: ListNamespaces: %v", err)
		}
	})
}

func checkMode(t *testing.T, path string, mode os.FileMode, gid uint32) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode: want %v, got %v", path, mode, fi.Mode())
	}
	if got := fi.Sys().(*syscall.Stat_t).Gid; got != gid {
		t.Errorf("%s: group: want %d, got %d", path, gid, got)
	}
}
