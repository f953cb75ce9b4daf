package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// loopSquatter binds name inside ns in a loop until stop, and counts its
// tries and wins.
type loopSquatter struct {
	tries, wins atomic.Int64
	stop        chan struct{}
	done        sync.WaitGroup
}

func startLoopSquatter(t *testing.T, ns *nsmgr.Namespace, name string) *loopSquatter {
	s := &loopSquatter{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			ns.Do(func() error {
				s.tries.Add(1)
				ln, err := net.Listen("unix", name)
				if err == nil {
					s.wins.Add(1)
					ln.Close()
				}
				return nil
			})
		}
	}()
	t.Cleanup(s.halt)
	return s
}

func (s *loopSquatter) halt() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
}

// inode is the inode of the file at path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestIntegrationHandover: a second daemon started with the same admin
// socket takes the first one's listening sockets over the handover
// socket, while a goroutine binds @nsbroker inside the attached
// namespace in a loop. The squatter never wins; the first daemon's
// Run returns once the second serves, its tenant's stream ending with
// UNAVAILABLE; the second serves the same admin and filesystem sockets
// (same inodes) and @nsbroker, as the namespace's tenant.
func TestIntegrationHandover(t *testing.T) {
	testenv.RequireRoot(t)
	ns, name := newNamespace(t)
	a := startDaemon(t, func(c *Config) { c.Attach = []string{name} })
	waitServing(t, dialUnix(t, a.cfg.AdminSocket), name)
	filePath := FileSocketPath(a.cfg.runPath(a.cfg.FileSocketDir), name)
	adminIno, fileIno := inode(t, a.cfg.AdminSocket), inode(t, filePath)

	tenant, err := dialInNamespace(ns, "@nsbroker")
	if err != nil {
		t.Fatal(err)
	}
	defer tenant.Close()
	ctx := ctxTimeout(t)
	watch, err := nsbrokerv1.NewBrokerClient(tenant).WatchNamespaces(ctx, &nsbrokerv1.WatchNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}

	sq := startLoopSquatter(t, ns, "@nsbroker")
	for sq.tries.Load() < 100 {
		time.Sleep(time.Millisecond)
	}
	b := startDaemon(t, func(c *Config) {
		c.AdminSocket = a.cfg.AdminSocket
		c.Attach = []string{name}
	})
	select {
	case err := <-a.done:
		a.once.Do(func() { a.err = err })
		if err != nil {
			t.Errorf("first daemon: Run: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the first daemon still runs after its successor serves")
	}
	for {
		_, err := watch.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Errorf("tenant's stream on the first daemon: want UNAVAILABLE, got %v", err)
		}
		break
	}
	waitServing(t, dialUnix(t, b.cfg.AdminSocket), name)
	// Past the handover, the squatter keeps trying against the second daemon.
	n := sq.tries.Load()
	for sq.tries.Load() < n+100 {
		time.Sleep(time.Millisecond)
	}
	sq.halt()
	t.Logf("squatter: %d tries, %d wins", sq.tries.Load(), sq.wins.Load())
	if w := sq.wins.Load(); w != 0 {
		t.Errorf("the squatter bound @nsbroker %d times", w)
	}
	a.logs.waitCount(msgIs("successor serves; draining"), 1)
	e := b.logs.waitCount(msgIs("inherited listening sockets"), 1)
	if e.attrs["from"] != "handover" || e.attrs["count"] != "4" {
		t.Errorf("want 4 sockets (admin, handover, @nsbroker, filesystem) from the handover, got %v", e)
	}
	if n := b.logs.count(msgIs("inherited sockets of namespaces no longer attached closed")); n != 0 {
		t.Errorf("the second daemon closed inherited sockets of attached namespaces")
	}
	if got := inode(t, b.cfg.AdminSocket); got != adminIno {
		t.Errorf("admin socket: inode %d, want the first daemon's %d", got, adminIno)
	}
	if got := inode(t, filePath); got != fileIno {
		t.Errorf("filesystem socket: inode %d, want the first daemon's %d", got, fileIno)
	}
	for _, via := range []string{"@nsbroker", filePath} {
		cc, err := dialInNamespace(ns, via)
		if err != nil {
			t.Fatalf("%s: %v", via, err)
		}
		own, err := nsbrokerv1.NewBrokerClient(cc).GetNamespace(ctxTimeout(t), &nsbrokerv1.GetNamespaceRequest{})
		cc.Close()
		if err != nil || own.GetName() != name || own.GetInode() != uint64(ns.Inode()) {
			t.Errorf("through %s on the second daemon: want %s inode %d, got %v, %v", via, name, ns.Inode(), own, err)
		}
	}
	if _, err := os.Stat(filepath.Dir(filePath)); errors.Is(err, os.ErrNotExist) {
		t.Errorf("the first daemon removed the filesystem socket's directory")
	}
}

// TestIntegrationHandoverIdle: with handover_exit false, a daemon that
// has handed its sockets over stays idle, not serving, until it is
// stopped, so that a supervisor that restarts what exits does not start
// it again to take the sockets back.
func TestIntegrationHandoverIdle(t *testing.T) {
	testenv.RequireRoot(t)
	_, name := newNamespace(t)
	a := startDaemon(t, func(c *Config) {
		c.Attach = []string{name}
		c.HandoverExit = false
	})
	waitServing(t, dialUnix(t, a.cfg.AdminSocket), name)
	b := startDaemon(t, func(c *Config) {
		c.AdminSocket = a.cfg.AdminSocket
		c.Attach = []string{name}
	})
	a.logs.waitCount(msgIs("handed over; idle until stopped"), 1)
	select {
	case err := <-a.done:
		a.once.Do(func() { a.err = err })
		t.Fatalf("the first daemon's Run returned (%v); want it idle until stopped", err)
	case <-time.After(500 * time.Millisecond):
	}
	waitServing(t, dialUnix(t, b.cfg.AdminSocket), name)
}

// TestRefuseDuringHandover: while the sockets are being handed over,
// attaches and detaches get UNAVAILABLE (the successor has read the
// state file already); other rpcs go on, and the files are kept.
func TestRefuseDuringHandover(t *testing.T) {
	d := &daemon{handedOver: make(chan struct{})}
	handler := func(context.Context, any) (any, error) { return "done", nil }
	call := func(method string) error {
		_, err := d.refuseDuringHandover(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method}, handler)
		return err
	}
	if err := call(nsbrokerv1.Broker_AttachNamespace_FullMethodName); err != nil {
		t.Fatalf("attach before a handover: %v", err)
	}
	if d.keepFiles() {
		t.Fatal("keepFiles before a handover: true, want false")
	}
	d.handingOver.Store(true)
	for _, m := range []string{nsbrokerv1.Broker_AttachNamespace_FullMethodName, nsbrokerv1.Broker_AttachNamespaces_FullMethodName, nsbrokerv1.Broker_DetachNamespace_FullMethodName} {
		if err := call(m); status.Code(err) != codes.Unavailable {
			t.Errorf("%s during a handover: got %v, want UNAVAILABLE", m, err)
		}
	}
	if err := call(nsbrokerv1.Broker_Echo_FullMethodName); err != nil {
		t.Errorf("Echo during a handover: %v", err)
	}
	if !d.keepFiles() {
		t.Error("keepFiles during a handover: false, want true: the successor serves the files")
	}
}
