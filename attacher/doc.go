// Package attacher attaches the network namespaces of containers to
// nsbrokerd through its admin socket. It is what the container runtime
// integrations share: the CNI plugin (cmd/nsbroker-cni) and the OCI
// runtime hook (cmd/nsbroker-oci-hook).
//
// Runtimes repeat themselves (an ADD retried after a timeout, a second
// interface in the same pod) and clean up after the fact (a DEL once the
// namespace is gone, a poststop hook after the daemon restarted), so the
// operations are idempotent: Attach succeeds when the namespace is
// attached already, under any name, and Detach succeeds when the name is
// not attached. What differs between "the daemon refused" and "no daemon
// is running" is kept apart: the latter matches ErrDaemonDown.
package attacher
