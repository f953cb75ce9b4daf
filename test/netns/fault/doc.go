// Package fault puts the real nsbrokerd under faults while clients use it,
// and measures what the clients see:
//
//   - the daemon killed with SIGKILL under load and started again with the
//     same arguments: clients reconnect and resubscribe, events published
//     afterwards reach them, the namespaces are attached again, and once
//     the test deletes its namespaces the module's live-instance count is
//     back where it started (nothing leaked);
//   - namespaces attached only through the API, by name and by pid,
//     survive SIGKILL right after the attach: the daemon started again
//     with the same state file serves them under the same names, from its
//     first request, each from its own namespace;
//   - `ip netns del` of an attached namespace under publish load: its
//     subscriptions end with a status naming the namespace gone within 2 s,
//     while subscribers elsewhere receive every event;
//   - the module released, unloaded and loaded again under load: every
//     subscriber gets gaps covering exactly what it missed, then events.
//
// The tests are named TestIntegration* and run in the test VM (make
// vmtest), where NSB_MODULE names the module file for reloading it and the
// daemon is on PATH; elsewhere they skip.
package fault
