package broker

import (
	"context"
	"sync/atomic"
	"testing"
)

// TestSharedBuildsOncePerMessage: the subscribers of one message share
// what Shared builds from it; a different message builds anew.
func TestSharedBuildsOncePerMessage(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var subs []<-chan Event
	for range 3 {
		sub, err := subscribe(ctx, b, names[0], []uint32{1})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	var builds atomic.Int32
	build := func(ev Event) any {
		builds.Add(1)
		return &ev.Message.Seq
	}
	for seq := uint64(1); seq <= 2; seq++ {
		k.Publish(inums[0], 1, nil)
		var first *uint64
		for i, sub := range subs {
			ev := recv(t, sub)
			wantMessage(t, ev, 1, seq)
			got := ev.Shared(build).(*uint64)
			if *got != seq || (first != nil && got != first) {
				t.Fatalf("subscriber %d, seq %d: want the shared value %p (seq %d), got %p (seq %d)", i, seq, first, seq, got, *got)
			}
			first = got
		}
		if n := builds.Load(); n != int32(seq) {
			t.Fatalf("after %d messages to 3 subscribers: want %d builds, got %d", seq, seq, n)
		}
	}
	gap := Event{Kind: KindGap}
	gap.Shared(build)
	gap.Shared(build)
	if n := builds.Load(); n != 4 {
		t.Fatalf("a gap built twice: want 4 builds in all, got %d", n)
	}
}
