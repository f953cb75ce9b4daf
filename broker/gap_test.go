package broker

import (
	"context"
	"testing"

	"github.com/nsbroker/nsbroker/family"
)

// streamCheck follows one subscriber's stream per group: every sequence
// number must arrive exactly once and in order, as a message or inside a
// queue-full gap. It counts the gaps of each run of consecutive losses.
type streamCheck struct {
	next      map[uint32]uint64 // the next number expected, per group
	inRun     map[uint32]bool   // the group's last item was a gap
	runs      int               // runs of consecutive losses
	gaps      int
	messages  int
	lost      uint64
	maxPerRun int
	perRun    map[uint32]int
}

func newStreamCheck(groups ...uint32) *streamCheck {
	c := &streamCheck{next: map[uint32]uint64{}, inRun: map[uint32]bool{}, perRun: map[uint32]int{}}
	for _, g := range groups {
		c.next[g] = 1
	}
	return c
}

func (c *streamCheck) add(t *testing.T, ev Event, last uint64) {
	t.Helper()
	switch ev.Kind {
	case KindMessage:
		g := ev.Message.Group
		if want, ok := c.next[g]; !ok || ev.Message.Seq != want {
			t.Fatalf("got message group %d seq %d, want group in %v at its next seq", g, ev.Message.Seq, c.next)
		}
		c.next[g]++
		c.inRun[g] = false
		c.messages++
	case KindGap:
		g := ev.Gap.Group
		want, ok := c.next[g]
		if !ok || ev.Gap.From != want || ev.Gap.To < ev.Gap.From || ev.Gap.To > last || ev.Gap.Reason != LossQueueFull {
			t.Fatalf("got gap %+v, want group in %v, From its next seq, To between From and %d, reason %v", ev.Gap, c.next, last, LossQueueFull)
		}
		if !c.inRun[g] {
			c.runs++
			c.perRun[g] = 0
		}
		c.inRun[g] = true
		c.perRun[g]++
		c.maxPerRun = max(c.maxPerRun, c.perRun[g])
		c.next[g] = ev.Gap.To + 1
		c.gaps++
		c.lost += ev.Gap.Count()
	default:
		t.Fatalf("got %v (%v), want a message or a gap", ev.Kind, ev.Err)
	}
}

func (c *streamCheck) done(last uint64) bool {
	for _, n := range c.next {
		if n <= last {
			return false
		}
	}
	return true
}

// TestQueueFullByBytesMergesGaps: a subscriber whose queue is full by
// bytes long before it is full by count learns of each run of lost events
// as one gap (two if its reader took an event out in the middle), not as
// one gap per event, and every number is accounted for exactly once.
func TestQueueFullByBytesMergesGaps(t *testing.T) {
	const queueLen, queueBytes, payload, perGroup = 64, 1000, 100, 300
	b, k, names, inums := fakeSetup(t, 1, func(c *Config) {
		c.QueueLen, c.QueueBytes = queueLen, queueBytes
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{1, 2})
	if err != nil {
		t.Fatal(err)
	}
	// Alternate the groups, so that the losses of each are interleaved
	// with those of the other.
	for range perGroup {
		k.Publish(inums[0], 1, make([]byte, payload))
		k.Publish(inums[0], 2, make([]byte, payload))
	}
	waitUntil(t, func() bool {
		in, err := b.Get(names[0])
		return err == nil && in.Received == 2*perGroup
	})

	c := newStreamCheck(1, 2)
	for !c.done(perGroup) {
		c.add(t, recv(t, sub), perGroup)
	}
	in, err := b.Get(names[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events published: %d delivered, %d gaps in %d runs reporting %d lost", 2*perGroup, c.messages, c.gaps, c.runs, c.lost)
	if c.lost != in.QueueLost || c.lost+uint64(c.messages) != 2*perGroup {
		t.Errorf("gaps report %d lost and %d events arrived, want QueueLost %d and their sum %d", c.lost, c.messages, in.QueueLost, 2*perGroup)
	}
	// The queue holds queueBytes/payload events; Subscribe's goroutine one more,
	// and the last event may still be pushed after the count was read.
	if most := queueBytes/payload + 2; c.messages > most {
		t.Errorf("got %d events, want at most %d (the byte bound)", c.messages, most)
	}
	if c.maxPerRun > 2 {
		t.Errorf("got up to %d gaps for one run of losses (%d gaps in %d runs), want at most 2", c.maxPerRun, c.gaps, c.runs)
	}
}

// TestPendingGapsEnterQueueWithTheirEvent drives one subscriber by hand:
// losses stay one pending gap per group while the queue is full by
// bytes, and enter the queue just ahead of the next event that fits.
func TestPendingGapsEnterQueueWithTheirEvent(t *testing.T) {
	const queueLen, queueBytes = 8, 30
	s := newSubscriber(context.Background(), "n", []uint32{1, 2}, queueLen, queueBytes, nil)
	msg := func(group uint32, seq uint64) Event {
		return Event{Kind: KindMessage, Message: family.Event{Group: group, Seq: seq, Payload: make([]byte, 10)}}
	}
	for seq := uint64(1); seq <= 3; seq++ {
		if !s.push(msg(1, seq)) {
			t.Fatalf("push(group 1 seq %d) = false, want queued: 30 of 30 bytes", seq)
		}
	}
	// Full by bytes: 4..20 of both groups are lost, and a kernel overrun
	// of group 2 in between starts a range of another reason.
	for seq := uint64(4); seq <= 20; seq++ {
		if s.push(msg(1, seq)) {
			t.Fatalf("push(group 1 seq %d) = true, want lost: the queue is full by bytes", seq)
		}
		if seq == 10 {
			s.pushGap(Gap{Group: 2, From: 10, To: 10, Reason: LossKernelOverrun})
			continue
		}
		if s.push(msg(2, seq)) {
			t.Fatalf("push(group 2 seq %d) = true, want lost: the queue is full by bytes", seq)
		}
	}
	want := []Gap{
		{Group: 1, From: 4, To: 20, Reason: LossQueueFull},
		{Group: 2, From: 4, To: 9, Reason: LossQueueFull},
		{Group: 2, From: 10, To: 10, Reason: LossKernelOverrun},
		{Group: 2, From: 11, To: 20, Reason: LossQueueFull},
	}
	if len(s.queue) != 3 || len(s.lost) != len(want) {
		t.Fatalf("queue %d items, pending %v; want 3 messages and pending %v", len(s.queue), s.lost, want)
	}
	for i, g := range want {
		if s.lost[i] != g {
			t.Fatalf("pending loss %d = %+v, want %+v", i, s.lost[i], g)
		}
	}
	// One event taken out makes room for the next one; the gaps enter
	// the queue ahead of it.
	if ev, _, _ := s.next(); ev.Kind != KindMessage || ev.Message.Seq != 1 {
		t.Fatalf("next() = %v seq %d, want message seq 1", ev.Kind, ev.Message.Seq)
	}
	if !s.push(msg(1, 21)) {
		t.Fatal("push(group 1 seq 21) = false, want queued after one event left")
	}
	var got []Event
	for {
		ev, _, ok := s.next()
		if !ok {
			break
		}
		got = append(got, ev)
	}
	if len(got) != 2+len(want)+1 {
		t.Fatalf("drained %d items, want 2 messages, %d gaps, 1 message", len(got), len(want))
	}
	for i, g := range want {
		if ev := got[2+i]; ev.Kind != KindGap || ev.Gap.Group != g.Group || ev.Gap.From != g.From || ev.Gap.To != g.To || ev.Gap.Reason != g.Reason {
			t.Fatalf("item %d = %v %+v, want gap %+v", 2+i, ev.Kind, ev.Gap, g)
		}
	}
	if last := got[len(got)-1]; last.Kind != KindMessage || last.Message.Seq != 21 {
		t.Fatalf("last item = %v seq %d, want message seq 21", last.Kind, last.Message.Seq)
	}
	// QueueLost counts the queue's own losses, not the kernel's overrun.
	if n := s.lostEvents.Load(); n != 17+6+10 {
		t.Fatalf("lost events = %d, want %d", n, 17+6+10)
	}
}
