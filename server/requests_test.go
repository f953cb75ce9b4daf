package server

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestPublishStreamPipelines: the fake kernel holds the replies of the
// first publishWindow publishes until the last of them is sent, so a
// stream that waited for each reply before sending the next would stall;
// the pipelined stream completes, with exact counts.
func TestPublishStreamPipelines(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	e.k.HoldReplies(e.inode("A"), publishWindow)
	s, err := e.adminClient().PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3*publishWindow + 5
	for i := range n {
		group := uint32(1 + i%2)
		if err := s.Send(&nsbrokerv1.PublishRequest{Namespace: e.names["A"], Group: group, Payload: []byte{byte(i)}}); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		t.Fatalf("PublishStream of %d messages: %v", n, err)
	}
	// Groups 1 and 2 alternate: group 1 gets (n+1)/2 events, group 2 n/2.
	if resp.GetPublished() != n || resp.GetLastSeq()[1] != (n+1)/2 || resp.GetLastSeq()[2] != n/2 || len(resp.GetLastSeq()) != 2 {
		t.Fatalf("response: want published %d, last_seq {1: %d, 2: %d}; got %d, %v", n, (n+1)/2, n/2, resp.GetPublished(), resp.GetLastSeq())
	}
}

// TestPublishStreamModuleRefusesOne: the module refuses the 6th of ten
// messages. The stream ends with the module's refusal (EPERM:
// PERMISSION_DENIED); the five before it were published as 1..5, and at
// most the four after it (sent in the same datagram or before the reply
// was read) were published too.
func TestPublishStreamModuleRefusesOne(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	admin := e.adminClient()
	sub, err := admin.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: e.names["A"], Groups: []uint32{3}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Header(); err != nil { // sent once the daemon joined the group
		t.Fatal(err)
	}
	s, err := admin.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		payload := []byte{byte(i)}
		if i == 5 {
			payload = []byte("reject") // the fake module refuses it
		}
		if s.Send(&nsbrokerv1.PublishRequest{Namespace: e.names["A"], Group: 3, Payload: payload}) != nil {
			break
		}
	}
	_, err = s.CloseAndRecv()
	wantStatus(t, "PublishStream with a 6th message the module refuses", err, codes.PermissionDenied, "fake rejection")
	seq := e.k.Publish(e.inode("A"), 3, nil)
	if seq < 6 || seq > 10 {
		t.Fatalf("next event of group 3: want seq 6 to 10 (1..5 published, then at most the 4 after the refused one), got %d", seq)
	}
	// The subscriber sees the stream's messages in its order: 0..4 as
	// 1..5, then those after the refused one that were published (6..9).
	for n := uint64(1); n < seq; n++ {
		r, err := sub.Recv()
		if err != nil {
			t.Fatalf("Recv event %d: %v", n, err)
		}
		want := byte(n - 1)
		if n > 5 {
			want = byte(n)
		}
		if ev := r.GetEvent(); ev.GetSeq() != n || len(ev.GetPayload()) != 1 || ev.GetPayload()[0] != want {
			t.Fatalf("event %d: want seq %d payload [%d], got %v", n, n, want, r)
		}
	}
}

// TestPublishStreamFailsAtFirstBadMessage: a message the broker rejects
// before sending ends the stream with its status, after the publishes
// before it were answered; nothing after it is published.
func TestPublishStreamFailsAtFirstBadMessage(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := e.adminClient().PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		group := uint32(3)
		if i == 5 {
			group = 0 // invalid
		}
		if s.Send(&nsbrokerv1.PublishRequest{Namespace: e.names["A"], Group: group}) != nil {
			break
		}
	}
	_, err = s.CloseAndRecv()
	wantStatus(t, "PublishStream with a bad 6th message", err, codes.InvalidArgument, "group")
	if seq := e.k.Publish(e.inode("A"), 3, nil); seq != 6 {
		t.Fatalf("next event of group 3: want seq 6 (5 published by the stream), got %d", seq)
	}
}
