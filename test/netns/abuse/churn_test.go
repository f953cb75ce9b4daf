package abuse

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// What the daemon may keep over its baseline once 1,000 clients are gone:
// gRPC and the runtime start a few goroutines lazily (timers, the
// scavenger), and nothing else.
const (
	goroutineAllowance = 10
	fdAllowance        = 2
)

// TestIntegrationClientChurn: 1,000 clients connect to the admin socket or
// to the namespace's local socket and drop their connection abruptly,
// some at once, some halfway through the HTTP/2 preface, some with a
// Subscribe stream or a unary rpc open. Afterwards the daemon serves, no
// subscriber is left, and its goroutines and descriptors are back near
// their baseline.
func TestIntegrationClientChurn(t *testing.T) {
	const (
		clients     = 1000
		concurrency = 25
	)
	d := startDaemon(t)
	name := d.attach(t)
	admin, _ := d.admin(t)
	ns := openNetns(t, name)
	adminDial := func(ctx context.Context) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.Admin)
	}
	localDial := func(ctx context.Context) (net.Conn, error) { return dialLocal(ctx, ns) }

	// Warm up both listeners and every rpc used below, then take the
	// baseline.
	for i := range 20 {
		if err := churnClient(name, i, adminDial, localDial); err != nil {
			t.Fatalf("warm-up client %d: %v", i, err)
		}
	}
	waitSubscribers(t, admin, name, 0)
	baseG, baseFD := steady(t, d)

	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex // guards errs and took
	var errs []error
	took := map[string][]float64{} // seconds per client, by kind
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				start := time.Now()
				err := churnClient(name, i, adminDial, localDial)
				mu.Lock()
				took[churnKind(i)] = append(took[churnKind(i)], time.Since(start).Seconds())
				if err != nil {
					errs = append(errs, fmt.Errorf("client %d: %w", i, err))
				}
				mu.Unlock()
			}
		}()
	}
	for i := range clients {
		work <- i
	}
	close(work)
	wg.Wait()
	churn := time.Since(start)
	for _, err := range errs {
		t.Error(err)
	}
	for kind, secs := range took {
		t.Logf("%d clients %s: median %.1f ms each", len(secs), kind, median(secs)*1e3)
	}

	// Back near the baseline, by itself.
	var g float64
	var fds, subs int
	settled := waitFor(waitTimeout, func() bool {
		g, fds = d.metric(t, "go_goroutines"), len(d.fds(t))
		subs = int(stats(t, admin, name).GetDaemon().GetSubscribers())
		return subs == 0 && g <= baseG+goroutineAllowance && fds <= baseFD+fdAllowance
	})
	gauge := d.metric(t, fmt.Sprintf("nsbroker_subscribers{namespace=%q}", name))
	t.Logf("%d clients in %v; goroutines %.0f before, %.0f after (allowance %d); fds %d before, %d after (allowance %d); subscribers %d (gauge %.0f)",
		clients, churn.Round(time.Millisecond), baseG, g, goroutineAllowance, baseFD, fds, fdAllowance, subs, gauge)
	if !settled {
		t.Errorf("after %v: goroutines %.0f (want <= %.0f), fds %d (want <= %d), subscribers %d (want 0)",
			waitTimeout, g, baseG+goroutineAllowance, fds, baseFD+fdAllowance, subs)
	}
	if gauge != 0 {
		t.Errorf("nsbroker_subscribers{namespace=%q}: got %v, want 0", name, gauge)
	}

	// Still serving, both listeners, request and stream alike.
	if err := serves(name, adminDial, true); err != nil {
		t.Errorf("after the churn: %v", err)
	}
	if err := serves(name, localDial, false); err != nil {
		t.Errorf("after the churn: %v", err)
	}
}

// churnKind names what client i does.
func churnKind(i int) string {
	switch {
	case i%10 < 5:
		return "connect and close"
	case i%10 < 7:
		return "half a preface"
	case i%10 < 9:
		return "Subscribe, then cut"
	}
	return "unary rpc, then cut"
}

// churnClient is client i: it connects through the admin socket or the
// local socket (every other ten clients) and drops the connection: half of the
// clients at once, a fifth halfway through the HTTP/2 preface, the rest
// as gRPC clients with a Subscribe stream or a unary rpc open.
func churnClient(name string, i int, adminDial, localDial func(context.Context) (net.Conn, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	dialer, ns := localDial, ""
	if (i/10)%2 == 0 {
		dialer, ns = adminDial, name
	}
	switch i % 10 {
	case 0, 1, 2, 3, 4: // connect, close
		c, err := dialer(ctx)
		if err != nil {
			return err
		}
		return c.Close()
	case 5, 6: // half the HTTP/2 client preface, close
		c, err := dialer(ctx)
		if err != nil {
			return err
		}
		if _, err := c.Write([]byte("PRI * HTTP/2.0\r\n")); err != nil {
			return err
		}
		return c.Close()
	}

	// A gRPC client whose socket the test closes under it.
	var mu sync.Mutex
	var raw net.Conn
	conn, err := grpc.NewClient("passthrough:///nsbroker",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := dialer(ctx)
			mu.Lock()
			raw = c
			mu.Unlock()
			return c, err
		}))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := nsbrokerv1.NewBrokerClient(conn)
	if i%10 < 9 { // a Subscribe stream in place, then the socket closed
		if _, err := openSubscribe(ctx, client, ns, 1, 2); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
	} else { // a unary rpc, the socket closed while it may be in flight
		if _, err := client.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: ns, Payload: []byte("warm")}); err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		go client.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: ns, Group: 3, Payload: []byte("dropped")})
	}
	mu.Lock()
	defer mu.Unlock()
	return raw.Close()
}

// serves checks that an Echo answers and that a subscriber gets an event
// published after it subscribed.
func serves(name string, dialer func(context.Context) (net.Conn, error), isAdmin bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///nsbroker",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return dialer(ctx) }))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := nsbrokerv1.NewBrokerClient(conn)
	ns, who := "", "tenant"
	if isAdmin {
		ns, who = name, "admin"
	}
	if r, err := c.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: ns, Payload: []byte("alive")}); err != nil || string(r.GetPayload()) != "alive" {
		return fmt.Errorf("%s Echo: got %v, %v; want payload \"alive\"", who, r, err)
	}
	stream, err := openSubscribe(ctx, c, ns, 4)
	if err != nil {
		return fmt.Errorf("%s Subscribe: %w", who, err)
	}
	p, err := c.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: ns, Group: 4, Payload: []byte(who)})
	if err != nil {
		return fmt.Errorf("%s Publish: %w", who, err)
	}
	resp, err := stream.Recv()
	if ev := resp.GetEvent(); err != nil || ev.GetSeq() != p.GetSeq() || string(ev.GetPayload()) != who {
		return fmt.Errorf("%s Subscribe: got %v, %v; want event seq %d payload %q", who, resp, err, p.GetSeq(), who)
	}
	return nil
}

// steady returns the daemon's goroutine and descriptor counts once they
// stop changing (the same twice 100 ms apart, for at most 5 s): the
// connections of earlier clients take a moment to be torn down.
func steady(t *testing.T, d *daemon) (float64, int) {
	t.Helper()
	g, fds := d.metric(t, "go_goroutines"), len(d.fds(t))
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		g2, fds2 := d.metric(t, "go_goroutines"), len(d.fds(t))
		if g2 == g && fds2 == fds {
			break
		}
		g, fds = g2, fds2
	}
	return g, fds
}
