package server

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/family"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

func message(ns string, inum uint32, seq uint64, payload []byte) broker.Event {
	return broker.Event{Kind: broker.KindMessage, Namespace: ns, Epoch: 1, Instance: 7, Message: family.Event{
		Group: 1, Seq: seq, Payload: payload, NetnsInum: inum, SenderPortID: 9,
		Timestamp: time.Date(2026, 12, 7, 0, 0, 0, int(seq), time.UTC)}}
}

// TestEventCacheConvertsOncePerMessage: the streams of one message (each
// with its copy of the broker.Event, read at once from many goroutines)
// share one conversion; another message, even one that differs only in
// its payload or its namespace's inode, gets its own.
func TestEventCacheConvertsOncePerMessage(t *testing.T) {
	var c eventCache
	ev := message("red", 100, 1, []byte("one"))
	const streams = 16
	got := make([]*wireEvent, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() { got[i] = c.event(ev) })
	}
	wg.Wait()
	for i, r := range got {
		if r != got[0] {
			t.Fatalf("stream %d got conversion %p, stream 0 %p: want one for the message", i, r, got[0])
		}
	}
	if !proto.Equal(got[0].resp, eventToProto(ev)) {
		t.Fatalf("shared conversion %v, want %v", got[0].resp, eventToProto(ev))
	}
	for what, other := range map[string]broker.Event{
		"the next number":             message("red", 100, 2, ev.Message.Payload),
		"a payload of its own":        message("red", 100, 1, []byte("one")),
		"another payload, same array": message("red", 100, 1, ev.Message.Payload[:2]),
		"another namespace's inode":   message("red", 101, 1, ev.Message.Payload),
		"another name":                message("blue", 100, 1, ev.Message.Payload),
	} {
		w := c.event(other)
		if w == got[0] {
			t.Errorf("%s: got the first message's conversion", what)
		}
		if r := w.resp; !proto.Equal(r, eventToProto(other)) {
			t.Errorf("%s: got %v, want %v", what, r, eventToProto(other))
		}
	}
	if r := c.event(message("red", 100, 1, nil)).resp; r.GetEvent().GetPayload() != nil || r.GetEvent().GetSeq() != 1 {
		t.Errorf("empty payload: got %v", r)
	}
}

// TestEventCacheSlots: the last eventCacheSlots messages of a group, which
// its streams send at about the same time, each have a slot of their own.
func TestEventCacheSlots(t *testing.T) {
	for _, from := range []uint64{1, 1000, 1<<64 - 100} {
		taken := make(map[int]uint64)
		for seq := from; seq != from+eventCacheSlots; seq++ {
			k := keyOf(message("red", 100, seq, nil))
			if other, ok := taken[k.slot()]; ok {
				t.Fatalf("messages %d and %d share slot %d", other, seq, k.slot())
			}
			taken[k.slot()] = seq
		}
	}
}

// sentStream is a Subscribe stream outside any gRPC transport: it records
// what it is given to send.
type sentStream struct {
	grpc.ServerStream
	sent []any
}

func (s *sentStream) Context() context.Context { return context.Background() }
func (s *sentStream) SendMsg(m any) error      { s.sent = append(s.sent, m); return nil }

// TestEventCacheSendWithoutTransport: a stream whose send compressor
// cannot be known sends the response itself, for its own marshalling.
func TestEventCacheSendWithoutTransport(t *testing.T) {
	var c eventCache
	ev := message("red", 100, 1, []byte("one"))
	s := new(sentStream)
	if err := c.send(newEventStream(s), ev); err != nil {
		t.Fatal(err)
	}
	if len(s.sent) != 1 {
		t.Fatalf("sent %d messages, want 1", len(s.sent))
	}
	if r, ok := s.sent[0].(*nsbrokerv1.SubscribeResponse); !ok || !proto.Equal(r, eventToProto(ev)) {
		t.Fatalf("sent %T %v, want the response %v", s.sent[0], s.sent[0], eventToProto(ev))
	}
	if n := c.prepared.Load(); n != 0 {
		t.Fatalf("%d messages prepared, want none", n)
	}
}

// TestIntegrationSubscribePreparedPerCompressor: subscribers that take
// their events plain and subscribers that take them gzipped, on the same
// groups, each receive every event intact, though each event is prepared
// once per compressor for all but one of its streams rather than
// marshalled by each. A plain stream that sent bytes prepared for a gzip
// one would fail: its client refuses a compressed message on a stream
// without compression. An event with one subscriber skips the cache.
func TestIntegrationSubscribePreparedPerCompressor(t *testing.T) {
	e := newEnv(t, nil)
	name, inode := e.names["A"], e.inode("A")
	const perCompressor, events = 3, 50
	type subscriber struct {
		compressor string
		s          grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse]
		received   *payloadSizes
	}
	var subs []subscriber
	for _, compressor := range []string{gzip.Name, ""} {
		var opts []grpc.CallOption
		if compressor != "" {
			opts = append(opts, grpc.UseCompressor(compressor))
		}
		for range perCompressor {
			// Each on a connection of its own, as separate clients are.
			received := new(payloadSizes)
			c := e.client("unix://"+e.admin, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(received))
			s, err := c.Subscribe(testContext(t), &nsbrokerv1.SubscribeRequest{Namespace: name, Groups: []uint32{1}}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Header(); err != nil {
				t.Fatal(err)
			}
			subs = append(subs, subscriber{compressor, s, received})
		}
	}
	// One subscriber of another group: its events are sent as they are.
	alone := subscribed(t, e.adminClient(), name, 2)
	for i := range events {
		e.k.Publish(inode, 2, fmt.Appendf(nil, "alone %d", i))
	}
	for i := range events {
		if r := recvItem(t, alone); string(r.GetEvent().GetPayload()) != fmt.Sprintf("alone %d", i) {
			t.Fatalf("the one subscriber of group 2, event %d: got %v", i, r)
		}
	}
	if n := e.srv.events.prepared.Load(); n != 0 {
		t.Fatalf("%d messages prepared for events with one subscriber each, want none", n)
	}
	for i := range e.srv.events.slots {
		if k := e.srv.events.slots[i].key; k.group == 2 {
			t.Fatalf("slot %d holds message %d of group 2, which had one subscriber: want it sent without the cache", i, k.seq)
		}
	}

	// No collection may take a conversion between its streams: the
	// count of prepared messages below is then exact.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for i := range events {
		e.k.Publish(inode, 1, fmt.Appendf(nil, "event %d", i))
	}
	for _, sub := range subs {
		for i := range events {
			r, err := sub.s.Recv()
			if err != nil {
				t.Fatalf("subscriber with compressor %q, event %d: %v", sub.compressor, i, err)
			}
			ev := r.GetEvent()
			if want := fmt.Sprintf("event %d", i); ev.GetSeq() != uint64(i+1) || string(ev.GetPayload()) != want || ev.GetNamespace() != name {
				t.Fatalf("subscriber with compressor %q: got %v, want seq %d payload %q", sub.compressor, r, i+1, want)
			}
		}
		// A gzip stream that sent bytes prepared for a plain one would
		// deliver them intact, but uncompressed.
		if plain, compressed := sub.received.counts(); sub.compressor != "" && (plain != 0 || compressed != events) {
			t.Fatalf("subscriber with compressor %q received %d events plain and %d compressed, want all %d compressed", sub.compressor, plain, compressed, events)
		}
	}
	// Once per event and compressor.
	if prepared := e.srv.events.prepared.Load(); prepared != 2*events {
		t.Fatalf("%d messages prepared for %d events to %d streams in 2 compressors, want %d", prepared, events, len(subs), 2*events)
	}
}

// payloadSizes is a client's stats.Handler that counts the messages it
// received plain and compressed.
type payloadSizes struct {
	mu                sync.Mutex
	plain, compressed int
}

func (p *payloadSizes) counts() (plain, compressed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.plain, p.compressed
}

func (p *payloadSizes) HandleRPC(_ context.Context, s stats.RPCStats) {
	in, ok := s.(*stats.InPayload)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if in.CompressedLength == in.Length {
		p.plain++
	} else {
		p.compressed++
	}
}

func (p *payloadSizes) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (p *payloadSizes) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (p *payloadSizes) HandleConn(context.Context, stats.ConnStats)                       {}
