package broker

import (
	"fmt"
	"unsafe"

	"github.com/nsbroker/nsbroker/family"
)

// retained is one event a namespace's retention ring holds for resuming
// subscribers.
type retained struct {
	ev    family.Event
	epoch uint64
	// lostBefore says why the numbers between the previous retained event
	// (or the ring's start) and this one are missing; 0 when none are.
	lostBefore LossReason
	cost       int64
}

// retainOverhead is what a retained event costs besides its payload: its
// slot in the ring and the rest of the datagram its payload lives in.
const retainOverhead = int64(unsafe.Sizeof(retained{})) + 128

// retainedCost is what a retained event of n payload bytes is charged.
func retainedCost(n int) int64 { return int64(n) + retainOverhead }

// retainRing holds the latest events of one group of one namespace,
// oldest first, within Config.RetainEvents and Config.RetainBytes, and
// draws each event's cost from the broker's retention budget
// (Config.RetainTotalBytes). Together with the group's state it accounts
// for every number from groupState.from to groupState.lastSeq: an event,
// or a hole whose reason the next event (or groupState.tail) carries.
type retainRing struct {
	entries []retained
	bytes   int64
}

// evict drops the oldest event and returns the number after it.
func (r *retainRing) evict(budget *ByteBudget) uint64 {
	e := r.entries[0]
	r.entries[0] = retained{}
	r.entries = r.entries[1:]
	r.bytes -= e.cost
	budget.give(e.cost)
	return e.ev.Seq + 1
}

// clear drops every event and gives their bytes back.
func (r *retainRing) clear(budget *ByteBudget) {
	budget.give(r.bytes)
	r.entries, r.bytes = nil, 0
}

// lockedRetain adds ev to the ring of its group, evicting the oldest
// events beyond the bounds. When the broker's budget has no room even
// with the group's own ring empty, the event is not retained: the ring
// then starts after it.
func (c *nsConn) lockedRetain(gs *groupState, ev *family.Event, epoch uint64, lostBefore LossReason) {
	cfg := &c.b.cfg
	if !cfg.retaining() {
		return
	}
	cost := retainedCost(len(ev.Payload))
	r := &gs.ring
	for len(r.entries) > 0 && (len(r.entries) >= cfg.RetainEvents || r.bytes+cost > int64(cfg.RetainBytes)) {
		gs.from = r.evict(c.b.retainBudget)
	}
	for !c.b.retainBudget.take(cost) {
		if len(r.entries) == 0 || cost > int64(cfg.RetainBytes) {
			c.b.retainRefused.Add(1)
			gs.from = ev.Seq + 1
			return
		}
		gs.from = r.evict(c.b.retainBudget)
	}
	r.entries = append(r.entries, retained{ev: *ev, epoch: epoch, lostBefore: lostBefore, cost: cost})
	r.bytes += cost
}

// ResumePoint is where a subscriber left a group: the module instance
// its numbers belong to (family.Stats.InstanceID, Event.Instance; 0:
// assume the current one) and the last sequence number it accounted for,
// as an event or inside a gap (0: none).
type ResumePoint struct {
	Group    uint32
	Instance uint64
	Seq      uint64
}

// lockedResume queues for s, which is not registered yet, what it missed
// of each group since its resume point: the retained events, and gaps
// with the exact range and reason for the rest, up to the last number
// the namespace has accounted for. authoritative says that number comes
// from the module (a GROUPS reply just applied), so that a resume point
// beyond it is an error rather than numbers still to come.
func (c *nsConn) lockedResume(s *subscriber, points []ResumePoint, authoritative bool) error {
	for _, p := range points {
		gs := c.lockedGroup(p.Group)
		if !gs.known {
			// Nothing to compare with (no connection): the loss is
			// open, and what the subscriber has seen is not repeated.
			s.after[p.Group] = p.Seq
			s.pushGap(Gap{Group: p.Group, From: p.Seq + 1, Reason: LossNotRetained, Instance: c.instance})
			continue
		}
		seq, before := p.Seq, LossReason(0)
		if p.Instance != 0 && c.instance != 0 && p.Instance != c.instance {
			// Another instance's numbers: all of this one's are new.
			seq, before = 0, LossModuleReloaded
		}
		if seq > gs.lastSeq {
			if authoritative {
				return fmt.Errorf("%w: resume point %d of group %d is beyond the last number %d of instance %#x",
					ErrInvalid, seq, p.Group, gs.lastSeq, c.instance)
			}
			s.after[p.Group] = seq
			continue
		}
		c.lockedReplay(s, gs, p.Group, seq, before)
	}
	return nil
}

// lockedReplay queues for s the numbers of group g after seq up to
// gs.lastSeq: retained events as they were, the rest as gaps. before,
// when set, is the reason for everything before the ring's start.
func (c *nsConn) lockedReplay(s *subscriber, gs *groupState, g uint32, seq uint64, before LossReason) {
	gap := func(from, to uint64, why LossReason) {
		if why == 0 {
			why = LossKernelOverrun
		}
		s.pushGap(Gap{Group: g, From: from, To: to, Reason: why, Instance: c.instance})
	}
	from := gs.from
	if !c.b.cfg.retaining() || from == 0 {
		from = gs.lastSeq + 1
	}
	prev := seq
	if prev+1 < from {
		lo, hi := prev+1, from-1
		switch {
		case before != 0:
			gap(lo, hi, before)
		default:
			// Numbers up to base were numbered before this process
			// listened to the group; the rest it let go.
			if lo <= gs.base {
				gap(lo, min(hi, gs.base), LossDaemonRestarted)
			}
			if hi > gs.base {
				gap(max(lo, gs.base+1), hi, LossNotRetained)
			}
		}
		prev = hi
	}
	for i := range gs.ring.entries {
		e := &gs.ring.entries[i]
		if e.ev.Seq <= prev {
			continue
		}
		if e.ev.Seq > prev+1 {
			gap(prev+1, e.ev.Seq-1, e.lostBefore)
		}
		s.push(Event{Kind: KindMessage, Namespace: c.name, Epoch: e.epoch, Instance: c.instance, Message: e.ev, Receivers: 1})
		prev = e.ev.Seq
	}
	if gs.lastSeq > prev {
		gap(prev+1, gs.lastSeq, gs.tail)
	}
}
