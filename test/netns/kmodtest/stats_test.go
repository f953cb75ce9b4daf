package kmodtest

import (
	"errors"
	"fmt"
	"maps"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/internal/testenv"
)

func wantCounters(t *testing.T, who string, got stats, want map[uint16]uint64) {
	t.Helper()
	if !maps.Equal(got.counters, want) {
		t.Errorf("%s: counters %v, want %v (2 ECHO, 3 PUBLISH, 4 DELIVERED, 5 NO_LISTENER, 6 OVERRUN, 7 REJECTED)", who, got.counters, want)
	}
}

// TestIntegrationStats: STATS counts per namespace, names the namespace
// that answered and reports the module-wide number of instances.
func TestIntegrationStats(t *testing.T) {
	unit := testenv.RequireModule(t)
	nsA, nsB := newNetns(t), newNetns(t)
	a, b := dial(t, unit, nsA), dial(t, unit, nsB)
	sub := dial(t, unit, nsA)
	sub.join(4)

	for i := 0; i < 3; i++ {
		a.echo([]byte("x"))
	}
	a.publish(4, []byte("to a member"))
	a.publish(5, []byte("to nobody"))
	if _, err := a.request(msgStats, 0, body(attr(attrPayload, nil))); !errors.Is(err, unix.EINVAL) {
		t.Errorf("STATS with a payload: error %v, want EINVAL", err)
	}

	sa := a.stats()
	wantCounters(t, "A", sa, map[uint16]uint64{
		statsEcho: 3, statsPublish: 2, statsDelivered: 1, statsNoListener: 1, statsOverrun: 0, statsRejected: 1,
	})
	if want := inode(t, nsA); sa.inum != want {
		t.Errorf("A's STATS answered by inode %d, want %d", sa.inum, want)
	}
	// The initial namespace, A and B at least.
	if sa.instances < 3 {
		t.Errorf("NSB_A_INSTANCES = %d, want at least 3", sa.instances)
	}

	sb := b.stats()
	wantCounters(t, "B", sb, map[uint16]uint64{
		statsEcho: 0, statsPublish: 0, statsDelivered: 0, statsNoListener: 0, statsOverrun: 0, statsRejected: 0,
	})
	if want := inode(t, nsB); sb.inum != want {
		t.Errorf("B's STATS answered by inode %d, want %d", sb.inum, want)
	}
	if sa.instanceID == sb.instanceID {
		t.Errorf("A and B report the same NSB_A_INSTANCE_ID %#x, want one per namespace", sa.instanceID)
	}
	if again := a.stats().instanceID; again != sa.instanceID {
		t.Errorf("A's NSB_A_INSTANCE_ID changed from %#x to %#x without a reload", sa.instanceID, again)
	}
	if sb.instances != sa.instances {
		t.Errorf("instances seen from B %d, from A %d: want the same module-wide count", sb.instances, sa.instances)
	}
	t.Logf("A (inode %d): %v; B (inode %d): %v; instances %d", sa.inum, sa.counters, sb.inum, sb.counters, sa.instances)
}

// TestIntegrationOverrun fills a member's receive buffer. With
// NETLINK_BROADCAST_ERROR set, the module learns of each loss and counts
// it as OVERRUN with LISTENERS 1; without it, netlink hides the loss from
// the sender, so it counts as NO_LISTENER with LISTENERS 0 (the member
// still sees ENOBUFS). The module cannot ask netlink_has_listeners(): its
// group bitmap is shared by all namespaces and would leak membership.
func TestIntegrationOverrun(t *testing.T) {
	unit := testenv.RequireModule(t)
	t.Run("broadcast-error", func(t *testing.T) { overrunCase(t, unit, true) })
	t.Run("plain", func(t *testing.T) { overrunCase(t, unit, false) })
}

func overrunCase(t *testing.T, unit int, broadcastError bool) {
	const group, n = 11, 64
	ns := newNetns(t)
	pub := dial(t, unit, ns)
	member := dial(t, unit, ns)
	// The smallest buffer the kernel allows holds a few events.
	if err := member.nl.SetReadBuffer(0); err != nil {
		t.Fatal(err)
	}
	if err := member.nl.SetOption(netlink.BroadcastError, broadcastError); err != nil {
		t.Fatal(err)
	}
	member.join(group)

	var noListeners []uint64
	for i := 1; i <= n; i++ {
		r := pub.publish(group, []byte(fmt.Sprintf("event %d of %d", i, n)))
		if s := r.u64(t, attrSeq); s != uint64(i) {
			t.Fatalf("publish %d: seq %d", i, s)
		}
		if r.u32(t, attrListeners) != 1 {
			noListeners = append(noListeners, uint64(i))
		}
	}

	// The loss is reported first, then what fit is delivered in order.
	if _, err := member.event(replyTimeout); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("first receive after the overrun: %v, want ENOBUFS", err)
	}
	var got uint64
	for {
		ev, err := member.event(silenceWait)
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got++
		if s := ev.u64(t, attrSeq); s != got {
			t.Fatalf("event %d after ENOBUFS has seq %d, want %d", got, s, got)
		}
	}
	if got == 0 || got >= n {
		t.Fatalf("member received %d of %d events, want some but not all", got, n)
	}
	dropped := n - got
	// Afterwards the next event arrives, and its number shows the gap.
	r := pub.publish(group, []byte("after the overrun"))
	ev, err := member.event(replyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if s := ev.u64(t, attrSeq); s != n+1 || r.u64(t, attrSeq) != n+1 {
		t.Errorf("event after the overrun has seq %d, want %d", s, n+1)
	}
	st := pub.stats()
	t.Logf("broadcast error %v: member received seq 1..%d of %d, then ENOBUFS, then seq %d; publishes answered LISTENERS 0: %v; counters %v",
		broadcastError, got, n, n+1, noListeners, st.counters)

	want := map[uint16]uint64{statsEcho: 0, statsPublish: n + 1, statsDelivered: got + 1, statsRejected: 0}
	if broadcastError {
		if len(noListeners) != 0 {
			t.Errorf("publishes %v answered NSB_A_LISTENERS 0 although the member reported its overrun", noListeners)
		}
		want[statsNoListener], want[statsOverrun] = 0, dropped
	} else {
		if uint64(len(noListeners)) != dropped || noListeners[0] != got+1 {
			t.Errorf("publishes answering LISTENERS 0 = %v, want the %d dropped ones from seq %d", noListeners, dropped, got+1)
		}
		want[statsNoListener], want[statsOverrun] = dropped, 0
	}
	wantCounters(t, "after the overrun", st, want)
}
