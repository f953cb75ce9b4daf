package broker

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/nsbroker/nsbroker/family"
)

// subscriber is one Subscribe call. The namespace's reader pushes into its
// bounded queue without ever blocking; a pump goroutine hands the queue to
// the subscriber's channel. What does not fit is recorded as a pending gap
// and reported in the stream's position where the loss happened.
type subscriber struct {
	ns         string
	groups     [family.Groups + 1]bool
	maxLen     int
	maxBytes   int
	out        chan Event
	notify     chan struct{} // capacity 1: "the queue changed"
	ctx        context.Context
	delivered  atomic.Uint64
	lostEvents atomic.Uint64

	mu    sync.Mutex // guards the fields below
	queue []Event    // FIFO of messages and gaps
	bytes int        // payload bytes in queue
	lost  []Gap      // losses not yet queued, oldest first
	end   *Event     // set once: the last event, queued after everything else
}

func newSubscriber(ctx context.Context, ns string, groups []uint32, maxLen, maxBytes int) *subscriber {
	s := &subscriber{
		ns:       ns,
		maxLen:   maxLen,
		maxBytes: maxBytes,
		out:      make(chan Event),
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

// lockedRoom reports whether an event of n payload bytes fits.
func (s *subscriber) lockedRoom(n int) bool {
	return len(s.queue) < s.maxLen && (len(s.queue) == 0 || s.bytes+n <= s.maxBytes)
}

// lockedFlushLost moves pending losses into the queue while there is room,
// so they keep their place ahead of the events that follow them.
func (s *subscriber) lockedFlushLost() {
	for len(s.lost) > 0 && s.lockedRoom(0) {
		s.queue = append(s.queue, Event{Kind: KindGap, Namespace: s.ns, Gap: s.lost[0]})
		s.lost = s.lost[1:]
	}
}

// lockedRecordLoss adds g to the pending losses, merging it into the last
// one when they continue each other with the same reason.
func (s *subscriber) lockedRecordLoss(g Gap) {
	s.lostEvents.Add(g.Count())
	if n := len(s.lost); n > 0 {
		last := &s.lost[n-1]
		if last.Group == g.Group && last.Reason == g.Reason && last.To != 0 && last.To+1 == g.From {
			last.To = g.To
			return
		}
	}
	s.lost = append(s.lost, g)
}

// push queues a message; it never blocks. It reports whether the message
// was queued (false: counted as a queue-full loss).
func (s *subscriber) push(ev Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end != nil {
		return false
	}
	s.lockedFlushLost()
	n := len(ev.Message.Payload)
	if len(s.lost) > 0 || !s.lockedRoom(n) {
		seq := ev.Message.Seq
		s.lockedRecordLoss(Gap{Group: ev.Message.Group, From: seq, To: seq, Reason: LossQueueFull})
		s.wake()
		return false
	}
	s.queue = append(s.queue, ev)
	s.bytes += n
	s.wake()
	return true
}

// pushGap reports a loss that happened before the subscriber's next event.
func (s *subscriber) pushGap(g Gap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end != nil {
		return
	}
	s.lockedRecordLoss(g)
	s.lockedFlushLost()
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
		s.bytes -= len(ev.Message.Payload)
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

// pump delivers the queue to out until the subscription ends or its
// context is cancelled, then closes out.
func (s *subscriber) pump(done func()) {
	defer close(s.out)
	defer done()
	for {
		ev, last, ok := s.next()
		if !ok {
			select {
			case <-s.notify:
				continue
			case <-s.ctx.Done():
				return
			}
		}
		select {
		case s.out <- ev:
			if ev.Kind == KindMessage {
				s.delivered.Add(1)
			}
		case <-s.ctx.Done():
			return
		}
		if last {
			return
		}
	}
}
