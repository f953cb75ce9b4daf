package family

import (
	"time"

	"github.com/mdlayher/netlink"
)

// The MarshalBinary methods below produce what the module sends. Programs
// never need them against a real kernel; they let tests and fake kernels
// (mdlayher/netlink/nltest) build replies and events that the decoders
// accept.

// EchoReply is the module's answer to MsgEcho.
type EchoReply struct {
	// Payload is the request's payload; nil if the request had none.
	Payload []byte
	// NetnsInum is the inode of the namespace whose kernel socket answered.
	NetnsInum uint32
	// NetnsCookie is that namespace's cookie, unique for the boot.
	NetnsCookie uint64
}

// MarshalBinary encodes the reply as the module does.
func (r *EchoReply) MarshalBinary() ([]byte, error) {
	return encode(func(ae *netlink.AttributeEncoder) {
		if r.Payload != nil {
			ae.Bytes(AttrPayload, r.Payload)
		}
		ae.Uint32(AttrNetnsInum, r.NetnsInum)
		ae.Uint64(AttrNetnsCookie, r.NetnsCookie)
	})
}

// PublishReply is the module's answer to MsgPublish.
type PublishReply struct {
	// Group is the group the event went to.
	Group uint32
	// Seq is the event's sequence number in its namespace and group.
	Seq uint64
	// Listeners reports whether the group had members when the event was
	// multicast.
	Listeners bool
}

// MarshalBinary encodes the reply as the module does.
func (r *PublishReply) MarshalBinary() ([]byte, error) {
	var listeners uint32
	if r.Listeners {
		listeners = 1
	}
	return encode(func(ae *netlink.AttributeEncoder) {
		ae.Uint32(AttrGroup, r.Group)
		ae.Uint64(AttrSeq, r.Seq)
		ae.Uint32(AttrListeners, listeners)
	})
}

// Event is a MsgEvent multicast: one publish, as every member of the group
// in the publisher's namespace receives it.
type Event struct {
	// Group is the multicast group.
	Group uint32
	// Seq numbers the events of this namespace and group from 1 without
	// holes; a gap means this receiver lost events.
	Seq uint64
	// Payload is the published payload (empty, not nil, if none).
	Payload []byte
	// NetnsInum is the inode of the namespace the event was published in.
	NetnsInum uint32
	// SenderPortID is the netlink port id of the publishing socket.
	SenderPortID uint32
	// Timestamp is the kernel's CLOCK_REALTIME at publish. The zero Time
	// is sent as 0 and 0 decodes to the zero Time; the module never sends
	// 0.
	Timestamp time.Time
}

// MarshalBinary encodes the event as the module does.
func (e *Event) MarshalBinary() ([]byte, error) {
	return encode(func(ae *netlink.AttributeEncoder) {
		ae.Uint64(AttrSeq, e.Seq)
		ae.Uint32(AttrGroup, e.Group)
		ae.Bytes(AttrPayload, e.Payload)
		ae.Uint32(AttrNetnsInum, e.NetnsInum)
		ae.Uint32(AttrSenderPortID, e.SenderPortID)
		ae.Uint64(AttrTimestamp, unixNano(e.Timestamp))
	})
}

// Stats is the module's answer to MsgStats: counters of the namespace the
// request was sent in, and module-wide instances.
type Stats struct {
	Echo       uint64 // echo requests answered
	Publish    uint64 // events multicast
	Delivered  uint64 // events that reached a member
	NoListener uint64 // events whose group had no member
	Overrun    uint64 // events a member's full receive buffer dropped
	Rejected   uint64 // requests answered with an error
	// Instances is the number of live per-namespace instances in the whole
	// module, for leak checks.
	Instances uint32
	// NetnsInum is the inode of the namespace the counters belong to.
	NetnsInum uint32
	// InstanceID identifies the module's instance for that namespace; a
	// new value means the module was reloaded and sequence numbers
	// restarted at 1.
	InstanceID uint64
}

// MarshalBinary encodes the stats as the module does.
func (s *Stats) MarshalBinary() ([]byte, error) {
	return encode(func(ae *netlink.AttributeEncoder) {
		ae.Nested(AttrStats, func(nae *netlink.AttributeEncoder) error {
			nae.Uint64(StatsAttrEcho, s.Echo)
			nae.Uint64(StatsAttrPublish, s.Publish)
			nae.Uint64(StatsAttrDelivered, s.Delivered)
			nae.Uint64(StatsAttrNoListener, s.NoListener)
			nae.Uint64(StatsAttrOverrun, s.Overrun)
			nae.Uint64(StatsAttrRejected, s.Rejected)
			return nil
		})
		ae.Uint32(AttrInstances, s.Instances)
		ae.Uint32(AttrNetnsInum, s.NetnsInum)
		ae.Uint64(AttrInstanceID, s.InstanceID)
	})
}

// GroupSeqs is the module's answer to MsgGroups: where the numbering of
// every group of the requester's namespace stands.
type GroupSeqs struct {
	// NetnsInum is the inode of the namespace that answered.
	NetnsInum uint32
	// InstanceID is the module's instance for that namespace (as in
	// Stats): the numbers below belong to it.
	InstanceID uint64
	// Seq[g] is the last sequence number group g multicast, 0 if none
	// yet; Seq[0] is unused.
	Seq [Groups + 1]uint64
}

// MarshalBinary encodes the reply as the module does.
func (r *GroupSeqs) MarshalBinary() ([]byte, error) {
	return encode(func(ae *netlink.AttributeEncoder) {
		ae.Uint32(AttrNetnsInum, r.NetnsInum)
		ae.Uint64(AttrInstanceID, r.InstanceID)
		for g := uint32(1); g <= Groups; g++ {
			ae.Nested(AttrGroupSeq, func(nae *netlink.AttributeEncoder) error {
				nae.Uint32(AttrGroup, g)
				nae.Uint64(AttrSeq, r.Seq[g])
				return nil
			})
		}
	})
}

func unixNano(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano())
}

func fromUnixNano(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}
