package client_test

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/client"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// fast reconnects quickly, for tests.
func fast(ep client.Endpoint) *client.Config {
	return &client.Config{Endpoint: ep, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
}

// line is an item in a form cmp can compare.
func line(it client.Item) string {
	if ev := it.Event; ev != nil {
		return "event " + itoa(ev.GetGroup()) + " epoch " + itoa(ev.GetEpoch()) + " seq " + itoa(ev.GetSeq())
	}
	g := it.Gap
	s := "gap " + itoa(g.Group) + " " + itoa(g.From) + "-" + itoa(g.To) + " " + g.Reason.String()
	if g.Reconnect {
		s += " reconnect"
	}
	return s + " ns " + g.Namespace
}

func itoa[T uint32 | uint64](v T) string {
	if v < 10 {
		return string(rune('0' + v))
	}
	return itoa(v/10) + string(rune('0'+v%10))
}

// recv reads n items.
func recv(t *testing.T, s *client.Subscription, n int) []string {
	t.Helper()
	var got []string
	for range n {
		it, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv after %q: %v", got, err)
		}
		got = append(got, line(it))
	}
	return got
}

func wantItems(t *testing.T, s *client.Subscription, want ...string) {
	t.Helper()
	if diff := cmp.Diff(want, recv(t, s, len(want))); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
}

// reading reads n items in the background, as a subscriber blocked in
// Recv does: the Subscription reconnects inside Recv.
func reading(s *client.Subscription, n int) <-chan []string {
	c := make(chan []string, 1)
	go func() {
		var got []string
		for range n {
			it, err := s.Recv()
			if err != nil {
				got = append(got, "error "+err.Error())
				break
			}
			got = append(got, line(it))
		}
		c <- got
	}()
	return c
}

func wantRead(t *testing.T, c <-chan []string, want ...string) {
	t.Helper()
	select {
	case got := <-c:
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("items (-want +got):\n%s", diff)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no items within 10s")
	}
}

// The daemon closes the stream (UNAVAILABLE): the subscription opens a new
// one and reports what it missed meanwhile, per group, exactly.
func TestSubscribeReconnects(t *testing.T) {
	f := newFake()
	path, _ := serve(t, f)
	c, err := client.New(ctx10s(t), fast(client.Admin(path)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Subscribe(ctx10s(t), &client.SubscribeConfig{Namespace: "red", Groups: []uint32{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	first := f.next(t)
	first.items <- event(1, 3, 1)
	first.items <- event(1, 3, 2)
	first.items <- event(2, 3, 7)
	wantItems(t, s, "event 1 epoch 3 seq 1", "event 1 epoch 3 seq 2", "event 2 epoch 3 seq 7")
	first.end <- status.Error(codes.Unavailable, "server shutting down")

	// Published meanwhile: group 1 seq 3..5, group 2 nothing.
	got := reading(s, 4)
	second := f.next(t)
	// The same, resumed where each group stood.
	want := &nsbrokerv1.SubscribeRequest{Namespace: "red", Groups: []uint32{1, 2}, Resume: []*nsbrokerv1.ResumePoint{{Group: 1, Seq: 2}, {Group: 2, Seq: 7}}}
	if diff := cmp.Diff(want.String(), second.req.String()); diff != "" {
		t.Errorf("the new stream's request (-want +got):\n%s", diff)
	}
	if len(first.req.GetResume()) != 0 {
		t.Errorf("the first stream resumes from %v, want nowhere", first.req.GetResume())
	}
	second.items <- event(2, 3, 8)
	second.items <- event(1, 3, 6)
	second.items <- event(1, 3, 7)
	wantRead(t, got,
		"event 2 epoch 3 seq 8",
		"gap 1 3-5 LOSS_REASON_UNSPECIFIED reconnect ns red",
		"event 1 epoch 3 seq 6",
		"event 1 epoch 3 seq 7")
	wantPos := client.ResumePoint{1: {Epoch: 3, Seq: 7}, 2: {Epoch: 3, Seq: 8}}
	if diff := cmp.Diff(wantPos, s.ResumePoint()); diff != "" {
		t.Errorf("ResumePoint (-want +got):\n%s", diff)
	}

	// Again, and the daemon reconnected to the module meanwhile: the
	// epoch changed, so how much was missed is unknown. The daemon's own
	// gap is passed on, and accounts for what it names.
	second.end <- status.Error(codes.Unavailable, "connection reset")
	got = reading(s, 4)
	third := f.next(t)
	third.items <- event(1, 4, 1)
	third.items <- gap(2, 9, 12, nsbrokerv1.LossReason_LOSS_REASON_QUEUE_FULL)
	third.items <- event(2, 3, 13)
	wantRead(t, got,
		"gap 1 8-0 LOSS_REASON_UNSPECIFIED reconnect ns red",
		"event 1 epoch 4 seq 1",
		"gap 2 9-12 LOSS_REASON_QUEUE_FULL ns red",
		"event 2 epoch 3 seq 13")

	// After a reconnect, a daemon gap that starts later than the next
	// number: the numbers between are the client's to report.
	third.end <- status.Error(codes.Unavailable, "gone away")
	got = reading(s, 2)
	fourth := f.next(t)
	fourth.items <- gap(2, 20, 22, nsbrokerv1.LossReason_LOSS_REASON_KERNEL_OVERRUN)
	wantRead(t, got,
		"gap 2 14-19 LOSS_REASON_UNSPECIFIED reconnect ns red",
		"gap 2 20-22 LOSS_REASON_KERNEL_OVERRUN ns red")

	// An error a new stream would not mend ends it.
	fourth.end <- status.Error(codes.Aborted, `namespace "red" detached`)
	if _, err := s.Recv(); !errors.Is(err, client.ErrAborted) {
		t.Fatalf("Recv after ABORTED: got %v, want ErrAborted", err)
	}
	if _, err := s.Recv(); !errors.Is(err, client.ErrAborted) {
		t.Errorf("Recv again: got %v, want ErrAborted again", err)
	}
	if n := f.subscribeRequests(); n != 4 {
		t.Errorf("%d Subscribe requests, want 4", n)
	}
}

// The daemon goes away altogether and comes back on the same socket: the
// subscription waits, bounded by MaxBackoff, and resumes.
func TestSubscribeSurvivesRestart(t *testing.T) {
	f := newFake()
	path, srv := serve(t, f)
	c, err := client.New(ctx10s(t), fast(client.Admin(path)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Subscribe(ctx10s(t), &client.SubscribeConfig{Groups: []uint32{1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f.next(t).items <- event(1, 1, 10)
	wantItems(t, s, "event 1 epoch 1 seq 10")

	srv.stop()
	items := reading(s, 2)
	time.Sleep(300 * time.Millisecond) // several attempts fail meanwhile
	f2 := newFake()
	serveOn(t, f2, listen(t, "unix", path))
	back := time.Now()
	f2.next(t).items <- event(1, 1, 15)
	select {
	case got := <-items:
		if diff := cmp.Diff([]string{"gap 1 11-14 LOSS_REASON_UNSPECIFIED reconnect ns red", "event 1 epoch 1 seq 15"}, got); diff != "" {
			t.Errorf("items (-want +got):\n%s", diff)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no items 10s after the daemon came back")
	}
	// MaxBackoff is 50ms: the subscription is back well within a second.
	if took := time.Since(back); took > time.Second {
		t.Errorf("back %v after the daemon, want within 1s", took)
	}
}

// From: a new Subscription continues where an earlier one stopped.
func TestSubscribeFrom(t *testing.T) {
	f := newFake()
	path, _ := serve(t, f)
	c := dial(t, client.Admin(path))
	s, err := c.Subscribe(ctx10s(t), &client.SubscribeConfig{Groups: []uint32{1}, From: client.ResumePoint{1: {Epoch: 2, Seq: 4}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f.next(t).items <- event(1, 2, 9)
	wantItems(t, s, "gap 1 5-8 LOSS_REASON_UNSPECIFIED reconnect ns red", "event 1 epoch 2 seq 9")
}

// Once: the first error ends it, as a plain stream.
func TestSubscribeOnce(t *testing.T) {
	f := newFake()
	path, _ := serve(t, f)
	c := dial(t, client.Admin(path))
	s, err := c.Subscribe(ctx10s(t), &client.SubscribeConfig{Groups: []uint32{1}, Once: true})
	if err != nil {
		t.Fatal(err)
	}
	f.next(t).end <- status.Error(codes.Unavailable, "server shutting down")
	if _, err := s.Recv(); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Recv: got %v, want ErrUnavailable", err)
	}
	if n := f.subscribeRequests(); n != 1 {
		t.Errorf("%d Subscribe requests, want 1", n)
	}
}

// Cancelling ctx ends the subscription, while it streams and while it
// waits to reconnect, and leaves no goroutine behind.
func TestSubscribeCancel(t *testing.T) {
	f := newFake()
	path, srv := serve(t, f)
	before := runtime.NumGoroutine()

	c, err := client.New(ctx10s(t), fast(client.Admin(path)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.Subscribe(ctx, &client.SubscribeConfig{Groups: []uint32{1}})
	if err != nil {
		t.Fatal(err)
	}
	sub := f.next(t)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Recv after cancel: got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still blocked 5s after cancel")
	}
	<-sub.done // the daemon saw the stream end

	// While reconnecting: the daemon is gone; Close ends the wait.
	s2, err := c.Subscribe(context.Background(), &client.SubscribeConfig{Groups: []uint32{1}})
	if err != nil {
		t.Fatal(err)
	}
	f.next(t)
	srv.stop()
	go func() {
		_, err := s2.Recv()
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	s2.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, client.ErrClosed) {
			t.Errorf("Recv after Close: got %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still blocked 5s after Close")
	}
	c.Close()

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// A daemon that resumes: the new stream carries the module instance and
// last number of each group, and what the daemon replays under a new
// epoch (it restarted) but the same instance continues the numbering, so
// the subscription reports no gap of its own; the daemon's gaps are
// passed on with their instance.
func TestSubscribeResumesByInstance(t *testing.T) {
	f := newFake()
	path, _ := serve(t, f)
	c, err := client.New(ctx10s(t), fast(client.Admin(path)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Subscribe(ctx10s(t), &client.SubscribeConfig{Namespace: "red", Groups: []uint32{1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	withInstance := func(r *nsbrokerv1.SubscribeResponse, instance uint64) *nsbrokerv1.SubscribeResponse {
		r.GetEvent().Instance = instance
		return r
	}
	first := f.next(t)
	first.items <- withInstance(event(1, 3, 1), 99)
	wantItems(t, s, "event 1 epoch 3 seq 1")
	first.end <- status.Error(codes.Unavailable, "server shutting down")

	got := reading(s, 3)
	second := f.next(t)
	want := &nsbrokerv1.SubscribeRequest{Namespace: "red", Groups: []uint32{1}, Resume: []*nsbrokerv1.ResumePoint{{Group: 1, Instance: 99, Seq: 1}}}
	if diff := cmp.Diff(want.String(), second.req.String()); diff != "" {
		t.Errorf("the new stream's request (-want +got):\n%s", diff)
	}
	second.items <- withInstance(event(1, 1, 2), 99) // replayed
	second.items <- &nsbrokerv1.SubscribeResponse{Item: &nsbrokerv1.SubscribeResponse_Gap{Gap: &nsbrokerv1.Gap{
		Namespace: "red", Group: 1, FromSeq: 3, ToSeq: 5, Reason: nsbrokerv1.LossReason_LOSS_REASON_DAEMON_RESTARTED, Instance: 99}}}
	second.items <- withInstance(event(1, 1, 6), 99)
	wantRead(t, got,
		"event 1 epoch 1 seq 2",
		"gap 1 3-5 LOSS_REASON_DAEMON_RESTARTED ns red",
		"event 1 epoch 1 seq 6")
	if diff := cmp.Diff(client.ResumePoint{1: {Instance: 99, Epoch: 1, Seq: 6}}, s.ResumePoint()); diff != "" {
		t.Errorf("ResumePoint (-want +got):\n%s", diff)
	}
}
