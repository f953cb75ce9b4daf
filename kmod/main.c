// SPDX-License-Identifier: GPL-2.0
/*
 * nsbroker: module init/exit and the per-namespace kernel sockets.
 */

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/netlink.h>
#include <linux/random.h>
#include <net/sock.h>

#include "main.h"
#include "netlink.h"
#include "version.h"

static int nsb_unit = NETLINK_NSBROKER;
module_param_named(unit, nsb_unit, int, 0444);
MODULE_PARM_DESC(unit, "netlink protocol unit (23..31, default 25)");

unsigned int nsb_net_id __read_mostly;

/* Live per-namespace instances, module-wide; STATS reports it. */
static atomic_t nsb_instances = ATOMIC_INIT(0);

int nsb_instance_count(void)
{
	return atomic_read(&nsb_instances);
}

static int __net_init nsb_net_init(struct net *net)
{
	struct nsb_net *nn = nsb_pernet(net);
	struct netlink_kernel_cfg cfg = {
		.groups	= NSB_GROUPS,
		.input	= nsb_netlink_rcv,
	};
	int i;

	for (i = 0; i < NSB_GROUPS; i++)
		mutex_init(&nn->groups[i].lock);
	nn->instance_id = get_random_u64();

	nn->sk = netlink_kernel_create(net, nsb_unit, &cfg);
	if (!nn->sk)
		return -ENOMEM;

	atomic_inc(&nsb_instances);
	return 0;
}

static void __net_exit nsb_net_exit(struct net *net)
{
	struct nsb_net *nn = nsb_pernet(net);
	int i;

	netlink_kernel_release(nn->sk);
	nn->sk = NULL;
	for (i = 0; i < NSB_GROUPS; i++)
		mutex_destroy(&nn->groups[i].lock);
	atomic_dec(&nsb_instances);
}

static struct pernet_operations nsb_net_ops = {
	.init	= nsb_net_init,
	.exit	= nsb_net_exit,
	.id	= &nsb_net_id,
	.size	= sizeof(struct nsb_net),
};

static int __init nsb_init(void)
{
	int err;

	if (nsb_unit < NSB_UNIT_MIN || nsb_unit > NSB_UNIT_MAX) {
		pr_err("unit=%d is out of range: only the free netlink units %d..%d are accepted\n",
		       nsb_unit, NSB_UNIT_MIN, NSB_UNIT_MAX);
		return -EINVAL;
	}

	err = register_pernet_subsys(&nsb_net_ops);
	if (err) {
		pr_err("cannot create the per-namespace sockets on unit %d: %d\n",
		       nsb_unit, err);
		return err;
	}

	pr_info("netlink unit %d, ABI version %d\n", nsb_unit, NSB_VERSION);
	return 0;
}

static void __exit nsb_exit(void)
{
	unregister_pernet_subsys(&nsb_net_ops);
}

module_init(nsb_init);
module_exit(nsb_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Namespace-scoped netlink message broker");
MODULE_VERSION(NSB_MODULE_VERSION);
/*
 * socket(AF_NETLINK, SOCK_RAW, 25) loads the module on demand.  The alias
 * names the default unit only: a module loaded with unit=N is loaded on
 * demand by opening unit N only if modprobe.d says so
 * ("alias net-pf-16-proto-N nsbroker"); docs/protocol.md, "Transport".
 */
MODULE_ALIAS_NET_PF_PROTO(PF_NETLINK, NETLINK_NSBROKER);
