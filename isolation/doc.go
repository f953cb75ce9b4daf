// Package isolation checks, against a running nsbrokerd, that nsbroker keeps
// network namespaces apart: that a tenant receives exactly its own
// namespace's messages, in order and without gaps, and nothing of anyone
// else's, and that the known ways across namespaces are closed or behave as
// documented.
//
// A check (Run) creates namespaces (or uses ones already attached), attaches
// them through the daemon's admin socket, connects a tenant client to each
// through the socket the daemon opens inside that namespace, subscribes,
// publishes, and judges what every subscriber received (Judge). It then
// tries the ways across: a tenant naming another namespace, which must be
// refused with NOT_FOUND exactly as a namespace that does not exist, and a
// NETLINK_LISTEN_ALL_NSID listener in the checker's own namespace, with and
// without an nsid assigned to a tenant namespace (see docs/protocol.md).
// Every finding carries its evidence: namespace inodes, sequence numbers,
// gRPC codes and messages, nsids.
//
// The Report reads as text for a person (Report.WriteText) and marshals to
// JSON. Main is the nsbroker-isolation-check command.
package isolation
