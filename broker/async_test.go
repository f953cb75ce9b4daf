package broker

import (
	"context"
	"errors"
	"testing"
)

// TestPublishAsyncMatchesRepliesOutOfOrder: three publishes in flight at
// once, their replies held and delivered in reverse order, each Wait gets
// the reply of its own publish.
func TestPublishAsyncMatchesRepliesOutOfOrder(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	k.HoldReplies(inums[0], 3)
	var pending []*PendingPublish
	for i := range 3 {
		p, err := b.PublishAsync(names[0], uint32(i+1), []byte{byte(i)})
		if err != nil {
			t.Fatalf("PublishAsync %d: %v", i, err)
		}
		pending = append(pending, p)
	}
	for i, p := range pending {
		r, err := p.Wait(context.Background())
		if err != nil {
			t.Fatalf("Wait %d: %v", i, err)
		}
		if r.Group != uint32(i+1) || r.Seq != 1 {
			t.Fatalf("reply %d: want group %d seq 1, got group %d seq %d", i, i+1, r.Group, r.Seq)
		}
	}
}

func TestPublishAsyncErrors(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	if _, err := b.PublishAsync(names[0], 0, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("PublishAsync to group 0: want ErrInvalid, got %v", err)
	}
	if _, err := b.PublishAsync("no-such", 1, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PublishAsync to an unknown namespace: want ErrNotFound, got %v", err)
	}
	k.HoldReplies(inums[0], 1000)
	p, err := b.PublishAsync(names[0], 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context: want context.Canceled, got %v", err)
	}
	p, err = b.PublishAsync(names[0], 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Release() // the connection goes: the pending publish fails
	if _, err := p.Wait(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Wait after the connection closed: want ErrUnavailable, got %v", err)
	}
}
