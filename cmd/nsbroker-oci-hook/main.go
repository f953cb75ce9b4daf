// Command nsbroker-oci-hook is an OCI runtime hook that attaches a
// container's network namespace to nsbrokerd for runtimes without CNI
// (runc, crun, and engines that call them directly), and can give the
// container that namespace's filesystem socket. It reads the container
// state the runtime writes on stdin:
//
//	nsbroker-oci-hook [--socket PATH] [--name-prefix P] [--state-dir DIR] [--timeout D] STAGE
//
// At createRuntime (or the deprecated prestart) it attaches the network
// namespace of the container's process, /proc/<pid>/ns/net, under the
// name P + the container id; a container that shares the runtime's
// network namespace is left alone. A namespace attached already (by
// another container of the same pod) keeps its name. It then leaves a
// note in DIR: the namespace, its attachment and the filesystem socket
// the daemon serves it through.
//
// At createContainer, which the runtime runs inside the container's
// namespaces before the container's root becomes its "/", it reads the
// note, checks that it runs in the namespace the note names, and
// bind-mounts the directory of that namespace's filesystem socket
// (/run/nsbroker/ns/NAME) read-only on /run/nsbroker inside the
// container's root: the container's clients dial
// /run/nsbroker/nsbroker.sock and are their namespace's tenants.
//
// At poststop it removes the note and detaches the name, and succeeds
// when it is detached already or no daemon is running. The daemon follows
// the process, so a container that exits is detached even without the
// poststop hook.
//
// Exit status: 0 done, 1 failed (the runtime then fails the container's
// creation), 2 usage error.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stderr))
}
