// Package e2e runs the real nsbrokerd and nsbrokerctl against the real
// kernel module: the daemon attaches named network namespaces, clients
// inside each namespace reach it through that namespace's local socket as
// its tenant, and the tests check from what the clients print (and from a
// Go gRPC client dialing inside a namespace) that every tenant sees only
// its own namespace, that the admin sees all of them, and that deleting a
// namespace or stopping the daemon ends the streams it should.
//
// The tests are named TestIntegration* and run in the test VM (make
// vmtest), where the harness installs both commands in /usr/local/bin;
// elsewhere they skip.
package e2e
