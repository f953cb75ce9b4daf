package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The daemon's default addresses and the defaults of Config.
const (
	DefaultAdminSocket = "/run/nsbroker/nsbroker.sock"
	DefaultLocalSocket = "@nsbroker"
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
)

// Endpoint says which listener of the daemon to connect to. The zero
// Endpoint is the default admin socket.
type Endpoint struct {
	addr  string           // unix socket path, "@name" (abstract) or host:port
	netns *nsmgr.Namespace // LocalIn: dial from inside this namespace
	tls   *tls.Config      // TLS: the client's configuration
}

// Admin is the daemon's admin socket at path (empty: DefaultAdminSocket).
func Admin(path string) Endpoint {
	if path == "" {
		path = DefaultAdminSocket
	}
	return Endpoint{addr: path}
}

// Local is the namespace-local socket addr (empty: DefaultLocalSocket) of
// the network namespace the caller runs in: the caller is that
// namespace's tenant.
func Local(addr string) Endpoint {
	if addr == "" {
		addr = DefaultLocalSocket
	}
	return Endpoint{addr: addr}
}

// LocalIn is the namespace-local socket addr (empty: DefaultLocalSocket) of
// the namespace ns, dialled from inside it on a thread of its own (see
// nsmgr.Namespace.Do), so the caller need not run in it. The Client uses
// ns whenever it connects: the caller keeps it open until the Client is
// closed.
func LocalIn(ns *nsmgr.Namespace, addr string) Endpoint {
	e := Local(addr)
	e.netns = ns
	return e
}

// Socket is a filesystem unix socket at path, such as a namespace's
// socket bind-mounted into a container; the caller is the tenant of the
// namespace the socket belongs to.
func Socket(path string) Endpoint { return Endpoint{addr: path} }

// TLS is the daemon's TCP listener at addr (host:port), with mutual TLS:
// cfg holds the client certificate and the authorities that sign the
// daemon's (LoadTLS makes one from files). Without cfg.ServerName, the
// host of addr is verified.
func TLS(addr string, cfg *tls.Config) Endpoint {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	return Endpoint{addr: addr, tls: cfg}
}

// String returns the address: the socket's path or name, or host:port.
func (e Endpoint) String() string {
	if e.addr == "" {
		return DefaultAdminSocket
	}
	if e.netns != nil {
		return e.addr + " inside " + e.netns.String()
	}
	return e.addr
}

// Config configures a Client. The zero Config (or nil) connects to the
// default admin socket.
type Config struct {
	// Endpoint is the listener to connect to (default Admin("")).
	Endpoint Endpoint
	// MinBackoff and MaxBackoff bound the wait between two attempts to
	// reconnect, of the connection and of a Subscription: it starts at
	// MinBackoff (default DefaultMinBackoff) and doubles up to MaxBackoff
	// (default DefaultMaxBackoff), less up to half at random.
	MinBackoff, MaxBackoff time.Duration
	// DialOptions are added to the client's own; for what they cannot
	// say (interceptors of your own, message sizes).
	DialOptions []grpc.DialOption
}

// Client is a connection to nsbrokerd. It reconnects by itself when the
// connection breaks; Close releases it.
type Client struct {
	conn   *grpc.ClientConn
	broker nsbrokerv1.BrokerClient
	cfg    Config
}

// New connects to the daemon and waits until the connection is up, so
// that a daemon that cannot be reached is reported here, as a
// *ConnectError, and not as a failed rpc later. ctx bounds the wait.
func New(ctx context.Context, cfg *Config) (*Client, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Endpoint.addr == "" {
		c.Endpoint = Admin("")
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)

	ep := c.Endpoint
	d := &dialer{ep: ep}
	// A unix socket needs no transport security: the daemon knows the
	// caller from the socket it came through (and SO_PEERCRED).
	target, creds := "passthrough:///nsbroker", insecure.NewCredentials()
	if ep.tls != nil {
		// The authority is addr, so the certificate is checked against
		// its host.
		target, creds = "passthrough:///"+ep.addr, credentials.NewTLS(ep.tls)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(d.dial),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay: c.MinBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: c.MaxBackoff,
			},
			MinConnectTimeout: 20 * time.Second,
		}),
		grpc.WithChainUnaryInterceptor(unaryErrors),
		grpc.WithChainStreamInterceptor(streamErrors),
	}
	conn, err := grpc.NewClient(target, append(opts, c.DialOptions...)...)
	if err != nil {
		return nil, &ConnectError{Addr: ep.String(), Err: err}
	}
	if err := waitReady(ctx, conn); err != nil {
		conn.Close()
		if derr := d.lastErr(); derr != nil {
			err = derr
		}
		return nil, &ConnectError{Addr: ep.String(), Err: err}
	}
	return &Client{conn: conn, broker: nsbrokerv1.NewBrokerClient(conn), cfg: c}, nil
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

// dialer connects to an Endpoint and remembers why the last attempt
// failed, for a message better than gRPC's.
type dialer struct {
	ep  Endpoint
	mu  sync.Mutex
	err error // guarded by mu
}

func (d *dialer) dial(ctx context.Context, _ string) (net.Conn, error) {
	network := "unix"
	if d.ep.tls != nil {
		network = "tcp"
	}
	var (
		nd   net.Dialer
		conn net.Conn
		err  error
	)
	if d.ep.netns != nil {
		err = d.ep.netns.Do(func() error {
			var err error
			conn, err = nd.DialContext(ctx, network, d.ep.addr)
			return err
		})
	} else {
		conn, err = nd.DialContext(ctx, network, d.ep.addr)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err // "connect: no such file or directory", without the address
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

// Broker returns the stub of nsbroker.v1.Broker on the connection. Its
// errors are *Error values (io.EOF at the end of a stream stays io.EOF).
func (c *Client) Broker() nsbrokerv1.BrokerClient { return c.broker }

// Conn returns the connection, for the daemon's other services
// (reflection; Health has a method of its own).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Health asks the daemon's grpc.health.v1 service about service: "" for
// the daemon, "nsbroker.v1.Broker/NAME" for an attached namespace.
func (c *Client) Health(ctx context.Context, service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	resp, err := healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN, err
	}
	return resp.GetStatus(), nil
}

// Close closes the connection; streams on it end with an error.
func (c *Client) Close() error { return c.conn.Close() }
