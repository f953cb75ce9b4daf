package server

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/broker"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// eventCacheSlots is the size of an eventCache: more than the messages
// whose Subscribe streams send them at about the same time.
const eventCacheSlots = 256

// eventCache converts a message to its wire form, and marshals it, once
// for all the Subscribe streams that send it. Every subscriber of a
// message receives a copy of the same broker.Event, and the streams of
// one message send it at about the same time, so a small table of the
// latest conversions, keyed by what identifies a message, serves them
// all; a stream that finds its slot taken by another message converts
// anew, which costs time, never correctness. A slot holds its conversion
// weakly: the cache keeps nothing alive that no stream still holds, so it
// adds nothing to the daemon's memory bound.
type eventCache struct {
	slots    [eventCacheSlots]eventSlot
	prepared atomic.Uint64 // messages marshalled, for all their streams
}

type eventSlot struct {
	mu  sync.Mutex
	key eventKey
	v   weak.Pointer[wireEvent]
}

// wireEvent is a message in wire form: its response, and the response
// marshalled, and compressed, for each send compressor of the streams that
// sent it (nearly always only the identity).
type wireEvent struct {
	resp *nsbrokerv1.SubscribeResponse

	mu       sync.Mutex
	prepared []preparedEvent
}

// preparedEvent is a response as the streams whose send compressor is
// compressor ("" for none) send it; msg is nil until a second such stream
// sends it.
type preparedEvent struct {
	compressor string
	msg        *grpc.PreparedMsg
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

// slot picks the slot of a message: the numbers of one group take
// consecutive slots, so the last eventCacheSlots messages of a group,
// those its streams send at about the same time, never take each other's
// slot; each group and namespace starts at a slot of its own.
func (k *eventKey) slot() int {
	h := k.instance ^ uint64(k.group)<<40 ^ uint64(k.inum)<<8
	h ^= h >> 31
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 29
	return int((h + k.seq) % eventCacheSlots)
}

// event returns the wire form of a KindMessage event, shared with the
// other streams of the same message; the caller must not modify it.
func (c *eventCache) event(ev broker.Event) *wireEvent {
	k := keyOf(ev)
	s := &c.slots[k.slot()]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key == k {
		if w := s.v.Value(); w != nil {
			return w
		}
	}
	w := &wireEvent{resp: eventToProto(ev)}
	s.key, s.v = k, weak.Make(w)
	return w
}

// send sends a KindMessage event on a Subscribe stream.
//
// An event the broker says one subscription receives is converted and
// sent as any message: there is nothing to share. Otherwise the streams
// share the event's conversion; the first stream of the event with its
// send compressor marshals it as for any message, a second prepares it (a
// *grpc.PreparedMsg, marshalled and compressed once, copied out of grpc's
// pooled buffer), and it and all later ones send those bytes. A stream
// whose compressor cannot be known marshals the shared conversion itself.
func (c *eventCache) send(stream *eventStream, ev broker.Event) error {
	if ev.Receivers == 1 {
		return stream.SendMsg(eventToProto(ev))
	}
	w := c.event(ev)
	if !stream.known {
		return stream.SendMsg(w.resp)
	}
	msg, err := w.prepare(stream, &c.prepared)
	if err != nil {
		return err
	}
	if msg == nil {
		return stream.SendMsg(w.resp)
	}
	return stream.SendMsg(msg)
}

// prepare returns the response marshalled and compressed for stream, or
// nil for the first stream with its send compressor, which is to marshal
// the response itself. The second stream makes it, and adds it to count.
func (w *wireEvent) prepare(stream *eventStream, count *atomic.Uint64) (*grpc.PreparedMsg, error) {
	compressor := stream.compressor
	w.mu.Lock()
	defer w.mu.Unlock()
	i := slices.IndexFunc(w.prepared, func(p preparedEvent) bool { return p.compressor == compressor })
	if i < 0 {
		w.prepared = append(w.prepared, preparedEvent{compressor: compressor})
		return nil, nil
	}
	if msg := w.prepared[i].msg; msg != nil {
		return msg, nil
	}
	// Encode uses the codec and compressor the stream was created with,
	// which are those newEventStream learnt: Subscribe never changes them.
	msg := new(grpc.PreparedMsg)
	if err := msg.Encode(stream, w.resp); err != nil {
		return nil, err
	}
	w.prepared[i].msg = msg
	count.Add(1)
	return msg, nil
}

// eventStream is a Subscribe stream and the compressor its messages are
// sent with, which stays the same for its life.
type eventStream struct {
	grpc.ServerStream
	compressor string // "" for none
	known      bool   // false: the transport did not say
}

// newEventStream learns stream's send compressor. (grpc-go's server
// streams answer in the compressor of the request; the transport stream
// reports it, though only through a method grpc does not document, hence
// known.)
func newEventStream(stream grpc.ServerStream) *eventStream {
	s := &eventStream{ServerStream: stream}
	if t, ok := grpc.ServerTransportStreamFromContext(stream.Context()).(interface{ SendCompress() string }); ok {
		s.compressor, s.known = t.SendCompress(), true
	}
	return s
}
