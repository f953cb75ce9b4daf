package isolation

import (
	"context"
	"io"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Env is what a check runs against: the daemon's admin API, a way to reach
// each namespace's tenant socket, the namespaces themselves, and the kernel
// for the listener probes. NewHostEnv makes the real one; tests use fakes.
type Env interface {
	// Admin is a client on the daemon's admin socket.
	Admin() nsbrokerv1.BrokerClient
	// Tenant connects to the daemon through the tenant socket inside the
	// named namespace, as a workload in that namespace would.
	Tenant(ctx context.Context, namespace string) (nsbrokerv1.BrokerClient, io.Closer, error)
	// CreateNamespace makes a named network namespace (as ip netns add
	// does) and DeleteNamespace removes it.
	CreateNamespace(name string) error
	DeleteNamespace(name string) error
	// Inode reads the named namespace's inode from the namespace itself.
	Inode(name string) (uint64, error)
	// Kernel is the module as seen from the checker's own namespace, for
	// the NETLINK_LISTEN_ALL_NSID probes; nil if they cannot run.
	Kernel() Kernel
}

// Kernel is the nsbroker module and the nsid table of the checker's own
// network namespace.
type Kernel interface {
	// Inode is the inode of the checker's namespace.
	Inode() uint64
	// Listen opens a socket to the module in the checker's namespace, sets
	// NETLINK_LISTEN_ALL_NSID on it and joins group. If unprivileged, the
	// socket is opened by an unprivileged user (and configured by the
	// checker, which may).
	Listen(group uint32, unprivileged bool) (Listener, error)
	// Publish publishes payload to group in the checker's namespace and
	// returns the sequence number.
	Publish(group uint32, payload []byte) (uint64, error)
	// Nsid returns the nsid the named namespace has in the checker's
	// namespace, or ok false if it has none.
	Nsid(name string) (nsid int32, ok bool, err error)
	// AssignNsid gives the named namespace an nsid in the checker's
	// namespace (as ip netns set does) and returns it.
	AssignNsid(name string) (int32, error)
}

// Listener is a NETLINK_LISTEN_ALL_NSID socket.
type Listener interface {
	// Next returns the next event the socket receives.
	Next(ctx context.Context) (ListenedEvent, error)
	Close() error
}

// ListenedEvent is an event a Listener received.
type ListenedEvent struct {
	Group uint32
	Seq   uint64
	// Inode is the event's NSB_A_NETNS_INUM: where it was published.
	Inode   uint64
	Payload string
	// Nsid is the NETLINK_LISTEN_ALL_NSID control message the kernel
	// attaches to events from other namespaces; HasNsid is false when
	// there was none.
	Nsid    int32
	HasNsid bool
}
