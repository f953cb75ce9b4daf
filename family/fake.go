package family

import (
	"errors"
	"io"
	"iter"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// FakeKernel answers what a fake kernel receives, as nltest.Func does:
// reqs are the messages of one datagram sent to it, and what it returns
// is the datagram it sends back. With nothing sent and nothing pending, a
// Receive calls it with no requests: it may return events, as a
// multicast, or io.EOF for nothing.
type FakeKernel func(reqs []netlink.Message) ([]netlink.Message, error)

// NewFakeConn returns a Conn to a fake kernel, for tests of code that
// talks to the module without it. What the fake returns is delivered as
// a datagram from the kernel and goes through the same checks and decoder
// as a real socket's datagrams.
func NewFakeConn(k FakeKernel) *Conn {
	s := &fakeSocket{k: k}
	return NewDatagramConn(netlink.NewConn(s, fakePortID), s)
}

// fakePortID is the port id of a fake Conn's socket.
const fakePortID = 1 << 31

// fakeSocket is a netlink.Socket whose datagrams come from a FakeKernel.
type fakeSocket struct {
	k FakeKernel

	mu      sync.Mutex // guards pending, closed
	pending []fakeDatagram
	closed  bool
}

// fakeDatagram is the kernel's answer to one datagram sent.
type fakeDatagram struct {
	msgs []netlink.Message
	err  error
}

func (s *fakeSocket) Send(m netlink.Message) error {
	return s.SendMessages([]netlink.Message{m})
}

func (s *fakeSocket) SendMessages(ms []netlink.Message) error {
	msgs, err := s.k(ms)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.pending = append(s.pending, fakeDatagram{msgs, err})
	return nil
}

// Receive is not used: a Conn made by NewDatagramConn reads through
// ReceiveDatagram.
func (s *fakeSocket) Receive() ([]netlink.Message, error) {
	return nil, errors.New("fake netlink socket: read through ReceiveDatagram")
}

// ReceiveIter is not used either.
func (s *fakeSocket) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(yield func(netlink.Message, error) bool) {
		_, err := s.Receive()
		yield(netlink.Message{}, err)
	}
}

func (s *fakeSocket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// ReceiveDatagram returns the answer to the oldest datagram not answered
// yet, or else what the kernel sends unasked.
func (s *fakeSocket) ReceiveDatagram() ([]byte, uint32, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, 0, net.ErrClosed
	}
	var d fakeDatagram
	if len(s.pending) > 0 {
		d = s.pending[0]
		s.pending = s.pending[1:]
		s.mu.Unlock()
	} else {
		s.mu.Unlock()
		d.msgs, d.err = s.k(nil)
	}
	switch {
	case errors.Is(d.err, io.EOF):
		return nil, 0, nil
	case d.err != nil:
		var errno syscall.Errno
		if errors.As(d.err, &errno) {
			return nil, 0, os.NewSyscallError("recvmsg", d.err)
		}
		return nil, 0, d.err
	}
	var b []byte
	for _, m := range d.msgs {
		mb, err := marshalMessage(m)
		if err != nil {
			return nil, 0, err
		}
		b = append(b, mb...)
	}
	return b, 0, nil
}

// marshalMessage is m as the kernel writes it into a datagram, its length
// filled in.
func marshalMessage(m netlink.Message) ([]byte, error) {
	m.Header.Length = uint32(nlmsgAlign(unix.NLMSG_HDRLEN + len(m.Data)))
	return m.MarshalBinary()
}
