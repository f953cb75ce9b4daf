package family

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The hot messages (echo, publish, event) are encoded and decoded here
// without mdlayher/netlink's attribute encoder and decoder, which copy
// every attribute's data once into an intermediate buffer and again into
// the result: a payload is copied once on the way out and at most once on
// the way in.

const (
	attrHeaderLen = 4
	// attrTypeMask drops NLA_F_NESTED and NLA_F_NET_BYTEORDER.
	attrTypeMask = 0x3fff
)

func attrAlign(n int) int { return (n + 3) &^ 3 }

// attrLen is the encoded size of an attribute with n bytes of data.
func attrLen(n int) int { return attrAlign(attrHeaderLen + n) }

// appendAttr appends one attribute, padded to the netlink alignment.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(attrHeaderLen+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for range attrAlign(len(data)) - len(data) {
		b = append(b, 0)
	}
	return b
}

func appendU32Attr(b []byte, typ uint16, v uint32) []byte {
	var d [4]byte
	binary.NativeEndian.PutUint32(d[:], v)
	return appendAttr(b, typ, d[:])
}

// newBody returns an empty message body with room for n bytes of
// attributes, starting with the version-1 family header.
func newBody(n int) []byte {
	b, _ := Header{Version: Version}.AppendBinary(make([]byte, 0, HeaderLen+n))
	return b
}

var errInvalidAttribute = errors.New("invalid attribute")

// attrIter walks a list of attributes without copying their data: data
// aliases the list. It accepts what mdlayher/netlink's decoder accepts: a
// zero length is an empty attribute, a length of 1..3 or past the end of
// the list, or a trailing fragment shorter than a header, is an error.
type attrIter struct {
	b    []byte
	typ  uint16
	data []byte
	err  error
}

func (it *attrIter) next() bool {
	if it.err != nil || len(it.b) == 0 {
		return false
	}
	if len(it.b) < attrHeaderLen {
		it.err = errInvalidAttribute
		return false
	}
	l := int(binary.NativeEndian.Uint16(it.b))
	if (l != 0 && l < attrHeaderLen) || l > len(it.b) {
		it.err = errInvalidAttribute
		return false
	}
	it.typ = binary.NativeEndian.Uint16(it.b[2:]) & attrTypeMask
	if l == 0 {
		it.data = it.b[attrHeaderLen:attrHeaderLen]
		l = attrHeaderLen
	} else {
		it.data = it.b[attrHeaderLen:l]
	}
	it.b = it.b[min(attrAlign(l), len(it.b)):]
	return true
}

func (it *attrIter) u32() uint32 {
	if len(it.data) != 4 {
		it.fail("uint32")
		return 0
	}
	return binary.NativeEndian.Uint32(it.data)
}

func (it *attrIter) u64() uint64 {
	if len(it.data) != 8 {
		it.fail("uint64")
		return 0
	}
	return binary.NativeEndian.Uint64(it.data)
}

func (it *attrIter) fail(want string) {
	if it.err == nil {
		it.err = fmt.Errorf("attribute %d is not a %s; length: %d", it.typ, want, len(it.data))
	}
}

// bytes returns the attribute's data, aliasing the list if alias is set
// and a copy otherwise (empty, not nil, for an empty attribute).
func (it *attrIter) bytes(alias bool) []byte {
	if alias {
		return it.data
	}
	return append(make([]byte, 0, len(it.data)), it.data...)
}

// iterBody checks the family header at the start of b and returns an
// iterator over the attributes after it.
func iterBody(b []byte, what string) (*attrIter, error) {
	var h Header
	if err := h.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w in %s", err, what)
	}
	if h.Version != Version {
		return nil, fmt.Errorf("%w %d in %s, want %d", ErrVersion, h.Version, what, Version)
	}
	return &attrIter{b: b[HeaderLen:]}, nil
}
