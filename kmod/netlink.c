// SPDX-License-Identifier: GPL-2.0
/*
 * nsbroker: requests from user space, replies and multicast events.
 *
 * Every handler runs in the sender's context on the kernel socket of the
 * sender's network namespace, so sock_net(skb->sk) is the namespace the
 * request belongs to and nothing here ever looks at another namespace.
 */

#include <linux/capability.h>
#include <linux/netlink.h>
#include <linux/timekeeping.h>
#include <net/netlink.h>
#include <net/sock.h>

#include "main.h"
#include "netlink.h"

/* The only nlmsg_flags a request may carry. */
#define NSB_NLM_F_ALLOWED	(NLM_F_REQUEST | NLM_F_ACK)

static const struct nla_policy nsb_echo_policy[NSB_A_MAX + 1] = {
	[NSB_A_PAYLOAD]	= { .type = NLA_BINARY, .len = NSB_PAYLOAD_MAX },
};

static const struct nla_policy nsb_publish_policy[NSB_A_MAX + 1] = {
	[NSB_A_PAYLOAD]	= { .type = NLA_BINARY, .len = NSB_PAYLOAD_MAX },
	[NSB_A_GROUP]	= NLA_POLICY_RANGE(NLA_U32, 1, NSB_GROUPS),
};

/* STATS and GROUPS take no attributes: every one is rejected. */
static const struct nla_policy nsb_stats_policy[NSB_A_MAX + 1] = {};
static const struct nla_policy nsb_groups_policy[NSB_A_MAX + 1] = {};

static struct nlmsghdr *nsb_nlmsg_put(struct sk_buff *skb, u32 portid,
				      u32 seq, int type)
{
	struct nsb_msghdr *hdr;
	struct nlmsghdr *nlh;

	nlh = nlmsg_put(skb, portid, seq, type, sizeof(*hdr), 0);
	if (!nlh)
		return NULL;
	hdr = nlmsg_data(nlh);
	hdr->version = NSB_VERSION;
	hdr->flags = 0;
	hdr->reserved = 0;
	return nlh;
}

/* Size of a message body with @attrs bytes of attributes. */
static size_t nsb_msg_size(size_t attrs)
{
	return NLMSG_ALIGN(sizeof(struct nsb_msghdr)) + attrs;
}

static size_t nsb_payload_len(const struct nlattr *payload)
{
	return payload ? nla_len(payload) : 0;
}

static int nsb_echo(struct sk_buff *skb, const struct nlmsghdr *nlh,
		    struct nlattr **tb, struct netlink_ext_ack *extack,
		    bool *took_effect)
{
	struct net *net = sock_net(skb->sk);
	struct nsb_net *nn = nsb_pernet(net);
	const struct nlattr *payload = tb[NSB_A_PAYLOAD];
	struct sk_buff *reply;
	struct nlmsghdr *rnlh;
	int err;

	reply = nlmsg_new(nsb_msg_size(nla_total_size(nsb_payload_len(payload)) +
				       nla_total_size(sizeof(u32)) +
				       nla_total_size_64bit(sizeof(u64))),
			  GFP_KERNEL);
	if (!reply)
		return -ENOMEM;

	rnlh = nsb_nlmsg_put(reply, NETLINK_CB(skb).portid, nlh->nlmsg_seq,
			     NSB_MSG_ECHO);
	if (!rnlh)
		goto nla_put_failure;
	if ((payload && nla_put(reply, NSB_A_PAYLOAD, nla_len(payload),
				nla_data(payload))) ||
	    nla_put_u32(reply, NSB_A_NETNS_INUM, net->ns.inum) ||
	    nla_put_u64_64bit(reply, NSB_A_NETNS_COOKIE, net->net_cookie,
			      NSB_A_PAD))
		goto nla_put_failure;
	nlmsg_end(reply, rnlh);

	err = nlmsg_unicast(nn->sk, reply, NETLINK_CB(skb).portid);
	if (!err)
		atomic64_inc(&nn->stats[NSB_STATS_A_ECHO]);
	return err;

nla_put_failure:
	nlmsg_free(reply);
	return -EMSGSIZE;
}

/*
 * nsb_event_new() - build the EVENT a publish multicasts.  The sequence
 * number and the timestamp are not known yet: their attributes are
 * reserved and returned through @seq and @ts, to be filled under the group
 * lock, so that timestamps never go back as sequence numbers go up.
 */
static struct sk_buff *nsb_event_new(struct net *net, u32 group, u32 portid,
				     const struct nlattr *payload,
				     struct nlattr **seq, struct nlattr **ts)
{
	size_t len = nsb_payload_len(payload);
	struct sk_buff *skb;
	struct nlmsghdr *nlh;

	skb = nlmsg_new(nsb_msg_size(nla_total_size(len) +
				     3 * nla_total_size(sizeof(u32)) +
				     2 * nla_total_size_64bit(sizeof(u64))),
			GFP_KERNEL);
	if (!skb)
		return NULL;

	nlh = nsb_nlmsg_put(skb, 0, 0, NSB_MSG_EVENT);
	if (!nlh)
		goto nla_put_failure;
	*seq = nla_reserve_64bit(skb, NSB_A_SEQ, sizeof(u64), NSB_A_PAD);
	if (!*seq ||
	    nla_put_u32(skb, NSB_A_GROUP, group) ||
	    nla_put(skb, NSB_A_PAYLOAD, len, payload ? nla_data(payload) : NULL) ||
	    nla_put_u32(skb, NSB_A_NETNS_INUM, net->ns.inum) ||
	    nla_put_u32(skb, NSB_A_SENDER_PORTID, portid))
		goto nla_put_failure;
	*ts = nla_reserve_64bit(skb, NSB_A_TIMESTAMP, sizeof(u64), NSB_A_PAD);
	if (!*ts)
		goto nla_put_failure;
	nlmsg_end(skb, nlh);
	return skb;

nla_put_failure:
	nlmsg_free(skb);
	return NULL;
}

/*
 * nsb_multicast() - give @event the group's next sequence number and send
 * it to the group's members in this namespace.  Assigning and sending under
 * one lock is what makes the numbers gap-free and in order for every member.
 * Returns the sequence number; @listeners says whether the group had members.
 */
static u64 nsb_multicast(struct nsb_net *nn, u32 group, struct sk_buff *event,
			 struct nlattr *seq_attr, struct nlattr *ts_attr,
			 bool *listeners)
{
	struct nsb_group *grp = &nn->groups[group - 1];
	u64 seq, now;
	int err;

	mutex_lock(&grp->lock);
	seq = ++grp->seq;
	now = ktime_get_real_ns();
	memcpy(nla_data(seq_attr), &seq, sizeof(seq));
	memcpy(nla_data(ts_attr), &now, sizeof(now));
	err = nlmsg_multicast(nn->sk, event, 0, group, GFP_KERNEL);
	mutex_unlock(&grp->lock);

	/*
	 * Only the outcome of the delivery is namespace-scoped:
	 * netlink_has_listeners() would consult the unit's group bitmap, which
	 * all namespaces share, and tell a tenant whether another namespace
	 * has members.  A member whose buffer was full reports -ENOBUFS only
	 * if it set NETLINK_BROADCAST_ERROR; otherwise its loss looks like
	 * -ESRCH here, and the member sees ENOBUFS on its own socket.
	 */
	atomic64_inc(&nn->stats[NSB_STATS_A_PUBLISH]);
	switch (err) {
	case 0:
		atomic64_inc(&nn->stats[NSB_STATS_A_DELIVERED]);
		break;
	case -ESRCH:
		atomic64_inc(&nn->stats[NSB_STATS_A_NO_LISTENER]);
		break;
	default:
		atomic64_inc(&nn->stats[NSB_STATS_A_OVERRUN]);
		break;
	}
	*listeners = err != -ESRCH;
	return seq;
}

/*
 * nsb_publish() - number and multicast an EVENT, then reply.  Once the
 * event is out, the request has taken effect: an error after that (the
 * reply does not fit the requester's receive buffer: -EAGAIN) is still
 * returned, and answered if the error fits, but it does not count as a
 * rejected request.
 */
static int nsb_publish(struct sk_buff *skb, const struct nlmsghdr *nlh,
		       struct nlattr **tb, struct netlink_ext_ack *extack,
		       bool *took_effect)
{
	struct net *net = sock_net(skb->sk);
	struct nsb_net *nn = nsb_pernet(net);
	u32 portid = NETLINK_CB(skb).portid;
	struct sk_buff *event, *reply;
	struct nlattr *seq_attr, *ts_attr;
	struct nlmsghdr *rnlh;
	bool listeners;
	u32 group;
	u64 seq;

	if (NL_REQ_ATTR_CHECK(extack, NULL, tb, NSB_A_GROUP)) {
		NL_SET_ERR_MSG(extack, "PUBLISH needs NSB_A_GROUP");
		return -EINVAL;
	}
	group = nla_get_u32(tb[NSB_A_GROUP]);

	/* Allocate everything first: after the multicast nothing may fail. */
	reply = nlmsg_new(nsb_msg_size(2 * nla_total_size(sizeof(u32)) +
				       nla_total_size_64bit(sizeof(u64))),
			  GFP_KERNEL);
	if (!reply)
		return -ENOMEM;
	event = nsb_event_new(net, group, portid, tb[NSB_A_PAYLOAD], &seq_attr,
			      &ts_attr);
	if (!event) {
		nlmsg_free(reply);
		return -ENOMEM;
	}

	seq = nsb_multicast(nn, group, event, seq_attr, ts_attr, &listeners);
	*took_effect = true;

	rnlh = nsb_nlmsg_put(reply, portid, nlh->nlmsg_seq, NSB_MSG_PUBLISH);
	if (!rnlh ||
	    nla_put_u32(reply, NSB_A_GROUP, group) ||
	    nla_put_u64_64bit(reply, NSB_A_SEQ, seq, NSB_A_PAD) ||
	    nla_put_u32(reply, NSB_A_LISTENERS, listeners))
		goto nla_put_failure;
	nlmsg_end(reply, rnlh);
	return nlmsg_unicast(nn->sk, reply, portid);

nla_put_failure:
	nlmsg_free(reply);
	return -EMSGSIZE;
}

static int nsb_stats(struct sk_buff *skb, const struct nlmsghdr *nlh,
		     struct nlattr **tb, struct netlink_ext_ack *extack,
		     bool *took_effect)
{
	struct net *net = sock_net(skb->sk);
	struct nsb_net *nn = nsb_pernet(net);
	struct sk_buff *reply;
	struct nlmsghdr *rnlh;
	struct nlattr *nest;
	int i;

	reply = nlmsg_new(nsb_msg_size(nla_total_size(0) +
				       NSB_STATS_A_MAX * nla_total_size_64bit(sizeof(u64)) +
				       2 * nla_total_size(sizeof(u32)) +
				       nla_total_size_64bit(sizeof(u64))),
			  GFP_KERNEL);
	if (!reply)
		return -ENOMEM;

	rnlh = nsb_nlmsg_put(reply, NETLINK_CB(skb).portid, nlh->nlmsg_seq,
			     NSB_MSG_STATS);
	if (!rnlh)
		goto nla_put_failure;
	nest = nla_nest_start(reply, NSB_A_STATS);
	if (!nest)
		goto nla_put_failure;
	for (i = NSB_STATS_A_PAD + 1; i <= NSB_STATS_A_MAX; i++)
		if (nla_put_u64_64bit(reply, i, atomic64_read(&nn->stats[i]),
				      NSB_STATS_A_PAD))
			goto nla_put_failure;
	nla_nest_end(reply, nest);
	if (nla_put_u32(reply, NSB_A_INSTANCES, nsb_instance_count()) ||
	    nla_put_u32(reply, NSB_A_NETNS_INUM, net->ns.inum) ||
	    nla_put_u64_64bit(reply, NSB_A_INSTANCE_ID, nn->instance_id,
			      NSB_A_PAD))
		goto nla_put_failure;
	nlmsg_end(reply, rnlh);
	return nlmsg_unicast(nn->sk, reply, NETLINK_CB(skb).portid);

nla_put_failure:
	nlmsg_free(reply);
	return -EMSGSIZE;
}

/* Size of one NSB_A_GROUP_SEQ nest. */
static size_t nsb_group_seq_size(void)
{
	return nla_total_size(nla_total_size(sizeof(u32)) +
			      nla_total_size_64bit(sizeof(u64)));
}

static int nsb_put_group_seq(struct sk_buff *skb, u32 group, u64 seq)
{
	struct nlattr *nest;

	nest = nla_nest_start(skb, NSB_A_GROUP_SEQ);
	if (!nest)
		return -EMSGSIZE;
	if (nla_put_u32(skb, NSB_A_GROUP, group) ||
	    nla_put_u64_64bit(skb, NSB_A_SEQ, seq, NSB_A_PAD)) {
		nla_nest_cancel(skb, nest);
		return -EMSGSIZE;
	}
	nla_nest_end(skb, nest);
	return 0;
}

/*
 * nsb_groups() - the last sequence number of every group.  Each is read
 * under the group's lock, which nsb_multicast() holds until its EVENT is
 * queued: every EVENT a number counts is in the requester's receive queue
 * (or was dropped from it) before this reply is.
 */
static int nsb_groups(struct sk_buff *skb, const struct nlmsghdr *nlh,
		      struct nlattr **tb, struct netlink_ext_ack *extack,
		      bool *took_effect)
{
	struct net *net = sock_net(skb->sk);
	struct nsb_net *nn = nsb_pernet(net);
	struct sk_buff *reply;
	struct nlmsghdr *rnlh;
	u32 group;
	u64 seq;

	reply = nlmsg_new(nsb_msg_size(nla_total_size(sizeof(u32)) +
				       nla_total_size_64bit(sizeof(u64)) +
				       NSB_GROUPS * nsb_group_seq_size()),
			  GFP_KERNEL);
	if (!reply)
		return -ENOMEM;

	rnlh = nsb_nlmsg_put(reply, NETLINK_CB(skb).portid, nlh->nlmsg_seq,
			     NSB_MSG_GROUPS);
	if (!rnlh ||
	    nla_put_u32(reply, NSB_A_NETNS_INUM, net->ns.inum) ||
	    nla_put_u64_64bit(reply, NSB_A_INSTANCE_ID, nn->instance_id,
			      NSB_A_PAD))
		goto nla_put_failure;
	for (group = 1; group <= NSB_GROUPS; group++) {
		struct nsb_group *grp = &nn->groups[group - 1];

		mutex_lock(&grp->lock);
		seq = grp->seq;
		mutex_unlock(&grp->lock);
		if (nsb_put_group_seq(reply, group, seq))
			goto nla_put_failure;
	}
	nlmsg_end(reply, rnlh);
	return nlmsg_unicast(nn->sk, reply, NETLINK_CB(skb).portid);

nla_put_failure:
	nlmsg_free(reply);
	return -EMSGSIZE;
}

/*
 * A request's handler.  @doit sets *took_effect once the request has done
 * what it asks for; an error it returns after that is not counted as
 * NSB_STATS_A_REJECTED.
 */
struct nsb_handler {
	const struct nla_policy *policy;
	bool admin;	/* needs CAP_NET_ADMIN in the namespace's user ns */
	int (*doit)(struct sk_buff *skb, const struct nlmsghdr *nlh,
		    struct nlattr **tb, struct netlink_ext_ack *extack,
		    bool *took_effect);
};

/*
 * One slot for every type from NLMSG_MIN_TYPE to NSB_MSG_MAX, so that any
 * type in that range indexes the table; a type without a handler (EVENT,
 * or one added to the uapi enum without an entry here) has a NULL doit and
 * is refused.
 */
static const struct nsb_handler nsb_handlers[NSB_MSG_MAX - NLMSG_MIN_TYPE + 1] = {
	[NSB_MSG_ECHO - NLMSG_MIN_TYPE] = {
		.policy	= nsb_echo_policy,
		.doit	= nsb_echo,
	},
	[NSB_MSG_PUBLISH - NLMSG_MIN_TYPE] = {
		.policy	= nsb_publish_policy,
		.admin	= true,
		.doit	= nsb_publish,
	},
	[NSB_MSG_STATS - NLMSG_MIN_TYPE] = {
		.policy	= nsb_stats_policy,
		.doit	= nsb_stats,
	},
	[NSB_MSG_GROUPS - NLMSG_MIN_TYPE] = {
		.policy	= nsb_groups_policy,
		.doit	= nsb_groups,
	},
};

static int nsb_handle(struct sk_buff *skb, struct nlmsghdr *nlh,
		      struct netlink_ext_ack *extack, bool *took_effect)
{
	const struct nsb_handler *handler;
	const struct nsb_msghdr *hdr;
	struct nlattr *tb[NSB_A_MAX + 1];
	u16 type = nlh->nlmsg_type;
	int err;

	if (nlh->nlmsg_flags & ~NSB_NLM_F_ALLOWED) {
		if ((nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP)
			NL_SET_ERR_MSG(extack, "dump requests are not supported");
		else
			NL_SET_ERR_MSG(extack, "unsupported netlink message flags");
		return -EOPNOTSUPP;
	}

	if (type == NSB_MSG_EVENT) {
		NL_SET_ERR_MSG(extack, "EVENT is sent by the kernel only");
		return -EOPNOTSUPP;
	}
	/* netlink_rcv_skb() never passes a type below NLMSG_MIN_TYPE. */
	if (type > NSB_MSG_MAX || !nsb_handlers[type - NLMSG_MIN_TYPE].doit) {
		NL_SET_ERR_MSG(extack, "unknown message type");
		return -EOPNOTSUPP;
	}
	handler = &nsb_handlers[type - NLMSG_MIN_TYPE];

	if (nlmsg_len(nlh) < sizeof(*hdr)) {
		NL_SET_ERR_MSG(extack, "truncated family header");
		return -EINVAL;
	}
	hdr = nlmsg_data(nlh);
	if (hdr->version != NSB_VERSION) {
		NL_SET_ERR_MSG(extack, "unsupported ABI version");
		return -EPROTONOSUPPORT;
	}
	if ((hdr->flags & ~NSB_F_ALL) || hdr->reserved) {
		NL_SET_ERR_MSG(extack, "unknown flags or reserved bits set in family header");
		return -EINVAL;
	}

	if (handler->admin &&
	    !netlink_ns_capable(skb, sock_net(skb->sk)->user_ns, CAP_NET_ADMIN)) {
		NL_SET_ERR_MSG(extack, "needs CAP_NET_ADMIN in the namespace's user namespace");
		return -EPERM;
	}

	err = nlmsg_parse(nlh, sizeof(*hdr), tb, NSB_A_MAX, handler->policy,
			  extack);
	if (err)
		return err;

	return handler->doit(skb, nlh, tb, extack, took_effect);
}

static int nsb_rcv_msg(struct sk_buff *skb, struct nlmsghdr *nlh,
		       struct netlink_ext_ack *extack)
{
	bool took_effect = false;
	int err;

	err = nsb_handle(skb, nlh, extack, &took_effect);
	if (err && !took_effect)
		atomic64_inc(&nsb_pernet(sock_net(skb->sk))->stats[NSB_STATS_A_REJECTED]);
	return err;
}

void nsb_netlink_rcv(struct sk_buff *skb)
{
	netlink_rcv_skb(skb, nsb_rcv_msg);
}
