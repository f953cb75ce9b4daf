package broker

import (
	"context"
	"testing"

	"github.com/nsbroker/nsbroker/family"
)

// TestByteBudgetSharedBySubscribers: two subscribers of one budget hold
// at most its bytes between them; what does not fit is a queue-full loss
// of the one that could not take it, and the bytes come back as events
// are taken and when a subscription is dropped.
func TestByteBudgetSharedBySubscribers(t *testing.T) {
	parent := NewByteBudget(100*queuedCost(10), nil)
	tenant := NewByteBudget(3*queuedCost(10), parent)
	a := newSubscriber(context.Background(), "n", []uint32{1}, 100, 1<<20, tenant)
	b := newSubscriber(context.Background(), "n", []uint32{1}, 100, 1<<20, tenant)
	msg := func(seq uint64) Event {
		return Event{Kind: KindMessage, Message: family.Event{Group: 1, Seq: seq, Payload: make([]byte, 10)}}
	}
	if !a.push(msg(1)) || !a.push(msg(2)) || !b.push(msg(1)) {
		t.Fatal("three events within the budget of three: want all queued")
	}
	if b.push(msg(2)) {
		t.Fatal("a fourth event over the shared budget: want it lost")
	}
	if want := []Gap{{Group: 1, From: 2, To: 2, Reason: LossQueueFull}}; len(b.lost) != 1 || b.lost[0] != want[0] {
		t.Fatalf("b's pending losses: got %v, want %v", b.lost, want)
	}
	if got, want := parent.Used(), 3*queuedCost(10); got != want || tenant.Used() != want {
		t.Fatalf("used: tenant %d, parent %d; want %d each", tenant.Used(), got, want)
	}
	if ev, _, _ := a.next(); ev.Message.Seq != 1 {
		t.Fatalf("a.next(): got seq %d, want 1", ev.Message.Seq)
	}
	if got, want := tenant.Used(), 2*queuedCost(10); got != want {
		t.Fatalf("used after one event was taken: got %d, want %d", got, want)
	}
	a.drop()
	if got, want := tenant.Used(), queuedCost(10); got != want {
		t.Fatalf("used after a was dropped: got %d, want %d (b's one event)", got, want)
	}
	if a.push(msg(3)) {
		t.Fatal("push to a dropped subscriber: want refused")
	}
	b.drop()
	if tenant.Used() != 0 || parent.Used() != 0 {
		t.Fatalf("used after both were dropped: tenant %d, parent %d; want 0", tenant.Used(), parent.Used())
	}
}

// TestByteBudgetParentBounds: a child's take fails when its parent is
// full, and leaves nothing reserved on either.
func TestByteBudgetParentBounds(t *testing.T) {
	parent := NewByteBudget(10, nil)
	one, two := NewByteBudget(8, parent), NewByteBudget(8, parent)
	if !one.take(6) {
		t.Fatal("6 of 8 under a parent of 10: want taken")
	}
	if two.take(6) {
		t.Fatal("6 more under a parent with 4 left: want refused")
	}
	if two.Used() != 0 || parent.Used() != 6 {
		t.Fatalf("after the refusal: two %d, parent %d; want 0 and 6", two.Used(), parent.Used())
	}
	if !two.take(4) {
		t.Fatal("4 under a parent with 4 left: want taken")
	}
	one.give(6)
	two.give(4)
	if parent.Used() != 0 {
		t.Fatalf("parent after every give: %d, want 0", parent.Used())
	}
}
