package broker

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSubscriptionNext reads a subscription with Next, as the server does:
// events in order, the final KindEnd once the namespace is detached, then
// false; Close removes it from the namespace.
func TestSubscriptionNext(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	sub, err := b.NewSubscription(context.Background(), names[0], []uint32{2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if in, _ := b.Get(names[0]); in.Subscribers != 1 {
		t.Fatalf("%d subscribers, want 1", in.Subscribers)
	}
	seqs := []uint64{k.Publish(inums[0], 2, []byte("a")), k.Publish(inums[0], 2, []byte("b"))}
	for i, want := range []string{"a", "b"} {
		ev, ok := sub.Next()
		if !ok || ev.Kind != KindMessage || string(ev.Message.Payload) != want || ev.Message.Seq != seqs[i] {
			t.Fatalf("Next %d: %+v %v, want message %q seq %d", i, ev, ok, want, seqs[i])
		}
	}
	if in, _ := b.Get(names[0]); in.Delivered != 2 {
		t.Errorf("Delivered %d, want 2", in.Delivered)
	}
	if err := b.Detach(names[0]); err != nil {
		t.Fatal(err)
	}
	ev, ok := sub.Next()
	if !ok || ev.Kind != KindEnd || !errors.Is(ev.Err, ErrDetached) {
		t.Fatalf("Next after Detach: %+v %v, want KindEnd with ErrDetached", ev, ok)
	}
	if ev, ok := sub.Next(); ok {
		t.Fatalf("Next after the end: %+v, want false", ev)
	}
}

// TestSubscriptionCancelAndClose: a cancelled context ends Next at once
// and for good, and Close (twice is fine) leaves the namespace with no
// subscriber.
func TestSubscriptionCancelAndClose(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := b.NewSubscription(ctx, names[0], []uint32{3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	go func() {
		_, ok := sub.Next()
		done <- ok
	}()
	time.Sleep(10 * time.Millisecond) // let Next wait
	cancel()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("Next returned an event after the cancel, with none published")
		}
	case <-time.After(waitLimit):
		t.Fatal("Next still waiting after its context was cancelled")
	}
	k.Publish(inums[0], 3, []byte("late"))
	if _, ok := sub.Next(); ok {
		t.Fatal("Next returned true after it had returned false")
	}
	sub.Close()
	sub.Close()
	if in, _ := b.Get(names[0]); in.Subscribers != 0 {
		t.Errorf("%d subscribers after Close, want 0", in.Subscribers)
	}
}

// subscribe is NewSubscription read by a goroutine of its own into a
// channel, which is closed at the end (after a KindEnd event, or once ctx
// is cancelled).
func subscribe(ctx context.Context, b *Broker, name string, groups []uint32) (<-chan Event, error) {
	sub, err := b.NewSubscription(ctx, name, groups, nil)
	if err != nil {
		return nil, err
	}
	out := make(chan Event)
	go func() {
		defer close(out)
		defer sub.Close()
		for {
			ev, ok := sub.Next()
			if !ok {
				return
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// TestSubscriptionReceivers: each copy of a message says how many
// subscriptions wanted its group, the hint the server shares work by.
func TestSubscriptionReceivers(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	one, err := b.NewSubscription(context.Background(), names[0], []uint32{1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	both, err := b.NewSubscription(context.Background(), names[0], []uint32{1, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer both.Close()
	k.Publish(inums[0], 1, []byte("shared"))
	k.Publish(inums[0], 2, []byte("alone"))
	for _, c := range []struct {
		sub       *Subscription
		payload   string
		receivers int
	}{{one, "shared", 2}, {both, "shared", 2}, {both, "alone", 1}} {
		ev, ok := c.sub.Next()
		if !ok || string(ev.Message.Payload) != c.payload || ev.Receivers != c.receivers {
			t.Fatalf("Next: %+v %v, want message %q with %d receivers", ev, ok, c.payload, c.receivers)
		}
	}
}
