package family

// This file mirrors kmod/include/uapi/linux/nsbroker.h, the single source of
// truth for the ABI. Each constant's comment names its C counterpart first;
// abi_test.go parses the header and fails when a value drifts or a C
// constant has no mirror here.

// Netlink units the module can be loaded on.
const (
	// DefaultUnit is NETLINK_NSBROKER, the netlink unit the module uses
	// unless its "unit" parameter says otherwise.
	DefaultUnit = 25
	// UnitMin is NSB_UNIT_MIN, the lowest unit the module accepts.
	UnitMin = 23
	// UnitMax is NSB_UNIT_MAX, the highest unit the module accepts.
	UnitMax = 31
)

// Protocol limits.
const (
	// Version is NSB_VERSION, the ABI version carried in every Header.
	Version uint8 = 1
	// Groups is NSB_GROUPS: multicast groups are numbered 1..Groups in
	// every network namespace.
	Groups uint32 = 32
	// PayloadMax is NSB_PAYLOAD_MAX, the largest AttrPayload in bytes.
	PayloadMax = 16384
	// FlagsAll is NSB_F_ALL, the mask of Header flags the ABI defines (none
	// in version 1); the module rejects requests with other bits set.
	FlagsAll uint8 = 0x00
)

// Message types (enum nsb_msg_type), carried in the netlink header type.
const (
	// MsgEcho is NSB_MSG_ECHO: the reply echoes AttrPayload and names the
	// namespace that answered.
	MsgEcho uint16 = 0x10
	// MsgPublish is NSB_MSG_PUBLISH: multicast a MsgEvent to a group of the
	// requester's namespace; needs CAP_NET_ADMIN there.
	MsgPublish uint16 = 0x11
	// MsgEvent is NSB_MSG_EVENT, the multicast a publish produces; the
	// kernel sends it and rejects it as a request.
	MsgEvent uint16 = 0x12
	// MsgStats is NSB_MSG_STATS: the namespace's counters and the number of
	// live per-namespace instances.
	MsgStats uint16 = 0x13
	// MsgGroups is NSB_MSG_GROUPS: the last sequence number of every group
	// of the requester's namespace, and the namespace's instance id. Every
	// event a number counts reaches the requester's socket (or is dropped
	// from it) before the reply does.
	MsgGroups uint16 = 0x14
	// MsgMax is NSB_MSG_MAX, the highest message type.
	MsgMax uint16 = 0x14
)

// Attribute types (enum nsb_attr).
const (
	// AttrUnspec is NSB_A_UNSPEC, never sent.
	AttrUnspec uint16 = 0
	// AttrPad is NSB_A_PAD, alignment padding before u64 attributes;
	// decoders skip it.
	AttrPad uint16 = 1
	// AttrPayload is NSB_A_PAYLOAD, binary, 0..PayloadMax bytes.
	AttrPayload uint16 = 2
	// AttrGroup is NSB_A_GROUP, u32, 1..Groups.
	AttrGroup uint16 = 3
	// AttrSeq is NSB_A_SEQ, u64: an event's number, counted per namespace
	// and group from 1 without holes.
	AttrSeq uint16 = 4
	// AttrNetnsInum is NSB_A_NETNS_INUM, u32, the inode of the namespace
	// whose kernel socket answered.
	AttrNetnsInum uint16 = 5
	// AttrNetnsCookie is NSB_A_NETNS_COOKIE, u64, that namespace's cookie.
	AttrNetnsCookie uint16 = 6
	// AttrSenderPortID is NSB_A_SENDER_PORTID, u32, the netlink port id of
	// the publisher.
	AttrSenderPortID uint16 = 7
	// AttrTimestamp is NSB_A_TIMESTAMP, u64, CLOCK_REALTIME nanoseconds at
	// publish.
	AttrTimestamp uint16 = 8
	// AttrListeners is NSB_A_LISTENERS, u32, 1 if the group had members.
	AttrListeners uint16 = 9
	// AttrStats is NSB_A_STATS, nested StatsAttr* counters.
	AttrStats uint16 = 10
	// AttrInstances is NSB_A_INSTANCES, u32, live per-namespace instances
	// module-wide.
	AttrInstances uint16 = 11
	// AttrInstanceID is NSB_A_INSTANCE_ID, u64, random and new for every
	// per-namespace instance: it changes when the module is reloaded, and
	// sequence numbers then restart at 1.
	AttrInstanceID uint16 = 12
	// AttrGroupSeq is NSB_A_GROUP_SEQ, nested AttrGroup and AttrSeq: the
	// last number a group multicast (0: none yet), once per group in a
	// MsgGroups reply.
	AttrGroupSeq uint16 = 13
	// AttrMax is NSB_A_MAX, the highest attribute type.
	AttrMax uint16 = 13
)

// Counter attributes nested in AttrStats (enum nsb_stats_attr), all u64.
const (
	// StatsAttrUnspec is NSB_STATS_A_UNSPEC, never sent.
	StatsAttrUnspec uint16 = 0
	// StatsAttrPad is NSB_STATS_A_PAD, alignment padding; decoders skip it.
	StatsAttrPad uint16 = 1
	// StatsAttrEcho is NSB_STATS_A_ECHO, echo requests answered.
	StatsAttrEcho uint16 = 2
	// StatsAttrPublish is NSB_STATS_A_PUBLISH, events multicast.
	StatsAttrPublish uint16 = 3
	// StatsAttrDelivered is NSB_STATS_A_DELIVERED, events that reached a
	// member.
	StatsAttrDelivered uint16 = 4
	// StatsAttrNoListener is NSB_STATS_A_NO_LISTENER, events whose group had
	// no member.
	StatsAttrNoListener uint16 = 5
	// StatsAttrOverrun is NSB_STATS_A_OVERRUN, events a member's full
	// receive buffer dropped.
	StatsAttrOverrun uint16 = 6
	// StatsAttrRejected is NSB_STATS_A_REJECTED, requests answered with an
	// error.
	StatsAttrRejected uint16 = 7
	// StatsAttrMax is NSB_STATS_A_MAX, the highest counter attribute.
	StatsAttrMax uint16 = 7
)
