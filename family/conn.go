package family

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// UnitParam is where the loaded module publishes its netlink unit.
const UnitParam = "/sys/module/nsbroker/parameters/unit"

// Config configures Dial. A nil *Config means the zero Config.
type Config struct {
	// Unit is the netlink unit of the module. Zero means: read UnitParam,
	// or DefaultUnit if the module is not loaded (opening the socket then
	// lets the kernel autoload it).
	Unit int
	// NetNS is a file descriptor of the network namespace to open the
	// socket in; zero means the calling thread's. The socket stays in that
	// namespace for its whole life.
	NetNS int
	// ReadBuffer, if positive, is the socket receive buffer size in bytes.
	// It is set with SO_RCVBUFFORCE, which ignores net.core.rmem_max but
	// needs CAP_NET_ADMIN, and with SO_RCVBUF (capped) otherwise.
	ReadBuffer int
}

// Message is one message read by Receive.
type Message struct {
	// Seq is the netlink sequence number: that of the request for a reply
	// or rejection, zero for an event.
	Seq uint32
	// Type is the netlink message type: MsgEcho, MsgPublish, MsgStats or
	// MsgGroups for replies and their rejections, MsgEvent for events, and
	// unix.NLMSG_ERROR for rejections and acknowledgements
	// (netlink.Acknowledge) whose request type is unknown.
	Type uint16
	// Reply is *EchoReply, *PublishReply, *Stats, *GroupSeqs or *Event,
	// or nil when Err is set or the message acknowledges a request.
	Reply any
	// Err is the kernel's rejection of request Seq (an *Error), or why the
	// message could not be decoded.
	Err error
}

// Conn is a netlink socket to the module's kernel socket in one network
// namespace.
//
// Send (or SendSeq) and Receive may be used concurrently: a multiplexer
// runs one goroutine in Receive and sends from many, matching replies to
// requests by sequence number. The synchronous helpers Echo, Publish and Stats read
// replies themselves, so they must not be mixed with a concurrent Receive
// and are not for a Conn that joined groups: they discard the events they
// read while waiting.
type Conn struct {
	nc *netlink.Conn
	// raw is the socket's descriptor for sendDatagram and readDatagram;
	// nil for a fake socket, which is used through nc.
	raw syscall.RawConn
	// dgram is what Receive reads from for a Conn made by
	// NewDatagramConn; nil otherwise.
	dgram DatagramReader
	// seq is the last sequence number Send used.
	seq atomic.Uint32
	// syncMu serialises the synchronous helpers, so that each reads its own
	// reply.
	syncMu sync.Mutex
	// closed is set by Close, so that the errors of a socket closed on
	// purpose can be told from failures.
	closed atomic.Bool
}

// Dial opens a socket to the module, with two options on: extended
// acknowledgements, so that rejections carry the module's explanation, and
// broadcast errors, so that an event this socket's full receive buffer
// drops is reported to the module, which counts it as an overrun (without
// the option the kernel reports it as if the group had no member).
//
// The socket is connected to the kernel (port id 0), so the kernel refuses
// any other socket's unicast to it with ECONNREFUSED; it still receives
// the multicast of the groups it joins, and Receive drops whatever did not
// come from the kernel (ErrForged).
//
// The socket is bound to a random port id of 2^31 and up rather than the
// one the kernel would choose, the process id: the events it publishes
// carry its port id to every member of the group (Event.SenderPortID), and
// must not tell them the publisher's pid.
func Dial(cfg *Config) (*Conn, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	unit := cfg.Unit
	if unit == 0 {
		var err error
		if unit, err = moduleUnit(UnitParam); err != nil {
			return nil, err
		}
	}
	if unit < UnitMin || unit > UnitMax {
		return nil, fmt.Errorf("nsbroker: netlink unit %d outside %d..%d", unit, UnitMin, UnitMax)
	}
	return dial(unit, cfg)
}

// moduleUnit reads the unit the loaded module uses from path, or returns
// DefaultUnit if the module is not loaded.
func moduleUnit(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return DefaultUnit, nil
	}
	if err != nil {
		return 0, fmt.Errorf("nsbroker: read module unit: %w", err)
	}
	unit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("nsbroker: parse %s: %w", path, err)
	}
	return unit, nil
}

// Port ids from portIDMin up are never process ids (pid_max is at most
// 2^22), and never what the kernel's autobind picks first: the process's
// id. The module puts the publisher's port id into every EVENT
// (AttrSenderPortID), which every member of the group in the namespace
// reads; a socket bound to the default port id would tell them the pid of
// the process that published, the daemon's in the daemon's case.
const (
	portIDMin   = 0x80000000
	portIDCount = 0x7ffff000 // up to 0xffffefff, below the kernel's autobind rover
	// portIDTries bounds the draws when a port id is in use already.
	portIDTries = 32
)

// randomPortID draws a port id for bind.
var randomPortID = func() uint32 { return portIDMin + rand.Uint32N(portIDCount) }

// dialRandomPortID opens a socket bound to a random port id of the upper
// half, drawing again if one is taken in the namespace.
func dialRandomPortID(unit int, netns int) (*netlink.Conn, error) {
	var err error
	for range portIDTries {
		var nc *netlink.Conn
		nc, err = netlink.Dial(unit, &netlink.Config{NetNS: netns, PID: randomPortID()})
		if err == nil {
			return nc, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			return nil, err
		}
	}
	return nil, err
}

// dial opens and configures a socket on any netlink unit; Dial checks that
// the unit is one the module may use.
func dial(unit int, cfg *Config) (*Conn, error) {
	nc, err := dialRandomPortID(unit, cfg.NetNS)
	if err != nil {
		return nil, fmt.Errorf("nsbroker: dial netlink unit %d: %w", unit, err)
	}
	for _, o := range []netlink.ConnOption{netlink.ExtendedAcknowledge, netlink.BroadcastError} {
		if err := nc.SetOption(o, true); err != nil {
			nc.Close()
			return nil, fmt.Errorf("nsbroker: set socket option %d: %w", o, err)
		}
	}
	if cfg.ReadBuffer > 0 {
		if err := setReadBuffer(nc, cfg.ReadBuffer); err != nil {
			nc.Close()
			return nil, fmt.Errorf("nsbroker: set receive buffer: %w", err)
		}
	}
	if err := connectKernel(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nsbroker: connect to the kernel: %w", err)
	}
	c, err := newConn(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nsbroker: %w", err)
	}
	return c, nil
}

// connectKernel connects the socket to the kernel's (port id 0, no
// group). netlink then delivers unicast to it only from the kernel: the
// unicast of any other socket fails in the sender with ECONNREFUSED.
// Multicast is not affected, in either direction.
func connectKernel(nc *netlink.Conn) error {
	rc, err := nc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Connect(int(fd), &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}); err != nil {
		return err
	}
	return serr
}

// setReadBuffer sets the receive buffer with SO_RCVBUFFORCE, falling back
// to SO_RCVBUF, capped by net.core.rmem_max, without CAP_NET_ADMIN.
func setReadBuffer(nc *netlink.Conn, n int) error {
	rc, err := nc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if serr == nil {
		return nil
	}
	return nc.SetReadBuffer(n)
}

// newConn wraps the netlink connection of a real socket, which Receive
// reads and checks datagram by datagram.
func newConn(nc *netlink.Conn) (*Conn, error) {
	rc, err := nc.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &Conn{nc: nc, raw: rc}, nil
}

// NetnsCookie returns the cookie of the network namespace the socket
// lives in (SO_NETNS_COOKIE, Linux 5.14 and later): what
// nsmgr.Namespace.Cookie would otherwise create a socket in the namespace
// to learn. A fake socket has none.
func (c *Conn) NetnsCookie() (uint64, error) {
	if c.raw == nil {
		return 0, errors.New("nsbroker: a fake socket has no network namespace cookie")
	}
	var cookie uint64
	var gerr error
	if err := c.raw.Control(func(fd uintptr) {
		cookie, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	}); err != nil {
		return 0, err
	}
	if gerr != nil {
		return 0, os.NewSyscallError("getsockopt SO_NETNS_COOKIE", gerr)
	}
	return cookie, nil
}

// NewDatagramConn wraps a netlink connection over a fake socket that says
// who sent each datagram: Receive reads through r.ReceiveDatagram, and
// checks and decodes what it reads as it does a real socket's; everything
// else goes through nc.
func NewDatagramConn(nc *netlink.Conn, r DatagramReader) *Conn {
	return &Conn{nc: nc, dgram: r}
}

// Close closes the socket and unblocks a Receive in progress. Receive and
// Send then fail with an error matching net.ErrClosed.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.nc.Close()
}

// closedError replaces the error of an operation on a closed socket by
// net.ErrClosed.
func (c *Conn) closedError(op string, err error) error {
	if c.closed.Load() {
		return fmt.Errorf("nsbroker %s: %w", op, net.ErrClosed)
	}
	return err
}

// PortID returns the socket's netlink port id, which events this Conn
// publishes carry as SenderPortID. Dial binds to a random port id of
// 2^31 and up, so that it names no process.
func (c *Conn) PortID() uint32 { return c.nc.PID() }

// SetReadDeadline sets the time after which a blocked Receive, and the
// synchronous helpers waiting for a reply, fail with a timeout. A zero t
// means no deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// JoinGroup subscribes the socket to the events of group (1..Groups) in its
// namespace.
func (c *Conn) JoinGroup(group uint32) error {
	if err := CheckGroup(group); err != nil {
		return err
	}
	return c.nc.JoinGroup(group)
}

// LeaveGroup ends the socket's subscription to group.
func (c *Conn) LeaveGroup(group uint32) error {
	if err := CheckGroup(group); err != nil {
		return err
	}
	return c.nc.LeaveGroup(group)
}

// ErrZeroSeq is returned by SendSeq for sequence number zero, which
// netlink.Conn would replace by one of its own and which events carry.
var ErrZeroSeq = errors.New("nsbroker: sequence number 0")

// Send sends a request of type typ with body data (from EncodeEcho and the
// like) and returns the sequence number its reply or rejection will carry.
// netlink.Request is always set; flags may add netlink.Acknowledge. Send is
// safe for concurrent use, also with Receive.
//
// The reply may be received before Send returns: a multiplexer that files
// pending requests by sequence number uses SendSeq instead.
func (c *Conn) Send(typ uint16, flags netlink.HeaderFlags, data []byte) (uint32, error) {
	seq := c.nextSeq()
	if err := c.send(seq, typ, flags, data); err != nil {
		return 0, err
	}
	return seq, nil
}

// SendSeq sends a request of type typ with body data under a sequence
// number the caller chose, which must not be zero. A multiplexer files its
// pending request under seq before sending, so that the reply, which may
// arrive before SendSeq returns, always finds it. Sequence numbers only
// have to be unique among the requests in flight on this Conn; callers
// mixing SendSeq and Send must keep their numbers apart. SendSeq is safe
// for concurrent use, also with Receive.
func (c *Conn) SendSeq(seq uint32, typ uint16, data []byte) error {
	if seq == 0 {
		return ErrZeroSeq
	}
	return c.send(seq, typ, 0, data)
}

// BatchBytes bounds the datagrams SendBatch builds: well below the
// socket's send buffer, beyond which the kernel refuses a datagram
// (EMSGSIZE), and the kernel copies each datagram whole before handling
// its first message.
const BatchBytes = 64 << 10

// Request is one message of SendBatch: a request of type Type with body
// Data (from EncodePublish and the like) under sequence number Seq, which
// must not be zero.
type Request struct {
	Seq  uint32
	Type uint16
	Data []byte
}

// SendBatch sends reqs in order, as many as fit in BatchBytes in each
// datagram (a larger request alone in one). The kernel handles every
// message of a datagram in turn and answers each as if it had come alone:
// a request it refuses gets its rejection, and the ones after it are
// still handled. Like SendSeq it is for a multiplexer that files its
// requests before sending them. On an error, the datagrams before the one
// that failed were sent; sent says how many requests they held.
func (c *Conn) SendBatch(reqs []Request) (sent int, err error) {
	for _, r := range reqs {
		if r.Seq == 0 {
			return 0, ErrZeroSeq
		}
	}
	for sent < len(reqs) {
		n, size := nextBatch(reqs[sent:])
		if err := c.sendBatch(reqs[sent:sent+n], size); err != nil {
			return sent, err
		}
		sent += n
	}
	return sent, nil
}

// nextBatch returns how many of reqs, from the first, go into one
// datagram (at least one), and the datagram's size.
func nextBatch(reqs []Request) (n, size int) {
	for n < len(reqs) {
		m := nlmsgAlign(unix.NLMSG_HDRLEN + len(reqs[n].Data))
		if n > 0 && size+m > BatchBytes {
			break
		}
		n, size = n+1, size+m
	}
	return n, size
}

// sendBatch sends reqs, size bytes aligned, in one datagram.
func (c *Conn) sendBatch(reqs []Request, size int) error {
	if c.raw == nil {
		ms := make([]netlink.Message, len(reqs))
		for i, r := range reqs {
			ms[i] = netlink.Message{
				Header: netlink.Header{Type: netlink.HeaderType(r.Type), Flags: netlink.Request, Sequence: r.Seq},
				Data:   r.Data,
			}
		}
		if _, err := c.nc.SendMessages(ms); err != nil {
			return c.closedError("send", err)
		}
		return nil
	}
	b := make([]byte, 0, size)
	for _, r := range reqs {
		b = appendMessage(b, r.Type, netlink.Request, r.Seq, r.Data)
	}
	if err := sendBytes(c.raw, b); err != nil {
		return c.closedError("send", fmt.Errorf("nsbroker send: %w", err))
	}
	return nil
}

func (c *Conn) send(seq uint32, typ uint16, flags netlink.HeaderFlags, data []byte) error {
	if c.raw != nil {
		if err := sendDatagram(c.raw, typ, netlink.Request|flags, seq, data); err != nil {
			return c.closedError("send", fmt.Errorf("nsbroker send: %w", err))
		}
		return nil
	}
	_, err := c.nc.Send(netlink.Message{
		Header: netlink.Header{
			Type:     netlink.HeaderType(typ),
			Flags:    netlink.Request | flags,
			Sequence: seq,
		},
		Data: data,
	})
	if err != nil {
		return c.closedError("send", err)
	}
	return nil
}

// nextSeq returns the next sequence number, skipping zero, which is what
// events carry.
func (c *Conn) nextSeq() uint32 {
	for {
		if seq := c.seq.Add(1); seq != 0 {
			return seq
		}
	}
}

// Receive blocks until the socket receives a datagram and returns its
// messages decoded. A rejection or an undecodable message is a Message with
// Err set, not an error of Receive: Receive fails only when the socket
// does, for example with ErrDropped when the receive buffer overflowed
// (the socket stays usable), with a timeout after SetReadDeadline, or with
// net.ErrClosed after Close; and with ErrForged when it dropped a datagram
// that another socket sent, not the kernel (the socket stays usable).
func (c *Conn) Receive() ([]Message, error) {
	var b []byte
	var from uint32
	var err error
	if c.raw != nil {
		b, from, err = readDatagram(c.raw)
	} else {
		b, from, err = c.dgram.ReceiveDatagram()
	}
	if err != nil {
		return nil, c.closedError("receive", fmt.Errorf("nsbroker receive: %w", err))
	}
	if from != 0 {
		return nil, fmt.Errorf("%w: source port id %d", ErrForged, from)
	}
	return decodeDatagram(b)
}

// decodeMessage decodes one received message by its type. Payloads alias
// nm.Data: both readDatagram and netlink.Conn give every datagram a buffer
// of its own, which nothing reuses.
func decodeMessage(nm netlink.Message) Message {
	m := Message{Seq: nm.Header.Sequence, Type: uint16(nm.Header.Type)}
	switch m.Type {
	case MsgEcho:
		m.Reply, m.Err = reply(decodeEchoReply(nm.Data, true))
	case MsgPublish:
		m.Reply, m.Err = reply(DecodePublishReply(nm.Data))
	case MsgStats:
		m.Reply, m.Err = reply(DecodeStats(nm.Data))
	case MsgGroups:
		m.Reply, m.Err = reply(DecodeGroupSeqs(nm.Data))
	case MsgEvent:
		m.Reply, m.Err = reply(decodeEvent(nm.Data, true))
	case unix.NLMSG_ERROR:
		// netlink.Conn turns a non-zero errno into an error, so this is the
		// acknowledgement a request with netlink.Acknowledge asked for.
	default:
		m.Err = fmt.Errorf("%w %#x", ErrUnknownType, m.Type)
	}
	return m
}

// reply keeps a nil *T out of the Reply interface.
func reply[T any](r *T, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Echo sends payload and returns the module's reply, which names the
// namespace that answered. See Conn for when not to use it.
func (c *Conn) Echo(payload []byte) (*EchoReply, error) {
	b, err := EncodeEcho(payload)
	if err != nil {
		return nil, err
	}
	return roundTrip[EchoReply](c, "echo", MsgEcho, b)
}

// Publish multicasts payload to group in the socket's namespace and returns
// the event's sequence number. It needs CAP_NET_ADMIN in the namespace's
// user namespace. See Conn for when not to use it.
func (c *Conn) Publish(group uint32, payload []byte) (*PublishReply, error) {
	b, err := EncodePublish(group, payload)
	if err != nil {
		return nil, err
	}
	return roundTrip[PublishReply](c, "publish", MsgPublish, b)
}

// Stats returns the counters of the socket's namespace. See Conn for when
// not to use it.
func (c *Conn) Stats() (*Stats, error) {
	return roundTrip[Stats](c, "stats", MsgStats, EncodeStats())
}

// Groups returns the last sequence number of every group of the socket's
// namespace. See Conn for when not to use it.
func (c *Conn) Groups() (*GroupSeqs, error) {
	return roundTrip[GroupSeqs](c, "groups", MsgGroups, EncodeGroups())
}

// Request sends one request of type typ with body data and reads until
// its reply, skipping events, late replies to requests whose caller gave
// up (a read deadline) and datagrams not from the kernel. The module
// handles a request while it is being sent, so on a socket with nothing
// else to read the reply is there when Request starts reading: the caller
// gets it without waiting for another goroutine. A rejection is the
// reply's Err, as Receive reports it; the error is the socket's, and
// matches ErrNoReply once the request was sent.
func (c *Conn) Request(typ uint16, data []byte) (Message, error) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()

	seq, err := c.Send(typ, 0, data)
	if err != nil {
		return Message{}, err
	}
	for {
		msgs, err := c.Receive()
		if errors.Is(err, ErrForged) {
			continue
		}
		if err != nil {
			return Message{}, fmt.Errorf("%w: %w", ErrNoReply, err)
		}
		for _, m := range msgs {
			if m.Seq == seq {
				return m, nil
			}
		}
	}
}

// roundTrip is Request for a reply of type *T.
func roundTrip[T any](c *Conn, op string, typ uint16, data []byte) (*T, error) {
	m, err := c.Request(typ, data)
	if err != nil {
		return nil, fmt.Errorf("nsbroker %s: %w", op, err)
	}
	if e, ok := m.Err.(*Error); ok {
		e.Op = op
		return nil, e
	}
	if m.Err != nil {
		return nil, m.Err
	}
	r, ok := m.Reply.(*T)
	if !ok {
		return nil, fmt.Errorf("nsbroker %s: reply has message type %#x, want %#x", op, m.Type, typ)
	}
	return r, nil
}
