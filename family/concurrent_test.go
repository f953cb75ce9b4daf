package family

import (
	"encoding/binary"
	"iter"
	"net"
	"sync"
	"testing"

	"github.com/mdlayher/netlink"
)

// loopback is a fake kernel that is safe for concurrent use, unlike
// NewFakeConn's:
// Send answers each echo request at once into a queue that Receive reads.
type loopback struct {
	t    *testing.T
	out  chan netlink.Message
	done chan struct{}
	once sync.Once
}

func newLoopback(t *testing.T) *loopback {
	return &loopback{t: t, out: make(chan netlink.Message, 64), done: make(chan struct{})}
}

func (l *loopback) Send(m netlink.Message) error {
	echo, err := decodeEchoRequest(m.Data)
	if err != nil {
		l.t.Errorf("seq %d: %v", m.Header.Sequence, err)
	}
	r := replyTo(l.t, m, MsgEcho, &EchoReply{Payload: echo, NetnsInum: 1, NetnsCookie: 2})
	select {
	case l.out <- r:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

func (l *loopback) SendMessages(ms []netlink.Message) error {
	for _, m := range ms {
		if err := l.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func (l *loopback) ReceiveIter() iter.Seq2[netlink.Message, error] {
	return func(yield func(netlink.Message, error) bool) {
		select {
		case m := <-l.out:
			yield(m, nil)
		case <-l.done:
			yield(netlink.Message{}, net.ErrClosed)
		}
	}
}

func (l *loopback) Receive() ([]netlink.Message, error) {
	for m, err := range l.ReceiveIter() {
		return []netlink.Message{m}, err
	}
	return nil, nil
}

// ReceiveDatagram is Receive as the datagram a socket would read.
func (l *loopback) ReceiveDatagram() ([]byte, uint32, error) {
	select {
	case m := <-l.out:
		b, err := marshalMessage(m)
		return b, 0, err
	case <-l.done:
		return nil, 0, net.ErrClosed
	}
}

func (l *loopback) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// decodeEchoRequest returns the payload of an echo request body.
func decodeEchoRequest(b []byte) ([]byte, error) {
	ad, err := attributes(b, "ECHO request")
	if err != nil {
		return nil, err
	}
	var payload []byte
	for ad.Next() {
		if ad.Type() == AttrPayload {
			payload = ad.Bytes()
		}
	}
	return payload, ad.Err()
}

// TestConcurrentSendReceive runs a multiplexer's pattern: many goroutines
// send while one receives, and every reply must reach the request with its
// sequence number.
func TestConcurrentSendReceive(t *testing.T) {
	const senders, perSender = 8, 200
	lb := newLoopback(t)
	c := NewDatagramConn(netlink.NewConn(lb, 1), lb)
	defer c.Close()

	received := make(map[uint32][]byte)
	readerDone := make(chan error, 1)
	go func() {
		for len(received) < senders*perSender {
			msgs, err := c.Receive()
			if err != nil {
				readerDone <- err
				return
			}
			for _, m := range msgs {
				if m.Err != nil {
					readerDone <- m.Err
					return
				}
				received[m.Seq] = m.Reply.(*EchoReply).Payload
			}
		}
		readerDone <- nil
	}()

	sent := make([]map[uint32][]byte, senders)
	var wg sync.WaitGroup
	for s := range senders {
		sent[s] = make(map[uint32][]byte)
		wg.Go(func() {
			for i := range perSender {
				payload := binary.BigEndian.AppendUint32([]byte{byte(s)}, uint32(i))
				b, _ := EncodeEcho(payload)
				seq, err := c.Send(MsgEcho, 0, b)
				if err != nil {
					t.Errorf("Send: %v", err)
					return
				}
				sent[s][seq] = payload
			}
		})
	}
	wg.Wait()
	if err := <-readerDone; err != nil {
		t.Fatalf("Receive: %v", err)
	}

	seen := make(map[uint32]bool)
	for _, m := range sent {
		for seq, payload := range m {
			if seen[seq] {
				t.Errorf("sequence number %d used twice", seq)
			}
			seen[seq] = true
			if got := received[seq]; string(got) != string(payload) {
				t.Errorf("seq %d: want reply payload % x, got % x", seq, payload, got)
			}
		}
	}
	if want, got := senders*perSender, len(seen); want != got {
		t.Errorf("want %d distinct sequence numbers, got %d", want, got)
	}
}
