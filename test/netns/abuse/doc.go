// Package abuse runs the real nsbrokerd against the real kernel module and
// treats it badly: a subscriber that never reads, publish bursts far beyond
// what a subscriber can take, a thousand clients that connect and drop,
// oversized messages, too many streams, a tenant flooding publishes, a
// check that none of the daemon's descriptors survives an exec, and a
// hostile tenant's attacks on the shared daemon (TestIntegrationAttack*:
// uid 65534 in a tenant namespace and a tenant's cgroup against a daemon
// with default flags held to the deployment's memory in its own). Each test
// measures what the daemon promises (memory, losses reported as gaps,
// goroutines and descriptors, status codes, rates), prints the numbers and
// asserts them.
//
// The tests are named TestIntegration* and run in the test VM (make
// vmtest), where the harness installs nsbrokerd and nsbrokerctl in
// /usr/local/bin; elsewhere they skip.
package abuse
