package client

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// ErrClosed is what Recv returns once the Subscription has been closed.
var ErrClosed = errors.New("subscription closed")

// Position is where a subscriber is in one group.
type Position struct {
	// Instance is the module instance the last item carried: it changes
	// when the module is reloaded and the numbering restarts. 0: unknown
	// (a daemon that does not say).
	Instance uint64
	// Epoch is the epoch the last event carried: the daemon's connection
	// count for the namespace. Compared only when Instance is unknown.
	Epoch uint64
	// Seq is the last sequence number seen, or accounted for by a gap.
	Seq uint64
}

// same reports whether an item of instance and epoch continues the
// numbering of p.
func (p Position) same(instance, epoch uint64) bool {
	if instance != 0 && p.Instance != 0 {
		return instance == p.Instance
	}
	return epoch == p.Epoch
}

// ResumePoint is where a subscription stands, per group: what a
// Subscription hands on to the next one (SubscribeConfig.From), and what
// it compares the first event after a reconnect with.
type ResumePoint map[uint32]Position

// SubscribeConfig says what to subscribe to.
type SubscribeConfig struct {
	// Namespace is the namespace; empty: the caller's own (tenants).
	Namespace string
	// Groups are the groups, 1..32, at least one.
	Groups []uint32
	// From continues from an earlier subscription: the first event of
	// each group it names is compared with it, as after a reconnect.
	From ResumePoint
	// Once ends the subscription at the first error, as a plain stream
	// would, instead of reconnecting.
	Once bool
}

// Item is one item of a subscription: exactly one of Event and Gap is
// set.
type Item struct {
	Event *nsbrokerv1.Event
	Gap   *Gap
}

// Gap is a range of sequence numbers of one group that the subscriber
// will not receive.
type Gap struct {
	// Namespace and Group are where the events were published.
	Namespace string
	Group     uint32
	// From and To are the first and last missing sequence numbers. To 0:
	// unknown; every event after From-1 and before the next one received
	// may be missing.
	From, To uint64
	// Reason is the daemon's reason; LOSS_REASON_UNSPECIFIED when
	// Reconnect is set.
	Reason nsbrokerv1.LossReason
	// Reconnect is set for a gap the Subscription found itself: the
	// events were published while it was reconnecting.
	Reconnect bool
	// Instance is the module instance the numbers belong to (0: unknown).
	Instance uint64
}

// Count returns the number of missing events, 0 when unknown.
func (g *Gap) Count() uint64 {
	if g.To == 0 || g.To < g.From {
		return 0
	}
	return g.To - g.From + 1
}

// Subscription is a subscription that outlives its streams: when a
// stream or the connection breaks (UNAVAILABLE: the daemon restarting,
// the connection lost), it opens a new one, waiting between attempts as
// the Client's Config says, and reports what it missed meanwhile as a
// Gap. Other errors (NOT_FOUND, PERMISSION_DENIED, ABORTED when the
// namespace is detached or gone, RESOURCE_EXHAUSTED) end it.
//
// Recv is for one goroutine at a time; Close and ResumePoint may be
// called from any.
type Subscription struct {
	client *Client
	cfg    SubscribeConfig
	parent context.Context    // the caller's
	ctx    context.Context    // parent, until Close
	close  context.CancelFunc // cancels ctx
	bo     retryWait

	// Owned by Recv.
	stream    grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse]
	endStream context.CancelFunc // cancels stream; nil without one
	pending   []Item             // taken from the stream, not yet returned
	check     map[uint32]bool    // groups whose next item is compared with pos
	namespace string             // the namespace's name, as events carry it
	err       error              // why it ended
	delivered bool               // the current stream delivered an item
	mu        sync.Mutex
	pos       ResumePoint // guarded by mu
}

// Subscribe subscribes to cfg.Groups of cfg.Namespace and returns once
// the subscription is in place in the daemon: every event published
// after that reaches it. The subscription lasts until ctx is cancelled,
// Close is called, or an error that a new stream would not mend.
func (c *Client) Subscribe(ctx context.Context, cfg *SubscribeConfig) (*Subscription, error) {
	if cfg == nil {
		cfg = &SubscribeConfig{}
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &Subscription{
		client: c, cfg: *cfg, parent: ctx, ctx: sctx, close: cancel,
		bo:        retryWait{min: c.cfg.MinBackoff, max: c.cfg.MaxBackoff},
		check:     map[uint32]bool{},
		namespace: cfg.Namespace,
		pos:       ResumePoint{},
	}
	for g, p := range cfg.From {
		s.pos[g] = p
		s.check[g] = true
	}
	if err := s.connect(); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// Recv returns the next event or gap. After a reconnect, before the first
// item of a group, it returns a Gap (Reconnect set) for the sequence
// numbers of that group it missed meanwhile: the exact range when the
// first event has the epoch of the last one seen, an open range (To 0)
// when the epoch changed or the numbering restarted. The error is the
// one that ended the subscription: ctx's, ErrClosed, an *Error, or
// io.EOF if the daemon ended the stream without one.
func (s *Subscription) Recv() (Item, error) {
	for {
		if len(s.pending) > 0 {
			it := s.pending[0]
			s.pending = s.pending[1:]
			return it, nil
		}
		if s.err != nil {
			return Item{}, s.err
		}
		if s.stream == nil {
			if err := s.connect(); err != nil {
				s.fail(err)
			}
			continue
		}
		resp, err := s.stream.Recv()
		if err != nil {
			s.stop()
			if s.cfg.Once || !retryable(err) {
				s.fail(err)
			} else {
				s.lost()
			}
			continue
		}
		s.take(resp)
	}
}

// ResumePoint returns where the subscription stands: per group, the
// position of the last event returned or taken from the stream.
func (s *Subscription) ResumePoint() ResumePoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.pos)
}

// Close ends the subscription; a blocked Recv returns ErrClosed.
func (s *Subscription) Close() error {
	s.close()
	return nil
}

// retryable reports whether a new stream may mend err.
func retryable(err error) bool { return status.Code(err) == codes.Unavailable }

// request is the SubscribeRequest of the next stream: it resumes each
// subscribed group from its position, so that the daemon replays what it
// still retains and reports the rest as exact gaps; the comparison in
// take then finds nothing left to report, unless the daemon does not
// resume.
func (s *Subscription) request() *nsbrokerv1.SubscribeRequest {
	req := &nsbrokerv1.SubscribeRequest{Namespace: s.cfg.Namespace, Groups: s.cfg.Groups}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.cfg.Groups {
		if p, ok := s.pos[g]; ok {
			req.Resume = append(req.Resume, &nsbrokerv1.ResumePoint{Group: g, Instance: p.Instance, Seq: p.Seq})
		}
	}
	return req
}

// connect opens a stream, trying again after UNAVAILABLE (unless Once)
// with a growing wait; the first attempt after a stream that delivered
// something does not wait.
func (s *Subscription) connect() error {
	if s.delivered {
		s.bo.reset()
		s.delivered = false
	}
	for {
		if err := s.sleep(s.bo.next()); err != nil {
			return err
		}
		err := s.open()
		if err == nil {
			return nil
		}
		if s.cfg.Once || !retryable(err) || s.ctx.Err() != nil {
			return err
		}
	}
}

// open opens a stream and waits until the daemon has set it up (the
// response headers).
func (s *Subscription) open() error {
	ctx, cancel := context.WithCancel(s.ctx)
	stream, err := s.client.broker.Subscribe(ctx, s.request())
	if err == nil {
		var md metadata.MD
		md, err = stream.Header()
		if err == nil && md == nil {
			// It ended without headers; Recv says how.
			_, err = stream.Recv()
		}
	}
	if err != nil {
		cancel()
		return err
	}
	s.stream, s.endStream = stream, cancel
	return nil
}

func (s *Subscription) sleep(d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-s.ctx.Done():
		}
	}
	return s.ctxErr()
}

// ctxErr is why the subscription's context ended: the caller's error, or
// ErrClosed after Close; nil while it lasts.
func (s *Subscription) ctxErr() error {
	if err := s.parent.Err(); err != nil {
		return err
	}
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	return nil
}

// stop ends the current stream.
func (s *Subscription) stop() {
	if s.endStream != nil {
		s.endStream()
	}
	s.stream, s.endStream = nil, nil
}

// fail ends the subscription with err, or with the context's error if
// that is why.
func (s *Subscription) fail(err error) {
	if cerr := s.ctxErr(); cerr != nil {
		err = cerr
	}
	s.stop()
	s.close()
	s.err = err
}

// lost notes that the stream broke: the next item of every group with a
// position is compared with it.
func (s *Subscription) lost() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for g := range s.pos {
		s.check[g] = true
	}
}

// take queues the item resp holds, after the gap that comparing it with
// the group's position reveals.
func (s *Subscription) take(resp *nsbrokerv1.SubscribeResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case resp.GetEvent() != nil:
		ev := resp.GetEvent()
		g := ev.GetGroup()
		s.namespace = ev.GetNamespace()
		if p, ok := s.pos[g]; ok && s.check[g] {
			same := p.same(ev.GetInstance(), ev.GetEpoch())
			switch {
			case same && ev.GetSeq() == p.Seq+1:
			case same && ev.GetSeq() > p.Seq+1:
				s.lockedGap(g, p.Seq+1, ev.GetSeq()-1)
			default: // another instance, or the numbering restarted
				s.lockedGap(g, p.Seq+1, 0)
			}
		}
		delete(s.check, g)
		s.pos[g] = Position{Instance: ev.GetInstance(), Epoch: ev.GetEpoch(), Seq: ev.GetSeq()}
		s.pending = append(s.pending, Item{Event: ev})
	case resp.GetGap() != nil:
		pg := resp.GetGap()
		g := pg.GetGroup()
		s.namespace = pg.GetNamespace()
		if p, ok := s.pos[g]; ok {
			// A gap carries no epoch: it counts as the epoch of the
			// last event.
			if s.check[g] && p.same(pg.GetInstance(), p.Epoch) && pg.GetFromSeq() > p.Seq+1 {
				s.lockedGap(g, p.Seq+1, pg.GetFromSeq()-1)
			}
			switch {
			case pg.GetInstance() != 0 && p.Instance != 0 && pg.GetInstance() != p.Instance:
				// The numbering restarted: the gap starts the new one.
				if pg.GetToSeq() != 0 {
					s.pos[g] = Position{Instance: pg.GetInstance(), Epoch: p.Epoch, Seq: pg.GetToSeq()}
				}
			case pg.GetToSeq() > p.Seq:
				s.pos[g] = Position{Instance: cmp.Or(pg.GetInstance(), p.Instance), Epoch: p.Epoch, Seq: pg.GetToSeq()}
			}
		}
		delete(s.check, g)
		s.pending = append(s.pending, Item{Gap: &Gap{
			Namespace: pg.GetNamespace(), Group: g, From: pg.GetFromSeq(), To: pg.GetToSeq(), Reason: pg.GetReason(),
			Instance: pg.GetInstance(),
		}})
	default:
		return // an item kind this client does not know
	}
	s.delivered = true
}

// lockedGap queues a gap found across a reconnect.
func (s *Subscription) lockedGap(group uint32, from, to uint64) {
	s.pending = append(s.pending, Item{Gap: &Gap{
		Namespace: s.namespace, Group: group, From: from, To: to, Reconnect: true,
	}})
}

// retryWait is the wait before each attempt to open a stream: none before
// the first, then min, doubling up to max, each less up to half at
// random so that subscribers of a restarted daemon spread out.
type retryWait struct {
	min, max time.Duration
	n        int // attempts so far
}

func (b *retryWait) next() time.Duration {
	n := b.n
	b.n = min(b.n+1, 64)
	if n == 0 {
		return 0
	}
	d := b.min
	for i := 1; i < n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	return d - rand.N(d/2+1)
}

func (b *retryWait) reset() { b.n = 0 }
