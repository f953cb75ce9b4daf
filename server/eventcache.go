package server

import (
	"sync"
	"time"
	"weak"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// eventCacheSlots is the size of an eventCache: more than the messages
// whose Subscribe streams send them at about the same time.
const eventCacheSlots = 256

// eventCache converts a message to its wire form once for all the
// Subscribe streams that send it. Every subscriber of a message receives
// a copy of the same broker.Event, and the streams of one message send it
// at about the same time, so a small table of the latest conversions,
// keyed by what identifies a message, serves them all; a stream that
// finds its slot taken by another message converts anew, which costs
// time, never correctness. A slot holds its conversion weakly: the cache
// keeps nothing alive that no stream still holds, so it adds nothing to
// the daemon's memory bound.
type eventCache struct {
	slots [eventCacheSlots]eventSlot
}

type eventSlot struct {
	mu  sync.Mutex
	key eventKey
	v   weak.Pointer[nsbrokerv1.SubscribeResponse]
}

// eventKey is what tells one message from another: its namespace (name,
// inode, the broker's connection and the module's instance), group and
// number, the kernel's time of publish and the payload itself (every
// subscriber's copy of a message shares one payload array).
type eventKey struct {
	namespace string
	inum      uint32
	epoch     uint64
	instance  uint64
	group     uint32
	seq       uint64
	timestamp time.Time
	payload   *byte // the payload's first byte; nil when it is empty
	size      int
}

func keyOf(ev broker.Event) eventKey {
	m := ev.Message
	k := eventKey{namespace: ev.Namespace, inum: m.NetnsInum, epoch: ev.Epoch, instance: ev.Instance,
		group: m.Group, seq: m.Seq, timestamp: m.Timestamp, size: len(m.Payload)}
	if len(m.Payload) > 0 {
		k.payload = &m.Payload[0]
	}
	return k
}

// slot picks the slot of a message: consecutive numbers of a group, and
// the same number in other groups, land in different slots.
func (k *eventKey) slot() int {
	h := k.instance ^ k.seq*0x9e3779b97f4a7c15 ^ uint64(k.group)<<40 ^ uint64(k.inum)<<8
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return int(h % eventCacheSlots)
}

// response returns the wire form of a KindMessage event, shared with the
// other streams of the same message; the caller must not modify it.
func (c *eventCache) response(ev broker.Event) *nsbrokerv1.SubscribeResponse {
	k := keyOf(ev)
	s := &c.slots[k.slot()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key == k {
		if v := s.v.Value(); v != nil {
			return v
		}
	}
	v := eventToProto(ev)
	s.key, s.v = k, weak.Make(v)
	return v
}
