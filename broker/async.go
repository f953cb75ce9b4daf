package broker

import (
	"context"
	"fmt"

	"github.com/nsbroker/nsbroker/family"
)

// PendingPublish is a publish sent by PublishAsync whose reply has not
// been read yet.
type PendingPublish struct {
	c    *nsConn
	name string
	seq  uint32
	ch   chan reply
}

// PublishAsync sends a publish to group in the namespace and returns
// without waiting for the module's reply; Wait returns it. It lets one
// goroutine keep several publishes in flight: the module numbers events in
// the order of the sends, so publishes sent one after the other by the
// same goroutine are published in that order. A reply nobody waits for is
// dropped when it arrives.
func (b *Broker) PublishAsync(name string, group uint32, payload []byte) (*PendingPublish, error) {
	data, err := family.EncodePublish(group, payload)
	if err != nil {
		return nil, opError("publish", name, invalid(err))
	}
	c, err := b.lookup(name)
	if err != nil {
		return nil, opError("publish", name, err)
	}
	seq, ch, err := c.send(family.MsgPublish, data)
	if err != nil {
		return nil, opError("publish", name, err)
	}
	return &PendingPublish{c: c, name: name, seq: seq, ch: ch}, nil
}

// Wait returns the reply to the publish, with the errors Publish returns,
// or ctx's error if ctx ends first (the event may still be published).
// Call it at most once.
func (p *PendingPublish) Wait(ctx context.Context) (*family.PublishReply, error) {
	m, err := p.c.wait(ctx, p.seq, p.ch)
	if err != nil {
		return nil, opError("publish", p.name, err)
	}
	r, ok := m.Reply.(*family.PublishReply)
	if !ok {
		return nil, opError("publish", p.name, fmt.Errorf("unexpected reply %T", m.Reply))
	}
	return r, nil
}

// Publication is one event for PublishBatch.
type Publication struct {
	Group   uint32
	Payload []byte
}

// PublishBatch sends the publishes of pubs, in order, in as few datagrams
// as family.Conn.SendBatch makes of them, and returns without waiting for
// the module's replies, one PendingPublish each, in the same order. The
// module handles every message of a datagram in turn, as it would handle
// them sent one by one: a publish it refuses gets its error, and the ones
// after it are still published.
//
// A publication that cannot be encoded is not sent, nor anything after
// it: PublishBatch returns the ones before it with the error, as a loop of
// PublishAsync that stops at the first failure would. When sending fails,
// it returns the publishes sent before the failing datagram with the error.
//
// ctx only pins the namespace (WithNamespaceID); the publishes outlive it.
func (b *Broker) PublishBatch(ctx context.Context, name string, pubs []Publication) ([]*PendingPublish, error) {
	reqs := make([]family.Request, 0, len(pubs))
	var encErr error
	for _, p := range pubs {
		data, err := family.EncodePublish(p.Group, p.Payload)
		if err != nil {
			encErr = opError("publish", name, invalid(err))
			break
		}
		reqs = append(reqs, family.Request{Type: family.MsgPublish, Data: data})
	}
	if len(reqs) == 0 {
		return nil, encErr
	}
	c, err := b.lookupIn(ctx, name)
	if err != nil {
		return nil, opError("publish", name, err)
	}
	chans, err := c.sendBatch(reqs)
	pend := make([]*PendingPublish, len(chans))
	for i, ch := range chans {
		pend[i] = &PendingPublish{c: c, name: name, seq: reqs[i].Seq, ch: ch}
	}
	if err != nil {
		return pend, opError("publish", name, err)
	}
	return pend, encErr
}
