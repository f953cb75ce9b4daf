package kmodtest

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// replyTimeout bounds every wait for something the kernel has already
// queued: replies and events are queued before the sending call returns, so
// only a broken module makes it expire.
const replyTimeout = 10 * time.Second

// conn is one netlink socket to the module, opened in one namespace.
type conn struct {
	t         testing.TB
	nl        *netlink.Conn
	closeOnce sync.Once
}

// dial opens a socket to the module on unit in namespace ns (netns.None()
// for the caller's own), with extended ACKs on, closed when the test ends.
func dial(t testing.TB, unit int, ns netns.NsHandle) *conn {
	t.Helper()
	cfg := &netlink.Config{}
	if ns.IsOpen() {
		cfg.NetNS = int(ns)
	}
	nl, err := netlink.Dial(unit, cfg)
	if err != nil {
		t.Fatalf("dial unit %d in %v: %v", unit, ns, err)
	}
	c := &conn{t: t, nl: nl}
	t.Cleanup(c.close)
	if err := nl.SetOption(netlink.ExtendedAcknowledge, true); err != nil {
		t.Fatalf("NETLINK_EXT_ACK: %v", err)
	}
	return c
}

// close closes the socket; later calls do nothing.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		if err := c.nl.Close(); err != nil {
			c.t.Errorf("close netlink socket: %v", err)
		}
	})
}

// in returns c reporting failures to t, for use inside subtests.
func (c *conn) in(t testing.TB) *conn { return &conn{t: t, nl: c.nl} }

func (c *conn) pid() uint32 { return c.nl.PID() }

// netnsCookie reads SO_NETNS_COOKIE: the kernel's cookie of the namespace
// the socket lives in, an answer independent of the module.
func (c *conn) netnsCookie() uint64 {
	c.t.Helper()
	rc, err := c.nl.SyscallConn()
	if err != nil {
		c.t.Fatal(err)
	}
	var cookie uint64
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	}); err != nil {
		c.t.Fatal(err)
	}
	if serr != nil {
		c.t.Fatalf("getsockopt SO_NETNS_COOKIE: %v", serr)
	}
	return cookie
}

// request sends one request of type typ and returns its single reply, which
// must carry the same type, the request's sequence number and this socket's
// port id. Errors from the module come back as *netlink.OpError.
func (c *conn) request(typ uint16, flags netlink.HeaderFlags, body []byte) (attrSet, error) {
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | flags},
		Data:   body,
	}
	if err := c.nl.SetReadDeadline(time.Now().Add(replyTimeout)); err != nil {
		return nil, err
	}
	msgs, err := c.nl.Execute(req)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("%d replies to one request, want 1", len(msgs))
	}
	m := msgs[0]
	if uint16(m.Header.Type) != typ || m.Header.PID != c.pid() || m.Header.Flags != 0 {
		return nil, fmt.Errorf("reply header type %d pid %d flags %#x, want type %d pid %d flags 0",
			m.Header.Type, m.Header.PID, m.Header.Flags, typ, c.pid())
	}
	return parseBody(m)
}

func (c *conn) mustRequest(typ uint16, body []byte) attrSet {
	c.t.Helper()
	a, err := c.request(typ, 0, body)
	if err != nil {
		c.t.Fatalf("request type %d: %v", typ, err)
	}
	return a
}

// echo sends ECHO, with NSB_A_PAYLOAD unless payload is nil.
func (c *conn) echo(payload []byte) attrSet {
	c.t.Helper()
	if payload == nil {
		return c.mustRequest(msgEcho, body())
	}
	return c.mustRequest(msgEcho, body(attr(attrPayload, payload)))
}

// publish sends PUBLISH to group and checks the reply names the group.
func (c *conn) publish(group uint32, payload []byte) attrSet {
	c.t.Helper()
	a := c.mustRequest(msgPublish, body(attr(attrGroup, u32(group)), attr(attrPayload, payload)))
	if got := a.u32(c.t, attrGroup); got != group {
		c.t.Fatalf("PUBLISH reply group = %d, want %d", got, group)
	}
	return a
}

// stats is a decoded STATS reply.
type stats struct {
	counters   map[uint16]uint64 // by NSB_STATS_A_*
	instances  uint32
	inum       uint32
	instanceID uint64
}

func (c *conn) stats() stats {
	c.t.Helper()
	a := c.mustRequest(msgStats, body())
	nest, err := parseAttrs(a.bytes(c.t, attrStats), statsPad)
	if err != nil {
		c.t.Fatalf("NSB_A_STATS: %v", err)
	}
	s := stats{
		counters:   map[uint16]uint64{},
		instances:  a.u32(c.t, attrInstances),
		inum:       a.u32(c.t, attrNetnsInum),
		instanceID: a.u64(c.t, attrInstanceID),
	}
	if len(a) != 4 {
		c.t.Fatalf("STATS reply has attributes %v, want exactly STATS INSTANCES NETNS_INUM INSTANCE_ID", a)
	}
	for typ := statsEcho; typ <= statsMax; typ++ {
		s.counters[typ] = nest.u64(c.t, typ)
	}
	if len(nest) != len(s.counters) {
		c.t.Fatalf("NSB_A_STATS holds %d counters, want %d: %v", len(nest), len(s.counters), nest)
	}
	return s
}

// join subscribes the socket to a multicast group.
func (c *conn) join(group uint32) {
	c.t.Helper()
	if err := c.nl.JoinGroup(group); err != nil {
		c.t.Fatalf("join group %d: %v", group, err)
	}
}

// event receives the next datagram, which must be exactly one EVENT sent
// by the kernel to the group it names.
func (c *conn) event(timeout time.Duration) (attrSet, error) {
	d, err := recvRaw(c.nl, timeout)
	if err != nil {
		return nil, err
	}
	return parseEvent(d)
}

// parseEvent checks that a datagram is one EVENT from the kernel (source
// port id 0) addressed to the group it names, and decodes it.
func parseEvent(d datagram) (attrSet, error) {
	msgs, err := parseMessages(d.data)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 || uint16(msgs[0].Header.Type) != msgEvent {
		return nil, fmt.Errorf("received %+v, want one EVENT", msgs)
	}
	if h := msgs[0].Header; h.PID != 0 || h.Sequence != 0 || h.Flags != 0 {
		return nil, fmt.Errorf("EVENT header pid %d seq %d flags %#x, want all 0", h.PID, h.Sequence, h.Flags)
	}
	a, err := parseBody(msgs[0])
	if err != nil {
		return nil, err
	}
	if d.fromPID != 0 {
		return nil, fmt.Errorf("EVENT from port id %d, not from the kernel (0)", d.fromPID)
	}
	if g, ok := a[attrGroup]; ok && len(g) == 4 && d.fromGroup != 1<<(ne.Uint32(g)-1) {
		return nil, fmt.Errorf("EVENT of group %d addressed to group mask %#x", ne.Uint32(g), d.fromGroup)
	}
	return a, nil
}

// rawSock is what the raw helpers need of a socket: mdlayher/netlink's and
// mdlayher/socket's connections both qualify.
type rawSock interface {
	SyscallConn() (syscall.RawConn, error)
	SetReadDeadline(time.Time) error
}

// sendRaw sends b as one datagram to the kernel (port 0).
func sendRaw(s rawSock, b []byte) error {
	rc, err := s.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

// datagram is one received datagram.
type datagram struct {
	data, oob []byte
	fromPID   uint32 // sender's port id; 0 is the kernel
	fromGroup uint32 // group mask it was sent to; 0 for unicast
}

// recvRaw receives one datagram, its control messages and its source
// address, waiting at most timeout; it returns os.ErrDeadlineExceeded when
// nothing arrived.
func recvRaw(s rawSock, timeout time.Duration) (datagram, error) {
	rc, err := s.SyscallConn()
	if err != nil {
		return datagram{}, err
	}
	if err := s.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return datagram{}, err
	}
	buf := make([]byte, 1<<18)
	oob := make([]byte, 256)
	var n, oobn, flags int
	var from unix.Sockaddr
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			// MSG_DONTWAIT: the runtime poller does the waiting, and a
			// signal cannot cut a non-blocking call short.
			n, oobn, flags, from, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_DONTWAIT)
			if rerr != unix.EINTR {
				return rerr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return datagram{}, err
	}
	if rerr != nil {
		return datagram{}, os.NewSyscallError("recvmsg", rerr)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return datagram{}, fmt.Errorf("recvmsg truncated a datagram of %d bytes (flags %#x)", n, flags)
	}
	d := datagram{data: buf[:n], oob: oob[:oobn]}
	if sa, ok := from.(*unix.SockaddrNetlink); ok {
		d.fromPID, d.fromGroup = sa.Pid, sa.Groups
	}
	return d, nil
}

// recvMessages receives one datagram and splits it into messages.
func recvMessages(s rawSock, timeout time.Duration) ([]netlink.Message, error) {
	d, err := recvRaw(s, timeout)
	if err != nil {
		return nil, err
	}
	return parseMessages(d.data)
}

// isTimeout reports whether err says a read deadline passed.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// expectSilence fails the test if any of the sockets receives anything
// within wait. Nothing signals "no message will come", so this is the one
// place the suite waits out a clock; all sockets wait in parallel.
func expectSilence(t testing.TB, wait time.Duration, names []string, socks ...rawSock) {
	t.Helper()
	errs := make([]error, len(socks))
	var wg sync.WaitGroup
	for i, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := recvRaw(s, wait)
			switch {
			case isTimeout(err):
			case err != nil:
				errs[i] = err
			default:
				msgs, perr := parseMessages(d.data)
				errs[i] = fmt.Errorf("received %d bytes from port id %d %+v (parse error %v), want nothing",
					len(d.data), d.fromPID, msgs, perr)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", names[i], err)
		}
	}
}
