/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _NSB_MAIN_H
#define _NSB_MAIN_H

#include <linux/mutex.h>
#include <linux/atomic.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>
#include <linux/nsbroker.h>

/* One multicast group of one namespace. */
struct nsb_group {
	struct mutex lock;	/* serialises seq assignment and multicast */
	u64 seq;		/* last sequence number multicast */
};

/* Everything nsbroker keeps for one network namespace. */
struct nsb_net {
	struct sock *sk;	/* the namespace's kernel socket */
	u64 instance_id;	/* random; tells a reloaded module apart */
	struct nsb_group groups[NSB_GROUPS];
	atomic64_t stats[__NSB_STATS_A_LAST];	/* indexed by NSB_STATS_A_* */
};

extern unsigned int nsb_net_id;

static inline struct nsb_net *nsb_pernet(const struct net *net)
{
	return net_generic(net, nsb_net_id);
}

int nsb_instance_count(void);

#endif /* _NSB_MAIN_H */
