package family

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
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

// BenchmarkRealSocketRoundTrip sends a request on a real rtnetlink socket
// and receives the kernel's answer (a rejection of an unknown type), once
// through Conn.Send and Conn.Receive (direct sendto and one recvmsg) and
// once through netlink.Conn, which they replaced (a goroutine per sendmsg
// and recvmsg, and a MSG_PEEK recvmsg before every read).
func BenchmarkRealSocketRoundTrip(b *testing.B) {
	const unknownType = 0x3fff
	body := EncodeStats()
	b.Run("Conn", func(b *testing.B) {
		c, err := dial(unix.NETLINK_ROUTE, &Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		for b.Loop() {
			seq, err := c.Send(unknownType, 0, body)
			if err != nil {
				b.Fatal(err)
			}
			msgs, err := c.Receive()
			if err != nil || len(msgs) != 1 || msgs[0].Seq != seq {
				b.Fatalf("want the rejection of seq %d, got %+v, %v", seq, msgs, err)
			}
		}
	})
	b.Run("netlink.Conn", func(b *testing.B) {
		c, err := dial(unix.NETLINK_ROUTE, &Config{})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		b.ReportAllocs()
		for b.Loop() {
			m, err := c.nc.Send(netlink.Message{Header: netlink.Header{Type: unknownType, Flags: netlink.Request}, Data: body})
			if err != nil {
				b.Fatal(err)
			}
			_, err = c.nc.Receive()
			if oe := (*netlink.OpError)(nil); !errors.As(err, &oe) || oe.Sequence != m.Header.Sequence {
				b.Fatalf("want the rejection of seq %d, got %v", m.Header.Sequence, err)
			}
		}
	})
}
