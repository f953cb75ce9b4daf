package ctl

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// connectError is a daemon that could not be reached (exit status 3).
type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string { return "cannot connect to " + e.addr + ": " + e.err.Error() }

func (e *connectError) Unwrap() error { return e.err }

// addr is the socket the options name.
func (c *cli) addr() string {
	if c.opts.local {
		return c.opts.localSocket
	}
	return c.opts.socket
}

// withTimeout bounds ctx by --timeout, unless that is 0.
func (c *cli) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.opts.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.timeout)
}

// connect dials the daemon and waits until the connection is up, which
// tells "cannot connect" (exit 3) apart from an rpc the daemon answered
// with an error (exit 1). close releases the connection.
func (c *cli) connect() (client nsbrokerv1.BrokerClient, close func(), err error) {
	conn, err := c.connectConn()
	if err != nil {
		return nil, nil, err
	}
	return nsbrokerv1.NewBrokerClient(conn), func() { conn.Close() }, nil
}

// unary connects for one unary rpc: the client and a context bounded by
// --timeout; done releases both.
func (c *cli) unary() (nsbrokerv1.BrokerClient, context.Context, func(), error) {
	client, closeConn, err := c.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := c.withTimeout(c.ctx)
	return client, ctx, func() { cancel(); closeConn() }, nil
}

// connectConn is connect for rpcs of other services (grpc.health.v1).
func (c *cli) connectConn() (*grpc.ClientConn, error) {
	addr := c.addr()
	d := &dialer{addr: addr}
	// Unix sockets only: no transport security, the daemon knows the
	// caller from the socket it came through (and SO_PEERCRED).
	conn, err := grpc.NewClient("passthrough:///nsbroker",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.dial))
	if err != nil {
		return nil, &connectError{addr, err}
	}
	ctx, cancel := c.withTimeout(c.ctx)
	defer cancel()
	if err := waitReady(ctx, conn); err != nil {
		conn.Close()
		if derr := d.lastErr(); derr != nil {
			err = derr
		}
		return nil, &connectError{addr, err}
	}
	return conn, nil
}

// waitReady connects conn and waits until it is ready or has failed.
func waitReady(ctx context.Context, conn *grpc.ClientConn) error {
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			return nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			return errors.New("the connection was closed before the daemon answered")
		}
		if !conn.WaitForStateChange(ctx, s) {
			return ctx.Err()
		}
	}
}

// dialer connects to a unix socket ("@name" is abstract) and remembers
// why the last attempt failed, for a message better than gRPC's.
type dialer struct {
	addr string
	mu   sync.Mutex
	err  error // guarded by mu
}

func (d *dialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", d.addr)
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // "connect: no such file or directory"
	}
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
	return conn, err
}

func (d *dialer) lastErr() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// rpcError is an rpc that ended with an error status (exit status 1).
type rpcError struct{ st *status.Status }

func (e *rpcError) Error() string { return codeText(e.st.Code()) + ": " + e.st.Message() }

// rpcErr wraps a gRPC error for printing; other errors pass unchanged.
func rpcErr(err error) error {
	if st, ok := status.FromError(err); ok && err != nil {
		return &rpcError{st}
	}
	return err
}

// codeText spells a code in words: NotFound -> "not found".
func codeText(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte(' ')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
