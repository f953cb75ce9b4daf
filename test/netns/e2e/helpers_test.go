package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/internal/daemontest"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Bounds on waiting; generous because the VM emulates its CPUs.
const (
	startTimeout = 60 * time.Second // daemon start-up
	stopTimeout  = 30 * time.Second // daemon graceful stop
	cmdTimeout   = 60 * time.Second // one nsbrokerctl run
	waitTimeout  = 30 * time.Second // a state the daemon reaches by itself
)

// syncBuffer is a bytes.Buffer that a process and the test share.
type syncBuffer = daemontest.SyncBuffer

// requireCommands fails (in the VM) or skips unless the module is loaded
// and both commands are on PATH.
func requireCommands(t *testing.T) {
	t.Helper()
	testenv.RequireModule(t)
	for _, name := range []string{"nsbrokerd", "nsbrokerctl", "ip"} {
		if _, err := exec.LookPath(name); err != nil {
			if testenv.InVM() {
				t.Fatalf("inside the test VM but %s is not on PATH (VM_BINS): %v", name, err)
			}
			t.Skipf("%s is not on PATH: %v", name, err)
		}
	}
}

// daemon is a running nsbrokerd with its admin socket in a temporary
// directory.
type daemon struct {
	*daemontest.Daemon
	admin string // the admin socket
}

// startDaemon starts nsbrokerd with args added to the test's own and
// waits until it reports READY=1 (every listener open).
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	requireCommands(t)
	d := daemontest.Start(t, startTimeout, args...)
	return &daemon{d, d.Admin}
}

// stop sends SIGTERM and checks that the daemon exits 0 in time.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.Stop(t, stopTimeout)
}

// client dials the admin socket.
func (d *daemon) client(t *testing.T) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	return dial(t, func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.admin)
	})
}

// tenantClient dials the local socket "@nsbroker" inside the namespace,
// as a process there would.
func tenantClient(t *testing.T, name string) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return dial(t, func(ctx context.Context) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, "unix", "@nsbroker")
			return err
		})
		return c, err
	})
}

func dial(t *testing.T, dialer func(context.Context) (net.Conn, error)) (nsbrokerv1.BrokerClient, *grpc.ClientConn) {
	t.Helper()
	return daemontest.Dial(t, dialer)
}

// waitServing waits until the daemon's health service says name is SERVING.
func waitServing(t *testing.T, conn *grpc.ClientConn, name string) {
	t.Helper()
	daemontest.WaitServing(t, conn, name, waitTimeout)
}

// waitSubscribers waits until the namespace has n subscriptions, that is
// until every subscriber started has joined its groups in the kernel.
func waitSubscribers(t *testing.T, admin nsbrokerv1.BrokerClient, name string, n uint32) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var got uint32
	for {
		ns, err := admin.GetNamespace(context.Background(), &nsbrokerv1.GetNamespaceRequest{Namespace: name})
		if err != nil {
			t.Fatalf("GetNamespace %s: %v", name, err)
		}
		if got = ns.GetSubscribers(); got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s: %d subscribers after %v, want %d", name, got, waitTimeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newNetns creates a named namespace with ip netns add, deleted when the
// test ends (unless the test deleted it), and returns its name and inode.
func newNetns(t *testing.T) (string, uint32) {
	t.Helper()
	name := testenv.NetnsName()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(nsmgr.NetnsDir, name)); err == nil {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		}
	})
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	return name, ns.Inode()
}

// result is how one nsbrokerctl run ended.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// bgCtl is an nsbrokerctl running in the background.
type bgCtl struct {
	cmd            *exec.Cmd
	cancel         context.CancelFunc
	stdout, stderr syncBuffer
	done           chan struct{} // closed once it has exited
	res            result        // set before done is closed
	exitedAt       time.Time     // likewise
}

// startCtl runs nsbrokerctl with args, inside namespace ns (through ip
// netns exec) unless ns is "", with stdin as its input.
func startCtl(t *testing.T, ns, stdin string, args ...string) *bgCtl {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	b := &bgCtl{cancel: cancel, done: make(chan struct{})}
	if ns == "" {
		b.cmd = exec.CommandContext(ctx, "nsbrokerctl", args...)
	} else {
		b.cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "nsbrokerctl"}, args...)...)
	}
	b.cmd.Stdin = strings.NewReader(stdin)
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	if err := b.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer close(b.done)
		err := b.cmd.Wait()
		b.exitedAt = time.Now()
		b.res = result{code: b.cmd.ProcessState.ExitCode(), stdout: b.stdout.String(), stderr: b.stderr.String()}
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			b.res.stderr += "\n(wait: " + err.Error() + ")"
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-b.done
	})
	return b
}

// wait waits for the command to exit (it is killed after cmdTimeout).
func (b *bgCtl) wait() result {
	<-b.done
	b.cancel()
	return b.res
}

// runCtl runs nsbrokerctl to completion; see startCtl.
func runCtl(t *testing.T, ns, stdin string, args ...string) result {
	t.Helper()
	return startCtl(t, ns, stdin, args...).wait()
}

// ctl runs nsbrokerctl on the admin socket.
func (d *daemon) ctl(t *testing.T, args ...string) result {
	t.Helper()
	return runCtl(t, "", "", append([]string{"--socket", d.admin}, args...)...)
}

// mustJSON decodes the output of a successful run into v.
func mustJSON(t *testing.T, r result, v any) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("nsbrokerctl failed: %v", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("decoding %q: %v", r.stdout, err)
	}
}

// subscribeLine is one line of nsbrokerctl subscribe --json.
type subscribeLine struct {
	Event *struct {
		Namespace  string `json:"namespace"`
		Group      uint32 `json:"group"`
		Seq        uint64 `json:"seq"`
		Payload    []byte `json:"payload"`
		NetnsInode uint64 `json:"netns_inode"`
	} `json:"event"`
	Gap json.RawMessage `json:"gap"`
}

// checkEvents checks that out, what subscribe --json printed, is exactly
// the events payloads were published as in namespace ns: in order, with
// sequence numbers 1..len(payloads), the namespace's inode, no gap.
func checkEvents(t *testing.T, who, out, ns string, inode uint32, group uint32, payloads []string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if out == "" {
		lines = nil
	}
	if len(lines) != len(payloads) {
		t.Errorf("%s: got %d lines, want %d events:\n%s", who, len(lines), len(payloads), out)
	}
	for i, line := range lines {
		var l subscribeLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Errorf("%s: line %d %q: %v", who, i+1, line, err)
			continue
		}
		if l.Event == nil {
			t.Errorf("%s: line %d: got %s, want event seq %d", who, i+1, line, i+1)
			continue
		}
		e := l.Event
		want := "no event"
		if i < len(payloads) {
			want = fmt.Sprintf("ns=%s inode=%d group=%d seq=%d payload=%q", ns, inode, group, i+1, payloads[i])
		}
		got := fmt.Sprintf("ns=%s inode=%d group=%d seq=%d payload=%q", e.Namespace, e.NetnsInode, e.Group, e.Seq, e.Payload)
		if got != want {
			t.Errorf("%s: event %d:\n got %s\nwant %s", who, i+1, got, want)
		}
	}
}

// payloadsFor returns k distinct payloads naming the namespace.
func payloadsFor(name string, k int) []string {
	p := make([]string, k)
	for i := range p {
		p[i] = fmt.Sprintf("%s message %d", name, i+1)
	}
	return p
}
