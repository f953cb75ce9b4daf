package family

import (
	"bytes"
	"testing"
	"time"
)

// TestReceiveBufferFitsLargestDatagram: Receive reads every datagram into
// a buffer of receiveBufferSize (one recvmsg, no MSG_PEEK to size it), so
// the largest datagram the module can send must fit: the rejection of a
// publish with a PayloadMax payload, which carries the request back after
// struct nlmsgerr, followed by the extended acknowledgement.
func TestReceiveBufferFitsLargestDatagram(t *testing.T) {
	req, err := EncodePublish(1, make([]byte, PayloadMax))
	if err != nil {
		t.Fatal(err)
	}
	const (
		nlmsghdr = 16
		nlmsgerr = 4 + nlmsghdr // errno and the request's header
		// NLMSGERR_ATTR_MSG with a message of up to 255 bytes, _OFFS,
		// _MISS_TYPE, _MISS_NEST and a policy description.
		extAck = 4 + 256 + 8 + 8 + 8 + 128
	)
	largest := nlmsghdr + nlmsgerr + len(req) + extAck
	if receiveBufferSize < largest {
		t.Fatalf("receive buffer: want at least %d bytes, got %d", largest, receiveBufferSize)
	}
}

// TestEncodeMatchesAttributeEncoder: the requests built directly into one
// buffer are byte for byte what mdlayher/netlink's encoder makes, for
// payload lengths around the 4-byte alignment.
func TestEncodeMatchesAttributeEncoder(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 4, 5, 63, 64, PayloadMax} {
		payload := bytes.Repeat([]byte{0xa5}, n)
		got, err := EncodeEcho(payload)
		if err != nil {
			t.Fatal(err)
		}
		// An EchoReply with only a payload is encoded like the request.
		want, err := (&EchoReply{Payload: payload}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// MarshalBinary appends the two mandatory attributes after it.
		want = want[:len(want)-attrLen(4)-attrLen(8)]
		if !bytes.Equal(got, want) {
			t.Errorf("EncodeEcho(%d bytes): want % x, got % x", n, want, got)
		}
		if len(got) != cap(got) {
			t.Errorf("EncodeEcho(%d bytes): want one exact allocation, got len %d cap %d", n, len(got), cap(got))
		}
		pub, err := EncodePublish(9, payload)
		if err != nil {
			t.Fatal(err)
		}
		wantPub := append(newBody(0), appendU32Attr(nil, AttrGroup, 9)...)
		wantPub = append(wantPub, want[HeaderLen:]...)
		if !bytes.Equal(pub, wantPub) {
			t.Errorf("EncodePublish(9, %d bytes): want % x, got % x", n, wantPub, pub)
		}
	}
}

// TestDecodersCopyOrAlias: the exported decoders return a payload of their
// own, so a caller may reuse its buffer; Conn.Receive decodes with the
// payload aliasing the datagram, which netlink.Conn allocates per receive.
func TestDecodersCopyOrAlias(t *testing.T) {
	ev := &Event{Group: 2, Seq: 5, Payload: []byte("payload"), NetnsInum: 3, SenderPortID: 4, Timestamp: time.Unix(6, 7)}
	body, err := ev.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	copied, err := DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	aliased, err := decodeEvent(body, true)
	if err != nil {
		t.Fatal(err)
	}
	clear(body)
	if string(copied.Payload) != "payload" {
		t.Errorf("DecodeEvent payload after the buffer was cleared: want %q, got %q", "payload", copied.Payload)
	}
	if want := make([]byte, len("payload")); !bytes.Equal(aliased.Payload, want) {
		t.Errorf("aliased payload after the buffer was cleared: want % x, got % x", want, aliased.Payload)
	}

	r := &EchoReply{Payload: []byte{}, NetnsInum: 1, NetnsCookie: 2}
	body, err = r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEchoReply(body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Payload == nil || len(got.Payload) != 0 {
		t.Errorf("empty echo payload: want empty and non-nil, got %#v", got.Payload)
	}
}
