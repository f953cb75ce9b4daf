package server

import (
	"sync"
	"testing"
	"time"

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
	got := make([]*nsbrokerv1.SubscribeResponse, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() { got[i] = c.response(ev) })
	}
	wg.Wait()
	for i, r := range got {
		if r != got[0] {
			t.Fatalf("stream %d got conversion %p, stream 0 %p: want one for the message", i, r, got[0])
		}
	}
	if !proto.Equal(got[0], eventToProto(ev)) {
		t.Fatalf("shared conversion %v, want %v", got[0], eventToProto(ev))
	}
	for what, other := range map[string]broker.Event{
		"the next number":             message("red", 100, 2, ev.Message.Payload),
		"a payload of its own":        message("red", 100, 1, []byte("one")),
		"another payload, same array": message("red", 100, 1, ev.Message.Payload[:2]),
		"another namespace's inode":   message("red", 101, 1, ev.Message.Payload),
		"another name":                message("blue", 100, 1, ev.Message.Payload),
	} {
		r := c.response(other)
		if r == got[0] {
			t.Errorf("%s: got the first message's conversion", what)
		}
		if !proto.Equal(r, eventToProto(other)) {
			t.Errorf("%s: got %v, want %v", what, r, eventToProto(other))
		}
	}
	if r := c.response(message("red", 100, 1, nil)); r.GetEvent().GetPayload() != nil || r.GetEvent().GetSeq() != 1 {
		t.Errorf("empty payload: got %v", r)
	}
}
