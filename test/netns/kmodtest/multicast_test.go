package kmodtest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

// silenceWait is how long a socket must stay quiet to count as having
// received nothing.
const silenceWait = 500 * time.Millisecond

// sent is one publish and what its EVENT must look like.
type sent struct {
	group     uint32
	seq       uint64
	inum      uint32
	portid    uint32
	payload   []byte
	notBefore int64 // CLOCK_REALTIME ns before the request was sent
	notAfter  int64 // CLOCK_REALTIME ns after its reply arrived
}

// publishChecked publishes and checks the reply's sequence number and
// listener flag.
func publishChecked(t *testing.T, c *conn, inum uint32, group uint32, wantSeq uint64, wantListeners uint32, payload string) sent {
	t.Helper()
	before := time.Now().UnixNano()
	r := c.publish(group, []byte(payload))
	after := time.Now().UnixNano()
	s := sent{group: group, seq: r.u64(t, attrSeq), inum: inum, portid: c.pid(),
		payload: []byte(payload), notBefore: before, notAfter: after}
	if s.seq != wantSeq {
		t.Errorf("publish %q: reply NSB_A_SEQ = %d, want %d", payload, s.seq, wantSeq)
	}
	if got := r.u32(t, attrListeners); got != wantListeners {
		t.Errorf("publish %q: reply NSB_A_LISTENERS = %d, want %d", payload, got, wantListeners)
	}
	return s
}

// checkEvent compares a received EVENT with the publish that caused it.
func checkEvent(t *testing.T, who string, got attrSet, want sent) {
	t.Helper()
	if g := got.u32(t, attrGroup); g != want.group {
		t.Errorf("%s: event group %d, want %d", who, g, want.group)
	}
	if g := got.u64(t, attrSeq); g != want.seq {
		t.Errorf("%s: event seq %d, want %d", who, g, want.seq)
	}
	if g := got.u32(t, attrNetnsInum); g != want.inum {
		t.Errorf("%s: event NETNS_INUM %d, want %d", who, g, want.inum)
	}
	if g := got.u32(t, attrSenderPortID); g != want.portid {
		t.Errorf("%s: event SENDER_PORTID %d, want %d", who, g, want.portid)
	}
	if g := got.bytes(t, attrPayload); !bytes.Equal(g, want.payload) {
		t.Errorf("%s: event payload %q, want %q", who, g, want.payload)
	}
	if ts := int64(got.u64(t, attrTimestamp)); ts < want.notBefore || ts > want.notAfter {
		t.Errorf("%s: event TIMESTAMP %d outside [%d, %d], the time of the publish", who, ts, want.notBefore, want.notAfter)
	}
	if len(got) != 6 {
		t.Errorf("%s: event has attributes %v, want exactly GROUP SEQ PAYLOAD NETNS_INUM SENDER_PORTID TIMESTAMP", who, got)
	}
}

// expectEvents receives len(want) events on c and checks them in order.
func expectEvents(t *testing.T, who string, c *conn, want ...sent) {
	t.Helper()
	for _, w := range want {
		got, err := c.event(replyTimeout)
		if err != nil {
			t.Fatalf("%s: waiting for event seq %d: %v", who, w.seq, err)
		}
		checkEvent(t, who, got, w)
	}
}

// TestIntegrationMulticastScoping: events published in one namespace reach
// exactly the subscribers of that namespace and group, once each, with
// sequence numbers counted per namespace and group from 1.
func TestIntegrationMulticastScoping(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group, otherGroup, emptyGroup = 7, 8, 9

	nsA, nsB, nsC := newNetns(t), newNetns(t), newNetns(t)
	inA, inB, inC := inode(t, nsA), inode(t, nsB), inode(t, nsC)
	t.Logf("namespaces: A inode %d, B inode %d, C inode %d", inA, inB, inC)

	subsA := []*conn{dial(t, unit, nsA), dial(t, unit, nsA), dial(t, unit, nsA)}
	subB, subC := dial(t, unit, nsB), dial(t, unit, nsC)
	for _, s := range append(subsA, subB, subC) {
		s.join(group)
	}
	subA8 := dial(t, unit, nsA)
	subA8.join(otherGroup)
	pubA, pubB, pubC := dial(t, unit, nsA), dial(t, unit, nsB), dial(t, unit, nsC)

	// Publishes in A: every A subscriber gets each exactly once, in order.
	var inA7 []sent
	for i := 1; i <= 5; i++ {
		inA7 = append(inA7, publishChecked(t, pubA, inA, group, uint64(i), 1, fmt.Sprintf("A group %d #%d", group, i)))
	}
	for i, s := range subsA {
		expectEvents(t, fmt.Sprintf("A subscriber %d", i), s, inA7...)
	}
	t.Logf("A: 5 events, seq 1..5, delivered once to each of %d subscribers, from port id %d", len(subsA), pubA.pid())
	silent := []rawSock{subB.nl, subC.nl, subA8.nl}
	names := []string{"B subscriber", "C subscriber", "A group 8 subscriber"}
	for i, s := range subsA {
		silent = append(silent, s.nl)
		names = append(names, fmt.Sprintf("A subscriber %d", i))
	}
	expectSilence(t, silenceWait, names, silent...)
	t.Logf("B, C and A's group %d received nothing in %v", otherGroup, silenceWait)

	// B and C count from 1 on their own, and receive their own events.
	b1 := publishChecked(t, pubB, inB, group, 1, 1, "B #1")
	b2 := publishChecked(t, pubB, inB, group, 2, 1, "B #2")
	c1 := publishChecked(t, pubC, inC, group, 1, 1, "C #1")
	expectEvents(t, "B subscriber", subB, b1, b2)
	expectEvents(t, "C subscriber", subC, c1)
	t.Logf("B: seq 1, 2 (inode %d); C: seq 1 (inode %d)", inB, inC)

	// Groups are independent: group 8 of A starts at 1 while group 7 is at 5.
	a8 := publishChecked(t, pubA, inA, otherGroup, 1, 1, "A group 8 #1")
	expectEvents(t, "A group 8 subscriber", subA8, a8)

	// A group without members: success, NSB_A_LISTENERS 0, and the number is
	// used all the same, so the first member to join sees 2.
	publishChecked(t, pubA, inA, emptyGroup, 1, 0, "nobody listens")
	subA9 := dial(t, unit, nsA)
	subA9.join(emptyGroup)
	a9 := publishChecked(t, pubA, inA, emptyGroup, 2, 1, "someone listens")
	expectEvents(t, "A group 9 subscriber", subA9, a9)
	t.Logf("A group %d: seq 1 with no member (LISTENERS 0), seq 2 delivered", emptyGroup)

	expectSilence(t, silenceWait, append(names, "A group 9 subscriber"), append(silent, subA9.nl)...)
}

// TestIntegrationMulticastGroupRange: the kernel lets sockets join groups
// 1..NSB_GROUPS of the unit and no other.
func TestIntegrationMulticastGroupRange(t *testing.T) {
	unit := testenv.RequireModule(t)
	c := dial(t, unit, newNetns(t))
	c.join(1)
	c.join(nsbGroups)
	for _, g := range []uint32{0, nsbGroups + 1} {
		if err := c.nl.JoinGroup(g); !errors.Is(err, unix.EINVAL) {
			t.Errorf("join group %d: error %v, want EINVAL", g, err)
		}
	}
}

// TestIntegrationMulticastConcurrentPublishers: four publishers in one
// namespace publish 200 events each at once; the subscriber sees 1..800 in
// order, without a hole or a duplicate, and each event is the one whose
// reply was given its number.
func TestIntegrationMulticastConcurrentPublishers(t *testing.T) {
	unit := testenv.RequireModule(t)
	const publishers, each, group = 4, 200, 3
	const total = publishers * each

	ns := newNetns(t)
	inum := inode(t, ns)
	sub := dial(t, unit, ns)
	// Room for every event, so a slow reader cannot overrun.
	if err := sub.nl.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	sub.join(group)

	type publish struct {
		portid  uint32
		payload string
	}
	var mu sync.Mutex
	bySeq := map[uint64]publish{} // guarded by mu

	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := 0; p < publishers; p++ {
		c := dial(t, unit, ns)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for i := 0; i < each; i++ {
				payload := fmt.Sprintf("publisher %d #%d", p, i)
				r, err := c.request(msgPublish, 0, body(attr(attrGroup, u32(group)), attr(attrPayload, []byte(payload))))
				if err != nil {
					errs <- fmt.Errorf("publisher %d #%d: %w", p, i, err)
					return
				}
				seq, ok := r[attrSeq]
				if !ok || len(seq) != 8 {
					errs <- fmt.Errorf("publisher %d #%d: reply %v has no u64 NSB_A_SEQ", p, i, r)
					return
				}
				s := ne.Uint64(seq)
				if s <= last {
					errs <- fmt.Errorf("publisher %d: seq %d after %d", p, s, last)
					return
				}
				last = s
				mu.Lock()
				prev, dup := bySeq[s]
				bySeq[s] = publish{c.pid(), payload}
				mu.Unlock()
				if dup {
					errs <- fmt.Errorf("seq %d given to %q and %q", s, prev.payload, payload)
					return
				}
			}
		}()
	}

	// Read while they publish.
	events := make([]attrSet, 0, total)
	for want := uint64(1); want <= total; want++ {
		ev, err := sub.event(replyTimeout)
		if err != nil {
			t.Fatalf("waiting for event seq %d: %v", want, err)
		}
		if got := ev.u64(t, attrSeq); got != want {
			t.Fatalf("event #%d has seq %d, want %d (a hole, a duplicate or a reordering)", want, got, want)
		}
		events = append(events, ev)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(bySeq) != total {
		t.Fatalf("replies carried %d distinct seqs, want %d", len(bySeq), total)
	}
	// Timestamps are taken with the number, under the group lock, so they
	// never go back as the numbers go up.
	for i := 1; i < len(events); i++ {
		prev, cur := events[i-1].u64(t, attrTimestamp), events[i].u64(t, attrTimestamp)
		if cur < prev {
			t.Errorf("event seq %d has timestamp %d, earlier than seq %d's %d", i+1, cur, i, prev)
		}
	}
	// Each event is the publish whose reply was given its number.
	for _, ev := range events {
		seq := ev.u64(t, attrSeq)
		p, ok := bySeq[seq]
		if !ok {
			t.Errorf("no reply carried seq %d", seq)
			continue
		}
		if got := string(ev.bytes(t, attrPayload)); got != p.payload {
			t.Errorf("event seq %d carries %q, but the reply with seq %d answered %q", seq, got, seq, p.payload)
		}
		if got := ev.u32(t, attrSenderPortID); got != p.portid {
			t.Errorf("event seq %d from port id %d, want %d", seq, got, p.portid)
		}
		if got := ev.u32(t, attrNetnsInum); got != inum {
			t.Errorf("event seq %d from inode %d, want %d", seq, got, inum)
		}
	}
	expectSilence(t, silenceWait, []string{"subscriber"}, sub.nl)
	st := sub.stats()
	t.Logf("%d publishers x %d: subscriber saw seq 1..%d in order; stats %v", publishers, each, total, st.counters)
	if st.counters[statsPublish] != total || st.counters[statsDelivered] != total {
		t.Errorf("stats PUBLISH %d DELIVERED %d, want %d and %d", st.counters[statsPublish], st.counters[statsDelivered], total, total)
	}
}

// TestIntegrationPublisherIsMember: a socket that is a member of the group
// it publishes to receives its own event, and receives it before the
// reply (the module multicasts first, then answers). The publish carries no
// payload; the event carries an empty one.
func TestIntegrationPublisherIsMember(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group = 2
	ns := newNetns(t)
	c := dial(t, unit, ns)
	c.join(group)
	const seq = 77
	if err := sendRaw(c.nl, nlMsg(msgPublish, fReq, seq, body(attr(attrGroup, u32(group))))); err != nil {
		t.Fatal(err)
	}
	ev, err := c.event(replyTimeout)
	if err != nil {
		t.Fatalf("first datagram after the publish: %v, want the EVENT", err)
	}
	if got := ev.u32(t, attrSenderPortID); got != c.pid() {
		t.Errorf("own event from port id %d, want %d", got, c.pid())
	}
	if p, ok := ev[attrPayload]; !ok || len(p) != 0 {
		t.Errorf("event payload present=%v %q, want an empty NSB_A_PAYLOAD", ok, p)
	}
	checkOutcome(t, c, reply(seq, msgPublish, func(t *testing.T, a attrSet) {
		if a.u64(t, attrSeq) != 1 || ev.u64(t, attrSeq) != 1 || a.u32(t, attrListeners) != 1 {
			t.Errorf("reply seq %d listeners %d, event seq %d; want 1, 1, 1", a.u64(t, attrSeq), a.u32(t, attrListeners), ev.u64(t, attrSeq))
		}
	}))
	t.Logf("publisher %d received its own event seq 1 before the reply", c.pid())
}

// TestIntegrationListenersPerNamespace: whether a group "had members" is a
// question about the publisher's namespace. A member of the same group in
// another namespace must not turn NSB_A_LISTENERS to 1 or make a publish
// count as anything but NO_LISTENER: that would tell a tenant whether
// another namespace subscribes.
func TestIntegrationListenersPerNamespace(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group = 13
	nsA, nsB := newNetns(t), newNetns(t)
	memberB := dial(t, unit, nsB)
	memberB.join(group)
	pubA := dial(t, unit, nsA)

	publishChecked(t, pubA, inode(t, nsA), group, 1, 0, "nobody in A listens")
	wantCounters(t, "A", pubA.stats(), map[uint16]uint64{
		statsEcho: 0, statsPublish: 1, statsDelivered: 0, statsNoListener: 1, statsOverrun: 0, statsRejected: 0,
	})
	expectSilence(t, silenceWait, []string{"member in B"}, memberB.nl)
}
