package broker

import (
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// Conn is a connection to the module inside one namespace, as the broker
// uses it: one reader calls Receive while any number of goroutines Send.
// *family.Conn satisfies it through familyConn; tests substitute fakes.
type Conn interface {
	// Send sends one request carrying the given netlink sequence number.
	Send(seq uint32, typ uint16, data []byte) error
	// Receive blocks until the next datagram and returns its messages.
	Receive() ([]family.Message, error)
	JoinGroup(group uint32) error
	LeaveGroup(group uint32) error
	// Close unblocks Receive.
	Close() error
}

// DialFunc opens a Conn inside ns to the module's netlink unit.
type DialFunc func(ns *nsmgr.Namespace, unit int, readBuffer int) (Conn, error)

// dialFamily is the default DialFunc: a real netlink socket created inside
// the namespace (the socket keeps that namespace for its whole life).
func dialFamily(ns *nsmgr.Namespace, unit int, readBuffer int) (Conn, error) {
	c, err := family.Dial(&family.Config{Unit: unit, NetNS: ns.Fd(), ReadBuffer: readBuffer})
	if err != nil {
		return nil, err
	}
	return familyConn{c}, nil
}

type familyConn struct{ *family.Conn }

func (c familyConn) Send(seq uint32, typ uint16, data []byte) error {
	return c.Conn.SendSeq(seq, typ, data)
}
