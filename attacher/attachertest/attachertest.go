// Package attachertest runs nsbrokerd inside the test's own process, on
// the fake kernel of broker/brokertest, for the tests of the container
// runtime integrations: attached namespaces become READY without the
// module, so the tests run on any machine where namespaces can be made.
package attachertest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/client"
	"github.com/nsbroker/nsbroker/daemon"
	"github.com/nsbroker/nsbroker/family"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Timeout bounds the daemon's start and stop.
const Timeout = 10 * time.Second

// Daemon is a daemon.Run in this process.
type Daemon struct {
	// Socket is the admin socket, in a temporary directory.
	Socket string
	// Client is an admin client on Socket.
	Client nsbrokerv1.BrokerClient

	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// Start runs a daemon with its admin socket in a temporary directory and
// no namespace-local sockets, and stops it when the test ends.
func Start(t testing.TB) *Daemon {
	t.Helper()
	k := brokertest.NewKernel()
	cfg := daemon.Defaults()
	cfg.AdminSocket = filepath.Join(t.TempDir(), "nsbroker.sock")
	cfg.LocalSocket = ""
	cfg.StateFile = ""
	cfg.ShutdownTimeout = Timeout / 2
	cfg.BrokerConfig = &broker.Config{Unit: family.DefaultUnit, ModuleIdentity: k.Identity, Dial: k.Dial,
		RetryInterval: 10 * time.Millisecond}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ready := make(chan struct{})
	cfg.Ready = func(daemon.Addrs) { close(ready) }

	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{Socket: cfg.AdminSocket, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- daemon.Run(ctx, cfg) }()
	t.Cleanup(func() { d.Stop(t) })
	select {
	case <-ready:
	case err := <-d.done:
		t.Fatalf("daemon.Run: %v", err)
	case <-time.After(Timeout):
		t.Fatalf("daemon not ready after %v", Timeout)
	}

	ctx, cancelDial := context.WithTimeout(context.Background(), Timeout)
	defer cancelDial()
	c, err := client.New(ctx, &client.Config{Endpoint: client.Admin(d.Socket)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d.Client = c.Broker()
	return d
}

// Stop stops the daemon and waits until it has; later calls do nothing.
func (d *Daemon) Stop(t testing.TB) {
	t.Helper()
	d.once.Do(func() {
		d.cancel()
		select {
		case err := <-d.done:
			if err != nil {
				t.Errorf("daemon.Run: %v", err)
			}
		case <-time.After(Timeout):
			t.Errorf("daemon still running %v after the stop", Timeout)
		}
	})
}

// Names lists the names of the attached namespaces.
func (d *Daemon) Names(t testing.TB) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	resp, err := d.Client.ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		t.Fatalf("ListNamespaces: %v", err)
	}
	var names []string
	for _, ns := range resp.GetNamespaces() {
		names = append(names, ns.GetName())
	}
	return names
}

// Get returns the namespace attached under name, or nil if none is.
func (d *Daemon) Get(t testing.TB, name string) *nsbrokerv1.Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	resp, err := d.Client.ListNamespaces(ctx, &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		t.Fatalf("ListNamespaces: %v", err)
	}
	for _, ns := range resp.GetNamespaces() {
		if ns.GetName() == name {
			return ns
		}
	}
	return nil
}
