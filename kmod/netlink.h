/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _NSB_NETLINK_H
#define _NSB_NETLINK_H

struct sk_buff;

void nsb_netlink_rcv(struct sk_buff *skb);

#endif /* _NSB_NETLINK_H */
