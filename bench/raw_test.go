package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// rawSock is a netlink socket driven with bare syscalls: the kernel floor,
// with no Go netlink library in the way.
type rawSock struct {
	fd    int
	seq   uint32
	msg   []byte
	buf   []byte
	batch []byte // publishBatch's datagram
}

const nlHdrLen = unix.SizeofNlMsghdr

// openRaw opens a socket to the module inside ns with a readBuffer-byte
// receive buffer (0: the default).
func openRaw(ns *nsmgr.Namespace, unit, readBuffer int) (*rawSock, error) {
	s := &rawSock{buf: make([]byte, 1<<16)}
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unit)
		if err != nil {
			return err
		}
		s.fd = fd
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err == nil && readBuffer > 0 {
		err = unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, readBuffer)
	}
	if err != nil {
		if s.fd > 0 {
			unix.Close(s.fd)
		}
		return nil, fmt.Errorf("raw netlink socket: %w", err)
	}
	return s, nil
}

func (s *rawSock) Close() error { return unix.Close(s.fd) }

// join subscribes the socket to group and bounds every receive by timeout.
func (s *rawSock) join(group uint32, timeout time.Duration) error {
	if err := unix.SetsockoptInt(s.fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(group)); err != nil {
		return err
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	return unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
}

// prepare builds the request once; roundTrip only renumbers it.
func (s *rawSock) prepare(typ uint16, body []byte) {
	s.msg = make([]byte, nlHdrLen+len(body))
	binary.NativeEndian.PutUint32(s.msg[0:], uint32(len(s.msg)))
	binary.NativeEndian.PutUint16(s.msg[4:], typ)
	binary.NativeEndian.PutUint16(s.msg[6:], unix.NLM_F_REQUEST)
	copy(s.msg[nlHdrLen:], body)
}

// roundTrip sends the prepared request and waits for its reply, returning
// the reply's body.
func (s *rawSock) roundTrip() ([]byte, error) {
	s.seq++
	binary.NativeEndian.PutUint32(s.msg[8:], s.seq)
	for {
		err := unix.Sendto(s.fd, s.msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return nil, err
		}
	}
	for {
		b, err := s.recv()
		if err != nil {
			return nil, err
		}
		for len(b) >= nlHdrLen {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < nlHdrLen || l > len(b) {
				return nil, fmt.Errorf("raw netlink: bad message length %d", l)
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			seq := binary.NativeEndian.Uint32(b[8:])
			body := b[nlHdrLen:l]
			if seq == s.seq {
				if typ == unix.NLMSG_ERROR {
					return nil, fmt.Errorf("raw netlink: errno %d", -int32(binary.NativeEndian.Uint32(body)))
				}
				return body, nil
			}
			b = b[(l+3)&^3:]
		}
	}
}

// recv reads one datagram, retrying when a signal interrupts the call.
func (s *rawSock) recv() ([]byte, error) {
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return s.buf[:n], nil
	}
}

// publisher is a raw socket prepared to publish payload to group.
func rawPublisher(ns *nsmgr.Namespace, unit int, group uint32, payload []byte) (*rawSock, error) {
	s, err := openRaw(ns, unit, 0)
	if err != nil {
		return nil, err
	}
	body, err := family.EncodePublish(group, payload)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.prepare(family.MsgPublish, body)
	return s, nil
}

// publish publishes the prepared event and returns its sequence number.
func (s *rawSock) publish() (uint64, error) {
	b, err := s.roundTrip()
	if err != nil {
		return 0, err
	}
	r, err := family.DecodePublishReply(b)
	if err != nil {
		return 0, err
	}
	return r.Seq, nil
}

// batchSize is how many of the prepared messages the daemon's batches
// would hold: at most 64 (its PublishStream window), and no more than fit
// in family.BatchBytes.
func (s *rawSock) batchSize() int {
	return max(1, min(64, family.BatchBytes/((len(s.msg)+3)&^3)))
}

// publishBatch publishes the prepared event k times in one datagram and
// reads the k replies. It returns the sequence numbers of the first and
// the last event.
func (s *rawSock) publishBatch(k int) (first, last uint64, err error) {
	m := (len(s.msg) + 3) &^ 3
	if len(s.batch) != k*m {
		s.batch = make([]byte, k*m)
		for i := range k {
			copy(s.batch[i*m:], s.msg)
			binary.NativeEndian.PutUint32(s.batch[i*m:], uint32(m))
		}
	}
	firstSeq := s.seq + 1
	for i := range k {
		s.seq++
		binary.NativeEndian.PutUint32(s.batch[i*m+8:], s.seq)
	}
	for {
		err := unix.Sendto(s.fd, s.batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return 0, 0, err
		}
	}
	for got := 0; got < k; {
		b, err := s.recv()
		if err != nil {
			return 0, 0, err
		}
		for len(b) >= nlHdrLen {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < nlHdrLen || l > len(b) {
				return 0, 0, fmt.Errorf("raw netlink: bad message length %d", l)
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			seq := binary.NativeEndian.Uint32(b[8:])
			body := b[nlHdrLen:l]
			b = b[(l+3)&^3:]
			if seq < firstSeq || seq > s.seq {
				continue
			}
			if typ == unix.NLMSG_ERROR {
				return 0, 0, fmt.Errorf("raw netlink: errno %d", -int32(binary.NativeEndian.Uint32(body)))
			}
			r, err := family.DecodePublishReply(body)
			if err != nil {
				return 0, 0, err
			}
			if seq == firstSeq {
				first = r.Seq
			}
			if seq == s.seq {
				last = r.Seq
			}
			got++
		}
	}
	return first, last, nil
}

// receiveEvents reads events of one group until it has seen seq last or a
// receive times out. It returns the events received in first..last and
// those it knows it lost: a gap after the socket reported ENOBUFS.
func (s *rawSock) receiveEvents(first, last uint64) (delivered, reported uint64, err error) {
	next := first
	overrun := false
	for next <= last {
		b, err := s.recv()
		if errors.Is(err, unix.ENOBUFS) {
			overrun = true
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			if overrun {
				reported += last - next + 1
			}
			return delivered, reported, nil
		}
		if err != nil {
			return delivered, reported, err
		}
		for len(b) >= nlHdrLen {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < nlHdrLen || l > len(b) {
				return delivered, reported, fmt.Errorf("raw netlink: bad message length %d", l)
			}
			if binary.NativeEndian.Uint16(b[4:]) == family.MsgEvent {
				ev, err := family.DecodeEvent(b[nlHdrLen:l])
				if err != nil {
					return delivered, reported, err
				}
				if ev.Seq >= next && ev.Seq <= last {
					if ev.Seq > next && overrun {
						reported += ev.Seq - next
					}
					overrun = false
					delivered++
					next = ev.Seq + 1
				}
			}
			b = b[(l+3)&^3:]
		}
	}
	return delivered, reported, nil
}
