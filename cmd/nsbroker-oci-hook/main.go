// Command nsbroker-oci-hook is an OCI runtime hook that attaches a
// container's network namespace to nsbrokerd for runtimes without CNI
// (runc, crun, and engines that call them directly). It reads the
// container state the runtime writes on stdin:
//
//	nsbroker-oci-hook [--socket PATH] [--name-prefix P] [--timeout D] STAGE
//
// At createRuntime (or the deprecated prestart) it attaches the network
// namespace of the container's process, /proc/<pid>/ns/net, under the
// name P + the container id; a container that shares the runtime's
// network namespace is left alone. At poststop it detaches that name,
// and succeeds when it is detached already or no daemon is running. The
// daemon follows the process, so a container that exits is detached even
// without the poststop hook.
//
// Exit status: 0 done, 1 failed (the runtime then fails the container's
// creation), 2 usage error.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stderr))
}
