package kmodtest

import (
	"errors"
	"testing"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestIntegrationForgedMessages: netlink lets a process with CAP_NET_ADMIN
// over a namespace send to any socket or group of the unit in it directly,
// bypassing the module. Such messages reach members and unconnected sockets
// like the module's own, told apart only by their source port id (the
// kernel's is 0); a socket connected to the kernel refuses forged unicast.
func TestIntegrationForgedMessages(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group = 12
	ns := newNetns(t)
	member := dial(t, unit, ns)
	member.join(group)
	forger := dial(t, unit, ns)

	// To a group: every member gets it, from the forger's port id. (The
	// kernel also hands it to port 0, where netlink_rcv_skb skips it: it is
	// not a request.)
	errno, err := forgeEvent(forger.nl, group)
	if err != nil || errno != 0 {
		t.Fatalf("sendto group %d as root: errno %d, %v", group, errno, err)
	}
	d, err := recvRaw(member.nl, replyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if d.fromPID != forger.pid() || d.fromGroup != 1<<(group-1) {
		t.Errorf("forged event from port id %d group mask %#x, want %d %#x", d.fromPID, d.fromGroup, forger.pid(), 1<<(group-1))
	}
	if _, err := parseEvent(d); err == nil {
		t.Errorf("parseEvent accepted a forged event")
	}
	t.Logf("forged EVENT reached the member from port id %d; a real one comes from port id 0", d.fromPID)

	// A genuine event for comparison.
	pub := dial(t, unit, ns)
	pub.publish(group, []byte("genuine"))
	if _, err := member.event(replyTimeout); err != nil {
		t.Fatalf("genuine event: %v", err)
	}

	// To a port id: an unconnected socket takes a fake reply.
	fake := nlMsg(msgEcho, 0, 1, body(attr(attrPayload, []byte("fake"))))
	to := func(pid uint32) error {
		rc, err := forger.nl.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.Sendto(int(fd), fake, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: pid})
		}); err != nil {
			t.Fatal(err)
		}
		return serr
	}
	if err := to(member.pid()); err != nil {
		t.Fatalf("sendto port id %d: %v", member.pid(), err)
	}
	if d, err := recvRaw(member.nl, replyTimeout); err != nil || d.fromPID != forger.pid() {
		t.Errorf("forged unicast: from port id %d, %v; want it delivered from %d", d.fromPID, err, forger.pid())
	}

	// A socket connected to the kernel refuses it, and still works.
	guarded := dial(t, unit, ns)
	rc, err := guarded.nl.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cerr = unix.Connect(int(fd), &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}); err != nil || cerr != nil {
		t.Fatalf("connect to the kernel: %v %v", err, cerr)
	}
	if err := to(guarded.pid()); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("sendto a socket connected to the kernel: %v, want ECONNREFUSED", err)
	}
	guarded.echo([]byte("still answered"))
	expectSilence(t, silenceWait, []string{"member", "connected socket", "forger"}, member.nl, guarded.nl, forger.nl)
}
