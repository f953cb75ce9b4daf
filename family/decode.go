package family

import (
	"fmt"

	"github.com/mdlayher/netlink"
)

// Decoders take a message body (what follows the netlink header), check the
// family header and read the attributes. They reject a body too short for
// the header, a version other than Version, malformed or wrongly sized
// attributes and missing mandatory ones; they skip NSB_A_PAD and attribute
// types they do not know, so that a newer module may add attributes. The
// header's flags and reserved field are not checked: the module sets them
// to zero, and a change in meaning would come with a new version.

// DecodeEchoReply decodes the body of a MsgEcho reply. The payload is a
// copy: the reply does not alias b.
func DecodeEchoReply(b []byte) (*EchoReply, error) { return decodeEchoReply(b, false) }

// decodeEchoReply decodes an echo reply; with alias set, its payload is a
// sub-slice of b, for a b that nobody reuses.
func decodeEchoReply(b []byte, alias bool) (*EchoReply, error) {
	const what = "ECHO reply"
	it, err := iterBody(b, what)
	if err != nil {
		return nil, err
	}
	var r EchoReply
	var s seen
	for it.next() {
		switch t := it.typ; t {
		case AttrPayload:
			r.Payload = it.bytes(alias)
			s.add(t)
		case AttrNetnsInum:
			r.NetnsInum = it.u32()
			s.add(t)
		case AttrNetnsCookie:
			r.NetnsCookie = it.u64()
			s.add(t)
		}
	}
	if it.err != nil {
		return nil, malformed(what, it.err)
	}
	if err := s.require(what, attrNames, AttrNetnsInum, AttrNetnsCookie); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodePublishReply decodes the body of a MsgPublish reply.
func DecodePublishReply(b []byte) (*PublishReply, error) {
	const what = "PUBLISH reply"
	it, err := iterBody(b, what)
	if err != nil {
		return nil, err
	}
	var r PublishReply
	var s seen
	for it.next() {
		switch t := it.typ; t {
		case AttrGroup:
			r.Group = it.u32()
			s.add(t)
		case AttrSeq:
			r.Seq = it.u64()
			s.add(t)
		case AttrListeners:
			r.Listeners = it.u32() != 0
			s.add(t)
		}
	}
	if it.err != nil {
		return nil, malformed(what, it.err)
	}
	if err := s.require(what, attrNames, AttrGroup, AttrSeq, AttrListeners); err != nil {
		return nil, err
	}
	return &r, nil
}

// DecodeEvent decodes the body of a MsgEvent multicast. The payload is a
// copy: the event does not alias b.
func DecodeEvent(b []byte) (*Event, error) { return decodeEvent(b, false) }

// decodeEvent decodes an event; with alias set, its payload is a sub-slice
// of b, for a b that nobody reuses.
func decodeEvent(b []byte, alias bool) (*Event, error) {
	const what = "EVENT"
	it, err := iterBody(b, what)
	if err != nil {
		return nil, err
	}
	var e Event
	var s seen
	for it.next() {
		switch t := it.typ; t {
		case AttrGroup:
			e.Group = it.u32()
			s.add(t)
		case AttrSeq:
			e.Seq = it.u64()
			s.add(t)
		case AttrPayload:
			e.Payload = it.bytes(alias)
			s.add(t)
		case AttrNetnsInum:
			e.NetnsInum = it.u32()
			s.add(t)
		case AttrSenderPortID:
			e.SenderPortID = it.u32()
			s.add(t)
		case AttrTimestamp:
			e.Timestamp = fromUnixNano(it.u64())
			s.add(t)
		}
	}
	if it.err != nil {
		return nil, malformed(what, it.err)
	}
	err = s.require(what, attrNames, AttrGroup, AttrSeq, AttrPayload,
		AttrNetnsInum, AttrSenderPortID, AttrTimestamp)
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// DecodeStats decodes the body of a MsgStats reply.
func DecodeStats(b []byte) (*Stats, error) {
	const what = "STATS reply"
	ad, err := attributes(b, what)
	if err != nil {
		return nil, err
	}
	var st Stats
	var s, counters seen
	for ad.Next() {
		switch t := ad.Type(); t {
		case AttrStats:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				decodeCounters(nad, &st, &counters)
				return nil
			})
			s.add(t)
		case AttrInstances:
			st.Instances = ad.Uint32()
			s.add(t)
		case AttrNetnsInum:
			st.NetnsInum = ad.Uint32()
			s.add(t)
		case AttrInstanceID:
			st.InstanceID = ad.Uint64()
			s.add(t)
		}
	}
	if err := ad.Err(); err != nil {
		return nil, malformed(what, err)
	}
	if err := s.require(what, attrNames, AttrStats, AttrInstances, AttrNetnsInum, AttrInstanceID); err != nil {
		return nil, err
	}
	err = counters.require("NSB_A_STATS", statsAttrNames, StatsAttrEcho, StatsAttrPublish,
		StatsAttrDelivered, StatsAttrNoListener, StatsAttrOverrun, StatsAttrRejected)
	if err != nil {
		return nil, err
	}
	return &st, nil
}

// DecodeGroupSeqs decodes the body of a MsgGroups reply. Every group
// 1..Groups must be there exactly once, each with its AttrGroup and
// AttrSeq: a missing group would read as "nothing numbered yet".
func DecodeGroupSeqs(b []byte) (*GroupSeqs, error) {
	const what = "GROUPS reply"
	ad, err := attributes(b, what)
	if err != nil {
		return nil, err
	}
	var r GroupSeqs
	var s seen
	var groups [Groups + 1]bool
	var bad error
	for ad.Next() {
		switch t := ad.Type(); t {
		case AttrNetnsInum:
			r.NetnsInum = ad.Uint32()
			s.add(t)
		case AttrInstanceID:
			r.InstanceID = ad.Uint64()
			s.add(t)
		case AttrGroupSeq:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				g, seq, err := decodeGroupSeq(nad)
				switch {
				case err != nil:
				case groups[g]:
					err = fmt.Errorf("group %d twice", g)
				default:
					groups[g], r.Seq[g] = true, seq
				}
				if err != nil && bad == nil {
					bad = err
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return nil, malformed(what, err)
	}
	if bad != nil {
		return nil, malformed(what, bad)
	}
	if err := s.require(what, attrNames, AttrNetnsInum, AttrInstanceID); err != nil {
		return nil, err
	}
	for g := uint32(1); g <= Groups; g++ {
		if !groups[g] {
			return nil, fmt.Errorf("%w NSB_A_GROUP_SEQ of group %d in %s", ErrMissingAttribute, g, what)
		}
	}
	return &r, nil
}

// decodeGroupSeq reads one AttrGroupSeq nest.
func decodeGroupSeq(nad *netlink.AttributeDecoder) (uint32, uint64, error) {
	var g uint32
	var seq uint64
	var s seen
	for nad.Next() {
		switch t := nad.Type(); t {
		case AttrGroup:
			g = nad.Uint32()
			s.add(t)
		case AttrSeq:
			seq = nad.Uint64()
			s.add(t)
		}
	}
	if err := nad.Err(); err != nil {
		return 0, 0, err
	}
	if err := s.require("NSB_A_GROUP_SEQ", attrNames, AttrGroup, AttrSeq); err != nil {
		return 0, 0, err
	}
	if err := CheckGroup(g); err != nil {
		return 0, 0, err
	}
	return g, seq, nil
}

// decodeCounters reads the counters nested in AttrStats; Nested reports a
// wrongly sized one through the decoder's error.
func decodeCounters(nad *netlink.AttributeDecoder, st *Stats, s *seen) {
	for nad.Next() {
		var dst *uint64
		switch nad.Type() {
		case StatsAttrEcho:
			dst = &st.Echo
		case StatsAttrPublish:
			dst = &st.Publish
		case StatsAttrDelivered:
			dst = &st.Delivered
		case StatsAttrNoListener:
			dst = &st.NoListener
		case StatsAttrOverrun:
			dst = &st.Overrun
		case StatsAttrRejected:
			dst = &st.Rejected
		default:
			continue
		}
		*dst = nad.Uint64()
		s.add(nad.Type())
	}
}

// attributes checks the family header at the start of b and returns a
// decoder over the attributes after it.
func attributes(b []byte, what string) (*netlink.AttributeDecoder, error) {
	var h Header
	if err := h.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w in %s", err, what)
	}
	if h.Version != Version {
		return nil, fmt.Errorf("%w %d in %s, want %d", ErrVersion, h.Version, what, Version)
	}
	ad, err := netlink.NewAttributeDecoder(b[HeaderLen:])
	if err != nil {
		return nil, malformed(what, err)
	}
	return ad, nil
}

func malformed(what string, err error) error {
	return fmt.Errorf("%w in %s: %w", ErrMalformed, what, err)
}

// seen is the set of attribute types a decoder found.
type seen uint64

func (s *seen) add(t uint16) {
	if t < 64 {
		*s |= 1 << t
	}
}

// require returns ErrMissingAttribute naming the first of want that was
// not seen.
func (s seen) require(what string, names map[uint16]string, want ...uint16) error {
	for _, t := range want {
		if s&(1<<t) == 0 {
			return fmt.Errorf("%w %s in %s", ErrMissingAttribute, names[t], what)
		}
	}
	return nil
}

// attrNames and statsAttrNames give the C names used in error messages.
var (
	attrNames = map[uint16]string{
		AttrPayload:      "NSB_A_PAYLOAD",
		AttrGroup:        "NSB_A_GROUP",
		AttrSeq:          "NSB_A_SEQ",
		AttrNetnsInum:    "NSB_A_NETNS_INUM",
		AttrNetnsCookie:  "NSB_A_NETNS_COOKIE",
		AttrSenderPortID: "NSB_A_SENDER_PORTID",
		AttrTimestamp:    "NSB_A_TIMESTAMP",
		AttrListeners:    "NSB_A_LISTENERS",
		AttrStats:        "NSB_A_STATS",
		AttrInstances:    "NSB_A_INSTANCES",
		AttrInstanceID:   "NSB_A_INSTANCE_ID",
		AttrGroupSeq:     "NSB_A_GROUP_SEQ",
	}
	statsAttrNames = map[uint16]string{
		StatsAttrEcho:       "NSB_STATS_A_ECHO",
		StatsAttrPublish:    "NSB_STATS_A_PUBLISH",
		StatsAttrDelivered:  "NSB_STATS_A_DELIVERED",
		StatsAttrNoListener: "NSB_STATS_A_NO_LISTENER",
		StatsAttrOverrun:    "NSB_STATS_A_OVERRUN",
		StatsAttrRejected:   "NSB_STATS_A_REJECTED",
	}
)
