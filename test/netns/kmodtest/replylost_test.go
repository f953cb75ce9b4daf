package kmodtest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestIntegrationPublishReplyLost: a publisher that is a member of its
// group, with a receive buffer the group's events overran, publishes. The
// module numbers and multicasts the event, then cannot queue the reply
// (-EAGAIN: the socket is congested until it is read empty), nor the error
// after it. The publish took effect: it counts as published, not as
// rejected, and its number is taken.
func TestIntegrationPublishReplyLost(t *testing.T) {
	unit := testenv.RequireModule(t)
	const group, n = 12, 64
	ns := newNetns(t)
	other := dial(t, unit, ns)
	full := dial(t, unit, ns)
	// The smallest buffer the kernel allows holds a few events.
	if err := full.nl.SetReadBuffer(0); err != nil {
		t.Fatal(err)
	}
	full.join(group)
	for i := 1; i <= n; i++ {
		other.publish(group, []byte(fmt.Sprintf("event %d of %d", i, n)))
	}

	const seq = 4242
	if err := sendRaw(full.nl, nlMsg(msgPublish, fReq, seq, body(attr(attrGroup, u32(group)), attr(attrPayload, []byte("reply lost"))))); err != nil {
		t.Fatalf("send PUBLISH from the overrun member: %v", err)
	}
	// The publish is handled in sendmsg: by now its number is taken.
	if r := other.publish(group, []byte("after")); r.u64(t, attrSeq) != n+2 {
		t.Errorf("publish after the lost reply: seq %d, want %d (the lost reply's publish took %d)", r.u64(t, attrSeq), n+2, n+1)
	}
	st := other.stats()
	t.Logf("counters %v", st.counters)
	if p, r := st.counters[statsPublish], st.counters[statsRejected]; p != n+2 || r != 0 {
		t.Errorf("after a publish whose reply was lost: PUBLISH %d, REJECTED %d; want %d, 0", p, r, n+2)
	}

	// The member reads the overrun, then what fit: events only, no reply
	// and no error.
	if _, err := recvRaw(full.nl, replyTimeout); !errors.Is(err, unix.ENOBUFS) {
		t.Fatalf("first receive of the overrun member: %v, want ENOBUFS", err)
	}
	got := 0
	for {
		d, err := recvRaw(full.nl, silenceWait)
		if isTimeout(err) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parseEvent(d); err != nil {
			t.Fatalf("after ENOBUFS, message %d: %v (want events only: the reply and the error were not queued)", got+1, err)
		}
		got++
	}
	if got == 0 || got >= n {
		t.Errorf("overrun member read %d events, want some but not all of %d", got, n)
	}
}
