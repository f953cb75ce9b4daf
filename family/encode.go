package family

import (
	"fmt"

	"github.com/mdlayher/netlink"
)

// EncodeEcho returns the body of an echo request (MsgEcho): the family
// header and payload, which the reply carries back. The payload attribute is
// always sent, so an empty payload comes back as an empty, non-nil one.
func EncodeEcho(payload []byte) ([]byte, error) {
	if err := CheckPayload(payload); err != nil {
		return nil, err
	}
	b := newBody(attrLen(len(payload)))
	return appendAttr(b, AttrPayload, payload), nil
}

// EncodePublish returns the body of a publish request (MsgPublish) for
// group, which must be in 1..Groups. The module would reject a bad group
// or an oversized payload too; checking here gives the caller the error
// without a round trip.
func EncodePublish(group uint32, payload []byte) ([]byte, error) {
	if err := CheckGroup(group); err != nil {
		return nil, err
	}
	if err := CheckPayload(payload); err != nil {
		return nil, err
	}
	b := newBody(attrLen(4) + attrLen(len(payload)))
	b = appendU32Attr(b, AttrGroup, group)
	return appendAttr(b, AttrPayload, payload), nil
}

// EncodeStats returns the body of a stats request (MsgStats), which is the
// family header alone.
func EncodeStats() []byte {
	b, _ := Header{Version: Version}.MarshalBinary()
	return b
}

// EncodeGroups returns the body of a groups request (MsgGroups), which is
// the family header alone.
func EncodeGroups() []byte {
	b, _ := Header{Version: Version}.MarshalBinary()
	return b
}

// encode returns a version-1 family header followed by the attributes fn
// adds. The requests the broker sends on every call (EncodeEcho,
// EncodePublish) are built directly into one buffer instead.
func encode(fn func(ae *netlink.AttributeEncoder)) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	fn(ae)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, fmt.Errorf("nsbroker: encode attributes: %w", err)
	}
	b, _ := Header{Version: Version}.AppendBinary(make([]byte, 0, HeaderLen+len(attrs)))
	return append(b, attrs...), nil
}
