// Package brokertest provides a fake nsbroker kernel module for tests of
// the broker and of what is built on it. Its sockets implement
// netlink.Socket and family.DatagramReader, so code under test talks to it through the real
// family.Conn encoders, decoders and check of each datagram's source.
package brokertest

import (
	"encoding/binary"
	"errors"
	"iter"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// Kernel plays the nsbroker module for broker tests: one state block
// per namespace inode, per-group sequence numbers, multicast to the
// sockets that joined, and knobs to hold replies, drop events, reload and
// let a privileged process forge events. Its sockets implement
// netlink.Socket and family.DatagramReader, so the broker talks to it
// through the real family.Conn encoders, decoders and source check.
type Kernel struct {
	mu       sync.Mutex
	loaded   bool
	instance uint64
	nets     map[uint32]*fakeNet
	nextPort uint32
	open     int // sockets not closed
}

type fakeNet struct {
	inum  uint32
	seq   [family.Groups + 1]uint64
	socks map[*fakeSock]struct{}
	// holdReplies, when positive, holds that many replies and then
	// delivers them in reverse order.
	holdReplies int
	held        []heldReply
	// dropEvents makes the next n events to each member be dropped by an
	// "overrun", reported as ENOBUFS.
	dropEvents int
	// datagrams counts the requests' datagrams, messages their messages.
	datagrams, messages int
}

type heldReply struct {
	s   *fakeSock
	msg netlink.Message
}

// NewKernel returns a loaded fake module.
func NewKernel() *Kernel {
	return &Kernel{loaded: true, instance: 1, nets: make(map[uint32]*fakeNet), nextPort: 100}
}

func (k *Kernel) net(inum uint32) *fakeNet {
	n, ok := k.nets[inum]
	if !ok {
		n = &fakeNet{inum: inum, socks: make(map[*fakeSock]struct{})}
		k.nets[inum] = n
	}
	return n
}

// Reload simulates rmmod + insmod: a new instance, sequence numbers from 1.
func (k *Kernel) Reload() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.instance++
	for _, n := range k.nets {
		n.seq = [family.Groups + 1]uint64{}
	}
}

// SetLoaded says whether the module counts as loaded: dials fail while
// it is not.
func (k *Kernel) SetLoaded(v bool) {
	k.mu.Lock()
	k.loaded = v
	k.mu.Unlock()
}

// Loaded reports what SetLoaded set (true at first).
func (k *Kernel) Loaded() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.loaded
}

// Identity is a broker Config.ModuleIdentity: whether the module counts
// as loaded and its instance, which Reload changes, as the identity.
func (k *Kernel) Identity() (uint64, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.instance, k.loaded
}

// OpenSockets counts the sockets not closed yet.
func (k *Kernel) OpenSockets() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.open
}

// Dial is a broker.DialFunc: a connection to this kernel in ns.
func (k *Kernel) Dial(ns *nsmgr.Namespace, unit, readBuffer int) (*family.Conn, error) {
	s, err := k.dial(ns.Inode())
	if err != nil {
		return nil, err
	}
	return family.NewDatagramConn(netlink.NewConn(s, s.port), s), nil
}

// Requests returns how many request datagrams the sockets of namespace
// inum sent, and how many messages they held.
func (k *Kernel) Requests(inum uint32) (datagrams, messages int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := k.net(inum)
	return n.datagrams, n.messages
}

// HoldReplies holds the next n replies in namespace inum and then
// delivers them in reverse order; a large n means they never come.
func (k *Kernel) HoldReplies(inum uint32, n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.net(inum).holdReplies = n
}

// DropEvents makes the next n events of namespace inum overrun every
// member: they are dropped and the member's next receive fails with
// ENOBUFS.
func (k *Kernel) DropEvents(inum uint32, n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.net(inum).dropEvents = n
}

func (k *Kernel) dial(inum uint32) (*fakeSock, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.loaded {
		return nil, unix.EPROTONOSUPPORT
	}
	k.nextPort++
	s := &fakeSock{k: k, net: k.net(inum), port: k.nextPort, wake: make(chan struct{}, 1)}
	s.net.socks[s] = struct{}{}
	k.open++
	return s, nil
}

// Publish multicasts as a raw publisher in namespace inum would and
// returns the sequence number.
func (k *Kernel) Publish(inum uint32, group uint32, payload []byte) uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lockedMulticast(k.net(inum), group, 0, payload)
}

// Forge sends an EVENT with seq and payload to the members of group in
// namespace inum as a process with CAP_NET_ADMIN there may: straight from
// a socket of its own (port id forger, not 0), bypassing the module, whose
// numbering it does not change.
func (k *Kernel) Forge(inum, group, forger uint32, seq uint64, payload []byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := k.net(inum)
	ev := &family.Event{Group: group, Seq: seq, Payload: payload, NetnsInum: n.inum,
		SenderPortID: forger, Timestamp: time.Now()}
	data := mustMarshal(ev)
	for s := range n.socks {
		if s.groups[group] {
			s.lockedDeliverFrom(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(family.MsgEvent)}, Data: data}, forger)
		}
	}
}

func (k *Kernel) lockedMulticast(n *fakeNet, group, sender uint32, payload []byte) uint64 {
	n.seq[group]++
	ev := &family.Event{Group: group, Seq: n.seq[group], Payload: payload, NetnsInum: n.inum,
		SenderPortID: sender, Timestamp: time.Now()}
	data := mustMarshal(ev)
	for s := range n.socks {
		if !s.groups[group] {
			continue
		}
		if n.dropEvents > 0 {
			s.overrun = true
			select {
			case s.wake <- struct{}{}:
			default:
			}
			continue
		}
		s.lockedDeliver(netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(family.MsgEvent)}, Data: data})
	}
	if n.dropEvents > 0 {
		n.dropEvents--
	}
	return n.seq[group]
}

func mustMarshal(m interface{ MarshalBinary() ([]byte, error) }) []byte {
	b, err := m.MarshalBinary() // family header included
	if err != nil {
		panic(err)
	}
	return b
}

// fakeSock is one user socket. Its fields are guarded by k.mu.
type fakeSock struct {
	k       *Kernel
	net     *fakeNet
	port    uint32
	groups  [family.Groups + 1]bool
	queue   []datagram
	overrun bool
	closed  bool
	wake    chan struct{}
	// deadline, if set, ends a receive that waits past it.
	deadline time.Time
}

// datagram is one queued datagram (the module's hold one message each)
// and the port id of its sender.
type datagram struct {
	msg  netlink.Message
	from uint32
}

// lockedDeliver queues a datagram from the kernel.
func (s *fakeSock) lockedDeliver(m netlink.Message) { s.lockedDeliverFrom(m, 0) }

func (s *fakeSock) lockedDeliverFrom(m netlink.Message, from uint32) {
	s.queue = append(s.queue, datagram{m, from})
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *fakeSock) Close() error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	if !s.closed {
		s.closed = true
		delete(s.net.socks, s)
		s.k.open--
		close(s.wake)
	}
	return nil
}

func (s *fakeSock) JoinGroup(g uint32) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	s.groups[g] = true
	return nil
}

func (s *fakeSock) LeaveGroup(g uint32) error {
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	s.groups[g] = false
	return nil
}

// SendMessages handles the messages of one datagram in turn, the way the
// module's netlink_rcv_skb does: each is answered on its own, a refusal
// included, and a refusal does not stop the ones after it.
func (s *fakeSock) SendMessages(ms []netlink.Message) error {
	s.k.mu.Lock()
	s.net.datagrams++
	s.k.mu.Unlock()
	for _, m := range ms {
		if err := s.handle(m); err != nil {
			return err
		}
	}
	return nil
}

// Send sends a datagram of one request.
func (s *fakeSock) Send(m netlink.Message) error {
	return s.SendMessages([]netlink.Message{m})
}

// handle handles one request the way the module does.
func (s *fakeSock) handle(m netlink.Message) error {
	k := s.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.closed {
		return os.ErrClosed
	}
	n := s.net
	n.messages++
	body := m.Data[family.HeaderLen:]
	var out netlink.Message
	switch uint16(m.Header.Type) {
	case family.MsgEcho:
		payload := attr(body, family.AttrPayload)
		if string(payload) == "reject" {
			out = errorMessage(m, unix.EPERM, "fake rejection")
			break
		}
		out = replyMessage(m, &family.EchoReply{Payload: payload, NetnsInum: n.inum, NetnsCookie: uint64(n.inum) << 8})
	case family.MsgPublish:
		if string(attr(body, family.AttrPayload)) == "reject" {
			out = errorMessage(m, unix.EPERM, "fake rejection")
			break
		}
		group := binary.NativeEndian.Uint32(attr(body, family.AttrGroup))
		seq := k.lockedMulticast(n, group, s.port, attr(body, family.AttrPayload))
		out = replyMessage(m, &family.PublishReply{Group: group, Seq: seq, Listeners: true})
	case family.MsgStats:
		out = replyMessage(m, &family.Stats{Instances: uint32(len(k.nets)), NetnsInum: n.inum, InstanceID: k.instance})
	case family.MsgGroups:
		// Queued behind every event it counts, as the module's is.
		out = replyMessage(m, &family.GroupSeqs{NetnsInum: n.inum, InstanceID: k.instance, Seq: n.seq})
	default:
		out = errorMessage(m, unix.EOPNOTSUPP, "unknown message type")
	}
	if n.holdReplies > 0 && uint16(m.Header.Type) != family.MsgStats && uint16(m.Header.Type) != family.MsgGroups {
		n.held = append(n.held, heldReply{s, out})
		if len(n.held) == n.holdReplies {
			for i := len(n.held) - 1; i >= 0; i-- {
				if !n.held[i].s.closed {
					n.held[i].s.lockedDeliver(n.held[i].msg)
				}
			}
			n.held, n.holdReplies = nil, 0
		}
		return nil
	}
	s.lockedDeliver(out)
	return nil
}

func attr(body []byte, typ uint16) []byte {
	ad, err := netlink.NewAttributeDecoder(body)
	if err != nil {
		return nil
	}
	for ad.Next() {
		if ad.Type() == typ {
			return ad.Bytes()
		}
	}
	return nil
}

func replyMessage(req netlink.Message, r interface{ MarshalBinary() ([]byte, error) }) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: req.Header.Type, Sequence: req.Header.Sequence, PID: req.Header.PID},
		Data:   mustMarshal(r),
	}
}

// errorMessage builds an NLMSG_ERROR with an extended-ACK message.
func errorMessage(req netlink.Message, errno unix.Errno, text string) netlink.Message {
	data := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
	hdr := make([]byte, 16)
	binary.NativeEndian.PutUint32(hdr[0:4], 16)
	binary.NativeEndian.PutUint16(hdr[4:6], uint16(req.Header.Type))
	binary.NativeEndian.PutUint32(hdr[8:12], req.Header.Sequence)
	data = append(data, hdr...)
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NLMSGERR_ATTR_MSG, text)
	tlv, _ := ae.Encode()
	data = append(data, tlv...)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.Error, Flags: netlink.Capped | netlink.AcknowledgeTLVs, Sequence: req.Header.Sequence},
		Data:   data,
	}
}

// next blocks for the next datagram, as recvmsg does.
func (s *fakeSock) next() (datagram, error) {
	for {
		s.k.mu.Lock()
		switch {
		case s.closed:
			s.k.mu.Unlock()
			return datagram{}, errors.New("use of closed socket")
		case s.overrun:
			s.overrun = false
			s.k.mu.Unlock()
			return datagram{}, os.NewSyscallError("recvmsg", unix.ENOBUFS)
		case len(s.queue) > 0:
			d := s.queue[0]
			s.queue = s.queue[1:]
			s.k.mu.Unlock()
			return d, nil
		}
		wake, deadline := s.wake, s.deadline
		s.k.mu.Unlock()
		if deadline.IsZero() {
			<-wake
			continue
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return datagram{}, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// SetReadDeadline makes a receive that waits past t fail with an error
// matching os.ErrDeadlineExceeded; the zero time waits for ever.
func (s *fakeSock) SetReadDeadline(t time.Time) error {
	s.k.mu.Lock()
	s.deadline = t
	s.k.mu.Unlock()
	select {
	case s.wake <- struct{}{}: // a receive waiting looks again
	default:
	}
	return nil
}

// SetWriteDeadline does nothing: a send never waits.
func (s *fakeSock) SetWriteDeadline(time.Time) error { return nil }

// SetDeadline is SetReadDeadline.
func (s *fakeSock) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// ReceiveDatagram is what family.Conn reads: the next datagram, encoded,
// and its sender's port id.
func (s *fakeSock) ReceiveDatagram() ([]byte, uint32, error) {
	d, err := s.next()
	if err != nil {
		return nil, 0, err
	}
	m := d.msg
	m.Header.Length = uint32(unix.NLMSG_HDRLEN + (len(m.Data)+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1))
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, 0, err
	}
	return b, d.from, nil
}

// Receive blocks for the next datagram (every fake datagram holds one
// message, as the module's do).
func (s *fakeSock) Receive() ([]netlink.Message, error) {
	d, err := s.next()
	if err != nil {
		return nil, err
	}
	return []netlink.Message{d.msg}, nil
}

func (s *fakeSock) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(yield func(netlink.Message, error) bool) {
		d, err := s.next()
		yield(d.msg, err)
	}
}
