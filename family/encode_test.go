package family

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// requireLittleEndian skips byte-exact tests whose expected bytes are
// written out for the little-endian machines the project runs on.
func requireLittleEndian(t *testing.T) {
	t.Helper()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("expected bytes are written for a little-endian machine")
	}
}

func TestEncodeBytes(t *testing.T) {
	requireLittleEndian(t)
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		return b
	}
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{
			name: "echo",
			got:  must(EncodeEcho([]byte("hi"))),
			want: []byte{
				1, 0, 0, 0, // version 1, flags 0, reserved 0
				6, 0, 2, 0, 'h', 'i', 0, 0, // NSB_A_PAYLOAD, padded to 4
			},
		},
		{
			name: "echo without payload",
			got:  must(EncodeEcho(nil)),
			want: []byte{
				1, 0, 0, 0,
				4, 0, 2, 0, // empty NSB_A_PAYLOAD
			},
		},
		{
			name: "publish",
			got:  must(EncodePublish(3, []byte("abc"))),
			want: []byte{
				1, 0, 0, 0,
				8, 0, 3, 0, 3, 0, 0, 0, // NSB_A_GROUP = 3
				7, 0, 2, 0, 'a', 'b', 'c', 0, // NSB_A_PAYLOAD
			},
		},
		{
			name: "stats",
			got:  EncodeStats(),
			want: []byte{1, 0, 0, 0},
		},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.want, tt.got) {
			t.Errorf("%s:\nwant % x\ngot  % x", tt.name, tt.want, tt.got)
		}
	}
}

func TestEncodeLimits(t *testing.T) {
	max := bytes.Repeat([]byte{'x'}, PayloadMax)
	if b, err := EncodePublish(Groups, max); err != nil {
		t.Errorf("EncodePublish(Groups, PayloadMax bytes): want success, got %v", err)
	} else if want, got := HeaderLen+8+4+PayloadMax, len(b); want != got {
		t.Errorf("EncodePublish(Groups, PayloadMax bytes): want %d bytes, got %d", want, got)
	}
	if _, err := EncodeEcho(max); err != nil {
		t.Errorf("EncodeEcho(PayloadMax bytes): want success, got %v", err)
	}

	tooLong := append(max, 'x')
	tests := []struct {
		name    string
		err     error
		want    error
		wantMsg string
	}{
		{"publish group 0", second(EncodePublish(0, nil)), ErrGroupRange, "group out of range: 0, want 1..32"},
		{"publish group 33", second(EncodePublish(Groups+1, nil)), ErrGroupRange, "group out of range: 33, want 1..32"},
		{"publish payload", second(EncodePublish(1, tooLong)), ErrPayloadTooLarge, "payload too large: 16385 bytes, at most 16384"},
		{"echo payload", second(EncodeEcho(tooLong)), ErrPayloadTooLarge, "payload too large: 16385 bytes, at most 16384"},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: want error %v, got %v", tt.name, tt.want, tt.err)
			continue
		}
		if !strings.Contains(tt.err.Error(), tt.wantMsg) {
			t.Errorf("%s: want message containing %q, got %q", tt.name, tt.wantMsg, tt.err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Version: 7, Flags: 0x81, Reserved: 0x1234}
	b, err := h.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	if want := binary.NativeEndian.AppendUint16([]byte{7, 0x81}, 0x1234); !bytes.Equal(want, b) {
		t.Errorf("MarshalBinary: want % x, got % x", want, b)
	}
	var got Header
	if err := got.UnmarshalBinary(append(b, 0xff)); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if got != h {
		t.Errorf("UnmarshalBinary: want %+v, got %+v", h, got)
	}
	if err := got.UnmarshalBinary(b[:3]); !errors.Is(err, ErrTruncatedHeader) {
		t.Errorf("UnmarshalBinary(3 bytes): want %v, got %v", ErrTruncatedHeader, err)
	}
}
