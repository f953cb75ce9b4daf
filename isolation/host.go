package isolation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/client"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Defaults of HostConfig, the daemon's defaults.
const (
	DefaultAdminSocket = "/run/nsbroker/nsbroker.sock"
	DefaultLocalSocket = "@nsbroker"
)

// HostConfig says where the daemon's sockets are.
type HostConfig struct {
	// AdminSocket is the daemon's admin unix socket (default
	// DefaultAdminSocket).
	AdminSocket string
	// LocalSocket is the unix socket address the daemon listens on inside
	// every attached namespace (default DefaultLocalSocket, abstract).
	LocalSocket string
	// Timeout bounds connecting (default DefaultTimeout).
	Timeout time.Duration
}

// HostEnv is the Env of a real host: the daemon's sockets, namespaces
// under /run/netns, and the module in the checker's own namespace.
type HostEnv struct {
	cfg    HostConfig
	client *client.Client
	admin  nsbrokerv1.BrokerClient
	kernel Kernel
}

// NewHostEnv connects to the daemon's admin socket and checks that it
// answers. The listener probes need the module in the checker's
// namespace; if it is not loaded there, Kernel returns nil.
func NewHostEnv(ctx context.Context, cfg *HostConfig) (*HostEnv, error) {
	var c HostConfig
	if cfg != nil {
		c = *cfg
	}
	if c.AdminSocket == "" {
		c.AdminSocket = DefaultAdminSocket
	}
	if c.LocalSocket == "" {
		c.LocalSocket = DefaultLocalSocket
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	cl, err := client.New(rctx, &client.Config{Endpoint: client.Admin(c.AdminSocket)})
	var cerr *client.ConnectError
	if errors.As(err, &cerr) {
		return nil, fmt.Errorf("nsbrokerd does not answer on %s: %w", c.AdminSocket, cerr.Err)
	}
	if err != nil {
		return nil, err
	}
	e := &HostEnv{cfg: c, client: cl, admin: cl.Broker()}
	if _, err := e.admin.ListNamespaces(rctx, &nsbrokerv1.ListNamespacesRequest{}); err != nil {
		cl.Close()
		return nil, fmt.Errorf("nsbrokerd does not answer on %s: %s", c.AdminSocket, status.Convert(err).Message())
	}
	if k, err := newHostKernel(); err == nil {
		e.kernel = k
	}
	return e, nil
}

// Close closes the admin connection.
func (e *HostEnv) Close() error { return e.client.Close() }

// Admin implements Env.
func (e *HostEnv) Admin() nsbrokerv1.BrokerClient { return e.admin }

// Kernel implements Env.
func (e *HostEnv) Kernel() Kernel { return e.kernel }

// CreateNamespace implements Env with nsmgr.NewNamed.
func (e *HostEnv) CreateNamespace(name string) error {
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		return err
	}
	return ns.Close()
}

// DeleteNamespace implements Env with nsmgr.DeleteNamed.
func (e *HostEnv) DeleteNamespace(name string) error { return nsmgr.DeleteNamed(name) }

// Inode implements Env.
func (e *HostEnv) Inode(name string) (uint64, error) {
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	return uint64(ns.Inode()), nil
}

// Tenant implements Env: it connects to the local socket from inside the
// namespace, as a workload there would. The daemon opens that socket when
// it attaches the namespace, so Tenant first waits until it accepts
// connections.
func (e *HostEnv) Tenant(ctx context.Context, name string) (nsbrokerv1.BrokerClient, io.Closer, error) {
	ns, err := nsmgr.Open(nsmgr.Ref{Name: name})
	if err != nil {
		return nil, nil, err
	}
	cl, err := waitListening(ctx, client.LocalIn(ns, e.cfg.LocalSocket), e.cfg.Timeout)
	if err != nil {
		ns.Close()
		return nil, nil, fmt.Errorf("%s inside %s: %w", e.cfg.LocalSocket, name, err)
	}
	return cl.Broker(), closers{cl, ns}, nil
}

// waitListening connects to ep, trying again until the socket accepts a
// connection: nothing announces when the daemon has opened it, so this
// polls.
func waitListening(ctx context.Context, ep client.Endpoint, timeout time.Duration) (*client.Client, error) {
	deadline := time.Now().Add(timeout)
	for {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		cl, err := client.New(dctx, &client.Config{Endpoint: ep})
		cancel()
		if err == nil {
			return cl, nil
		}
		down := errors.Is(err, client.ErrDaemonDown) // ECONNREFUSED, ENOENT
		var cerr *client.ConnectError
		if errors.As(err, &cerr) {
			err = cerr.Err
		}
		if !down {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nobody listening after %v: %w", timeout, err)
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return nil, err
		}
	}
}

// closers closes several things, returning the first error.
type closers []io.Closer

func (cs closers) Close() error {
	var first error
	for _, c := range cs {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// publishHere publishes in the calling process's namespace.
func publishHere(unit int, group uint32, payload []byte) (uint64, error) {
	c, err := family.Dial(&family.Config{Unit: unit})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	r, err := c.Publish(group, payload)
	if err != nil {
		return 0, err
	}
	return r.Seq, nil
}
