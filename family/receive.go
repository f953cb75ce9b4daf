package family

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// On a real socket, Send and Receive use the descriptor directly rather
// than netlink.Conn.Send and Receive: mdlayher/socket starts a goroutine
// to watch for cancellation on every sendmsg and recvmsg, even with a
// context that cannot be cancelled, which costs more than the syscall.
// And for Receive, Without a fixed buffer size, netlink.Conn calls
// recvmsg with MSG_PEEK|MSG_TRUNC to size a new buffer before every read;
// with one (Config.MessageBufferSize) it takes its pooled buffer before it
// waits for data, so each idle reader pins a buffer of the largest
// datagram — one per attached namespace in the broker. readDatagram takes
// a buffer only once the socket is readable and reads with one recvmsg.

// receiveBufferSize is the buffer a datagram is read into. The largest
// datagram the module sends is a rejection of a request with a PayloadMax
// payload, which carries the request back (see
// TestReceiveBufferFitsLargestDatagram); the rest is room for the extended
// acknowledgement.
const receiveBufferSize = 20 << 10

// recvBufs holds the read buffers, shared by every Conn: only readers that
// have data to read hold one.
var recvBufs = sync.Pool{New: func() any {
	b := make([]byte, receiveBufferSize)
	return &b
}}

// recvmsgCalls counts readDatagram's recvmsg calls, for tests.
var recvmsgCalls atomic.Uint64

var errTruncated = errors.New("datagram larger than the receive buffer")

// readDatagram waits until the socket is readable and returns the next
// datagram, in a buffer of its own padded to the netlink alignment, and
// the port id of the socket that sent it (0: the kernel).
func readDatagram(rc syscall.RawConn) ([]byte, uint32, error) {
	var out []byte
	var from uint32
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		bp := recvBufs.Get().(*[]byte)
		defer recvBufs.Put(bp)
		for {
			recvmsgCalls.Add(1)
			n, _, flags, sa, err := unix.Recvmsg(int(fd), *bp, nil, unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return false // wait for data, holding no buffer
			case err != nil:
				rerr = os.NewSyscallError("recvmsg", err)
			case flags&unix.MSG_TRUNC != 0:
				rerr = errTruncated
			default:
				nl, ok := sa.(*unix.SockaddrNetlink)
				if !ok {
					rerr = fmt.Errorf("recvmsg: source address %T, want a netlink one", sa)
					break
				}
				from = nl.Pid
				out = make([]byte, nlmsgAlign(n))
				copy(out, (*bp)[:n])
			}
			return true
		}
	})
	if err != nil {
		return nil, 0, err
	}
	return out, from, rerr
}

// DatagramReader hands over each datagram a fake socket receives whole,
// with the port id of the socket that sent it, as recvmsg does. A Conn
// made with NewDatagramConn receives through it, so that a fake (such as
// package brokertest's) is read with the same source check and decoding
// as a real socket.
type DatagramReader interface {
	// ReceiveDatagram blocks for the next datagram and returns it, padded
	// to the netlink alignment, and its sender's port id (0: the kernel).
	ReceiveDatagram() (b []byte, from uint32, err error)
}

// sendDatagram sends one netlink message to the kernel: the header for
// typ, flags and seq, then data, padded to the netlink alignment.
func sendDatagram(rc syscall.RawConn, typ uint16, flags netlink.HeaderFlags, seq uint32, data []byte) error {
	return sendBytes(rc, appendMessage(make([]byte, 0, nlmsgAlign(unix.NLMSG_HDRLEN+len(data))), typ, flags, seq, data))
}

// appendMessage appends one netlink message, padded to the netlink
// alignment, to b.
func appendMessage(b []byte, typ uint16, flags netlink.HeaderFlags, seq uint32, data []byte) []byte {
	n := nlmsgAlign(unix.NLMSG_HDRLEN + len(data))
	off := len(b)
	b = append(b, make([]byte, n)...)
	m := b[off:]
	binary.NativeEndian.PutUint32(m[0:], uint32(n))
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint16(m[6:], uint16(flags))
	binary.NativeEndian.PutUint32(m[8:], seq)
	copy(m[unix.NLMSG_HDRLEN:], data)
	return b
}

// sendBytes sends the datagram b, one or more messages, to the kernel.
func sendBytes(rc syscall.RawConn, b []byte) error {
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	var serr error
	err := rc.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendto(int(fd), b, 0, kernel)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("sendto", serr)
	}
	return nil
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// decodeDatagram decodes the messages of one datagram. An NLMSG_ERROR with
// a non-zero errno becomes a rejection Message, as Receive reports it on
// either path.
func decodeDatagram(b []byte) ([]Message, error) {
	var msgs []Message
	for len(b) >= unix.NLMSG_HDRLEN {
		l := nlmsgAlign(int(binary.NativeEndian.Uint32(b)))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, fmt.Errorf("%w: netlink message of %d bytes in %d", ErrMalformed, l, len(b))
		}
		var nm netlink.Message
		if err := nm.UnmarshalBinary(b[:l]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		b = b[l:]
		if m, ok := errorMessage(nm); ok {
			msgs = append(msgs, m)
			continue
		}
		msgs = append(msgs, decodeMessage(nm))
	}
	return msgs, nil
}

// errorMessage converts an NLMSG_ERROR carrying an errno into a rejection:
// struct nlmsgerr (the errno, the request's header and, unless capped, its
// body), then, with NLM_F_ACK_TLVS, the extended acknowledgement.
func errorMessage(nm netlink.Message) (Message, bool) {
	if nm.Header.Type != netlink.Error || len(nm.Data) < 4 {
		return Message{}, false
	}
	errno := -int32(binary.NativeEndian.Uint32(nm.Data))
	if errno == 0 {
		return Message{}, false // an acknowledgement
	}
	e := &Error{Errno: unix.Errno(errno), Seq: nm.Header.Sequence}
	off := 4 + unix.NLMSG_HDRLEN
	if nm.Header.Flags&netlink.AcknowledgeTLVs != 0 && len(nm.Data) >= off {
		if nm.Header.Flags&netlink.Capped == 0 {
			off = 4 + int(binary.NativeEndian.Uint32(nm.Data[4:]))
		}
		if off <= len(nm.Data) {
			it := &attrIter{b: nm.Data[off:]}
			for it.next() {
				switch it.typ {
				case unix.NLMSGERR_ATTR_MSG:
					e.Message = string(trimNUL(it.data))
				case unix.NLMSGERR_ATTR_OFFS:
					e.Offset = int(it.u32())
				}
			}
		}
	}
	return Message{Seq: nm.Header.Sequence, Type: unix.NLMSG_ERROR, Err: e}, true
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
