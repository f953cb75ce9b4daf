// Command nsbroker-cni is a chained CNI plugin that attaches each
// container's network namespace to nsbrokerd, through the daemon's admin
// socket, so that processes in the container reach the daemon on their
// namespace-local socket without anyone attaching by hand.
//
// ADD attaches CNI_NETNS under the name namePrefix + CNI_CONTAINERID and
// passes the previous plugin's result through untouched; DEL detaches it,
// and succeeds when it is detached already or no daemon is running; CHECK
// verifies that the namespace is attached; STATUS says whether the daemon
// is serving. The network configuration keys are "socket" (the admin
// socket, default /run/nsbroker/nsbroker.sock), "namePrefix" (default
// "cni-") and "timeout" (a Go duration, default 10s).
//
// "nsbroker-cni install [--dest DIR]" copies the binary into a CNI bin
// directory atomically, for the init container of the DaemonSet.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install" {
		os.Exit(install(os.Args[2:], os.Stdout, os.Stderr))
	}
	skel.PluginMainFuncs(funcs(os.Stdout), supportedVersions, about)
}
