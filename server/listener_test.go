package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// dialEnv makes the test binary a client: it calls ListNamespaces on the
// admin socket it names, prints the status code and exits.
const dialEnv = "NSB_SERVER_TEST_DIAL"

func TestMain(m *testing.M) {
	if socket := os.Getenv(dialEnv); socket != "" {
		fmt.Println(childDial(socket))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childDial(socket string) codes.Code {
	cc, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return codes.Internal
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_, err = nsbrokerv1.NewBrokerClient(cc).ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	return status.Code(err)
}

// peers records the credentials an allow func was asked about.
type peers struct {
	mu   sync.Mutex
	seen []unix.Ucred
}

func (p *peers) record(cred *unix.Ucred) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, *cred)
}

func (p *peers) last() unix.Ucred {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		return unix.Ucred{Pid: -1, Uid: ^uint32(0)}
	}
	return p.seen[len(p.seen)-1]
}

// serveAdmin serves e's service on another admin socket guarded by allow.
func (e *env) serveAdmin(path string, allow func(*unix.Ucred) error) {
	e.t.Helper()
	e.serve(AdminListener(e.listen("unix", path), allow))
}

func TestIntegrationAdminListenerRefusesWhatAllowRefuses(t *testing.T) {
	e := newEnv(t, nil)
	var seen peers
	var refuse sync.Mutex // guards refusing
	refusing := true
	allow := func(cred *unix.Ucred) error {
		seen.record(cred)
		refuse.Lock()
		defer refuse.Unlock()
		if refusing {
			return errors.New("refused by the test")
		}
		return nil
	}
	path := filepath.Join(t.TempDir(), "guarded.sock")
	e.serveAdmin(path, allow)

	list := func() error {
		c := e.client("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
		_, err := c.ListNamespaces(testContext(t), &nsbrokerv1.ListNamespacesRequest{})
		return err
	}
	wantStatus(t, "ListNamespaces from a refused peer", list(), codes.Unavailable, "")
	if got := seen.last(); got.Pid != int32(os.Getpid()) || got.Uid != 0 {
		t.Fatalf("allow saw pid %d uid %d, want this process (pid %d uid 0)", got.Pid, got.Uid, os.Getpid())
	}
	// The listener goes on accepting after a refusal.
	refuse.Lock()
	refusing = false
	refuse.Unlock()
	if err := list(); err != nil {
		t.Fatalf("ListNamespaces once allowed: %v", err)
	}
}

// The default allow admits root only: a peer running as nobody is refused.
func TestIntegrationAdminListenerRefusesNonRoot(t *testing.T) {
	e := newEnv(t, nil)
	// A directory everyone may enter, holding a copy of this test binary
	// that everyone may run and a socket everyone may connect to: only
	// the peer credentials can refuse the child.
	dir, err := os.MkdirTemp("", "nsb-server-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "server.test")
	copyFile(t, bin)
	socket := filepath.Join(dir, "admin.sock")
	var seen peers
	e.serveAdmin(socket, func(cred *unix.Ucred) error {
		seen.record(cred)
		return rootOnly(cred)
	})
	if err := os.Chmod(socket, 0o777); err != nil {
		t.Fatal(err)
	}

	run := func(cred *syscall.Credential) string {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), dialEnv+"="+socket)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child %v: %v", cred, err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := run(&syscall.Credential{Uid: 65534, Gid: 65534}); got != codes.Unavailable.String() {
		t.Fatalf("child as uid 65534: got %s, want %v", got, codes.Unavailable)
	}
	if got := seen.last(); got.Uid != 65534 || got.Gid != 65534 {
		t.Fatalf("allow saw uid %d gid %d, want 65534 65534", got.Uid, got.Gid)
	}
	if got := run(nil); got != codes.OK.String() {
		t.Fatalf("child as root: got %s, want %v", got, codes.OK)
	}
	if got := seen.last(); got.Uid != 0 || got.Pid == int32(os.Getpid()) {
		t.Fatalf("allow saw pid %d uid %d, want the child as uid 0", got.Pid, got.Uid)
	}
}

// copyFile copies the running test binary to dst, executable by all.
func copyFile(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// A connection that is not a unix socket has no peer credentials: it
// cannot be admin, whatever allow says.
func TestAdminListenerNeedsUnixSocket(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	al := AdminListener(l, func(*unix.Ucred) error { return nil })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := al.Accept() // returns only when l is closed
		accepted <- c
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// The refused connection is closed: the read ends at once.
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read from a refused connection: got %d bytes, want an error", n)
	}
	c.Close()
	l.Close()
	if c := <-accepted; c != nil {
		t.Fatalf("Accept returned %v for a TCP connection, want none", c.RemoteAddr())
	}
}

// TestTenantListenerBacklog: a tenant's listening socket queues at most
// TenantBacklog connections the daemon has not accepted; the kernel
// refuses the rest.
func TestTenantListenerBacklog(t *testing.T) {
	addr := fmt.Sprintf("@nsb-backlog-test-%d", os.Getpid())
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	TenantListener(l, "x") // nothing accepts
	var queued int
	for range 4 * TenantBacklog {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: addr})
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		queued++
	}
	// The kernel admits one more than the backlog.
	if queued > TenantBacklog+1 {
		t.Fatalf("connections queued: got %d, want at most %d", queued, TenantBacklog+1)
	}
	if queued < TenantBacklog {
		t.Fatalf("connections queued: got %d, want at least %d", queued, TenantBacklog)
	}
}
