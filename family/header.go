package family

import (
	"encoding/binary"
	"fmt"
)

// HeaderLen is the size of the family header (struct nsb_msghdr) that
// follows the netlink header in every message. It is a multiple of the
// netlink alignment, so attributes start right after it.
const HeaderLen = 4

// Header is struct nsb_msghdr, the family header of every message.
type Header struct {
	Version  uint8  // Version for this ABI
	Flags    uint8  // bits of FlagsAll; none are defined in version 1
	Reserved uint16 // zero
}

// AppendBinary appends the header's wire form (native byte order, like the
// kernel's) to b.
func (h Header) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, h.Version, h.Flags)
	return binary.NativeEndian.AppendUint16(b, h.Reserved), nil
}

// MarshalBinary returns the header's HeaderLen bytes.
func (h Header) MarshalBinary() ([]byte, error) {
	return h.AppendBinary(make([]byte, 0, HeaderLen))
}

// UnmarshalBinary reads the header from the first HeaderLen bytes of b; the
// attributes that follow are left to the caller. It fails with
// ErrTruncatedHeader if b is shorter than a header.
func (h *Header) UnmarshalBinary(b []byte) error {
	if len(b) < HeaderLen {
		return fmt.Errorf("%w: %d bytes, want %d", ErrTruncatedHeader, len(b), HeaderLen)
	}
	h.Version = b[0]
	h.Flags = b[1]
	h.Reserved = binary.NativeEndian.Uint16(b[2:])
	return nil
}
