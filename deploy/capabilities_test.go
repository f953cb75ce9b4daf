package deploy

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/attacher"
	"github.com/nsbroker/nsbroker/daemon"
	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// daemonEnv makes the test binary nsbrokerd.
const daemonEnv = "NSB_DEPLOY_TEST_DAEMON"

func TestMain(m *testing.M) {
	if os.Getenv(daemonEnv) == "1" {
		os.Exit(daemon.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

const timeout = 20 * time.Second

// startConfined runs the daemon as systemd would with the unit's
// CapabilityBoundingSet=caps and NoNewPrivileges=yes: a root process
// whose capabilities are the bounding set. It returns the admin socket
// once the daemon has reported READY=1.
func startConfined(t *testing.T, caps []string) string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skipf("setpriv (util-linux) is not installed: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()

	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	socket := filepath.Join(dir, "nsbroker.sock")
	cmd := exec.Command(setpriv, "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs", "--",
		self, "--admin-socket", socket, "--state-file", filepath.Join(dir, "attachments.json"), "--log-level", "debug")
	cmd.Env = append(os.Environ(), daemonEnv+"=1", "NOTIFY_SOCKET="+notifyPath, "GORACE=atexit_sleep_ms=0")
	log := &daemontest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("nsbrokerd log:\n%s", log)
		}
	})
	notify.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	for {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("nsbrokerd did not report READY=1: %v", err)
		}
		if slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
			return socket
		}
	}
}

// netnsProcess starts a root process with all capabilities in a network
// namespace of its own, as a container's first process is created, and
// returns its pid.
func netnsProcess(t *testing.T) int {
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
	return cmd.Process.Pid
}

// localSocketOpen reports whether the daemon opened its namespace-local
// socket in the named namespace, attached under the same name. The
// daemon registers the namespace's health service after trying, so once
// the service is known the answer is final.
func localSocketOpen(t *testing.T, ctx context.Context, admin *grpc.ClientConn, name string) bool {
	t.Helper()
	service := nsbrokerv1.Broker_ServiceDesc.ServiceName + "/" + name
	watch, err := healthpb.NewHealthClient(admin).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("health watch %s: %v", service, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
			break
		}
	}
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var conn net.Conn
	err = ns.Do(func() error {
		var err error
		conn, err = net.Dial("unix", "@nsbroker")
		return err
	})
	if err != nil {
		if !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("dial @nsbroker in %s: %v", name, err)
		}
		return false
	}
	conn.Close()
	return true
}

// The capabilities the unit grants are enough for the daemon, and the
// test notices when one is missing: without CAP_SYS_PTRACE no pid:
// reference can be attached, without CAP_SYS_ADMIN no namespace-local
// socket can be opened.
func TestIntegrationUnitCapabilities(t *testing.T) {
	testenv.RequireRoot(t)
	caps := parseUnit(t, unitFile).capabilities(t)
	without := func(c string) []string {
		return slices.DeleteFunc(slices.Clone(caps), func(x string) bool { return x == c })
	}
	for _, tc := range []struct {
		name          string
		caps          []string
		pidAttach     codes.Code
		localSocketOK bool
	}{
		{"unit", caps, codes.OK, true},
		{"without CAP_SYS_PTRACE", without("CAP_SYS_PTRACE"), codes.PermissionDenied, true},
		{"without CAP_SYS_ADMIN", without("CAP_SYS_ADMIN"), codes.OK, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socket := startConfined(t, tc.caps)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			c, err := attacher.Dial(ctx, socket)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			_, err = c.Attach(ctx, "ctr", nsmgr.Ref{PID: netnsProcess(t)})
			if got := status.Code(err); got != tc.pidAttach {
				t.Errorf("attach pid: got %v (%v), want %v", got, err, tc.pidAttach)
			}

			name := testenv.NetnsName()
			if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
				t.Fatalf("ip netns add: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
			if _, err := c.Attach(ctx, name, nsmgr.Ref{Path: "/run/netns/" + name}); err != nil {
				t.Fatalf("attach %s: %v", name, err)
			}
			admin, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			if got := localSocketOpen(t, ctx, admin, name); got != tc.localSocketOK {
				t.Errorf("namespace-local socket open: %v, want %v", got, tc.localSocketOK)
			}
		})
	}
}
