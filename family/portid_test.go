package family

import (
	"errors"
	"os"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// withPortIDs makes randomPortID draw ids in turn, the last one forever.
func withPortIDs(t *testing.T, ids ...uint32) {
	t.Helper()
	orig := randomPortID
	t.Cleanup(func() { randomPortID = orig })
	randomPortID = func() uint32 {
		id := ids[0]
		if len(ids) > 1 {
			ids = ids[1:]
		}
		return id
	}
}

// TestDialPortIDIsNoPid: a socket Dial opens names no process. dial does
// the same on every unit; rtnetlink needs no module.
func TestDialPortIDIsNoPid(t *testing.T) {
	c, err := dial(unix.NETLINK_ROUTE, &Config{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	id := c.PortID()
	if id < portIDMin || id >= portIDMin+portIDCount {
		t.Errorf("port id %#x: want %#x..%#x", id, portIDMin, portIDMin+portIDCount-1)
	}
	if id == uint32(os.Getpid()) {
		t.Errorf("port id %d is the process id", id)
	}
}

// TestDialPortIDTaken: a port id in use is drawn again.
func TestDialPortIDTaken(t *testing.T) {
	const taken, free = portIDMin + 0x1234, portIDMin + 0x5678
	holder, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{PID: taken})
	if err != nil {
		t.Fatalf("bind port id %#x: %v", taken, err)
	}
	defer holder.Close()

	withPortIDs(t, taken, taken, free)
	c, err := dial(unix.NETLINK_ROUTE, &Config{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if got := c.PortID(); got != free {
		t.Errorf("port id: want %#x (after two draws of the taken %#x), got %#x", free, taken, got)
	}

	withPortIDs(t, taken)
	if c, err := dial(unix.NETLINK_ROUTE, &Config{}); !errors.Is(err, unix.EADDRINUSE) {
		if c != nil {
			c.Close()
		}
		t.Errorf("dial with only the taken port id to draw: want EADDRINUSE, got %v", err)
	}
}
