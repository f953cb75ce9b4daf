package kmodtest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

// groupSeqs is a decoded GROUPS reply.
type groupSeqs struct {
	inum       uint32
	instanceID uint64
	seq        [nsbGroups + 1]uint64
}

// parseGroups checks a GROUPS reply: the family header, NETNS_INUM,
// INSTANCE_ID and exactly one NSB_A_GROUP_SEQ per group, in order, each
// holding exactly GROUP and SEQ; nothing else.
func parseGroups(t testing.TB, m netlink.Message) groupSeqs {
	t.Helper()
	if len(m.Data) < nsbHdrLen {
		t.Fatalf("GROUPS reply of %d bytes has no family header", len(m.Data))
	}
	if h := m.Data[:nsbHdrLen]; h[0] != nsbVersion || h[1] != 0 || h[2] != 0 || h[3] != 0 {
		t.Fatalf("family header % x, want %02x 00 00 00", h, nsbVersion)
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[nsbHdrLen:])
	if err != nil {
		t.Fatal(err)
	}
	var g groupSeqs
	var order []uint16
	next := uint32(1)
	for ad.Next() {
		typ := ad.Type()
		order = append(order, typ)
		switch typ {
		case attrPad:
		case attrNetnsInum:
			g.inum = ad.Uint32()
		case attrInstanceID:
			g.instanceID = ad.Uint64()
		case attrGroupSeq:
			if ad.TypeFlags()&unix.NLA_F_NESTED == 0 {
				t.Errorf("NSB_A_GROUP_SEQ without NLA_F_NESTED")
			}
			nest, err := parseAttrs(ad.Bytes(), attrPad)
			if err != nil {
				t.Fatalf("NSB_A_GROUP_SEQ %d: %v", next, err)
			}
			if len(nest) != 2 {
				t.Fatalf("NSB_A_GROUP_SEQ %d holds %v, want GROUP and SEQ", next, nest)
			}
			if grp := nest.u32(t, attrGroup); grp != next {
				t.Fatalf("NSB_A_GROUP_SEQ number %d is for group %d, want groups in order", next, grp)
			}
			g.seq[next] = nest.u64(t, attrSeq)
			next++
		default:
			t.Fatalf("GROUPS reply has attribute %d", typ)
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	if next != nsbGroups+1 || len(order) != nsbGroups+2 || order[0] != attrNetnsInum || order[1] != attrInstanceID {
		t.Fatalf("GROUPS reply attributes %v, want NETNS_INUM, INSTANCE_ID and %d GROUP_SEQ", order, nsbGroups)
	}
	return g
}

// groups asks the module where every group's numbering stands.
func (c *conn) groups() groupSeqs {
	c.t.Helper()
	if err := c.nl.SetReadDeadline(time.Now().Add(replyTimeout)); err != nil {
		c.t.Fatal(err)
	}
	msgs, err := c.nl.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(msgGroups), Flags: netlink.Request},
		Data:   body(),
	})
	if err != nil {
		c.t.Fatalf("GROUPS: %v", err)
	}
	if len(msgs) != 1 {
		c.t.Fatalf("%d replies to GROUPS, want 1", len(msgs))
	}
	m := msgs[0]
	if uint16(m.Header.Type) != msgGroups || m.Header.PID != c.pid() || m.Header.Flags != 0 {
		c.t.Fatalf("GROUPS reply header %+v, want type %d pid %d flags 0", m.Header, msgGroups, c.pid())
	}
	return parseGroups(c.t, m)
}

// TestIntegrationGroups: GROUPS tells the last number of every group of
// the asking socket's namespace, and that namespace's instance id (the
// one STATS reports); other namespaces count apart; it takes no
// attributes and needs no privilege beyond opening the socket.
func TestIntegrationGroups(t *testing.T) {
	unit := testenv.RequireModule(t)
	nsA, nsB := newNetns(t), newNetns(t)
	a, b := dial(t, unit, nsA), dial(t, unit, nsB)

	fresh := a.groups()
	if want := inode(t, nsA); fresh.inum != want {
		t.Errorf("GROUPS answered by inode %d, want %d", fresh.inum, want)
	}
	if want := a.stats().instanceID; fresh.instanceID != want {
		t.Errorf("GROUPS instance id %#x, STATS says %#x", fresh.instanceID, want)
	}
	if fresh.seq != [nsbGroups + 1]uint64{} {
		t.Errorf("fresh namespace: seqs %v, want all 0", fresh.seq)
	}

	for i := 0; i < 3; i++ {
		a.publish(3, []byte("three"))
	}
	a.publish(nsbGroups, []byte("last group"))
	b.publish(3, []byte("in B"))

	var want [nsbGroups + 1]uint64
	want[3], want[nsbGroups] = 3, 1
	if got := a.groups(); got.seq != want {
		t.Errorf("A after 3 publishes to group 3 and 1 to group 32: seqs %v, want %v", got.seq, want)
	}
	gb := b.groups()
	want = [nsbGroups + 1]uint64{3: 1}
	if gb.seq != want {
		t.Errorf("B after 1 publish to group 3: seqs %v, want %v", gb.seq, want)
	}
	if gb.instanceID == fresh.instanceID || gb.inum != inode(t, nsB) {
		t.Errorf("B: instance %#x inode %d, want its own (A: %#x)", gb.instanceID, gb.inum, fresh.instanceID)
	}

	// With NLM_F_ACK: the reply, then the acknowledgement.
	if err := sendRaw(a.nl, nlMsg(msgGroups, fReq|fAck, 7, body())); err != nil {
		t.Fatal(err)
	}
	msgs, err := recvMessages(a.nl, replyTimeout)
	if err != nil || len(msgs) != 1 || msgs[0].Header.Sequence != 7 {
		t.Fatalf("GROUPS with NLM_F_ACK: %v %+v, want its reply", err, msgs)
	}
	if got := parseGroups(t, msgs[0]); got.seq[3] != 3 {
		t.Errorf("GROUPS with NLM_F_ACK: group 3 at %d, want 3", got.seq[3])
	}
	checkOutcome(t, a, acked(7))
	t.Logf("A %#x: %v; B %#x: %v", fresh.instanceID, a.groups().seq, gb.instanceID, gb.seq)
}

// TestIntegrationGroupsAfterOverrun: a member whose buffer overflowed
// learns at once, from its own GROUPS reply, which numbers it lost, even
// when no further event comes: after ENOBUFS and the events that fit, the
// reply names the last number published.
func TestIntegrationGroupsAfterOverrun(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group, n = 12, 64
	ns := newNetns(t)
	pub := dial(t, unit, ns)
	member := dial(t, unit, ns)
	if err := member.nl.SetReadBuffer(0); err != nil {
		t.Fatal(err)
	}
	member.join(group)
	for i := 1; i <= n; i++ {
		pub.publish(group, []byte(fmt.Sprintf("event %d of %d", i, n)))
	}
	if _, err := member.event(replyTimeout); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("first receive after the overrun: %v, want ENOBUFS", err)
	}
	var last uint64
	for {
		ev, err := member.event(silenceWait)
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = ev.u64(t, attrSeq)
	}
	if last == 0 || last >= n {
		t.Fatalf("member received up to seq %d of %d, want some but not all", last, n)
	}
	g := member.groups()
	if g.seq[group] != n {
		t.Errorf("GROUPS after the overrun: group %d at %d, want %d (lost %d..%d)", group, g.seq[group], n, last+1, n)
	}
	t.Logf("member received up to %d, GROUPS says %d: lost %d..%d", last, g.seq[group], last+1, g.seq[group])
}

// TestIntegrationGroupsOrderedWithEvents: every event a GROUPS reply
// counts reaches the asking member before the reply. Publishers keep
// numbering while a member asks again and again; after each reply, no
// event numbered at or below what the reply said may arrive.
func TestIntegrationGroupsOrderedWithEvents(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group, publishers, each, asks = 7, 2, 1000, 200
	ns := newNetns(t)
	member := dial(t, unit, ns)
	// Room for every event: a loss would leave nothing to judge.
	raw, err := member.nl.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	}); err != nil || serr != nil {
		t.Fatalf("SO_RCVBUFFORCE: %v %v", err, serr)
	}
	member.join(group)

	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		pub := dial(t, unit, ns)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := pub.request(msgPublish, 0, body(attr(attrGroup, u32(group)))); err != nil {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}

	var counted, lastEvent uint64
	var violations, replies, behind int
	for i := 0; i < asks; i++ {
		if err := sendRaw(member.nl, nlMsg(msgGroups, fReq, uint32(1000+i), body())); err != nil {
			t.Fatal(err)
		}
		for answered := false; !answered; {
			msgs, err := recvMessages(member.nl, replyTimeout)
			if err != nil {
				t.Fatalf("ask %d: %v", i, err)
			}
			for _, m := range msgs {
				switch uint16(m.Header.Type) {
				case msgEvent:
					a, err := parseBody(m)
					if err != nil {
						t.Fatal(err)
					}
					seq := a.u64(t, attrSeq)
					if seq != lastEvent+1 {
						t.Fatalf("event %d after %d: the member lost events, the test cannot judge", seq, lastEvent)
					}
					lastEvent = seq
					if seq <= counted {
						violations++
						t.Errorf("event %d arrived after a GROUPS reply that counted up to %d", seq, counted)
					}
				case msgGroups:
					// A reply may count less than what arrived before
					// it: a publish can queue its event between the
					// number's read and the reply's send. Only the
					// other way round would lose an event's place.
					if n := parseGroups(t, m).seq[group]; n < lastEvent {
						behind++
					} else {
						counted = n
					}
					replies++
					answered = true
				default:
					t.Fatalf("unexpected message %+v", m.Header)
				}
			}
		}
	}
	wg.Wait()
	t.Logf("%d replies interleaved with %d events, %d out of order, %d behind what had arrived", replies, lastEvent, violations, behind)
}
