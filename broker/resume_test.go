package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// subscribeAt opens a subscription from the given resume points, ended
// when the test ends, and returns a channel of its events.
func subscribeAt(t *testing.T, b *Broker, name string, groups []uint32, budget *ByteBudget, from ...ResumePoint) (<-chan Event, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := b.NewSubscriptionAt(ctx, name, groups, budget, from)
	if err != nil {
		cancel()
		t.Fatalf("subscribe at %+v: %v", from, err)
	}
	ch := make(chan Event)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for {
			ev, ok := sub.Next()
			if !ok {
				return
			}
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	stop := func() { cancel(); <-done; sub.Close() }
	t.Cleanup(stop)
	return ch, stop
}

// wantNothing checks that no event comes within a short while.
func wantNothing(t *testing.T, ch <-chan Event) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("got %v %+v gap %+v, want nothing", ev.Kind, ev.Message.Seq, ev.Gap)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestKernelOverrunTailGap: an overrun after which the group gets no
// further event is reported at once, with its exact range: the broker
// asks the module where the group stands.
func TestKernelOverrunTailGap(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{1})
	if err != nil {
		t.Fatal(err)
	}
	k.Publish(inums[0], 1, nil) // 1
	k.Publish(inums[0], 1, nil) // 2
	k.DropEvents(inums[0], 3)   // 3, 4, 5 dropped with ENOBUFS
	for range 3 {
		k.Publish(inums[0], 1, nil)
	}
	wantMessage(t, recv(t, sub), 1, 1)
	wantMessage(t, recv(t, sub), 1, 2)
	wantGap(t, recv(t, sub), Gap{Group: 1, From: 3, To: 5, Reason: LossKernelOverrun})
	// The next event follows without a second report.
	k.Publish(inums[0], 1, nil)
	wantMessage(t, recv(t, sub), 1, 6)
	if in, _ := b.Get(names[0]); in.OverrunLost != 3 {
		t.Fatalf("OverrunLost %d, want 3", in.OverrunLost)
	}
}

// TestOverrunBeforeFirstEvent: what is lost before the first event a
// newly joined group receives is a gap too: the broker learns where the
// group starts when it joins.
func TestOverrunBeforeFirstEvent(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	k.Publish(inums[0], 2, nil) // 1, before anyone listens
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{2})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the group's start", func() bool {
		c, _ := b.lookup(names[0])
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.groups[2].known
	})
	k.DropEvents(inums[0], 2) // 2, 3
	k.Publish(inums[0], 2, nil)
	k.Publish(inums[0], 2, nil)
	wantGap(t, recv(t, sub), Gap{Group: 2, From: 2, To: 3, Reason: LossKernelOverrun})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

// firstEvents subscribes to group g, reads n events and leaves, returning
// the last one: the resume point of a subscriber that went away.
func firstEvents(t *testing.T, b *Broker, name string, g uint32, n int, publish func()) Event {
	t.Helper()
	ch, stop := subscribeAt(t, b, name, []uint32{g}, nil)
	var last Event
	for i := 1; i <= n; i++ {
		publish()
		last = recv(t, ch)
		wantMessage(t, last, g, uint64(i))
	}
	stop()
	if last.Instance == 0 {
		t.Fatalf("event %d carries no instance", last.Message.Seq)
	}
	return last
}

// TestResumeReplaysRetained: a subscriber that comes back gets, from its
// resume point, the retained events exactly, then live ones.
func TestResumeReplaysRetained(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	pub := func() { k.Publish(inums[0], 3, []byte("x")) }
	last := firstEvents(t, b, names[0], 3, 3, pub)
	for range 5 { // 4..8, while nobody subscribes
		pub()
	}
	ch, _ := subscribeAt(t, b, names[0], []uint32{3}, nil,
		ResumePoint{Group: 3, Instance: last.Instance, Seq: last.Message.Seq})
	for seq := uint64(4); seq <= 8; seq++ {
		ev := recv(t, ch)
		wantMessage(t, ev, 3, seq)
		if ev.Instance != last.Instance || string(ev.Message.Payload) != "x" {
			t.Fatalf("replayed event %d: instance %#x payload %q, want %#x %q", seq, ev.Instance, ev.Message.Payload, last.Instance, "x")
		}
	}
	pub()
	wantMessage(t, recv(t, ch), 3, 9)

	// Resuming at the last number misses nothing and repeats nothing.
	ch2, _ := subscribeAt(t, b, names[0], []uint32{3}, nil, ResumePoint{Group: 3, Instance: last.Instance, Seq: 9})
	wantNothing(t, ch2)
	pub()
	wantMessage(t, recv(t, ch2), 3, 10)
}

// TestResumeNotRetained: what the ring let go is one exact gap, followed
// by what it still holds.
func TestResumeNotRetained(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, func(c *Config) { c.RetainEvents = 3 })
	pub := func() { k.Publish(inums[0], 4, nil) }
	last := firstEvents(t, b, names[0], 4, 1, pub)
	for range 9 { // 2..10
		pub()
	}
	ch, _ := subscribeAt(t, b, names[0], []uint32{4}, nil, ResumePoint{Group: 4, Instance: last.Instance, Seq: 1})
	wantGap(t, recv(t, ch), Gap{Group: 4, From: 2, To: 7, Reason: LossNotRetained, Instance: last.Instance})
	for seq := uint64(8); seq <= 10; seq++ {
		wantMessage(t, recv(t, ch), 4, seq)
	}
	pub()
	wantMessage(t, recv(t, ch), 4, 11)
}

// TestResumeAfterDaemonRestart: a new broker has retained nothing; the
// module's numbers give the exact range the resuming subscriber missed.
func TestResumeAfterDaemonRestart(t *testing.T) {
	k := brokertest.NewKernel()
	name, ns := newNamed(t)
	inum := ns.Inode()
	old := New(fakeConfig(k))
	if _, err := old.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
		t.Fatal(err)
	}
	last := firstEvents(t, old, name, 5, 2, func() { k.Publish(inum, 5, nil) })
	old.Close()
	for range 3 { // 3..5 while no daemon runs
		k.Publish(inum, 5, nil)
	}

	b := New(fakeConfig(k))
	t.Cleanup(func() { b.Close() })
	if _, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
		t.Fatal(err)
	}
	// A point beyond what the module numbered is refused.
	_, err := b.NewSubscriptionAt(context.Background(), name, []uint32{5}, nil, []ResumePoint{{Group: 5, Instance: last.Instance, Seq: 6}})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("resume beyond the module's numbers: %v, want ErrInvalid", err)
	}
	ch, _ := subscribeAt(t, b, name, []uint32{5}, nil, ResumePoint{Group: 5, Instance: last.Instance, Seq: last.Message.Seq})
	wantGap(t, recv(t, ch), Gap{Group: 5, From: 3, To: 5, Reason: LossDaemonRestarted, Instance: last.Instance})
	k.Publish(inum, 5, nil)
	wantMessage(t, recv(t, ch), 5, 6)
}

// TestResumeAfterModuleReload: a resume point of another module instance
// means every number of the current one is new to the subscriber.
func TestResumeAfterModuleReload(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	last := firstEvents(t, b, names[0], 6, 2, func() { k.Publish(inums[0], 6, nil) })
	b.Close()
	k.Reload()
	for range 3 { // 1..3 of the new instance
		k.Publish(inums[0], 6, nil)
	}
	b2 := New(fakeConfig(k))
	t.Cleanup(func() { b2.Close() })
	if _, err := b2.Attach(context.Background(), names[0], nsmgr.Ref{Name: names[0]}); err != nil {
		t.Fatal(err)
	}
	ch, _ := subscribeAt(t, b2, names[0], []uint32{6}, nil, ResumePoint{Group: 6, Instance: last.Instance, Seq: last.Message.Seq})
	ev := recv(t, ch)
	if ev.Gap.Instance == last.Instance {
		t.Fatalf("gap of instance %#x, want the new instance", ev.Gap.Instance)
	}
	wantGap(t, ev, Gap{Group: 6, From: 1, To: 3, Reason: LossModuleReloaded})
	k.Publish(inums[0], 6, nil)
	wantMessage(t, recv(t, ch), 6, 4)
}

// TestResumeChargesBudget: replayed events are queued, and charged to the
// subscriber's budget, like live ones; what does not fit is a
// QUEUE_FULL gap.
func TestResumeChargesBudget(t *testing.T) {
	b, k, names, inums := fakeSetup(t, 1, nil)
	payload := make([]byte, 1000)
	pub := func() { k.Publish(inums[0], 7, payload) }
	last := firstEvents(t, b, names[0], 7, 1, pub)
	for range 5 { // 2..6
		pub()
	}
	budget := NewByteBudget(2*queuedCost(len(payload)), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := b.NewSubscriptionAt(ctx, names[0], []uint32{7}, budget, []ResumePoint{{Group: 7, Instance: last.Instance, Seq: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if got, want := budget.Used(), 2*queuedCost(len(payload)); got != want {
		t.Fatalf("budget holds %d bytes after the replay, want %d (two events)", got, want)
	}
	var got []string
	for range 3 {
		ev, _ := sub.Next()
		if ev.Kind == KindGap {
			got = append(got, fmt.Sprintf("gap %d-%d %v", ev.Gap.From, ev.Gap.To, ev.Gap.Reason))
		} else {
			got = append(got, fmt.Sprintf("event %d", ev.Message.Seq))
		}
	}
	want := []string{"event 2", "event 3", "gap 4-6 queue-full"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resumed stream %v, want %v", got, want)
	}
}

// TestRetentionBounds: the rings stay within their bounds, per group and
// together, and give everything back when the namespace is detached.
func TestRetentionBounds(t *testing.T) {
	const each = 100
	per := 4 * retainedCost(each)
	b, k, names, inums := fakeSetup(t, 2, func(c *Config) {
		c.RetainBytes = int(per)
		c.RetainTotalBytes = 6 * retainedCost(each) // less than two rings
	})
	for i, name := range names {
		firstEvents(t, b, name, 8, 1, func() { k.Publish(inums[i], 8, make([]byte, each)) })
	}
	for range 20 {
		for _, inum := range inums {
			k.Publish(inum, 8, make([]byte, each))
		}
	}
	waitFor(t, "every event retained or refused", func() bool {
		for _, name := range names {
			c, _ := b.lookup(name)
			c.mu.Lock()
			last := c.groups[8].lastSeq
			c.mu.Unlock()
			if last != 21 {
				return false
			}
		}
		return true
	})
	if used, limit := b.retainBudget.Used(), b.retainBudget.Limit(); used > limit || used == 0 {
		t.Fatalf("rings hold %d bytes, want 1..%d", used, limit)
	}
	for _, name := range names {
		c, _ := b.lookup(name)
		c.mu.Lock()
		r := c.groups[8].ring
		c.mu.Unlock()
		if r.bytes > per || len(r.entries) == 0 || r.entries[len(r.entries)-1].ev.Seq != 21 {
			t.Fatalf("%s: ring of %d bytes, %d events, want at most %d bytes ending at 21", name, r.bytes, len(r.entries), per)
		}
	}
	for _, name := range names {
		if err := b.Detach(name); err != nil {
			t.Fatal(err)
		}
	}
	if used := b.retainBudget.Used(); used != 0 {
		t.Fatalf("rings hold %d bytes after detach, want 0", used)
	}
}
