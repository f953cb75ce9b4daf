package kmodtest

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/socket"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// listenEvent is an EVENT received with its NETLINK_LISTEN_ALL_NSID control
// message, if the kernel attached one.
type listenEvent struct {
	attrs attrSet
	nsid  int32
	has   bool // a NETLINK_LISTEN_ALL_NSID control message was attached
}

// recvListenEvent receives one EVENT and the nsid of the namespace it came
// from, which the kernel attaches to events from other namespaces only.
func recvListenEvent(t *testing.T, who string, s rawSock) listenEvent {
	t.Helper()
	d, err := recvRaw(s, replyTimeout)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	a, err := parseEvent(d)
	if err != nil {
		t.Fatalf("%s: %v", who, err)
	}
	ev := listenEvent{attrs: a}
	cmsgs, err := unix.ParseSocketControlMessage(d.oob)
	if err != nil {
		t.Fatalf("%s: control messages: %v", who, err)
	}
	for _, cm := range cmsgs {
		if cm.Header.Level != unix.SOL_NETLINK || cm.Header.Type != unix.NETLINK_LISTEN_ALL_NSID || len(cm.Data) < 4 {
			t.Fatalf("%s: unexpected control message level %d type %d", who, cm.Header.Level, cm.Header.Type)
		}
		ev.nsid, ev.has = int32(ne.Uint32(cm.Data[:4])), true
	}
	return ev
}

// expectListenEvent receives one EVENT and checks where it came from.
func expectListenEvent(t *testing.T, who string, s rawSock, want sent, wantNsid int32, wantHas bool) {
	t.Helper()
	ev := recvListenEvent(t, who, s)
	checkEvent(t, who, ev.attrs, want)
	if ev.has != wantHas || ev.nsid != wantNsid {
		t.Errorf("%s: nsid control message present=%v nsid=%d, want present=%v nsid=%d", who, ev.has, ev.nsid, wantHas, wantNsid)
	}
	t.Logf("%s: event seq %d from inode %d, nsid control message present=%v nsid=%d", who, want.seq, want.inum, ev.has, ev.nsid)
}

// assignNsid gives the namespace h an nsid in the caller's namespace with
// RTM_NEWNSID (what `ip netns set` does) and returns it.
func assignNsid(t *testing.T, h netns.NsHandle) int32 {
	t.Helper()
	rt, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for id := int32(100); id < 200; id++ {
		ae := netlink.NewAttributeEncoder()
		ae.Uint32(unix.NETNSA_FD, uint32(h))
		ae.Int32(unix.NETNSA_NSID, id)
		attrs, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		// struct rtgenmsg, padded to 4 bytes, then the attributes.
		data := append([]byte{unix.AF_UNSPEC, 0, 0, 0}, attrs...)
		_, err = rt.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.RTM_NEWNSID, Flags: netlink.Request | netlink.Acknowledge},
			Data:   data,
		})
		if errors.Is(err, unix.EEXIST) {
			continue // the id is taken by another namespace
		}
		if err != nil {
			t.Fatalf("RTM_NEWNSID: %v", err)
		}
		return id
	}
	t.Fatal("no free nsid in 100..199")
	return 0
}

// passedSocket has an unprivileged child open a socket to the module and
// hand it over, so that the socket's file carries nobody's credentials
// while this (privileged) process configures it.
func passedSocket(t *testing.T, unit int) *socket.Conn {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine := os.NewFile(uintptr(pair[0]), "fdpass-parent")
	defer mine.Close()
	theirs := os.NewFile(uintptr(pair[1]), "fdpass-child")
	runUnprivileged(t, unit, childFDPass, theirs)
	theirs.Close()

	// The child has exited: what it sent is queued.
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(pair[0], buf, oob, unix.MSG_DONTWAIT)
	if err != nil {
		t.Fatalf("receive the child's socket: %v", err)
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(cmsgs) != 1 {
		t.Fatalf("child's control messages: %d, %v", len(cmsgs), err)
	}
	fds, err := unix.ParseUnixRights(&cmsgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("child's SCM_RIGHTS: %v, %v", fds, err)
	}
	unix.CloseOnExec(fds[0])
	s, err := socket.New(fds[0], "netlink")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listenAll turns on NETLINK_LISTEN_ALL_NSID and joins group.
func listenAll(t *testing.T, rc rawSock, group int) {
	t.Helper()
	c, err := rc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_LISTEN_ALL_NSID, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, group)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("NETLINK_LISTEN_ALL_NSID and join group %d: %v", group, serr)
	}
}

// TestIntegrationListenAllNsid: the kernel's one path across namespaces. A
// socket in the initial namespace with NETLINK_LISTEN_ALL_NSID receives a
// group's events from namespace A only once A has an nsid in the initial
// namespace, only if the socket's opener is privileged over A, and with
// that nsid in a control message. Sockets without the option never see A.
func TestIntegrationListenAllNsid(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group = 20

	nsA := newNetns(t)
	inA, inInit := inode(t, nsA), initInode(t)

	all := dial(t, unit, netns.None()) // root, LISTEN_ALL_NSID
	listenAll(t, all.nl, group)
	plain := dial(t, unit, netns.None()) // root, no LISTEN_ALL_NSID
	plain.join(group)
	weak := passedSocket(t, unit) // opened by nobody, LISTEN_ALL_NSID set by root
	listenAll(t, weak, group)
	pubA, pubInit := dial(t, unit, nsA), dial(t, unit, netns.None())

	// publishInit publishes in the initial namespace, whose group other
	// tests may have used: the expected number comes from the reply.
	publishInit := func(payload string) sent {
		t.Helper()
		before := time.Now().UnixNano()
		r := pubInit.publish(group, []byte(payload))
		s := sent{group: group, seq: r.u64(t, attrSeq), inum: inInit, portid: pubInit.pid(),
			payload: []byte(payload), notBefore: before, notAfter: time.Now().UnixNano()}
		if l := r.u32(t, attrListeners); l != 1 {
			t.Errorf("publish in the initial namespace: LISTENERS %d, want 1", l)
		}
		return s
	}

	// 1. A has no nsid: nobody outside A is eligible, so A's group has no
	// listener at all.
	publishChecked(t, pubA, inA, group, 1, 0, "A before nsid")
	i1 := publishInit("initial #1")
	// Each socket's next event is the initial namespace's: A's seq 1 never came.
	expectListenEvent(t, "LISTEN_ALL_NSID socket", all.nl, i1, 0, false)
	expectListenEvent(t, "plain socket", plain.nl, i1, 0, false)
	expectListenEvent(t, "LISTEN_ALL_NSID socket opened by nobody", weak, i1, 0, false)

	// 2. A gets an nsid: the privileged LISTEN_ALL_NSID socket receives A's
	// events, tagged with it; the others still do not.
	nsid := assignNsid(t, nsA)
	t.Logf("namespace A (inode %d) has nsid %d in the initial namespace (inode %d)", inA, nsid, inInit)
	a2 := publishChecked(t, pubA, inA, group, 2, 1, "A after nsid")
	expectListenEvent(t, "LISTEN_ALL_NSID socket", all.nl, a2, nsid, true)

	i2 := publishInit("initial #2")
	expectListenEvent(t, "LISTEN_ALL_NSID socket", all.nl, i2, 0, false)
	expectListenEvent(t, "plain socket", plain.nl, i2, 0, false)
	expectListenEvent(t, "LISTEN_ALL_NSID socket opened by nobody", weak, i2, 0, false)

	expectSilence(t, silenceWait, []string{"LISTEN_ALL_NSID socket", "plain socket", "LISTEN_ALL_NSID socket opened by nobody"},
		all.nl, plain.nl, weak)
}
