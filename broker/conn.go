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
// the namespace (the socket keeps that namespace for its whole life). The
// namespace learns its cookie from the socket, which spares it a visit of
// its own to make one.
func dialFamily(ns *nsmgr.Namespace, unit int, readBuffer int) (*family.Conn, error) {
	c, err := family.Dial(&family.Config{Unit: unit, NetNS: ns.Fd(), ReadBuffer: readBuffer})
	if err != nil {
		return nil, err
	}
	if cookie, err := c.NetnsCookie(); err == nil {
		ns.SetCookie(cookie)
	}
	return c, nil
}
