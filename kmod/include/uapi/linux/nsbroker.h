/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * nsbroker: a raw netlink protocol with one kernel socket per network
 * namespace.
 *
 * Transport
 *   A raw netlink unit (NETLINK_NSBROKER, default 25, module parameter
 *   "unit", 23..31).  A socket opened in a network namespace talks to that
 *   namespace's kernel socket and nobody else's.  Multicast groups
 *   1..NSB_GROUPS exist separately in every namespace.
 *
 * Message layout
 *   struct nlmsghdr | struct nsb_msghdr | attributes (NSB_A_*)
 *
 *   Requests carry NLM_F_REQUEST and may carry NLM_F_ACK; every other
 *   flag is rejected with -EOPNOTSUPP.  nsb_msghdr.version must be
 *   NSB_VERSION and its flags/reserved fields zero.  Attributes are parsed
 *   strictly: unknown attributes, attributes a message does not take and
 *   attributes of the wrong length are errors.
 *
 * Messages (nlmsg_type)
 *   NSB_MSG_ECHO     request:  [NSB_A_PAYLOAD]
 *                    reply:    NSB_A_PAYLOAD (if sent), NSB_A_NETNS_INUM,
 *                              NSB_A_NETNS_COOKIE
 *   NSB_MSG_PUBLISH  request:  NSB_A_GROUP, [NSB_A_PAYLOAD]
 *                    needs CAP_NET_ADMIN in the namespace's user namespace
 *                    reply:    NSB_A_GROUP, NSB_A_SEQ, NSB_A_LISTENERS
 *                    effect:   NSB_MSG_EVENT multicast to the group in
 *                              this namespace only
 *   NSB_MSG_EVENT    kernel to user only (multicast): NSB_A_GROUP,
 *                    NSB_A_SEQ, NSB_A_PAYLOAD, NSB_A_NETNS_INUM,
 *                    NSB_A_SENDER_PORTID, NSB_A_TIMESTAMP
 *   NSB_MSG_STATS    request:  no attributes
 *                    reply:    NSB_A_STATS (nested NSB_STATS_A_*),
 *                              NSB_A_INSTANCES, NSB_A_NETNS_INUM,
 *                              NSB_A_INSTANCE_ID (changes when the module is
 *                              reloaded: sequence numbers then restart at 1)
 *   NSB_MSG_GROUPS   request:  no attributes
 *                    reply:    NSB_A_NETNS_INUM, NSB_A_INSTANCE_ID, and one
 *                              NSB_A_GROUP_SEQ per group 1..NSB_GROUPS, in
 *                              order, each nesting NSB_A_GROUP and NSB_A_SEQ:
 *                              the last number that group multicast (0: none
 *                              yet).  Each number is read under the group's
 *                              lock, so every EVENT it counts was queued to
 *                              (or dropped by) the requester's socket before
 *                              the reply: a requester that is a member knows
 *                              at the reply which numbers it lost.
 *
 * Errors come back as NLMSG_ERROR with a negative errno; with
 * NETLINK_EXT_ACK set on the socket they carry a message and, where an
 * attribute is at fault, its offset (docs/protocol.md lists them all):
 *   -EOPNOTSUPP       unknown or kernel-only type, unsupported nlmsg flags
 *                     (NLM_F_DUMP among them)
 *   -EPROTONOSUPPORT  nsb_msghdr.version is not NSB_VERSION
 *   -EINVAL           truncated family header, non-zero header flags or
 *                     reserved bits, missing, unknown or malformed
 *                     attribute, attribute of the wrong length, any
 *                     attribute in STATS or GROUPS
 *   -ERANGE           NSB_A_GROUP outside 1..NSB_GROUPS, NSB_A_PAYLOAD
 *                     longer than NSB_PAYLOAD_MAX
 *   -EPERM            PUBLISH without CAP_NET_ADMIN
 *   -EAGAIN           PUBLISH whose EVENT was multicast but whose reply did
 *                     not fit the requester's receive buffer; the publish
 *                     took effect and is not counted as rejected
 *
 * Sequence numbers (NSB_A_SEQ) count per namespace and group, start at 1
 * and have no holes: every number is multicast exactly once.
 */
#ifndef _UAPI_LINUX_NSBROKER_H
#define _UAPI_LINUX_NSBROKER_H

#include <linux/types.h>
#include <linux/netlink.h>

#define NETLINK_NSBROKER	25	/* default unit */
#define NSB_UNIT_MIN		23
#define NSB_UNIT_MAX		31

#define NSB_VERSION		1
#define NSB_GROUPS		32	/* multicast groups 1..NSB_GROUPS */
#define NSB_PAYLOAD_MAX		16384	/* bytes in NSB_A_PAYLOAD */

/* Family header, after struct nlmsghdr in every message. */
struct nsb_msghdr {
	__u8	version;	/* NSB_VERSION */
	__u8	flags;		/* NSB_F_*; unknown bits are rejected */
	__u16	reserved;	/* must be zero */
};

/* No flags are defined in version 1. */
#define NSB_F_ALL		0x00

enum nsb_msg_type {
	NSB_MSG_ECHO = NLMSG_MIN_TYPE,
	NSB_MSG_PUBLISH,
	NSB_MSG_EVENT,
	NSB_MSG_STATS,
	NSB_MSG_GROUPS,

	__NSB_MSG_LAST,
};

#define NSB_MSG_MAX		(__NSB_MSG_LAST - 1)

enum nsb_attr {
	NSB_A_UNSPEC,
	NSB_A_PAD,		/* alignment padding for u64 attributes */
	NSB_A_PAYLOAD,		/* binary, 0..NSB_PAYLOAD_MAX bytes */
	NSB_A_GROUP,		/* u32, 1..NSB_GROUPS */
	NSB_A_SEQ,		/* u64, per namespace and group, from 1 */
	NSB_A_NETNS_INUM,	/* u32, inode of the answering namespace */
	NSB_A_NETNS_COOKIE,	/* u64, net cookie of that namespace */
	NSB_A_SENDER_PORTID,	/* u32, netlink port id of the publisher */
	NSB_A_TIMESTAMP,	/* u64, CLOCK_REALTIME ns at publish */
	NSB_A_LISTENERS,	/* u32, 1 if a member took the event, else 0 */
	NSB_A_STATS,		/* nested, NSB_STATS_A_* */
	NSB_A_INSTANCES,	/* u32, live per-namespace instances, module-wide */
	NSB_A_INSTANCE_ID,	/* u64, random, new for every per-namespace instance */
	NSB_A_GROUP_SEQ,	/* nested: NSB_A_GROUP, NSB_A_SEQ (last numbered) */

	__NSB_A_LAST,
};

#define NSB_A_MAX		(__NSB_A_LAST - 1)

/* Per-namespace counters inside NSB_A_STATS, all u64. */
enum nsb_stats_attr {
	NSB_STATS_A_UNSPEC,
	NSB_STATS_A_PAD,
	NSB_STATS_A_ECHO,		/* ECHO requests answered */
	NSB_STATS_A_PUBLISH,		/* events multicast */
	NSB_STATS_A_DELIVERED,		/* events that reached a member */
	NSB_STATS_A_NO_LISTENER,	/* events no member took */
	NSB_STATS_A_OVERRUN,		/* events a member with
					 * NETLINK_BROADCAST_ERROR set could
					 * not take: its buffer was full
					 */
	NSB_STATS_A_REJECTED,		/* requests answered with an error */

	__NSB_STATS_A_LAST,
};

#define NSB_STATS_A_MAX		(__NSB_STATS_A_LAST - 1)

#endif /* _UAPI_LINUX_NSBROKER_H */
