package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// reply is what the reader hands to a waiting request.
type reply struct {
	msg family.Message
	err error
}

// groupState is the reader's view of one multicast group.
type groupState struct {
	refs    int    // subscribers that want the group; joined while > 0
	lastSeq uint64 // last sequence number received
	known   bool   // lastSeq is meaningful
	// cause is why the next discontinuity happened, when the broker knows
	// (0 means: an overrun the kernel did not tell us about).
	cause LossReason
	// linger keeps the group joined, and its events retained, after its
	// last subscriber left, so that one resuming later finds them.
	linger bool
	// base: numbers up to it were multicast before this broker listened
	// to the group (of the current module instance). from: the ring
	// accounts for every number from it to lastSeq (0: not yet known).
	base, from uint64
	// tail is why the numbers after the last retained event up to
	// lastSeq are missing, when a GROUPS reply closed a loss (0: none).
	tail LossReason
	ring retainRing
	// joins counts the times the broker joined the group: a GROUPS reply
	// tells where a group starts only if it was asked for after the
	// last join.
	joins uint64
}

// joined reports whether the broker's socket is a member of the group.
func (gs *groupState) joined() bool { return gs.refs > 0 || gs.linger }

// lockedKnow makes the group's numbering known from lastSeq on: this
// broker has seen nothing up to it.
func (gs *groupState) lockedKnow(lastSeq uint64) {
	gs.lastSeq, gs.known, gs.cause, gs.tail = lastSeq, true, 0, 0
	gs.base, gs.from = lastSeq, lastSeq+1
}

// nsConn is the broker's presence in one attached namespace: the namespace
// file (which keeps it alive), at most one connection to the module with a
// single reader goroutine, the requests waiting for replies and the
// subscribers.
type nsConn struct {
	b         *Broker
	name      string
	ref       nsmgr.Ref
	ns        *nsmgr.Namespace
	attached  time.Time
	seq       atomic.Uint32
	stopWatch context.CancelFunc // ends the namespace-lifetime watch
	announced bool               // guarded by Broker.mu: Attach reported it
	dialMu    sync.Mutex         // serialises dial attempts

	received    atomic.Uint64 // events received from the kernel
	overruns    atomic.Uint64 // ENOBUFS seen on the socket
	overrunLost atomic.Uint64 // events the kernel dropped for us
	forged      atomic.Uint64 // datagrams dropped as not from the kernel

	mu       sync.Mutex   // guards everything below
	conn     *family.Conn // nil unless StateReady
	dialing  *family.Conn // a connection being set up, not yet ready
	epoch    uint64       // incremented on every successful dial
	instance uint64       // module instance id seen at the last dial
	reason   error        // why conn is nil
	closed   error        // non-nil once detached: the reason
	pending  map[uint32]chan reply
	// hooks are requests whose reply the reader hands over itself, with
	// mu held, in its place among the events (GROUPS replies).
	hooks map[uint32]func(family.Message)
	// groups holds the state of each group the broker ever joined in
	// this namespace (nil for one never joined: most namespaces have
	// none, and a state with its ring is about 100 bytes).
	groups [family.Groups + 1]*groupState
	subs   map[*subscriber]struct{}
	// down says whether this namespace counts in Broker.unavailable.
	down bool

	// reqMu is held by the one request that uses the request socket;
	// another request meanwhile takes the shared socket (requestDirect).
	reqMu sync.Mutex
	// reqConn is the request socket, nil until the namespace's first
	// request, and again once closed; reqEpoch, guarded by reqMu, is the
	// epoch it was opened in. It is replaced under reqMu and closed
	// without it (disconnect, close), which ends a Receive in progress.
	reqConn  atomic.Pointer[family.Conn]
	reqEpoch uint64
}

func newNSConn(b *Broker, name string, ns *nsmgr.Namespace) *nsConn {
	b.unavailable.Add(1)
	return &nsConn{
		b:        b,
		name:     name,
		ref:      ns.Ref(),
		ns:       ns,
		attached: time.Now(),
		pending:  make(map[uint32]chan reply),
		hooks:    make(map[uint32]func(family.Message)),
		subs:     make(map[*subscriber]struct{}),
		reason:   errors.New("not connected yet"),
		down:     true,
	}
}

// lockedCountDown keeps Broker.unavailable, the number of attached
// namespaces without a connection, in step with c after c.conn or
// c.closed changed; the recovery loop looks at them only while it is not
// zero.
func (c *nsConn) lockedCountDown() {
	down := c.conn == nil && c.closed == nil
	if down == c.down {
		return
	}
	c.down = down
	if down {
		c.b.unavailable.Add(1)
	} else {
		c.b.unavailable.Add(-1)
	}
}

// lockedGroup returns the state of group g, made on first use.
func (c *nsConn) lockedGroup(g uint32) *groupState {
	if c.groups[g] == nil {
		c.groups[g] = &groupState{}
	}
	return c.groups[g]
}

func (c *nsConn) nextSeq() uint32 {
	for {
		if s := c.seq.Add(1); s != 0 {
			return s
		}
	}
}

// dial connects to the module in the namespace, learns the module
// instance, rejoins the subscribed groups and starts the reader. The
// namespace counts as ready only once its groups are joined.
func (c *nsConn) dial() error {
	// One dial at a time: Attach and the recovery loop may both try, and
	// each must see the outcome of the other's attempt.
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	c.mu.Lock()
	done := c.closed != nil || c.conn != nil
	c.mu.Unlock()
	if done {
		return nil
	}

	conn, err := c.b.dialConn(c.ns)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		conn.Close()
		return nil
	}
	c.dialing = conn
	c.mu.Unlock()
	go c.read(conn)

	// The instance id tells whether sequence numbers restarted.
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	st, err := c.stats(ctx, conn)
	cancel()
	if err == nil {
		err = c.finishDial(conn, st.InstanceID)
	}
	if err == nil {
		// Where each joined group stands: closes what was lost while
		// there was no connection, and sets where unknown groups start.
		c.queryGroups(conn, nil)
	}
	if err != nil {
		c.mu.Lock()
		if c.dialing == conn {
			c.dialing = nil
		}
		c.mu.Unlock()
		conn.Close()
		return fmt.Errorf("dial: %w", err)
	}
	return nil
}

// dialTimeout bounds the first request on a new connection.
const dialTimeout = 10 * time.Second

// finishDial decides how the sequence numbers continue, joins every
// subscribed group and makes conn the namespace's connection.
func (c *nsConn) finishDial(conn *family.Conn, instance uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dialing != conn {
		return errors.New("dial aborted")
	}
	reloaded := c.instance != 0 && c.instance != instance
	for g := uint32(1); g <= family.Groups; g++ {
		gs := c.groups[g]
		if gs == nil {
			continue // never joined: nothing to reset or rejoin
		}
		if reloaded {
			// The old instance's numbers mean nothing any more.
			gs.ring.clear(c.b.retainBudget)
			gs.base, gs.from, gs.tail = 0, 1, 0
		}
		if !gs.joined() {
			continue
		}
		if err := conn.JoinGroup(g); err != nil {
			return fmt.Errorf("join group %d: %w", g, err)
		}
		gs.joins++
		if reloaded && gs.known {
			// The new instance counts from 1 again.
			gs.lastSeq, gs.cause = 0, LossModuleReloaded
		}
	}
	c.instance = instance
	c.epoch++
	c.reason = nil
	c.conn, c.dialing = conn, nil
	c.lockedCountDown()
	return nil
}

// disconnect drops conn (if it is still the current one): pending requests
// fail, subscribers are told their stream was cut, and the namespace turns
// unavailable until the broker re-dials.
func (c *nsConn) disconnect(conn *family.Conn, why error) {
	c.mu.Lock()
	if c.dialing != nil {
		// Abort a dial in progress; finishDial will notice.
		c.dialing = nil
	}
	if c.conn != conn || conn == nil {
		c.mu.Unlock()
		return
	}
	c.conn = nil
	c.lockedCountDown()
	c.reason = why
	c.lockedFailPending(fmt.Errorf("%w: %v", ErrUnavailable, why))
	for g := uint32(1); g <= family.Groups; g++ {
		gs := c.groups[g]
		if gs != nil && gs.joined() && gs.known {
			for s := range c.subs {
				if s.wants(g) {
					s.pushGap(Gap{Group: g, From: gs.lastSeq + 1, Reason: LossReleased, Instance: c.instance})
				}
			}
			gs.cause = LossReleased
		}
	}
	c.mu.Unlock()
	conn.Close()
	c.closeRequestSocket()
	c.b.notify(NamespaceUnavailable, c, why)
	c.b.kickRecovery()
}

func (c *nsConn) lockedFailPending(err error) {
	for seq, ch := range c.pending {
		ch <- reply{err: err}
		delete(c.pending, seq)
	}
	for seq, h := range c.hooks {
		delete(c.hooks, seq)
		h(family.Message{Seq: seq, Err: err})
	}
}

// close detaches: everything the namespace held is released.
func (c *nsConn) close(why error) {
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return
	}
	c.closed = why
	conn, dialing := c.conn, c.dialing
	c.conn, c.dialing = nil, nil
	c.lockedCountDown()
	c.lockedFailPending(fmt.Errorf("%w: %w", ErrDetached, why))
	for s := range c.subs {
		s.finish(why)
	}
	c.subs = nil
	for _, gs := range c.groups {
		if gs != nil {
			gs.ring.clear(c.b.retainBudget)
		}
	}
	c.mu.Unlock()

	if c.stopWatch != nil {
		c.stopWatch()
	}
	if conn != nil {
		conn.Close()
	}
	if dialing != nil {
		dialing.Close()
	}
	c.closeRequestSocket()
	c.ns.Close()
}

// read is the connection's only reader: replies go to the waiting
// request, events to the subscribers. What did not come from the kernel is
// counted and dropped before it is decoded. It ends when conn is closed.
func (c *nsConn) read(conn *family.Conn) {
	for {
		msgs, err := conn.Receive()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				c.overrun(conn)
				continue
			}
			if errors.Is(err, family.ErrForged) {
				c.forged.Add(1)
				continue
			}
			c.mu.Lock()
			current := c.conn == conn
			c.mu.Unlock()
			if current {
				c.disconnect(conn, fmt.Errorf("receive: %w", err))
			}
			return
		}
		for _, m := range msgs {
			if ev, ok := m.Reply.(*family.Event); ok && m.Type == family.MsgEvent {
				c.dispatch(conn, ev)
				continue
			}
			c.complete(m)
		}
	}
}

func (c *nsConn) complete(m family.Message) {
	c.mu.Lock()
	if h, ok := c.hooks[m.Seq]; ok {
		delete(c.hooks, m.Seq)
		h(m)
		c.mu.Unlock()
		return
	}
	ch, ok := c.pending[m.Seq]
	delete(c.pending, m.Seq)
	c.mu.Unlock()
	if ok {
		ch <- reply{msg: m, err: m.Err}
	}
}

// overrun records that the kernel dropped events for this socket: the
// next discontinuity in every joined group is blamed on it.
//
// A reply can be dropped by the same overrun. The replies already queued
// arrive right after the error, so whatever the requests pending now have
// not received within replyLossGrace was lost: they fail with an error
// matching unix.ENOBUFS (the request may still have taken effect).
//
// It then asks the module where every group stands: the reply arrives
// after every event it counts, so the loss is reported with its exact
// range at once, not when the group's next event comes (a lost reply is
// one more overrun, which asks again).
func (c *nsConn) overrun(conn *family.Conn) {
	c.overruns.Add(1)
	c.lockedOverrun()
	c.queryGroups(conn, nil)
}

func (c *nsConn) lockedOverrun() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, gs := range c.groups {
		if gs != nil && gs.joined() && gs.cause == 0 {
			gs.cause = LossKernelOverrun
		}
	}
	if len(c.pending) == 0 && len(c.hooks) == 0 {
		return
	}
	suspects := make(map[uint32]chan reply, len(c.pending))
	for seq, ch := range c.pending {
		suspects[seq] = ch
	}
	hooks := make(map[uint32]bool, len(c.hooks))
	for seq := range c.hooks {
		hooks[seq] = true
	}
	time.AfterFunc(replyLossGrace, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for seq, ch := range suspects {
			if c.pending[seq] == ch {
				delete(c.pending, seq)
				ch <- reply{err: ErrReplyLost}
			}
		}
		for seq := range hooks {
			if h, ok := c.hooks[seq]; ok {
				delete(c.hooks, seq)
				h(family.Message{Seq: seq, Err: ErrReplyLost})
			}
		}
	})
}

// queryGroups sends a GROUPS request on conn. Its reply is applied by the
// reader in its place among the events (lockedApplyGroups), and then
// handed to then, if set, with mu still held; then also gets a failed
// request (Message.Err set). It reports whether the request was sent.
func (c *nsConn) queryGroups(conn *family.Conn, then func(family.Message)) bool {
	seq := c.nextSeq()
	c.mu.Lock()
	if c.closed != nil || c.conn != conn || conn == nil {
		c.mu.Unlock()
		return false
	}
	var joins [family.Groups + 1]uint64
	for g, gs := range c.groups {
		if gs != nil && gs.joined() {
			joins[g] = gs.joins
		} // else 0: the reply may predate the join
	}
	c.hooks[seq] = func(m family.Message) {
		if r, ok := m.Reply.(*family.GroupSeqs); ok && m.Err == nil {
			c.lockedApplyGroups(conn, r, &joins)
		}
		if then != nil {
			then(m)
		}
	}
	c.mu.Unlock()
	if err := conn.SendSeq(seq, family.MsgGroups, family.EncodeGroups()); err != nil {
		c.mu.Lock()
		if h, ok := c.hooks[seq]; ok {
			delete(c.hooks, seq)
			h(family.Message{Seq: seq, Err: err})
		}
		c.mu.Unlock()
		return false
	}
	return true
}

// lockedApplyGroups takes in where the module says each group stands.
// Every event up to those numbers has been dispatched or lost by now, so
// a joined group whose last number is behind lost the difference: it is
// reported to its subscribers at once. A group not known yet starts
// there, if it was joined (joins[g], as gs.joins at the request) before
// the request was sent.
func (c *nsConn) lockedApplyGroups(conn *family.Conn, r *family.GroupSeqs, joins *[family.Groups + 1]uint64) {
	if c.conn != conn || r.InstanceID != c.instance {
		return
	}
	for g := uint32(1); g <= family.Groups; g++ {
		gs := c.groups[g]
		if gs == nil {
			continue // never joined
		}
		seq := r.Seq[g]
		switch {
		case !gs.joined():
		case !gs.known:
			if joins[g] != 0 && joins[g] == gs.joins {
				gs.lockedKnow(seq)
			}
		case seq > gs.lastSeq:
			gap := Gap{Group: g, From: gs.lastSeq + 1, To: seq, Reason: gs.cause, Instance: c.instance}
			if gap.Reason == 0 {
				gap.Reason = LossKernelOverrun
			}
			if gap.Reason == LossKernelOverrun {
				c.overrunLost.Add(gap.Count())
			}
			for s := range c.subs {
				if s.wants(g) {
					s.pushGap(gap)
				}
			}
			gs.lastSeq, gs.cause, gs.tail = seq, 0, gap.Reason
		}
	}
}

// replyLossGrace is how long a request pending at an overrun may still
// receive its reply.
var replyLossGrace = 2 * time.Second

// dispatch checks an event's sequence number against the last one of its
// group, reports any discontinuity as a gap, and queues the event for every
// subscriber of the group.
func (c *nsConn) dispatch(conn *family.Conn, ev *family.Event) {
	c.received.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != conn || ev.Group == 0 || ev.Group > family.Groups {
		return
	}
	gs := c.lockedGroup(ev.Group)
	var gap *Gap
	if !gs.known {
		gs.lockedKnow(ev.Seq - 1)
	} else if ev.Seq != gs.lastSeq+1 {
		g := Gap{Group: ev.Group, From: gs.lastSeq + 1, To: ev.Seq - 1, Reason: gs.cause, Instance: c.instance}
		if ev.Seq <= gs.lastSeq {
			// The numbers went back without a reload we saw.
			g = Gap{Group: ev.Group, From: 1, To: ev.Seq - 1, Reason: LossModuleReloaded, Instance: c.instance}
			gs.ring.clear(c.b.retainBudget)
			gs.base, gs.from = 0, 1
		}
		if g.Reason == 0 {
			g.Reason = LossKernelOverrun
		}
		if g.To >= g.From {
			gap = &g
			if g.Reason == LossKernelOverrun {
				c.overrunLost.Add(g.Count())
			}
		}
	}
	lostBefore := gs.tail
	if gap != nil {
		lostBefore = gap.Reason
	}
	gs.lastSeq, gs.known, gs.cause, gs.tail = ev.Seq, true, 0, 0
	c.lockedRetain(gs, ev, c.epoch, lostBefore)

	out := Event{Kind: KindMessage, Namespace: c.name, Epoch: c.epoch, Instance: c.instance, Message: *ev, Receivers: gs.refs}
	for s := range c.subs {
		if !s.wants(ev.Group) {
			continue
		}
		if gap != nil {
			s.pushGap(*gap)
		}
		s.push(out)
	}
}

// current is the namespace's connection, nil unless StateReady.
func (c *nsConn) current() *family.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// request sends a request and returns its reply: on the namespace's
// request socket if no other request is using it, else on the shared one.
func (c *nsConn) request(ctx context.Context, typ uint16, data []byte) (family.Message, error) {
	c.mu.Lock()
	conn, epoch := c.conn, c.epoch
	c.mu.Unlock()
	if conn != nil && c.reqMu.TryLock() {
		m, done, err := c.requestDirect(ctx, epoch, typ, data)
		c.reqMu.Unlock()
		if done {
			return m, err
		}
	}
	return c.requestOn(ctx, conn, typ, data)
}

// A request through the shared socket costs two hand-offs between
// goroutines: the reader, woken by the poller, receives the reply and
// passes it to the waiting request. Each is a wake-up of a parked thread,
// and together they are most of a request's cost in the daemon. The
// module handles a request while it is being sent, so a socket that
// receives nothing else already holds the reply when sendmsg returns:
// on its request socket a request is sent and its reply read by the
// caller's own goroutine. The socket joins no group and is connected to
// the kernel, so nothing else arrives on it. It is opened at the
// namespace's first request, not at attach: most attached namespaces
// may never get one.

// requestTimeout bounds how long a request waits for its reply on the
// request socket when its context has no earlier deadline; the module
// answers while the request is sent, so only a reply it could not
// allocate is ever waited for.
const requestTimeout = 10 * time.Second

// requestDirect sends the request on the request socket of epoch,
// opening it first if need be, and reads the reply; reqMu is held. done
// is false when the request was not sent (no request socket could be
// opened, or the send failed): the shared socket then takes it, and says
// what is wrong.
func (c *nsConn) requestDirect(ctx context.Context, epoch uint64, typ uint16, data []byte) (m family.Message, done bool, err error) {
	rc := c.reqConn.Load()
	if rc != nil && c.reqEpoch != epoch {
		c.dropRequestSocket(rc) // opened before a reconnect
		rc = nil
	}
	if rc == nil {
		if rc = c.openRequestSocket(epoch); rc == nil {
			return family.Message{}, false, nil
		}
	}
	deadline := time.Now().Add(requestTimeout)
	d, byCtx := ctx.Deadline()
	if byCtx = byCtx && d.Before(deadline); byCtx {
		deadline = d
	}
	if err := rc.SetReadDeadline(deadline); err != nil {
		c.dropRequestSocket(rc)
		return family.Message{}, false, nil
	}
	m, err = rc.Request(typ, data)
	if err == nil {
		return m, true, m.Err
	}
	c.dropRequestSocket(rc)
	if !errors.Is(err, family.ErrNoReply) {
		return family.Message{}, false, nil
	}
	if byCtx && errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done() // its deadline has passed: at once
	}
	if ctx.Err() != nil {
		return family.Message{}, true, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != nil {
		return family.Message{}, true, fmt.Errorf("%w: %w", ErrDetached, c.closed)
	}
	if c.conn == nil {
		return family.Message{}, true, fmt.Errorf("%w: %v", ErrUnavailable, c.reason)
	}
	return family.Message{}, true, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// openRequestSocket opens the request socket for epoch; reqMu is held. It
// returns nil if it cannot, or if the namespace was detached or
// reconnected meanwhile.
func (c *nsConn) openRequestSocket(epoch uint64) *family.Conn {
	rc, err := c.b.dialConn(c.ns)
	if err != nil {
		return nil
	}
	c.reqConn.Store(rc)
	c.reqEpoch = epoch
	// disconnect and close clear conn (or set closed) before they close
	// the request socket: one of them either sees it stored or is seen
	// here.
	c.mu.Lock()
	stale := c.closed != nil || c.conn == nil || c.epoch != epoch
	c.mu.Unlock()
	if stale {
		c.dropRequestSocket(rc)
		return nil
	}
	return rc
}

// dropRequestSocket closes rc if it is still the request socket.
func (c *nsConn) dropRequestSocket(rc *family.Conn) {
	if c.reqConn.CompareAndSwap(rc, nil) {
		rc.Close()
	}
}

// closeRequestSocket closes the request socket, if there is one, ending a
// request in progress on it.
func (c *nsConn) closeRequestSocket() {
	if rc := c.reqConn.Swap(nil); rc != nil {
		rc.Close()
	}
}

func (c *nsConn) requestOn(ctx context.Context, conn *family.Conn, typ uint16, data []byte) (family.Message, error) {
	seq, ch, err := c.sendOn(conn, typ, data)
	if err != nil {
		return family.Message{}, err
	}
	return c.wait(ctx, seq, ch)
}

// send sends a request on the current connection without waiting; the
// reply arrives on the returned channel (see wait).
func (c *nsConn) send(typ uint16, data []byte) (uint32, chan reply, error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	return c.sendOn(conn, typ, data)
}

// sendOn files a pending request under a fresh sequence number and sends
// it on conn. Filing it first lets the reader, which may see the reply
// before SendSeq returns, always find it.
func (c *nsConn) sendOn(conn *family.Conn, typ uint16, data []byte) (uint32, chan reply, error) {
	seq := c.nextSeq()
	ch := make(chan reply, 1)

	c.mu.Lock()
	switch {
	case c.closed != nil:
		c.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: %w", ErrDetached, c.closed)
	case conn == nil || (c.conn != conn && c.dialing != conn):
		reason := c.reason
		c.mu.Unlock()
		return 0, nil, fmt.Errorf("%w: %v", ErrUnavailable, reason)
	}
	c.pending[seq] = ch
	c.mu.Unlock()

	if err := conn.SendSeq(seq, typ, data); err != nil {
		c.forget(seq)
		return 0, nil, err
	}
	return seq, ch, nil
}

// sendBatch files reqs as pending requests under fresh sequence numbers
// (written into reqs) and sends them on the current connection with
// family.Conn.SendBatch. It returns the reply channels of the requests
// sent; the others are forgotten again.
func (c *nsConn) sendBatch(reqs []family.Request) ([]chan reply, error) {
	chans := make([]chan reply, len(reqs))
	for i := range reqs {
		reqs[i].Seq = c.nextSeq()
		chans[i] = make(chan reply, 1)
	}
	c.mu.Lock()
	conn := c.conn
	switch {
	case c.closed != nil:
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrDetached, c.closed)
	case conn == nil:
		reason := c.reason
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, reason)
	}
	for i, r := range reqs {
		c.pending[r.Seq] = chans[i]
	}
	c.mu.Unlock()

	sent, err := conn.SendBatch(reqs)
	if err != nil {
		c.mu.Lock()
		for _, r := range reqs[sent:] {
			delete(c.pending, r.Seq)
		}
		c.mu.Unlock()
	}
	return chans[:sent], err
}

// wait returns the reply to request seq, or gives up on it when ctx ends.
func (c *nsConn) wait(ctx context.Context, seq uint32, ch chan reply) (family.Message, error) {
	select {
	case r := <-ch:
		return r.msg, r.err
	case <-ctx.Done():
		c.forget(seq)
		return family.Message{}, ctx.Err()
	}
}

func (c *nsConn) forget(seq uint32) {
	c.mu.Lock()
	delete(c.pending, seq)
	c.mu.Unlock()
}

func (c *nsConn) stats(ctx context.Context, conn *family.Conn) (*family.Stats, error) {
	m, err := c.requestOn(ctx, conn, family.MsgStats, family.EncodeStats())
	if err != nil {
		return nil, err
	}
	st, ok := m.Reply.(*family.Stats)
	if !ok {
		return nil, fmt.Errorf("unexpected reply %T to STATS", m.Reply)
	}
	return st, nil
}

// subscribe registers s and joins the groups it is the first to want.
// With resume points, s is registered only once what it missed has been
// queued for it (lockedResume): after a GROUPS reply, so that the ranges
// are exact, or at once without a connection.
func (c *nsConn) subscribe(ctx context.Context, s *subscriber, groups []uint32, points []ResumePoint) error {
	c.mu.Lock()
	if c.closed != nil {
		c.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrDetached, c.closed)
	}
	newGroup := false
	var joined []uint32
	for _, g := range groups {
		gs := c.lockedGroup(g)
		if !gs.joined() && c.conn != nil {
			if err := c.conn.JoinGroup(g); err != nil {
				for _, j := range joined {
					c.conn.LeaveGroup(j)
					c.groups[j].refs--
				}
				c.mu.Unlock()
				return fmt.Errorf("join group %d: %w", g, err)
			}
			joined = append(joined, g)
			gs.known, gs.cause = false, 0
			gs.joins++
			newGroup = true
		}
		gs.refs++
	}
	conn := c.conn
	if len(points) == 0 || conn == nil {
		var err error
		if len(points) > 0 {
			err = c.lockedResume(s, points, false)
		}
		if err == nil {
			c.subs[s] = struct{}{}
		}
		c.mu.Unlock()
		if err != nil {
			c.release(groups)
			return err
		}
		if newGroup {
			// Learn where the new groups start.
			c.queryGroups(conn, nil)
		}
		return nil
	}
	c.mu.Unlock()

	done := make(chan error, 1)
	resolved := false // guarded by mu
	resolve := func(m family.Message) {
		if resolved {
			return
		}
		resolved = true
		_, ok := m.Reply.(*family.GroupSeqs)
		authoritative := ok && m.Err == nil && c.conn == conn
		err := c.lockedResume(s, points, authoritative)
		if err == nil && c.closed != nil {
			err = fmt.Errorf("%w: %w", ErrDetached, c.closed)
		}
		if err == nil {
			c.subs[s] = struct{}{}
		}
		done <- err
	}
	if !c.queryGroups(conn, resolve) {
		c.mu.Lock()
		resolve(family.Message{Err: ErrUnavailable})
		c.mu.Unlock()
	}
	select {
	case err := <-done:
		if err != nil {
			c.release(groups)
		}
		return err
	case <-ctx.Done():
		c.mu.Lock()
		was := resolved
		resolved = true
		c.mu.Unlock()
		if was && <-done == nil {
			c.unsubscribe(s, groups)
		} else {
			c.release(groups)
		}
		return ctx.Err()
	}
}

// unsubscribe removes s and lets go of its groups.
func (c *nsConn) unsubscribe(s *subscriber, groups []uint32) {
	c.mu.Lock()
	_, ok := c.subs[s]
	delete(c.subs, s)
	c.mu.Unlock()
	if ok {
		c.release(groups)
	}
}

// release drops a subscription's references to groups. A group nobody
// wants any more is left, unless its events are retained for subscribers
// that resume: then it stays joined as long as the namespace is attached.
func (c *nsConn) release(groups []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != nil {
		return
	}
	for _, g := range groups {
		gs := c.lockedGroup(g)
		gs.refs--
		if gs.refs > 0 {
			continue
		}
		if c.b.cfg.retaining() {
			gs.linger = true
			continue
		}
		if c.conn != nil {
			c.conn.LeaveGroup(g)
		}
		gs.known, gs.cause = false, 0
	}
}

// info describes the namespace for List and Watch.
func (c *nsConn) info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	in := Info{
		Name:        c.name,
		Ref:         c.ref,
		ID:          c.ns.ID(),
		Inode:       c.ns.Inode(),
		Cookie:      c.ns.Cookie(),
		AttachedAt:  c.attached,
		Epoch:       c.epoch,
		Subscribers: len(c.subs),
		Received:    c.received.Load(),
		Overruns:    c.overruns.Load(),
		OverrunLost: c.overrunLost.Load(),
		Forged:      c.forged.Load(),
	}
	for s := range c.subs {
		in.Delivered += s.delivered.Load()
		in.QueueLost += s.lostEvents.Load()
	}
	if c.conn != nil {
		in.State = StateReady
	} else {
		in.State = StateUnavailable
		if c.reason != nil {
			in.Reason = c.reason.Error()
		}
	}
	return in
}
