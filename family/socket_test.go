package family

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests use a real netlink socket on rtnetlink, which every kernel
// has, to check what needs the kernel but not the module: socket options,
// Close waking a reader, and a real NLMSG_ERROR on the receive path.

func dialRoute(t *testing.T, cfg *Config) *Conn {
	t.Helper()
	if cfg == nil {
		cfg = &Config{}
	}
	c, err := dial(unix.NETLINK_ROUTE, cfg)
	if err != nil {
		t.Fatalf("dial rtnetlink: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func getsockopt(t *testing.T, c *Conn, level, opt int) int {
	t.Helper()
	rc, err := c.nc.SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatalf("Control: %v", err)
	}
	if serr != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, opt, serr)
	}
	return v
}

func TestDialSocketOptions(t *testing.T) {
	const size = 3 << 20
	c := dialRoute(t, &Config{ReadBuffer: size})
	for _, opt := range []int{unix.NETLINK_EXT_ACK, unix.NETLINK_BROADCAST_ERROR} {
		if got := getsockopt(t, c, unix.SOL_NETLINK, opt); got != 1 {
			t.Errorf("netlink option %d: want 1, got %d", opt, got)
		}
	}
	// The kernel doubles the size it is given for its bookkeeping; without
	// CAP_NET_ADMIN the fallback is capped by net.core.rmem_max.
	want := size
	if os.Geteuid() != 0 {
		b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
		if err != nil {
			t.Fatalf("read rmem_max: %v", err)
		}
		max, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		want = min(size, max)
	}
	if got := getsockopt(t, c, unix.SOL_SOCKET, unix.SO_RCVBUF); got != 2*want {
		t.Errorf("SO_RCVBUF: want %d, got %d", 2*want, got)
	}
}

func TestCloseUnblocksReceive(t *testing.T) {
	c := dialRoute(t, nil)
	done := make(chan error, 1)
	go func() {
		_, err := c.Receive()
		done <- err
	}()
	// Give the reader a moment to block; if Close wins the race Receive
	// fails at once, which the test accepts as well.
	time.Sleep(50 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Receive during Close: want %v, got %v", net.ErrClosed, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Receive still blocked 5s after Close")
	}
	if _, err := c.Receive(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Receive after Close: want %v, got %v", net.ErrClosed, err)
	}
	if _, err := c.Send(MsgStats, 0, EncodeStats()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: want %v, got %v", net.ErrClosed, err)
	}
	if err := c.SendSeq(1, MsgStats, EncodeStats()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SendSeq after Close: want %v, got %v", net.ErrClosed, err)
	}
}

func TestReadDeadline(t *testing.T) {
	c := dialRoute(t, nil)
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	_, err := c.Receive()
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Receive past the deadline: want %v, got %v", os.ErrDeadlineExceeded, err)
	}
}

// TestReceiveRealRejection sends rtnetlink a type it does not know; the
// kernel answers with an NLMSG_ERROR datagram carrying the sequence number,
// which Receive must return as a message, not fail with.
func TestReceiveRealRejection(t *testing.T) {
	c := dialRoute(t, nil)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	const unknownType = 0x3fff
	seq, err := c.Send(unknownType, 0, EncodeStats())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs, err := c.Receive()
	if err != nil {
		t.Fatalf("Receive: want the rejection as a message, got error %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("Receive: want 1 message, got %+v", msgs)
	}
	var e *Error
	if !errors.As(msgs[0].Err, &e) {
		t.Fatalf("Message.Err: want *Error, got %T %v", msgs[0].Err, msgs[0].Err)
	}
	if e.Errno != unix.EOPNOTSUPP || e.Seq != seq || msgs[0].Seq != seq {
		t.Errorf("rejection: want EOPNOTSUPP for seq %d, got %+v (message seq %d)", seq, e, msgs[0].Seq)
	}
}
