// Package abuse runs the real nsbrokerd against the real kernel module and
// treats it badly: a subscriber that never reads, publish bursts far beyond
// what a subscriber can take, a thousand clients that connect and drop,
// oversized messages, too many streams, a tenant flooding publishes, and a
// check that none of the daemon's descriptors survives an exec. Each test
// measures what the daemon promises (memory, losses reported as gaps,
// goroutines and descriptors, status codes, rates), prints the numbers and
// asserts them.
//
// The tests are named TestIntegration* and run in the test VM (make
// vmtest), where the harness installs nsbrokerd and nsbrokerctl in
// /usr/local/bin; elsewhere they skip.
package abuse
