package family

import (
	"encoding/binary"
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

// TestReceiveOneRecvmsgPerDatagram counts the recvmsg calls of Receive on
// a real socket: one for a datagram already queued (the kernel answers
// during sendmsg), where netlink.Conn without a fixed buffer makes two (a
// MSG_PEEK to size the buffer, then the read); and one more, which finds
// the socket empty, for a reader that has to wait.
func TestReceiveOneRecvmsgPerDatagram(t *testing.T) {
	c := dialRoute(t, nil)
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	const unknownType = 0x3fff
	seq, err := c.Send(unknownType, 0, EncodeStats())
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	before := recvmsgCalls.Load()
	msgs, err := c.Receive()
	if err != nil || len(msgs) != 1 || msgs[0].Seq != seq {
		t.Fatalf("Receive: want the rejection of seq %d, got %+v, %v", seq, msgs, err)
	}
	if n := recvmsgCalls.Load() - before; n != 1 {
		t.Errorf("recvmsg calls for a queued datagram: want 1, got %d", n)
	}

	// A reader that waits: its first recvmsg finds nothing, the datagram
	// sent meanwhile takes one more.
	got := make(chan error, 1)
	before = recvmsgCalls.Load()
	go func() {
		_, err := c.Receive()
		got <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for recvmsgCalls.Load() == before { // until the reader has found the socket empty
		if time.Now().After(deadline) {
			t.Fatal("the reader made no recvmsg call within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := c.Send(unknownType, 0, EncodeStats()); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if n := recvmsgCalls.Load() - before; n != 2 {
		t.Errorf("recvmsg calls for a reader that waited: want 2, got %d", n)
	}
}

// TestDecodeDatagramCutMessage: a message whose length runs past the
// datagram is reported, not read out of bounds.
func TestDecodeDatagramCutMessage(t *testing.T) {
	b := make([]byte, 0, 64)
	// One message whose length runs past the datagram.
	b = binary.NativeEndian.AppendUint32(b, 64)
	b = append(b, make([]byte, 12)...)
	if _, err := decodeDatagram(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("decodeDatagram of a cut message: want ErrMalformed, got %v", err)
	}
}
