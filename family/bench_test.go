package family

import (
	"fmt"
	"testing"
	"time"
)

// The encoders and decoders are on every request and event the broker
// handles; these benchmarks need no module.

var benchSizes = []int{64, 4096}

func BenchmarkEncodeEcho(b *testing.B) {
	for _, size := range benchSizes {
		payload := make([]byte, size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodeEcho(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodePublish(b *testing.B) {
	for _, size := range benchSizes {
		payload := make([]byte, size)
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := EncodePublish(1, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	for _, size := range benchSizes {
		ev := &Event{Group: 3, Seq: 42, Payload: make([]byte, size), NetnsInum: 4026531840, SenderPortID: 77, Timestamp: time.Unix(1, 2)}
		body, err := ev.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				got, err := DecodeEvent(body)
				if err != nil || got.Seq != 42 || len(got.Payload) != size {
					b.Fatalf("DecodeEvent: want seq 42 with %d bytes; got %+v, %v", size, got, err)
				}
			}
		})
	}
}

func BenchmarkDecodeEchoReply(b *testing.B) {
	for _, size := range benchSizes {
		r := &EchoReply{Payload: make([]byte, size), NetnsInum: 4026531840, NetnsCookie: 9}
		body, err := r.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				got, err := DecodeEchoReply(body)
				if err != nil || len(got.Payload) != size {
					b.Fatalf("DecodeEchoReply: want %d bytes; got %+v, %v", size, got, err)
				}
			}
		})
	}
}
