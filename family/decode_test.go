package family

import (
	"encoding"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
)

// body builds a message body: a family header of version v and attrs.
func body(v uint8, attrs ...netlink.Attribute) []byte {
	b, _ := Header{Version: v}.MarshalBinary()
	return append(b, nltest.MustMarshalAttributes(attrs)...)
}

func attrU32(typ uint16, v uint32) netlink.Attribute {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(typ, v)
	return netlink.Attribute{Type: typ, Data: mustEncodeOne(ae)}
}

func attrU64(typ uint16, v uint64) netlink.Attribute {
	ae := netlink.NewAttributeEncoder()
	ae.Uint64(typ, v)
	return netlink.Attribute{Type: typ, Data: mustEncodeOne(ae)}
}

func attrBytes(typ uint16, b []byte) netlink.Attribute {
	return netlink.Attribute{Type: typ, Data: b}
}

// pad is NSB_A_PAD as kernels on architectures without efficient unaligned
// access put it before a u64 attribute.
var pad = netlink.Attribute{Type: AttrPad}

// unknown is an attribute a newer module might add.
var unknown = netlink.Attribute{Type: 99 | netlink.Nested, Data: []byte{1, 2, 3, 4, 5}}

// mustEncodeOne returns the data of the single attribute ae holds.
func mustEncodeOne(ae *netlink.AttributeEncoder) []byte {
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b[4:]
}

// decodeCase is one input to a decoder and what it must produce.
type decodeCase struct {
	name    string
	in      []byte
	want    any    // the decoded value, if wantErr is nil
	wantErr error  // the sentinel the error must match
	wantMsg string // a part of the error text
}

func runDecodeCases[T any](t *testing.T, decode func([]byte) (*T, error), cases []decodeCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decode(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("want error %v containing %q, got %v", tt.wantErr, tt.wantMsg, err)
				}
				if got != nil {
					t.Fatalf("want no value with the error, got %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("want success, got %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decoded value (-want +got):\n%s", diff)
			}
		})
	}
}

// commonCases are the failures every decoder shares.
func commonCases(valid []byte) []decodeCase {
	v2 := append([]byte(nil), valid...)
	v2[0] = 2
	return []decodeCase{
		{name: "empty", in: nil, wantErr: ErrTruncatedHeader, wantMsg: "0 bytes, want 4"},
		{name: "truncated header", in: valid[:3], wantErr: ErrTruncatedHeader, wantMsg: "3 bytes, want 4"},
		{name: "version 2", in: v2, wantErr: ErrVersion, wantMsg: "unsupported ABI version 2"},
		{name: "version 0", in: []byte{0, 0, 0, 0}, wantErr: ErrVersion, wantMsg: "version 0"},
		{name: "attribute header cut short", in: append(valid[:len(valid):len(valid)], 8, 0), wantErr: ErrMalformed},
		{name: "attribute longer than the message", in: append(valid[:len(valid):len(valid)], 64, 0, 2, 0), wantErr: ErrMalformed},
	}
}

func TestDecodeEchoReply(t *testing.T) {
	inum := attrU32(AttrNetnsInum, 4026531840)
	cookie := attrU64(AttrNetnsCookie, 1<<40|3)
	valid := body(1, attrBytes(AttrPayload, []byte("ping")), inum, cookie)
	cases := []decodeCase{
		{
			name: "valid",
			in:   valid,
			want: &EchoReply{Payload: []byte("ping"), NetnsInum: 4026531840, NetnsCookie: 1<<40 | 3},
		},
		{
			name: "no payload sent",
			in:   body(1, inum, cookie),
			want: &EchoReply{NetnsInum: 4026531840, NetnsCookie: 1<<40 | 3},
		},
		{
			name: "empty payload",
			in:   body(1, attrBytes(AttrPayload, nil), inum, cookie),
			want: &EchoReply{Payload: []byte{}, NetnsInum: 4026531840, NetnsCookie: 1<<40 | 3},
		},
		{
			name: "pad and unknown attributes skipped",
			in:   body(1, unknown, inum, pad, cookie, attrU32(AttrGroup+200, 9)),
			want: &EchoReply{NetnsInum: 4026531840, NetnsCookie: 1<<40 | 3},
		},
		{
			name:    "missing cookie",
			in:      body(1, inum),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_NETNS_COOKIE in ECHO reply",
		},
		{
			name:    "missing inode",
			in:      body(1, cookie),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_NETNS_INUM in ECHO reply",
		},
		{
			name:    "inode of 2 bytes",
			in:      body(1, attrBytes(AttrNetnsInum, []byte{1, 2}), cookie),
			wantErr: ErrMalformed,
			wantMsg: "in ECHO reply",
		},
		{
			name:    "cookie of 4 bytes",
			in:      body(1, inum, attrU32(AttrNetnsCookie, 1)),
			wantErr: ErrMalformed,
		},
	}
	runDecodeCases(t, DecodeEchoReply, append(cases, commonCases(valid)...))
}

func TestDecodePublishReply(t *testing.T) {
	group := attrU32(AttrGroup, 5)
	seq := attrU64(AttrSeq, 77)
	valid := body(1, group, pad, seq, attrU32(AttrListeners, 1))
	cases := []decodeCase{
		{name: "listeners", in: valid, want: &PublishReply{Group: 5, Seq: 77, Listeners: true}},
		{
			name: "no listeners",
			in:   body(1, attrU32(AttrListeners, 0), seq, group, unknown),
			want: &PublishReply{Group: 5, Seq: 77},
		},
		{
			name:    "missing listeners",
			in:      body(1, group, seq),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_LISTENERS in PUBLISH reply",
		},
		{
			name:    "missing seq",
			in:      body(1, group, attrU32(AttrListeners, 1)),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_SEQ",
		},
		{
			name:    "seq of 4 bytes",
			in:      body(1, group, attrU32(AttrSeq, 1), attrU32(AttrListeners, 1)),
			wantErr: ErrMalformed,
		},
	}
	runDecodeCases(t, DecodePublishReply, append(cases, commonCases(valid)...))
}

func TestDecodeEvent(t *testing.T) {
	ts := time.Date(2026, 11, 27, 1, 2, 3, 456789012, time.UTC)
	all := []netlink.Attribute{
		attrU64(AttrSeq, 12),
		attrU32(AttrGroup, 32),
		attrBytes(AttrPayload, []byte("event")),
		attrU32(AttrNetnsInum, 4026532000),
		attrU32(AttrSenderPortID, 4242),
		attrU64(AttrTimestamp, uint64(ts.UnixNano())),
	}
	want := &Event{Group: 32, Seq: 12, Payload: []byte("event"), NetnsInum: 4026532000, SenderPortID: 4242, Timestamp: ts}
	valid := body(1, all...)
	cases := []decodeCase{
		{name: "valid", in: valid, want: want},
		{name: "pad and unknown skipped", in: body(1, append([]netlink.Attribute{pad, unknown}, all...)...), want: want},
		{
			name: "empty payload",
			in:   body(1, all[0], all[1], attrBytes(AttrPayload, nil), all[3], all[4], all[5]),
			want: &Event{Group: 32, Seq: 12, Payload: []byte{}, NetnsInum: 4026532000, SenderPortID: 4242, Timestamp: ts},
		},
	}
	names := []string{"NSB_A_SEQ", "NSB_A_GROUP", "NSB_A_PAYLOAD", "NSB_A_NETNS_INUM", "NSB_A_SENDER_PORTID", "NSB_A_TIMESTAMP"}
	for i, name := range names {
		without := append(append([]netlink.Attribute(nil), all[:i]...), all[i+1:]...)
		cases = append(cases, decodeCase{
			name:    "missing " + name,
			in:      body(1, without...),
			wantErr: ErrMissingAttribute,
			wantMsg: name + " in EVENT",
		})
	}
	cases = append(cases, decodeCase{
		name:    "timestamp of 4 bytes",
		in:      body(1, all[0], all[1], all[2], all[3], all[4], attrU32(AttrTimestamp, 1)),
		wantErr: ErrMalformed,
	})
	runDecodeCases(t, DecodeEvent, append(cases, commonCases(valid)...))
}

func TestDecodeStats(t *testing.T) {
	counters := []netlink.Attribute{
		attrU64(StatsAttrEcho, 1),
		attrU64(StatsAttrPublish, 2),
		attrU64(StatsAttrDelivered, 3),
		attrU64(StatsAttrNoListener, 4),
		attrU64(StatsAttrOverrun, 5),
		attrU64(StatsAttrRejected, 6),
	}
	nest := func(attrs ...netlink.Attribute) netlink.Attribute {
		return netlink.Attribute{Type: AttrStats | netlink.Nested, Data: nltest.MustMarshalAttributes(attrs)}
	}
	rest := []netlink.Attribute{
		attrU32(AttrInstances, 3),
		attrU32(AttrNetnsInum, 4026531840),
		attrU64(AttrInstanceID, 0xdeadbeefcafe),
	}
	want := &Stats{
		Echo: 1, Publish: 2, Delivered: 3, NoListener: 4, Overrun: 5, Rejected: 6,
		Instances: 3, NetnsInum: 4026531840, InstanceID: 0xdeadbeefcafe,
	}
	valid := body(1, append([]netlink.Attribute{nest(counters...)}, rest...)...)
	withPads := []netlink.Attribute{{Type: StatsAttrPad}, {Type: 40, Data: []byte{9, 9, 9, 9}}}
	cases := []decodeCase{
		{name: "valid", in: valid, want: want},
		{
			name: "pads and unknown counters skipped",
			in:   body(1, append([]netlink.Attribute{unknown, nest(append(withPads, counters...)...), pad}, rest...)...),
			want: want,
		},
		{
			name:    "missing counter",
			in:      body(1, append([]netlink.Attribute{nest(append(counters[:4:4], counters[5])...)}, rest...)...),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_STATS_A_OVERRUN in NSB_A_STATS",
		},
		{
			name:    "missing nest",
			in:      body(1, rest...),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_STATS in STATS reply",
		},
		{
			name:    "missing instance id",
			in:      body(1, nest(counters...), rest[0], rest[1]),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_INSTANCE_ID in STATS reply",
		},
		{
			name:    "counter of 4 bytes",
			in:      body(1, append([]netlink.Attribute{nest(append(counters[:5:5], attrU32(StatsAttrRejected, 6))...)}, rest...)...),
			wantErr: ErrMalformed,
			wantMsg: "in STATS reply",
		},
		{
			name:    "nest holding garbage",
			in:      body(1, append([]netlink.Attribute{attrBytes(AttrStats, []byte{200, 0, 1})}, rest...)...),
			wantErr: ErrMalformed,
		},
	}
	runDecodeCases(t, DecodeStats, append(cases, commonCases(valid)...))
}

func TestDecodeGroupSeqs(t *testing.T) {
	groupSeq := func(g uint32, seq uint64) netlink.Attribute {
		return netlink.Attribute{Type: AttrGroupSeq | netlink.Nested,
			Data: nltest.MustMarshalAttributes([]netlink.Attribute{attrU32(AttrGroup, g), attrU64(AttrSeq, seq)})}
	}
	head := []netlink.Attribute{attrU32(AttrNetnsInum, 4026531840), attrU64(AttrInstanceID, 0xfeedface)}
	want := &GroupSeqs{NetnsInum: 4026531840, InstanceID: 0xfeedface}
	var nests []netlink.Attribute
	for g := uint32(1); g <= Groups; g++ {
		want.Seq[g] = uint64(g) * 10
		nests = append(nests, groupSeq(g, uint64(g)*10))
	}
	with := func(extra ...netlink.Attribute) []byte {
		return body(1, append(append(append([]netlink.Attribute(nil), head...), extra...), nests...)...)
	}
	without := func(i int) []netlink.Attribute {
		return append(append([]netlink.Attribute(nil), nests[:i]...), nests[i+1:]...)
	}
	valid := with()
	reversed := append([]netlink.Attribute(nil), head...)
	for i := len(nests) - 1; i >= 0; i-- {
		reversed = append(reversed, nests[i])
	}
	cases := []decodeCase{
		{name: "valid", in: valid, want: want},
		{name: "any order, pads and unknown skipped", in: body(1, append([]netlink.Attribute{pad, unknown}, reversed...)...), want: want},
		{
			name:    "group missing",
			in:      body(1, append(append([]netlink.Attribute(nil), head...), without(6)...)...),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_GROUP_SEQ of group 7 in GROUPS reply",
		},
		{
			name:    "group twice",
			in:      body(1, append(append(append([]netlink.Attribute(nil), head...), without(6)...), groupSeq(8, 1))...),
			wantErr: ErrMalformed,
			wantMsg: "group 8 twice",
		},
		{
			name:    "group 0",
			in:      with(groupSeq(0, 1)),
			wantErr: ErrMalformed,
			wantMsg: "group out of range: 0, want 1..32",
		},
		{
			name:    "group 33",
			in:      with(groupSeq(Groups+1, 1)),
			wantErr: ErrMalformed,
			wantMsg: "group out of range: 33, want 1..32",
		},
		{
			name: "nest without a seq",
			in: with(netlink.Attribute{Type: AttrGroupSeq | netlink.Nested,
				Data: nltest.MustMarshalAttributes([]netlink.Attribute{attrU32(AttrGroup, 1)})}),
			wantErr: ErrMalformed,
			wantMsg: "NSB_A_SEQ in NSB_A_GROUP_SEQ",
		},
		{
			name: "seq of 4 bytes",
			in: with(netlink.Attribute{Type: AttrGroupSeq | netlink.Nested,
				Data: nltest.MustMarshalAttributes([]netlink.Attribute{attrU32(AttrGroup, 1), attrU32(AttrSeq, 1)})}),
			wantErr: ErrMalformed,
		},
		{
			name:    "missing instance id",
			in:      body(1, append([]netlink.Attribute{head[0]}, nests...)...),
			wantErr: ErrMissingAttribute,
			wantMsg: "NSB_A_INSTANCE_ID in GROUPS reply",
		},
		{
			name:    "nest holding garbage",
			in:      with(attrBytes(AttrGroupSeq, []byte{200, 0, 1})),
			wantErr: ErrMalformed,
		},
	}
	runDecodeCases(t, DecodeGroupSeqs, append(cases, commonCases(valid)...))
}

// TestMarshalRoundTrip checks that what the fake-kernel encoders produce
// decodes to the same value.
func TestMarshalRoundTrip(t *testing.T) {
	ts := time.Unix(0, 1796000000123456789)
	tests := []struct {
		in     encoding.BinaryMarshaler
		decode func([]byte) (any, error)
	}{
		{&EchoReply{Payload: []byte("x"), NetnsInum: 1, NetnsCookie: 2}, anyDecoder(DecodeEchoReply)},
		{&EchoReply{NetnsInum: 1, NetnsCookie: 2}, anyDecoder(DecodeEchoReply)},
		{&PublishReply{Group: 32, Seq: 1 << 63, Listeners: true}, anyDecoder(DecodePublishReply)},
		{&Event{Group: 1, Seq: 9, Payload: []byte{}, NetnsInum: 3, SenderPortID: 4, Timestamp: ts}, anyDecoder(DecodeEvent)},
		{&Stats{Echo: 1, Publish: 2, Delivered: 3, NoListener: 4, Overrun: 5, Rejected: 6, Instances: 7, NetnsInum: 8, InstanceID: 9}, anyDecoder(DecodeStats)},
		{&GroupSeqs{NetnsInum: 8, InstanceID: 9, Seq: [Groups + 1]uint64{1: 1, 7: 1 << 40, 32: 3}}, anyDecoder(DecodeGroupSeqs)},
	}
	for _, tt := range tests {
		b, err := tt.in.MarshalBinary()
		if err != nil {
			t.Fatalf("%T.MarshalBinary: %v", tt.in, err)
		}
		got, err := tt.decode(b)
		if err != nil {
			t.Fatalf("decode %T: %v", tt.in, err)
		}
		if diff := cmp.Diff(tt.in, got); diff != "" {
			t.Errorf("%T round trip (-want +got):\n%s", tt.in, diff)
		}
	}
}

func anyDecoder[T any](decode func([]byte) (*T, error)) func([]byte) (any, error) {
	return func(b []byte) (any, error) { return reply(decode(b)) }
}
