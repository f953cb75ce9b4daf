package abuse

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationOversized: a gRPC message above the daemon's maximum
// receive size gets RESOURCE_EXHAUSTED and a payload above the module's
// limit gets INVALID_ARGUMENT, from the admin and from a tenant; neither
// reaches the kernel or a subscriber, and the daemon and the same
// connections go on serving.
func TestIntegrationOversized(t *testing.T) {
	const (
		maxMsg     = 64 << 10
		maxPayload = 16384 // the module's limit, NSB_PAYLOAD_MAX
	)
	d := startDaemon(t, "--max-msg-size", strconv.Itoa(maxMsg))
	name := d.attach(t)
	admin, _ := d.admin(t)
	tc, _ := tenant(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	sub := subscribe(t, ctx, admin, name, 1)
	waitSubscribers(t, admin, name, 1)

	big := make([]byte, maxMsg+1)
	over := make([]byte, maxPayload+1)
	cases := []struct {
		what string
		call func() error
		code codes.Code
	}{
		{"admin Publish, message over max-msg-size", func() error {
			_, err := admin.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: name, Group: 1, Payload: big})
			return err
		}, codes.ResourceExhausted},
		{"tenant Echo, message over max-msg-size", func() error {
			_, err := tc.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: big})
			return err
		}, codes.ResourceExhausted},
		{"tenant PublishStream, message over max-msg-size", func() error {
			s, err := tc.PublishStream(ctx)
			if err != nil {
				return err
			}
			if err := s.Send(&nsbrokerv1.PublishRequest{Group: 1, Payload: big}); err != nil {
				_, err = s.CloseAndRecv()
				return err
			}
			_, err = s.CloseAndRecv()
			return err
		}, codes.ResourceExhausted},
		{"admin Publish, payload over the module's limit", func() error {
			_, err := admin.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: name, Group: 1, Payload: over})
			return err
		}, codes.InvalidArgument},
		{"tenant Publish, payload over the module's limit", func() error {
			_, err := tc.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 1, Payload: over})
			return err
		}, codes.InvalidArgument},
		{"tenant Echo, payload over the module's limit", func() error {
			_, err := tc.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: over})
			return err
		}, codes.InvalidArgument},
	}
	before := stats(t, admin, name)
	for _, c := range cases {
		err := c.call()
		t.Logf("%s: %v", c.what, err)
		if got := status.Code(err); got != c.code {
			t.Errorf("%s: got %v, want code %v", c.what, err, c.code)
		}
	}
	after := stats(t, admin, name)
	if !proto.Equal(before, after) {
		t.Errorf("counters changed by rejected messages:\n got %v\nwant %v", after, before)
	}

	// The same connections still work, with the largest payload allowed;
	// the counters move by exactly that, and the subscriber's next event
	// is the one published now.
	if r, err := tc.Echo(ctx, &nsbrokerv1.EchoRequest{Payload: make([]byte, maxPayload)}); err != nil || len(r.GetPayload()) != maxPayload {
		t.Errorf("tenant Echo of %d bytes afterwards: got %d bytes, %v", maxPayload, len(r.GetPayload()), err)
	}
	p, err := admin.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: name, Group: 1, Payload: make([]byte, maxPayload)})
	if err != nil {
		t.Fatalf("admin Publish of %d bytes afterwards: %v", maxPayload, err)
	}
	resp, err := sub.Recv()
	if ev := resp.GetEvent(); err != nil || ev.GetSeq() != 1 || p.GetSeq() != 1 || len(ev.GetPayload()) != maxPayload {
		t.Errorf("subscriber's first event: got %v, %v (published seq %d); want seq 1 with %d bytes", resp.GetGap(), err, p.GetSeq(), maxPayload)
	}
	last := stats(t, admin, name)
	got := fmt.Sprintf("echo=%d publish=%d rejected=%d received=%d", last.GetKernel().GetEcho(), last.GetKernel().GetPublish(), last.GetKernel().GetRejected(), last.GetDaemon().GetReceived())
	want := fmt.Sprintf("echo=%d publish=%d rejected=%d received=%d", before.GetKernel().GetEcho()+1, before.GetKernel().GetPublish()+1, before.GetKernel().GetRejected(), before.GetDaemon().GetReceived()+1)
	t.Logf("counters after one good echo and publish: %s", got)
	if got != want {
		t.Errorf("counters after one good echo and publish:\n got %s\nwant %s", got, want)
	}
}
