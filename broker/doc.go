// Package broker is the core of nsbroker: it keeps one netlink connection
// to the nsbroker kernel module inside every attached network namespace,
// multiplexes concurrent requests over it by netlink sequence number, and
// fans multicast events out to subscribers through bounded queues.
//
// A Broker never loses an event silently. A kernel receive-buffer overrun
// (ENOBUFS), a subscriber whose queue is full, and a module that is released
// or reloaded each reach the affected subscriber as a gap event naming the
// missing sequence numbers and the reason, in the position of the stream
// where the loss happened. The kernel's sequence numbers pass through
// untouched.
//
// A Broker notices when an attached namespace disappears (its name under
// /run/netns unlinked, or the process it was attached by exiting), closes
// everything it holds there so the kernel can free the namespace, and ends
// that namespace's subscriptions with ErrNamespaceGone.
package broker
