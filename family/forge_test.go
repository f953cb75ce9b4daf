package family

import (
	"errors"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

// TestIntegrationForgedDatagrams checks the source check on rtnetlink,
// which every kernel has, in a namespace of its own: a forger with
// CAP_NET_ADMIN there may send to the groups and port ids of the unit
// directly. Its unicast to a socket Dial made is refused by the kernel
// (the socket is connected to it); its multicast to a group the socket
// joined is delivered, and Receive drops it with ErrForged naming the
// forger's port id. The kernel's own datagrams still arrive.
func TestIntegrationForgedDatagrams(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newNetns(t)
	c, err := dial(unix.NETLINK_ROUTE, &Config{NetNS: int(ns)})
	if err != nil {
		t.Fatalf("dial rtnetlink: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	if err := c.JoinGroup(unix.RTNLGRP_LINK); err != nil {
		t.Fatalf("join RTNLGRP_LINK: %v", err)
	}

	forger, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: int(ns)})
	if err != nil {
		t.Fatalf("dial the forger: %v", err)
	}
	defer forger.Close()
	rc, err := forger.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	// Not a request, so the kernel's rtnetlink socket, which also gets a
	// copy of what is sent to a group, ignores it.
	const forgedType = 0x3ffe
	msg := make([]byte, unix.NLMSG_HDRLEN)
	msg[0], msg[4], msg[5] = unix.NLMSG_HDRLEN, forgedType&0xff, forgedType>>8
	sendto := func(to *unix.SockaddrNetlink) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.Sendto(int(fd), msg, 0, to) }); err != nil {
			t.Fatal(err)
		}
		return serr
	}

	if err := sendto(&unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: c.PortID()}); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("forger's sendto port id %d: want ECONNREFUSED, got %v", c.PortID(), err)
	}
	if err := sendto(&unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_LINK - 1)}); err != nil {
		t.Fatalf("forger's sendto group %d: %v", unix.RTNLGRP_LINK, err)
	}
	msgs, err := c.Receive()
	if !errors.Is(err, ErrForged) {
		t.Fatalf("Receive of the forged multicast: want ErrForged, got %+v, %v", msgs, err)
	}
	t.Logf("forger's port id %d: %v", forger.PID(), err)

	// The socket still works, and the kernel's reply is not dropped.
	seq, err := c.Send(0x3fff, 0, EncodeStats())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs, err = c.Receive()
	if err != nil || len(msgs) != 1 || msgs[0].Seq != seq || !errors.Is(msgs[0].Err, unix.EOPNOTSUPP) {
		t.Fatalf("Receive after the forgery: want the kernel's EOPNOTSUPP for seq %d, got %+v, %v", seq, msgs, err)
	}
}
