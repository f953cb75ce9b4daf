package attacher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/client"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// DefaultSocket is nsbrokerd's default admin socket.
const DefaultSocket = client.DefaultAdminSocket

// ErrDaemonDown means nothing listens on the admin socket: the file does
// not exist or the connection was refused (a socket left behind).
var ErrDaemonDown = client.ErrDaemonDown

// Client talks to nsbrokerd's admin socket.
type Client struct {
	c   *client.Client
	api nsbrokerv1.BrokerClient
}

// Dial connects to the admin socket and waits until the connection is up,
// so that a daemon that is not running is reported here, as an error
// matching ErrDaemonDown, and not as an UNAVAILABLE rpc later.
func Dial(ctx context.Context, socket string) (*Client, error) {
	c, err := client.New(ctx, &client.Config{Endpoint: client.Admin(socket)})
	var cerr *client.ConnectError
	switch {
	case errors.Is(err, ErrDaemonDown) && errors.As(err, &cerr):
		return nil, fmt.Errorf("%w: %s: %w", ErrDaemonDown, socket, cerr.Err)
	case errors.As(err, &cerr):
		return nil, fmt.Errorf("cannot reach nsbrokerd at %s: %w", socket, cerr.Err)
	case err != nil:
		return nil, err
	}
	return &Client{c: c, api: c.Broker()}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// Serving returns nil when the daemon's health service reports it
// SERVING, and an error saying otherwise.
func (c *Client) Serving(ctx context.Context) error {
	st, err := c.c.Health(ctx, "")
	if err != nil {
		return fmt.Errorf("health check: %w", rpcErr(err))
	}
	if st != healthpb.HealthCheckResponse_SERVING {
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

// fileSocketPoll is how often FileSocket asks again.
const fileSocketPoll = 10 * time.Millisecond

// FileSocket returns the path of the filesystem socket through which the
// daemon serves the namespace attached as name to that namespace's own
// processes, or "" when it serves none (file_socket_dir is off, or the
// socket could not be opened: the daemon logs why). The daemon sets a
// namespace's local sockets up just after it attaches it, so FileSocket
// asks until it has, or until ctx is done.
func (c *Client) FileSocket(ctx context.Context, name string) (string, error) {
	for {
		ns, err := c.api.GetNamespace(ctx, &nsbrokerv1.GetNamespaceRequest{Namespace: name})
		if err != nil {
			return "", fmt.Errorf("get namespace %q: %w", name, rpcErr(err))
		}
		if ls := ns.GetLocalSocket(); ls.GetState() != nsbrokerv1.LocalSocket_STATE_UNSPECIFIED {
			return ls.GetPath(), nil
		}
		t := time.NewTimer(fileSocketPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", fmt.Errorf("namespace %q: its local sockets are not set up yet: %w", name, ctx.Err())
		case <-t.C:
		}
	}
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
