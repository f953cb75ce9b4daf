package family

import (
	"encoding"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Seed corpora live in testdata/fuzz/<target>/: valid messages as the
// module sends them, with padding and unknown attributes, and malformed
// ones (truncated header, wrong version, missing, short and overlong
// attributes).

// decodeErrors are the sentinels a decoder's error must match.
var decodeErrors = []error{ErrTruncatedHeader, ErrVersion, ErrMissingAttribute, ErrMalformed}

// fuzzDecoder checks that decode never panics, returns either a value or
// one of decodeErrors, and that a value it returns survives being encoded
// the module's way and decoded again.
func fuzzDecoder[T any, PT interface {
	*T
	encoding.BinaryMarshaler
}](f *testing.F, decode func([]byte) (*T, error)) {
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decode(b)
		if err != nil {
			if v != nil {
				t.Fatalf("want no value with error %v, got %+v", err, v)
			}
			for _, want := range decodeErrors {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("want an error matching one of %v, got %v", decodeErrors, err)
		}
		if v == nil {
			t.Fatal("want a value or an error, got neither")
		}
		again, err := PT(v).MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", v, err)
		}
		v2, err := decode(again)
		if err != nil {
			t.Fatalf("decode re-encoded %+v: %v", v, err)
		}
		if diff := cmp.Diff(v, v2); diff != "" {
			t.Fatalf("re-encoded value decodes differently (-first +second):\n%s", diff)
		}
	})
}

func FuzzDecodeEchoReply(f *testing.F)    { fuzzDecoder(f, DecodeEchoReply) }
func FuzzDecodePublishReply(f *testing.F) { fuzzDecoder(f, DecodePublishReply) }
func FuzzDecodeEvent(f *testing.F)        { fuzzDecoder(f, DecodeEvent) }
func FuzzDecodeStats(f *testing.F)        { fuzzDecoder(f, DecodeStats) }
func FuzzDecodeGroupSeqs(f *testing.F)    { fuzzDecoder(f, DecodeGroupSeqs) }

// FuzzReceive feeds one message of any type, flags, sequence number and
// body through Conn.Receive's path from a datagram: the checks, the
// NLMSG_ERROR parsing and the decoding that a real socket's datagrams go
// through.
func FuzzReceive(f *testing.F) {
	f.Fuzz(func(t *testing.T, typ, flags uint16, seq uint32, data []byte) {
		c := NewFakeConn(func([]netlink.Message) ([]netlink.Message, error) {
			h := netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.HeaderFlags(flags), Sequence: seq}
			return []netlink.Message{{Header: h, Data: data}}, nil
		})
		defer c.Close()

		msgs, err := c.Receive()
		if err != nil {
			t.Fatalf("Receive of type %#x: want a message, got error %v", typ, err)
		}
		for _, m := range msgs {
			if m.Seq != seq || m.Type != typ && m.Type != unix.NLMSG_ERROR {
				t.Fatalf("want seq %d type %#x, got %+v", seq, typ, m)
			}
			switch {
			case m.Reply != nil && m.Err != nil:
				t.Fatalf("both Reply and Err set: %+v", m)
			case m.Reply == nil && m.Err == nil && m.Type != unix.NLMSG_ERROR:
				t.Fatalf("neither Reply nor Err set for type %#x", m.Type)
			}
			var e *Error
			if errors.As(m.Err, &e) && (e.Seq != seq || e.Errno == 0) {
				t.Fatalf("rejection: want seq %d and an errno, got %+v", seq, e)
			}
		}
	})
}
