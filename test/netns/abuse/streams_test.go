package abuse

import (
	"context"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationTooManyStreams: a tenant's Subscribe beyond its limit of
// open streams gets RESOURCE_EXHAUSTED, its open streams and everyone
// else's keep receiving, its unary rpcs go on, and closing one of its
// streams frees exactly one slot.
func TestIntegrationTooManyStreams(t *testing.T) {
	const limit = 4
	d := startDaemon(t, "--max-streams-per-tenant", strconv.Itoa(limit))
	red, blue := d.attach(t), d.attach(t)
	admin, _ := d.admin(t)
	tc, _ := tenant(t, red)
	other, _ := tenant(t, blue)
	ctx, cancel := context.WithTimeout(context.Background(), 2*rpcTimeout)
	defer cancel()

	type open struct {
		stream grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse]
		cancel context.CancelFunc
	}
	var streams []open
	for range limit {
		sctx, scancel := context.WithCancel(ctx)
		streams = append(streams, open{subscribe(t, sctx, tc, "", 1), scancel})
	}
	// One more: refused, from the tenant's own count only.
	if err := trySubscribe(ctx, tc, ""); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("tenant's Subscribe number %d: got %v, want RESOURCE_EXHAUSTED", limit+1, err)
	} else {
		t.Logf("tenant's Subscribe number %d: %v", limit+1, err)
	}
	adminSub := subscribe(t, ctx, admin, red, 1)
	otherSub := subscribe(t, ctx, other, "", 1)
	waitSubscribers(t, admin, red, limit+1)

	// Every open stream still gets its namespace's events.
	pr, err := admin.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: red, Group: 1, Payload: []byte("red")})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := other.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 1, Payload: []byte("blue")})
	if err != nil {
		t.Fatal(err)
	}
	check := func(who string, s grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse], seq uint64, payload string) {
		t.Helper()
		resp, err := s.Recv()
		if ev := resp.GetEvent(); err != nil || ev.GetSeq() != seq || string(ev.GetPayload()) != payload {
			t.Errorf("%s: got %v, %v; want event seq %d payload %q", who, resp, err, seq, payload)
		}
	}
	for i, s := range streams {
		check("tenant stream "+strconv.Itoa(i+1), s.stream, pr.GetSeq(), "red")
	}
	check("admin stream", adminSub, pr.GetSeq(), "red")
	check("other tenant's stream", otherSub, pb.GetSeq(), "blue")

	// Closing one frees a slot: the next Subscribe succeeds once the
	// daemon has seen the stream end, and the one after is refused again.
	streams[0].cancel()
	start := time.Now()
	var again grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse]
	var last error
	if !waitFor(waitTimeout, func() bool {
		again, last = openSubscribe(ctx, tc, "", 1)
		return last == nil
	}) {
		t.Fatalf("Subscribe after closing a stream: still %v after %v", last, waitTimeout)
	}
	t.Logf("a slot was free %v after closing a stream", time.Since(start).Round(time.Millisecond))
	if err := trySubscribe(ctx, tc, ""); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("tenant's Subscribe beyond the limit again: got %v, want RESOURCE_EXHAUSTED", err)
	}
	// Unary rpcs have a pool of their own: the tenant still publishes.
	pr, err = tc.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 1, Payload: []byte("again")})
	if err != nil {
		t.Fatal(err)
	}
	check("the new stream", again, pr.GetSeq(), "again")
}

// trySubscribe opens a Subscribe stream, closes it if it opened, and
// returns the status it was refused with, or nil.
func trySubscribe(ctx context.Context, c nsbrokerv1.BrokerClient, name string) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, err := openSubscribe(sctx, c, name, 1)
	return err
}
