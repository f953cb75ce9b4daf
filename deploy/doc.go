// Package deploy holds what installs nsbroker on a machine or a cluster,
// and its tests: the systemd unit (systemd/), the example CNI network
// configuration (cni/), the example OCI hook configurations (oci/) and
// the Kubernetes DaemonSet (kubernetes/). README.md explains each runtime
// path. The tests decode the DaemonSet strictly into the Kubernetes API
// types, check that every file names the same admin socket, and run the
// daemon with exactly the capabilities the unit grants it.
package deploy
