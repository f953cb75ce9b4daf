package broker

import (
	"bytes"
	"context"
	"testing"
)

// TestForgedEventsDropped: events a process forges in the namespace,
// straight from its own socket, reach the broker's socket like the
// module's, but not a subscriber: one with a number already delivered
// (which would look like a module reload) and one far ahead (which would
// look like an overrun) are dropped and counted, and the genuine events
// around them arrive in order with no gap.
func TestForgedEventsDropped(t *testing.T) {
	const forger = 4242
	b, k, names, inums := fakeSetup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		k.Publish(inums[0], 1, []byte("genuine"))
	}
	k.Forge(inums[0], 1, forger, 2, []byte("forged"))
	k.Forge(inums[0], 1, forger, 1000, []byte("forged"))
	k.Publish(inums[0], 1, []byte("genuine"))
	for seq := uint64(1); seq <= 4; seq++ {
		ev := recv(t, sub)
		wantMessage(t, ev, 1, seq)
		if !bytes.Equal(ev.Message.Payload, []byte("genuine")) || ev.Message.SenderPortID == forger {
			t.Fatalf("event %d: payload %q from port id %d, want the genuine one", seq, ev.Message.Payload, ev.Message.SenderPortID)
		}
	}
	in, _ := b.Get(names[0])
	if in.Forged != 2 || in.Received != 4 {
		t.Fatalf("Info forged %d received %d, want 2 and 4", in.Forged, in.Received)
	}
	// Nothing else is queued: the next item is the next genuine event.
	k.Publish(inums[0], 1, []byte("genuine"))
	wantMessage(t, recv(t, sub), 1, 5)
}
