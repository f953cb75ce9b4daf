package server

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// subscribedAt opens a subscription from resume points and waits until
// it is in place.
func subscribedAt(t *testing.T, c nsbrokerv1.BrokerClient, ns string, groups []uint32, resume ...*nsbrokerv1.ResumePoint) (grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse], context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(testContext(t))
	s, err := c.Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: ns, Groups: groups, Resume: resume})
	if err != nil {
		cancel()
		t.Fatalf("Subscribe(%q): %v", ns, err)
	}
	if md, _ := s.Header(); md == nil {
		_, err := s.Recv()
		cancel()
		t.Fatalf("Subscribe(%q) from %v: %v", ns, resume, err)
	}
	return s, cancel
}

func wantEvent(t *testing.T, r *nsbrokerv1.SubscribeResponse, group uint32, seq, instance uint64) {
	t.Helper()
	ev := r.GetEvent()
	if ev == nil || ev.Group != group || ev.Seq != seq || ev.Instance != instance {
		t.Fatalf("got %v, want event group %d seq %d instance %d", r, group, seq, instance)
	}
}

// TestIntegrationSubscribeResume: a client that reconnects with the
// instance and last number it saw gets the events it missed from the
// daemon's ring, then live ones, with no number twice.
func TestIntegrationSubscribeResume(t *testing.T) {
	e := newEnv(t, nil)
	inode := e.inode("A")
	c := e.localClient("A")
	s, cancel := subscribedAt(t, c, "", []uint32{3})
	e.k.Publish(inode, 3, []byte("1"))
	e.k.Publish(inode, 3, []byte("2"))
	first := recvItem(t, s).GetEvent()
	last := recvItem(t, s).GetEvent()
	if first == nil || last == nil || last.Seq != 2 || last.Instance == 0 {
		t.Fatalf("first events %v, %v: want seq 1 and 2 with an instance", first, last)
	}
	cancel()
	for range 3 { // 3..5 while the client is away
		e.k.Publish(inode, 3, nil)
	}
	s, _ = subscribedAt(t, c, "", []uint32{3}, &nsbrokerv1.ResumePoint{Group: 3, Instance: last.Instance, Seq: last.Seq})
	for seq := uint64(3); seq <= 5; seq++ {
		wantEvent(t, recvItem(t, s), 3, seq, last.Instance)
	}
	e.k.Publish(inode, 3, nil)
	wantEvent(t, recvItem(t, s), 3, 6, last.Instance)
}

// TestIntegrationSubscribeResumeGap: numbers published before the daemon
// listened to the group come as one exact DAEMON_RESTARTED gap, with the
// instance they belong to.
func TestIntegrationSubscribeResumeGap(t *testing.T) {
	e := newEnv(t, nil)
	inode := e.inode("A")
	for range 3 { // 1..3, nobody listening
		e.k.Publish(inode, 4, nil)
	}
	s, _ := subscribedAt(t, e.adminClient(), e.names["A"], []uint32{4, 5}, &nsbrokerv1.ResumePoint{Group: 4, Instance: 1, Seq: 1})
	r := recvItem(t, s)
	g := r.GetGap()
	if g == nil || g.Group != 4 || g.FromSeq != 2 || g.ToSeq != 3 || g.Instance != 1 ||
		g.Reason != nsbrokerv1.LossReason_LOSS_REASON_DAEMON_RESTARTED || g.Namespace != e.names["A"] {
		t.Fatalf("got %v, want gap of group 4, 2..3, DAEMON_RESTARTED, instance 1", r)
	}
	e.k.Publish(inode, 4, nil)
	wantEvent(t, recvItem(t, s), 4, 4, 1)
}

// TestIntegrationSubscribeResumeInvalid: resume points must name a
// subscribed group once and not lie beyond the module's numbers.
func TestIntegrationSubscribeResumeInvalid(t *testing.T) {
	e := newEnv(t, nil)
	c := e.localClient("A")
	for _, tc := range []struct {
		name   string
		resume []*nsbrokerv1.ResumePoint
	}{
		{"group not subscribed", []*nsbrokerv1.ResumePoint{{Group: 9, Seq: 1}}},
		{"group twice", []*nsbrokerv1.ResumePoint{{Group: 1}, {Group: 1}}},
		{"beyond the module's numbers", []*nsbrokerv1.ResumePoint{{Group: 1, Instance: 1, Seq: 5}}},
	} {
		s, err := c.Subscribe(testContext(t), &nsbrokerv1.SubscribeRequest{Groups: []uint32{1}, Resume: tc.resume})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", tc.name, err)
		}
	}
}
