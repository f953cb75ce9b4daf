package kmodtest

// The numbers of kmod/include/uapi/linux/nsbroker.h, written out here so the
// suite checks the kernel against the header and not against another Go
// translation of it.

const (
	nsbVersion    = 1     // NSB_VERSION
	nsbGroups     = 32    // NSB_GROUPS
	nsbPayloadMax = 16384 // NSB_PAYLOAD_MAX
	nsbHdrLen     = 4     // sizeof(struct nsb_msghdr)
)

// Message types (enum nsb_msg_type).
const (
	msgEcho    uint16 = 0x10 // NSB_MSG_ECHO (NLMSG_MIN_TYPE)
	msgPublish uint16 = 0x11 // NSB_MSG_PUBLISH
	msgEvent   uint16 = 0x12 // NSB_MSG_EVENT
	msgStats   uint16 = 0x13 // NSB_MSG_STATS
	msgGroups  uint16 = 0x14 // NSB_MSG_GROUPS
	msgMax            = msgGroups
)

// Attributes (enum nsb_attr).
const (
	attrUnspec       uint16 = iota // NSB_A_UNSPEC
	attrPad                        // NSB_A_PAD
	attrPayload                    // NSB_A_PAYLOAD
	attrGroup                      // NSB_A_GROUP
	attrSeq                        // NSB_A_SEQ
	attrNetnsInum                  // NSB_A_NETNS_INUM
	attrNetnsCookie                // NSB_A_NETNS_COOKIE
	attrSenderPortID               // NSB_A_SENDER_PORTID
	attrTimestamp                  // NSB_A_TIMESTAMP
	attrListeners                  // NSB_A_LISTENERS
	attrStats                      // NSB_A_STATS
	attrInstances                  // NSB_A_INSTANCES
	attrInstanceID                 // NSB_A_INSTANCE_ID
	attrGroupSeq                   // NSB_A_GROUP_SEQ
	attrMax          = attrGroupSeq
)

// Counters nested in NSB_A_STATS (enum nsb_stats_attr).
const (
	statsUnspec     uint16 = iota // NSB_STATS_A_UNSPEC
	statsPad                      // NSB_STATS_A_PAD
	statsEcho                     // NSB_STATS_A_ECHO
	statsPublish                  // NSB_STATS_A_PUBLISH
	statsDelivered                // NSB_STATS_A_DELIVERED
	statsNoListener               // NSB_STATS_A_NO_LISTENER
	statsOverrun                  // NSB_STATS_A_OVERRUN
	statsRejected                 // NSB_STATS_A_REJECTED
	statsMax        = statsRejected
)

// Extended-ACK attributes of include/uapi/linux/netlink.h that
// golang.org/x/sys/unix does not name.
const (
	nlmsgerrAttrPolicy   = 4 // NLMSGERR_ATTR_POLICY
	nlmsgerrAttrMissType = 5 // NLMSGERR_ATTR_MISS_TYPE (Linux 6.0+)
)
