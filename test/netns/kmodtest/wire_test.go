package kmodtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Builders of arbitrary bytes: the bad-input table needs messages no
// well-behaved encoder would produce, so everything here is spelled out.

// ne is the byte order of netlink: the host's.
var ne = binary.NativeEndian

// nlHdrLen is sizeof(struct nlmsghdr).
const nlHdrLen = 16

func align4(n int) int { return (n + 3) &^ 3 }

// pad4 pads b with zeros to a multiple of 4 bytes.
func pad4(b []byte) []byte { return append(b, make([]byte, align4(len(b))-len(b))...) }

// rawMsg returns a netlink header claiming nlmsg_len length, followed by
// body as is. nlmsg_pid stays 0: the kernel answers the sending socket
// whatever this field says.
func rawMsg(length uint32, typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, nlHdrLen, nlHdrLen+len(body))
	ne.PutUint32(b[0:4], length)
	ne.PutUint16(b[4:6], typ)
	ne.PutUint16(b[6:8], flags)
	ne.PutUint32(b[8:12], seq)
	return append(b, body...)
}

// nlMsg returns one well-formed netlink message carrying body, padded to
// 4 bytes so that another message may follow it in the same datagram.
func nlMsg(typ, flags uint16, seq uint32, body []byte) []byte {
	return pad4(rawMsg(uint32(nlHdrLen+len(body)), typ, flags, seq, body))
}

// famHdr returns a struct nsb_msghdr.
func famHdr(version, flags uint8, reserved uint16) []byte {
	b := []byte{version, flags, 0, 0}
	ne.PutUint16(b[2:4], reserved)
	return b
}

// rawAttr returns an attribute header claiming nla_len length, followed by
// data as is.
func rawAttr(length, typ uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data))
	ne.PutUint16(b[0:2], length)
	ne.PutUint16(b[2:4], typ)
	return append(b, data...)
}

// attr returns one well-formed attribute, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	return pad4(rawAttr(uint16(4+len(data)), typ, data))
}

func u32(v uint32) []byte { return ne.AppendUint32(nil, v) }
func u64(v uint64) []byte { return ne.AppendUint64(nil, v) }

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// body returns a version-1 family header followed by attrs.
func body(attrs ...[]byte) []byte {
	return cat(famHdr(nsbVersion, 0, 0), cat(attrs...))
}

// parseMessages splits a datagram into its netlink messages.
func parseMessages(b []byte) ([]netlink.Message, error) {
	var msgs []netlink.Message
	for len(b) > 0 {
		if len(b) < nlHdrLen {
			return nil, fmt.Errorf("%d trailing bytes, shorter than a netlink header", len(b))
		}
		n := int(ne.Uint32(b[0:4]))
		if n < nlHdrLen || n > len(b) {
			return nil, fmt.Errorf("nlmsg_len %d in a datagram of %d bytes", n, len(b))
		}
		msgs = append(msgs, netlink.Message{
			Header: netlink.Header{
				Length:   uint32(n),
				Type:     netlink.HeaderType(ne.Uint16(b[4:6])),
				Flags:    netlink.HeaderFlags(ne.Uint16(b[6:8])),
				Sequence: ne.Uint32(b[8:12]),
				PID:      ne.Uint32(b[12:16]),
			},
			Data: b[nlHdrLen:n],
		})
		b = b[min(align4(n), len(b)):]
	}
	return msgs, nil
}

// attrSet holds the attributes of one message by type. NSB_A_PAD is
// dropped: it only aligns what follows it.
type attrSet map[uint16][]byte

// parseAttrs decodes a stream of attributes, rejecting duplicates: the
// module never sends an attribute twice.
func parseAttrs(b []byte, pad uint16) (attrSet, error) {
	a := attrSet{}
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	for ad.Next() {
		typ := ad.Type()
		if typ == pad {
			continue
		}
		if _, dup := a[typ]; dup {
			return nil, fmt.Errorf("attribute %d appears twice", typ)
		}
		a[typ] = ad.Bytes()
	}
	return a, ad.Err()
}

// parseBody checks the family header of a message from the module and
// decodes its attributes.
func parseBody(m netlink.Message) (attrSet, error) {
	if len(m.Data) < nsbHdrLen {
		return nil, fmt.Errorf("message of %d bytes has no family header", len(m.Data))
	}
	if h := m.Data[:nsbHdrLen]; h[0] != nsbVersion || h[1] != 0 || h[2] != 0 || h[3] != 0 {
		return nil, fmt.Errorf("family header % x, want %02x 00 00 00", h, nsbVersion)
	}
	return parseAttrs(m.Data[nsbHdrLen:], attrPad)
}

func (a attrSet) fixed(t testing.TB, typ uint16, size int) []byte {
	t.Helper()
	b, ok := a[typ]
	if !ok {
		t.Fatalf("attribute %d missing from %v", typ, a)
	}
	if len(b) != size {
		t.Fatalf("attribute %d has %d bytes, want %d", typ, len(b), size)
	}
	return b
}

// u32 returns the u32 attribute typ, failing the test if it is absent or
// not 4 bytes long.
func (a attrSet) u32(t testing.TB, typ uint16) uint32 {
	t.Helper()
	return ne.Uint32(a.fixed(t, typ, 4))
}

// u64 returns the u64 attribute typ, failing the test if it is absent or
// not 8 bytes long.
func (a attrSet) u64(t testing.TB, typ uint16) uint64 {
	t.Helper()
	return ne.Uint64(a.fixed(t, typ, 8))
}

// bytes returns the attribute typ, failing the test if it is absent.
func (a attrSet) bytes(t testing.TB, typ uint16) []byte {
	t.Helper()
	b, ok := a[typ]
	if !ok {
		t.Fatalf("attribute %d missing from %v", typ, a)
	}
	return b
}

// ack is a decoded NLMSG_ERROR: an error, or an acknowledgement when errno
// is 0.
type ack struct {
	seq      uint32     // nlmsg_seq of the NLMSG_ERROR message
	errno    unix.Errno // 0 for an acknowledgement
	reqType  uint16     // nlmsg_type of the request it answers
	reqSeq   uint32     // nlmsg_seq of the request it answers
	capped   bool       // NLM_F_CAPPED: the request's payload is not echoed
	msg      string     // NLMSGERR_ATTR_MSG, "" when absent
	offset   int        // NLMSGERR_ATTR_OFFS, -1 when absent
	missType int        // NLMSGERR_ATTR_MISS_TYPE, -1 when absent
	policy   bool       // NLMSGERR_ATTR_POLICY: the rule the attribute broke
}

// parseAck decodes struct nlmsgerr and its extended-ACK attributes.
func parseAck(m netlink.Message) (ack, error) {
	if m.Header.Type != netlink.Error {
		return ack{}, fmt.Errorf("message type %d is not NLMSG_ERROR", m.Header.Type)
	}
	if len(m.Data) < 4+nlHdrLen {
		return ack{}, fmt.Errorf("NLMSG_ERROR of %d bytes", len(m.Data))
	}
	a := ack{
		seq:      m.Header.Sequence,
		errno:    unix.Errno(-int32(ne.Uint32(m.Data[0:4]))),
		reqType:  ne.Uint16(m.Data[8:10]),
		reqSeq:   ne.Uint32(m.Data[12:16]),
		capped:   m.Header.Flags&netlink.Capped != 0,
		offset:   -1,
		missType: -1,
	}
	tlvs := 4 + nlHdrLen
	if !a.capped {
		tlvs += align4(int(ne.Uint32(m.Data[4:8])) - nlHdrLen)
	}
	if m.Header.Flags&netlink.AcknowledgeTLVs == 0 {
		if tlvs != len(m.Data) {
			return ack{}, fmt.Errorf("NLMSG_ERROR of %d bytes, want %d without TLVs", len(m.Data), tlvs)
		}
		return a, nil
	}
	if tlvs > len(m.Data) {
		return ack{}, fmt.Errorf("NLMSG_ERROR of %d bytes, TLVs announced at %d", len(m.Data), tlvs)
	}
	set, err := parseAttrs(m.Data[tlvs:], 0)
	if err != nil {
		return ack{}, fmt.Errorf("extended ACK: %w", err)
	}
	if b, ok := set[unix.NLMSGERR_ATTR_MSG]; ok {
		a.msg = string(bytes.TrimRight(b, "\x00"))
	}
	if b, ok := set[unix.NLMSGERR_ATTR_OFFS]; ok && len(b) == 4 {
		a.offset = int(ne.Uint32(b))
	}
	_, a.policy = set[nlmsgerrAttrPolicy]
	if b, ok := set[nlmsgerrAttrMissType]; ok && len(b) == 4 {
		a.missType = int(ne.Uint32(b))
	}
	return a, nil
}
