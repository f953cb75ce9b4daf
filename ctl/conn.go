package ctl

import (
	"context"

	"github.com/nsbroker/nsbroker/client"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// endpoint is the socket the options name.
func (c *cli) endpoint() client.Endpoint {
	if c.opts.local {
		return client.Local(c.opts.localSocket)
	}
	return client.Admin(c.opts.socket)
}

// withTimeout bounds ctx by --timeout, unless that is 0.
func (c *cli) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.opts.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.timeout)
}

// dial connects to the daemon within --timeout and waits until the
// connection is up, which tells "cannot connect" (a *client.ConnectError,
// exit 3) apart from an rpc the daemon answered with an error (exit 1).
func (c *cli) dial() (*client.Client, error) {
	ctx, cancel := c.withTimeout(c.ctx)
	defer cancel()
	return client.New(ctx, &client.Config{Endpoint: c.endpoint()})
}

// connect is dial for the rpcs of nsbroker.v1.Broker; close releases the
// connection.
func (c *cli) connect() (broker nsbrokerv1.BrokerClient, close func(), err error) {
	cl, err := c.dial()
	if err != nil {
		return nil, nil, err
	}
	return cl.Broker(), func() { cl.Close() }, nil
}

// unary connects for one unary rpc: the client and a context bounded by
// --timeout; done releases both.
func (c *cli) unary() (nsbrokerv1.BrokerClient, context.Context, func(), error) {
	broker, closeConn, err := c.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := c.withTimeout(c.ctx)
	return broker, ctx, func() { cancel(); closeConn() }, nil
}

// rpcErr makes a gRPC error print as the code in words and the daemon's
// message ("not found: ..."); other errors pass unchanged.
func rpcErr(err error) error { return client.FromError(err) }
