package broker

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/nsbroker/nsbroker/family"
)

// subscriber is one subscription. The namespace's reader pushes into its
// bounded queue without ever blocking; the subscription's owner takes from
// it (Subscription.Next). What does not fit is recorded as a pending gap
// and reported in the stream's position where the loss happened.
type subscriber struct {
	ns     string
	groups [family.Groups + 1]bool
	// after[g] is a resume point beyond the numbers the broker had seen
	// when the subscriber resumed: events and gaps of g up to it are
	// not delivered again. Set before the subscriber is registered.
	after      [family.Groups + 1]uint64
	maxLen     int
	maxBytes   int
	budget     *ByteBudget   // shared with the owner's other subscriptions; nil: none
	notify     chan struct{} // capacity 1: "the queue changed"
	ctx        context.Context
	delivered  atomic.Uint64
	lostEvents atomic.Uint64

	mu    sync.Mutex // guards the fields below
	queue []Event    // FIFO of messages and gaps
	bytes int        // payload bytes in queue
	cost  int64      // what queue holds of budget
	lost  []Gap      // losses not yet queued, oldest first
	end   *Event     // set once: the last event, queued after everything else
}

func newSubscriber(ctx context.Context, ns string, groups []uint32, maxLen, maxBytes int, budget *ByteBudget) *subscriber {
	s := &subscriber{
		ns:       ns,
		maxLen:   maxLen,
		maxBytes: maxBytes,
		budget:   budget,
		notify:   make(chan struct{}, 1),
		ctx:      ctx,
	}
	for _, g := range groups {
		s.groups[g] = true
	}
	return s
}

func (s *subscriber) wants(group uint32) bool {
	return group < uint32(len(s.groups)) && s.groups[group]
}

func (s *subscriber) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// lockedRoom reports whether an event of n payload bytes fits behind the
// pending losses, which enter the queue with it as gaps.
func (s *subscriber) lockedRoom(n int) bool {
	ahead := len(s.queue) + len(s.lost)
	return ahead < s.maxLen && (ahead == 0 || s.bytes+n <= s.maxBytes)
}

// lockedRecordLoss adds g to the pending losses. It extends the pending
// loss of the same group instead when g continues it with the same reason:
// nothing of that group was queued after it, so the merged range keeps its
// place in the group's stream. A loss therefore stays one gap however many
// events it spans, and the pending losses number at most one per group
// and change of reason, whatever the bounds of the queue.
func (s *subscriber) lockedRecordLoss(g Gap) {
	if g.Reason == LossQueueFull { // QueueLost: the other losses are not the queue's
		s.lostEvents.Add(g.Count())
	}
	for i := len(s.lost) - 1; i >= 0; i-- {
		last := &s.lost[i]
		if last.Group != g.Group {
			continue
		}
		if last.Reason == g.Reason && last.Instance == g.Instance && last.To != 0 && last.To+1 == g.From {
			last.To = g.To
			return
		}
		break
	}
	s.lost = append(s.lost, g)
}

// push queues a message; it never blocks. The pending losses enter the
// queue as gaps just ahead of it, and only together with it: a queue full
// by bytes but not by count would otherwise take each dropped event as a
// gap of its own. It reports whether the message was queued (false: it
// was counted as a queue-full loss).
func (s *subscriber) push(ev Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end != nil {
		return false
	}
	if ev.Message.Seq <= s.after[ev.Message.Group] {
		return false
	}
	n := len(ev.Message.Payload)
	cost := queuedCost(n)
	if !s.lockedRoom(n) || !s.budget.take(cost) {
		seq := ev.Message.Seq
		s.lockedRecordLoss(Gap{Group: ev.Message.Group, From: seq, To: seq, Reason: LossQueueFull, Instance: ev.Instance})
		s.wake()
		return false
	}
	for _, g := range s.lost {
		s.queue = append(s.queue, Event{Kind: KindGap, Namespace: s.ns, Gap: g})
	}
	s.lost = s.lost[:0]
	s.queue = append(s.queue, ev)
	s.bytes += n
	s.cost += cost
	s.wake()
	return true
}

// pushGap reports a loss that happened before the subscriber's next event.
// It stays pending until that event is queued, or until the queue drains.
func (s *subscriber) pushGap(g Gap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end != nil {
		return
	}
	if after := s.after[g.Group]; g.From <= after {
		if g.To != 0 && g.To <= after {
			return
		}
		g.From = after + 1
	}
	s.lockedRecordLoss(g)
	s.wake()
}

// finish queues the final event: the subscription ends after everything
// queued so far has been delivered.
func (s *subscriber) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end != nil {
		return
	}
	s.end = &Event{Kind: KindEnd, Namespace: s.ns, Err: err}
	s.wake()
}

// next takes the next item to deliver; last is true for the final event.
func (s *subscriber) next() (ev Event, last, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(s.queue) > 0:
		ev = s.queue[0]
		s.queue[0] = Event{}
		s.queue = s.queue[1:]
		n := len(ev.Message.Payload)
		s.bytes -= n
		if ev.Kind == KindMessage {
			s.cost -= queuedCost(n)
			s.budget.give(queuedCost(n))
		}
		return ev, false, true
	case len(s.lost) > 0:
		ev = Event{Kind: KindGap, Namespace: s.ns, Gap: s.lost[0]}
		s.lost = s.lost[1:]
		return ev, false, true
	case s.end != nil:
		return *s.end, true, true
	}
	return Event{}, false, false
}

// drop empties the queue and gives its bytes back to the budget; the
// subscriber takes nothing more. For a subscription that is closed.
func (s *subscriber) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.budget.give(s.cost)
	s.cost, s.bytes, s.queue, s.lost = 0, 0, nil, nil
	if s.end == nil {
		s.end = &Event{Kind: KindEnd, Namespace: s.ns}
	}
}

// Subscription is an open subscription, read by one goroutine with Next:
// an event goes from the namespace's reader to that goroutine with no
// other goroutine in between. Close it once done with it.
type Subscription struct {
	s     *subscriber
	over  bool // Next returned the last event, or saw ctx cancelled
	done  func()
	close sync.Once
}

// Next returns the next event of the subscription, waiting for one. It
// returns false once the subscription is over: after its final KindEnd
// event, or once its context is cancelled (what was still queued then is
// dropped). Next is not for concurrent use.
func (sub *Subscription) Next() (Event, bool) {
	s := sub.s
	for !sub.over {
		if s.ctx.Err() != nil {
			break
		}
		ev, last, ok := s.next()
		if !ok {
			select {
			case <-s.notify:
			case <-s.ctx.Done():
			}
			continue
		}
		if ev.Kind == KindMessage {
			s.delivered.Add(1)
		}
		sub.over = last
		return ev, true
	}
	sub.over = true
	return Event{}, false
}

// Close ends the subscription: the namespace stops queueing events for
// it, and its group memberships are left when it was their last user.
func (sub *Subscription) Close() {
	sub.close.Do(func() {
		sub.done()
		sub.s.drop()
	})
}
