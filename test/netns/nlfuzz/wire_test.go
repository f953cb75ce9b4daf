package nlfuzz

import (
	"encoding/binary"
	"fmt"

	"github.com/nsbroker/nsbroker/family"
	"golang.org/x/sys/unix"
)

// Byte-level netlink: the fuzzer writes messages no encoder would produce,
// and reads answers without trusting them to be well formed.

// ne is netlink's byte order: the host's.
var ne = binary.NativeEndian

const (
	nlHdrLen  = unix.NLMSG_HDRLEN // sizeof(struct nlmsghdr)
	nlaHdrLen = unix.SizeofNlAttr // sizeof(struct nlattr)
	reqHdrLen = nlHdrLen + family.HeaderLen
	// NLA_TYPE_MASK: nla_type without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
	nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

func align4(n int) int { return (n + 3) &^ 3 }

// appendHdr appends a netlink header that claims length bytes.
func appendHdr(b []byte, length uint32, typ, flags uint16, seq uint32) []byte {
	b = ne.AppendUint32(b, length)
	b = ne.AppendUint16(b, typ)
	b = ne.AppendUint16(b, flags)
	b = ne.AppendUint32(b, seq)
	return ne.AppendUint32(b, 0) // nlmsg_pid: the kernel knows the sender
}

// appendFamHdr appends a struct nsb_msghdr.
func appendFamHdr(b []byte, version, flags uint8, reserved uint16) []byte {
	return ne.AppendUint16(append(b, version, flags), reserved)
}

// appendAttr appends an attribute claiming nla_len length, its data and
// zeros up to the next multiple of 4.
func appendAttr(b []byte, length, typ uint16, data []byte) []byte {
	b = ne.AppendUint16(b, length)
	b = ne.AppendUint16(b, typ)
	b = append(b, data...)
	return pad4(b)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// requests counts the messages of a datagram as netlink_rcv_skb() walks
// them: it stops at the first header whose nlmsg_len is below a header or
// beyond the datagram, and hands the module only requests (NLM_F_REQUEST)
// of a type at or above NLMSG_MIN_TYPE; it answers the others itself.
func requests(b []byte) (walked, handled int) {
	for len(b) >= nlHdrLen {
		n := int(ne.Uint32(b[0:4]))
		if n < nlHdrLen || n > len(b) {
			break
		}
		walked++
		if ne.Uint16(b[6:8])&unix.NLM_F_REQUEST != 0 && ne.Uint16(b[4:6]) >= unix.NLMSG_MIN_TYPE {
			handled++
		}
		b = b[min(align4(n), len(b)):]
	}
	return walked, handled
}

// errnosDocumented are the answers docs/protocol.md gives for a request:
// success and the errors of its table, and EAGAIN: when a reply does not
// fit the requester's receive buffer, the module returns nlmsg_unicast's
// EAGAIN and netlink delivers that error if the smaller message fits.
var errnosDocumented = map[unix.Errno]bool{
	0: true, unix.EOPNOTSUPP: true, unix.EPROTONOSUPPORT: true, unix.EINVAL: true,
	unix.ERANGE: true, unix.EPERM: true, unix.EAGAIN: true,
}

// answer is what one received message was, for the counts.
type answer struct {
	typ   uint16
	errno unix.Errno // for NLMSG_ERROR
}

// checkDatagram splits a received datagram into messages and checks each
// against what the module may send: an NLMSG_ERROR with a documented errno,
// or a reply or EVENT with a version-1 family header that names inum as its
// namespace where it names one. crossNetns says the datagram came from
// another namespace (NETLINK_LISTEN_ALL_NSID), where another inum is right.
func checkDatagram(b []byte, inum uint32, crossNetns bool) ([]answer, error) {
	var out []answer
	for len(b) > 0 {
		if len(b) < nlHdrLen {
			return out, fmt.Errorf("%d bytes after the last message, shorter than a netlink header", len(b))
		}
		n := int(ne.Uint32(b[0:4]))
		if n < nlHdrLen || n > len(b) {
			return out, fmt.Errorf("nlmsg_len %d in %d remaining bytes", n, len(b))
		}
		typ := ne.Uint16(b[4:6])
		a, err := checkMessage(typ, b[nlHdrLen:n], inum, crossNetns)
		if err != nil {
			return out, fmt.Errorf("message type %#x: %w", typ, err)
		}
		out = append(out, a)
		b = b[min(align4(n), len(b)):]
	}
	return out, nil
}

func checkMessage(typ uint16, data []byte, inum uint32, crossNetns bool) (answer, error) {
	a := answer{typ: typ}
	switch typ {
	case unix.NLMSG_ERROR:
		if len(data) < 4 {
			return a, fmt.Errorf("NLMSG_ERROR of %d bytes", len(data))
		}
		a.errno = unix.Errno(-int32(ne.Uint32(data[0:4])))
		if !errnosDocumented[a.errno] {
			return a, fmt.Errorf("errno %d (%v) is not one the protocol documents", a.errno, a.errno)
		}
		return a, nil
	case family.MsgEcho, family.MsgPublish, family.MsgStats, family.MsgGroups, family.MsgEvent:
	default:
		return a, fmt.Errorf("the module sends no such message")
	}
	if len(data) < family.HeaderLen || data[0] != family.Version || data[1] != 0 || ne.Uint16(data[2:4]) != 0 {
		return a, fmt.Errorf("family header % x, want version %d and zero flags", data[:min(len(data), family.HeaderLen)], family.Version)
	}
	got, ok, err := findU32(data[family.HeaderLen:], family.AttrNetnsInum)
	if err != nil {
		return a, err
	}
	if ok && got != inum && !crossNetns {
		return a, fmt.Errorf("names namespace %d, received in namespace %d", got, inum)
	}
	return a, nil
}

// findU32 returns the value of the first attribute of type typ, which
// must be 4 bytes long, in a stream of attributes.
func findU32(b []byte, typ uint16) (uint32, bool, error) {
	for len(b) >= nlaHdrLen {
		n := int(ne.Uint16(b[0:2]))
		if n < nlaHdrLen || n > len(b) {
			return 0, false, fmt.Errorf("attribute length %d in %d remaining bytes", n, len(b))
		}
		if ne.Uint16(b[2:4])&nlaTypeMask == typ {
			if n != nlaHdrLen+4 {
				return 0, false, fmt.Errorf("attribute %d of %d bytes, want 4", typ, n-nlaHdrLen)
			}
			return ne.Uint32(b[nlaHdrLen:n]), true, nil
		}
		b = b[min(align4(n), len(b)):]
	}
	if len(b) != 0 {
		return 0, false, fmt.Errorf("%d bytes after the last attribute", len(b))
	}
	return 0, false, nil
}
