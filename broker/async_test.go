package broker

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
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

// TestPublishBatchRefusedInTheMiddle: ten publishes in one datagram, the
// sixth refused by the module. The five before it are published as 1..5,
// the sixth fails with the module's errno, and the module still handles
// the four after it, as netlink_rcv_skb does: they are 6..9.
func TestPublishBatchRefusedInTheMiddle(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	d0, m0 := k.Requests(inums[0])
	var pubs []Publication
	for i := range 10 {
		payload := []byte{byte(i)}
		if i == 5 {
			payload = []byte("reject") // the fake module refuses it with EPERM
		}
		pubs = append(pubs, Publication{Group: 3, Payload: payload})
	}
	pend, err := b.PublishBatch(context.Background(), names[0], pubs)
	if err != nil || len(pend) != 10 {
		t.Fatalf("PublishBatch: want 10 pending, no error; got %d, %v", len(pend), err)
	}
	if d, m := k.Requests(inums[0]); d-d0 != 1 || m-m0 != 10 {
		t.Fatalf("requests sent: want 1 datagram of 10 messages; got %d datagrams, %d messages", d-d0, m-m0)
	}
	for i, p := range pend {
		r, err := p.Wait(context.Background())
		switch {
		case i == 5:
			var fe *family.Error
			if !errors.As(err, &fe) || fe.Errno != unix.EPERM {
				t.Errorf("publish 5: want the module's EPERM, got %v, %v", r, err)
			}
		case err != nil:
			t.Errorf("publish %d: %v", i, err)
		default:
			want := uint64(i + 1)
			if i > 5 {
				want = uint64(i)
			}
			if r.Group != 3 || r.Seq != want {
				t.Errorf("publish %d: want group 3 seq %d, got group %d seq %d", i, want, r.Group, r.Seq)
			}
		}
	}
}

// TestPublishBatchStopsAtUnencodable: a publication that cannot be encoded
// is not sent, nor anything after it; the ones before it are.
func TestPublishBatchStopsAtUnencodable(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	pend, err := b.PublishBatch(context.Background(), names[0], []Publication{{Group: 1}, {Group: 1}, {Group: 0}, {Group: 1}})
	if !errors.Is(err, ErrInvalid) || len(pend) != 2 {
		t.Fatalf("PublishBatch with group 0 third: want 2 pending and ErrInvalid; got %d, %v", len(pend), err)
	}
	for i, p := range pend {
		if r, err := p.Wait(context.Background()); err != nil || r.Seq != uint64(i+1) {
			t.Fatalf("publish %d: want seq %d, got %v, %v", i, i+1, r, err)
		}
	}
	if seq := k.Publish(inums[0], 1, nil); seq != 3 {
		t.Fatalf("next event of group 1: want seq 3 (2 published by the batch), got %d", seq)
	}
	if _, err := b.PublishBatch(context.Background(), "no-such", []Publication{{Group: 1}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PublishBatch to an unknown namespace: want ErrNotFound, got %v", err)
	}
}
