// Package cni runs the CNI flow against the real kernel module: the real
// nsbrokerd, the real nsbroker-cni plugin run the way a runtime runs it
// (the CNI library's invoke package), namespaces made with ip netns add.
// ADD attaches the namespace and it becomes READY, a client inside the
// namespace reaches the daemon on its namespace-local socket and the
// module's echo answers from that namespace, CHECK verifies, DEL detaches
// (twice), and ADD with the daemon stopped fails with a CNI error.
//
// The tests are named TestIntegration* and run in the test VM (make
// vmtest), where the harness installs the commands of VM_BINS, which must
// include ./cmd/nsbroker-cni, in /usr/local/bin; elsewhere they skip.
package cni
