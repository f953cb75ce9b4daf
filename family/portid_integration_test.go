package family

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/nsbroker/nsbroker/internal/testenv"
)

// TestIntegrationSenderPortIDNamesNoProcess: a tenant that joins a group in
// its namespace reads the publisher's port id in every event. Published
// through a Dial socket, as the daemon publishes, it must not be the
// publisher's pid. The publisher's socket is the first in a fresh
// namespace, so the kernel's autobind would have given it the pid: the
// tenant's own socket, bound by the kernel after it, gets exactly that.
func TestIntegrationSenderPortIDNamesNoProcess(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	const group = 11
	pid := uint32(os.Getpid())

	pub := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	tenant, err := netlink.Dial(unit, &netlink.Config{NetNS: int(ns)})
	if err != nil {
		t.Fatalf("tenant's socket: %v", err)
	}
	defer tenant.Close()
	if got := tenant.PID(); got != pid {
		t.Fatalf("the tenant's socket, bound by the kernel: want port id %d (the pid, which the publisher left free), got %d", pid, got)
	}
	if err := tenant.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	if err := tenant.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}

	if _, err := pub.Publish(group, []byte("who sent this")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	msgs, err := tenant.Receive()
	if err != nil {
		t.Fatalf("tenant's Receive: %v", err)
	}
	if len(msgs) != 1 || msgs[0].Header.Type != netlink.HeaderType(MsgEvent) {
		t.Fatalf("tenant received %+v, want one EVENT", msgs)
	}
	ev, err := decodeEvent(msgs[0].Data, false)
	if err != nil {
		t.Fatalf("decode the tenant's event: %v", err)
	}
	if ev.SenderPortID != pub.PortID() {
		t.Errorf("event's sender port id %d: want the publisher's, %d", ev.SenderPortID, pub.PortID())
	}
	if ev.SenderPortID == pid || ev.SenderPortID < portIDMin {
		t.Errorf("event's sender port id %d: want one of %#x and up, never the publisher's pid %d", ev.SenderPortID, portIDMin, pid)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", ev.SenderPortID)); err == nil {
		t.Errorf("event's sender port id %d names a process", ev.SenderPortID)
	}
	t.Logf("publisher pid %d; the event names port id %#x", pid, ev.SenderPortID)
}
