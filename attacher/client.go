package attacher

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// DefaultSocket is nsbrokerd's default admin socket.
const DefaultSocket = "/run/nsbroker/nsbroker.sock"

// ErrDaemonDown means nothing listens on the admin socket: the file does
// not exist or the connection was refused (a socket left behind).
var ErrDaemonDown = errors.New("nsbrokerd is not running")

// Client talks to nsbrokerd's admin socket.
type Client struct {
	conn *grpc.ClientConn
	api  nsbrokerv1.BrokerClient
	d    *dialer
}

// Dial connects to the admin socket. It connects once before returning, so
// that a daemon that is not running is reported here, as an error
// matching ErrDaemonDown, and not as an UNAVAILABLE rpc later.
func Dial(ctx context.Context, socket string) (*Client, error) {
	first, err := (&net.Dialer{}).DialContext(ctx, "unix", socket)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err // "connect: connection refused", without the address twice
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %s: %w", ErrDaemonDown, socket, err)
		}
		return nil, fmt.Errorf("cannot reach nsbrokerd at %s: %w", socket, err)
	}
	d := &dialer{socket: socket, first: first}
	conn, err := grpc.NewClient("passthrough:///nsbrokerd",
		// A unix socket: the daemon knows the caller from SO_PEERCRED.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(d.dial))
	if err != nil {
		first.Close()
		return nil, err
	}
	return &Client{conn: conn, api: nsbrokerv1.NewBrokerClient(conn), d: d}, nil
}

// dialer hands gRPC the connection Dial made, then dials anew.
type dialer struct {
	socket string
	mu     sync.Mutex
	first  net.Conn // guarded by mu; nil once used
}

func (d *dialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	d.mu.Lock()
	c := d.first
	d.first = nil
	d.mu.Unlock()
	if c != nil {
		return c, nil
	}
	return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
}

// Close closes the connection, and the one Dial made if no rpc took it:
// left open, the daemon would wait for its first bytes.
func (c *Client) Close() error {
	err := c.conn.Close()
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	if c.d.first != nil {
		c.d.first.Close()
		c.d.first = nil
	}
	return err
}

// Serving returns nil when the daemon's health service reports it
// SERVING, and an error saying otherwise.
func (c *Client) Serving(ctx context.Context) error {
	resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health check: %w", rpcErr(err))
	}
	if st := resp.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check: nsbrokerd is %v", st)
	}
	return nil
}

// Detach detaches the namespace attached under name. A name that is not
// attached (never was, detached already, or its namespace is gone and the
// daemon let it go) is not an error: detached says whether this call
// detached it.
func (c *Client) Detach(ctx context.Context, name string) (detached bool, err error) {
	_, err = c.api.DetachNamespace(ctx, &nsbrokerv1.DetachNamespaceRequest{Namespace: name})
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("detach %q: %w", name, rpcErr(err))
	}
	return true, nil
}

// RPCError is an rpc the daemon answered with an error status. It keeps
// the status (status.Code and status.FromError see it) and prints the
// code in words: "nsbrokerd answered PermissionDenied: ...".
type RPCError struct{ st *status.Status }

func (e *RPCError) Error() string {
	return fmt.Sprintf("nsbrokerd answered %v: %s", e.st.Code(), e.st.Message())
}

// GRPCStatus returns the status.
func (e *RPCError) GRPCStatus() *status.Status { return e.st }

// rpcErr wraps a gRPC status error in an RPCError; other errors pass.
func rpcErr(err error) error {
	if st, ok := status.FromError(err); ok && err != nil {
		return &RPCError{st}
	}
	return err
}
