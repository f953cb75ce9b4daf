package daemon

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// netnsEnv names the namespace the squat child enters.
const netnsEnv = "NSB_DAEMON_TEST_NETNS"

// squatUID is the unprivileged user the squatter runs as.
const squatUID = 65534

// squat is the child that takes the abstract socket name inside the
// namespace netns as uid 65534, as any process in a tenant namespace
// could: it says "listening" and holds the name until stdin closes.
func squat(netns, name string) int {
	runtime.LockOSThread() // this thread enters the namespace, for good
	ns, err := nsmgr.Open(nsmgr.Ref{Name: netns})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := unix.Setns(ns.Fd(), unix.CLONE_NEWNET); err != nil {
		fmt.Fprintln(os.Stderr, "setns:", err)
		return 1
	}
	ns.Close()
	if err := syscall.Setgid(squatUID); err != nil {
		fmt.Fprintln(os.Stderr, "setgid:", err)
		return 1
	}
	if err := syscall.Setuid(squatUID); err != nil {
		fmt.Fprintln(os.Stderr, "setuid:", err)
		return 1
	}
	ln, err := net.Listen("unix", name)
	if err != nil {
		fmt.Printf("listen %v\n", err)
		return 1
	}
	fmt.Println("listening")
	io.Copy(io.Discard, os.Stdin)
	ln.Close()
	return 0
}

// squatter is a child process holding a namespace's abstract socket.
type squatter struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startSquatter runs the squat child in the namespace netns and waits
// until it listens on name.
func startSquatter(t *testing.T, netns, name string) *squatter {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(childEnviron(), childEnv+"=squat", netnsEnv+"="+netns, socketEnv+"="+name)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &squatter{cmd, stdin}
	t.Cleanup(s.release)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "listening" {
		t.Fatalf("squatter: %q, %v", line, err)
	}
	return s
}

// release makes the squatter close its socket and exit.
func (s *squatter) release() {
	if s.stdin == nil {
		return
	}
	s.stdin.Close()
	s.stdin = nil
	s.cmd.Wait()
}

// TestIntegrationSquatter: a process of uid 65534 inside a namespace
// listens on @nsbroker before the namespace is attached. The daemon says
// so everywhere: its health is NOT_SERVING, WatchNamespaces and
// GetNamespace report the local socket TAKEN with the squatter's pid and
// uid, nsbroker_local_socket_squatted is 1, and the log names the
// squatter's pid, uid and gid. Once the squatter lets go, the daemon
// takes the name within a bound, health turns SERVING, the metric 0, and
// a client there reaches the daemon as the namespace's tenant.
func TestIntegrationSquatter(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	sq := startSquatter(t, name, "@nsbroker")
	pid := sq.cmd.Process.Pid

	const retry = 50 * time.Millisecond
	d := startDaemon(t, func(c *Config) {
		c.MetricsListen = "127.0.0.1:0"
		c.RetryInterval = retry
	})
	cc := dialUnix(t, d.cfg.AdminSocket)
	admin := nsbrokerv1.NewBrokerClient(cc)
	ctx := ctxTimeout(t)
	watch, err := admin.WatchNamespaces(ctx, &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	health := watchHealth(t, cc, namespaceService(name))
	nextHealth(t, health, healthpb.HealthCheckResponse_SERVICE_UNKNOWN)
	if _, err := admin.AttachNamespace(ctx, attachRef(name)); err != nil {
		t.Fatal(err)
	}

	wantReason := fmt.Sprintf("@nsbroker is taken by pid %d uid %d gid %d", pid, squatUID, squatUID)
	nextLocal := func(want nsbrokerv1.LocalSocket_State) *nsbrokerv1.NamespaceEvent {
		t.Helper()
		for {
			ev, err := watch.Recv()
			if err != nil {
				t.Fatalf("WatchNamespaces: want a local socket %v, got %v", want, err)
			}
			if ev.Kind == nsbrokerv1.NamespaceEvent_KIND_LOCAL_SOCKET && ev.Namespace.GetName() == name {
				if got := ev.Namespace.GetLocalSocket().GetState(); got != want {
					t.Fatalf("WatchNamespaces: want local socket %v, got %v", want, ev)
				}
				return ev
			}
		}
	}
	ev := nextLocal(nsbrokerv1.LocalSocket_STATE_TAKEN)
	if got := ev.Namespace.LocalSocket.Reason; got != wantReason {
		t.Errorf("WatchNamespaces reason: want %q, got %q", wantReason, got)
	}
	nextHealth(t, health, healthpb.HealthCheckResponse_NOT_SERVING)
	in, err := admin.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: name})
	if err != nil || in.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY ||
		in.GetLocalSocket().GetState() != nsbrokerv1.LocalSocket_STATE_TAKEN || in.GetLocalSocket().GetReason() != wantReason {
		t.Errorf("GetNamespace: want READY with the local socket TAKEN (%q), got %v, %v", wantReason, in, err)
	}
	e := d.logs.waitCount(msgIs("local socket taken by another process; retrying"), 1)
	if e.attrs["namespace"] != name || e.attrs["pid"] != strconv.Itoa(pid) || e.attrs["uid"] != strconv.Itoa(squatUID) || e.attrs["gid"] != strconv.Itoa(squatUID) {
		t.Errorf("log: want the squatter's pid %d uid and gid %d for %s, got %v", pid, squatUID, name, e)
	}
	if m, ok := sample(scrape(t, d), "nsbroker_local_socket_squatted", map[string]string{"namespace": name}); !ok || m.GetGauge().GetValue() != 1 {
		t.Errorf("nsbroker_local_socket_squatted{namespace=%q}: want 1, got %v", name, m)
	}
	// Retried, but logged once: the squatter did not change.
	time.Sleep(5 * retry)
	if n := d.logs.count(msgIs("local socket taken by another process; retrying")); n != 1 {
		t.Errorf("the same squatter logged %d times, want once", n)
	}

	released := time.Now()
	sq.release()
	nextLocal(nsbrokerv1.LocalSocket_STATE_OPEN)
	nextHealth(t, health, healthpb.HealthCheckResponse_SERVING)
	took := time.Since(released)
	t.Logf("squatter released; the daemon listened and was SERVING %v later (retry interval %v)", took.Round(time.Millisecond), retry)
	if bound := 2 * time.Second; took > bound {
		t.Errorf("took %v to take the freed name, want at most %v", took, bound)
	}
	if m, ok := sample(scrape(t, d), "nsbroker_local_socket_squatted", map[string]string{"namespace": name}); !ok || m.GetGauge().GetValue() != 0 {
		t.Errorf("nsbroker_local_socket_squatted{namespace=%q} after the release: want 0, got %v", name, m)
	}
	tenant, err := dialInNamespace(ns, "@nsbroker")
	if err != nil {
		t.Fatal(err)
	}
	defer tenant.Close()
	own, err := nsbrokerv1.NewBrokerClient(tenant).GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{})
	if err != nil || own.GetName() != name || own.GetLocalSocket().GetState() != nsbrokerv1.LocalSocket_STATE_OPEN {
		t.Errorf("through @nsbroker after the release: want %s with its local socket OPEN, got %v, %v", name, own, err)
	}
}
