package broker

import (
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// DialFunc opens a connection inside ns to the module's netlink unit. The
// broker runs one reader (Receive) on it while any number of goroutines
// send (SendSeq). Tests substitute connections over fake sockets
// (package brokertest).
type DialFunc func(ns *nsmgr.Namespace, unit int, readBuffer int) (*family.Conn, error)

// dialFamily is the default DialFunc: a real netlink socket created inside
// the namespace (the socket keeps that namespace for its whole life).
func dialFamily(ns *nsmgr.Namespace, unit int, readBuffer int) (*family.Conn, error) {
	return family.Dial(&family.Config{Unit: unit, NetNS: ns.Fd(), ReadBuffer: readBuffer})
}
