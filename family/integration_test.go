package family

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// These tests need the loaded module: they skip on a host without it and
// run in the test VM.

// timeout bounds every wait for the module.
const timeout = 10 * time.Second

// newNetns creates a named test namespace and returns a handle to it. The
// namespace is made on a fresh locked thread, which returns to its own
// namespace before it is unlocked; if it cannot, it stays locked and dies
// with its goroutine, so no goroutine ever runs in the wrong namespace.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	name := testenv.NetnsName()
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			ch <- result{err: errors.Join(err, serr)}
			return // the thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		ch <- result{h, err}
	}()
	r := <-ch
	if r.err != nil {
		os.Remove(filepath.Join("/run/netns", name))
		t.Fatalf("create namespace %s: %v", name, r.err)
	}
	t.Cleanup(func() {
		r.h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return r.h
}

// inode returns the inode of the namespace file fd refers to.
func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat namespace: %v", err)
	}
	return st.Ino
}

// hostInode returns the inode of the test process's own namespace.
func hostInode(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatalf("stat own namespace: %v", err)
	}
	return st.Ino
}

// dialModule dials the module and bounds every read by timeout.
func dialModule(t *testing.T, cfg *Config) *Conn {
	t.Helper()
	c, err := Dial(cfg)
	if err != nil {
		t.Fatalf("Dial(%+v): %v", cfg, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	return c
}

// receiveEvent returns the next event c receives.
func receiveEvent(t *testing.T, c *Conn) *Event {
	t.Helper()
	for {
		msgs, err := c.Receive()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		for _, m := range msgs {
			if ev, ok := m.Reply.(*Event); ok {
				return ev
			}
			t.Fatalf("want an event, got %+v", m)
		}
	}
}

func TestIntegrationEchoInNamespace(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	want := inode(t, int(ns))

	c := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	r, err := c.Echo([]byte("who answers?"))
	if err != nil {
		t.Fatalf("Echo in the new namespace: %v", err)
	}
	if uint64(r.NetnsInum) != want {
		t.Errorf("Echo in the new namespace: want inode %d, got %d", want, r.NetnsInum)
	}
	if string(r.Payload) != "who answers?" {
		t.Errorf("Echo payload: want %q, got %q", "who answers?", r.Payload)
	}

	// The same request on a socket of the test's own namespace, dialled with
	// the unit read from sysfs, is answered by another namespace.
	host := dialModule(t, nil)
	hr, err := host.Echo(nil)
	if err != nil {
		t.Fatalf("Echo in the own namespace: %v", err)
	}
	if want := hostInode(t); uint64(hr.NetnsInum) != want {
		t.Errorf("Echo in the own namespace: want inode %d, got %d", want, hr.NetnsInum)
	}
	if hr.NetnsCookie == r.NetnsCookie || r.NetnsCookie == 0 {
		t.Errorf("namespace cookies: want distinct non-zero values, got %d (new) and %d (own)", r.NetnsCookie, hr.NetnsCookie)
	}
}

func TestIntegrationPublishSubscribe(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	const group = 7
	sub := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	pub := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	if err := sub.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	// A member of the same group in the test's own namespace must not see
	// the new namespace's events.
	outsider := dialModule(t, &Config{Unit: unit})
	if err := outsider.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup outside: %v", err)
	}

	for i, payload := range []string{"first", "second"} {
		before := time.Now()
		r, err := pub.Publish(group, []byte(payload))
		if err != nil {
			t.Fatalf("Publish %q: %v", payload, err)
		}
		after := time.Now()
		// A fresh namespace numbers its events from 1.
		wantSeq := uint64(i + 1)
		if diff := cmp.Diff(&PublishReply{Group: group, Seq: wantSeq, Listeners: true}, r); diff != "" {
			t.Errorf("Publish %q reply (-want +got):\n%s", payload, diff)
		}
		ev := receiveEvent(t, sub)
		want := &Event{
			Group:        group,
			Seq:          wantSeq,
			Payload:      []byte(payload),
			NetnsInum:    uint32(inode(t, int(ns))),
			SenderPortID: pub.PortID(),
			Timestamp:    ev.Timestamp,
		}
		if diff := cmp.Diff(want, ev); diff != "" {
			t.Errorf("event %q (-want +got):\n%s", payload, diff)
		}
		if ev.Timestamp.Before(before.Add(-time.Second)) || ev.Timestamp.After(after.Add(time.Second)) {
			t.Errorf("event timestamp: want between %v and %v, got %v", before, after, ev.Timestamp)
		}
	}

	// The outsider's first event must be one published in its own
	// namespace after the two above. It is published from another Conn:
	// the event arrives before the reply, and Publish would discard it.
	hostPub := dialModule(t, &Config{Unit: unit})
	marker, err := hostPub.Publish(group, []byte("own namespace"))
	if err != nil {
		t.Fatalf("Publish in the own namespace: %v", err)
	}
	ev := receiveEvent(t, outsider)
	if string(ev.Payload) != "own namespace" || ev.Seq != marker.Seq || uint64(ev.NetnsInum) != hostInode(t) {
		t.Errorf("outsider's first event: want %q seq %d from inode %d, got %+v", "own namespace", marker.Seq, hostInode(t), ev)
	}
}

// TestIntegrationRejectGroupZero bypasses EncodePublish's check to see the
// module's own rejection.
func TestIntegrationRejectGroupZero(t *testing.T) {
	unit := testenv.RequireModule(t)
	c := dialModule(t, &Config{Unit: unit})
	seq, err := c.Send(MsgPublish, 0, body(Version, attrU32(AttrGroup, 0), attrBytes(AttrPayload, nil)))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	for {
		msgs, err := c.Receive()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		for _, m := range msgs {
			if m.Seq != seq {
				continue
			}
			var e *Error
			if !errors.As(m.Err, &e) {
				t.Fatalf("publish to group 0: want *Error, got %+v", m)
			}
			if !errors.Is(m.Err, unix.ERANGE) || e.Seq != seq || e.Message == "" {
				t.Errorf("publish to group 0: want ERANGE for seq %d with a message, got %+v", seq, e)
			}
			// The group attribute follows the netlink and family headers.
			if want := 16 + HeaderLen; e.Offset != want {
				t.Errorf("publish to group 0: want offset %d (NSB_A_GROUP), got %d", want, e.Offset)
			}
			return
		}
	}
}

// TestIntegrationBatchRefusedInTheMiddle sends five publishes in one
// datagram, the third to group 0, which the module refuses. The module
// handles every message of the datagram: the third gets ERANGE, and the
// others are published, in the datagram's order, as 1, 2, 3, 4. Then
// twenty 4 KiB publishes, more than BatchBytes, go out in several
// datagrams and are numbered 5..24 in order.
func TestIntegrationBatchRefusedInTheMiddle(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	const group = 5
	sub := dialModule(t, &Config{Unit: unit, NetNS: int(ns), ReadBuffer: 4 << 20})
	if err := sub.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	pub := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	var reqs []Request
	for i := range 5 {
		data, err := EncodePublish(group, []byte{byte('0' + i)})
		if err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			data = body(Version, attrU32(AttrGroup, 0), attrBytes(AttrPayload, []byte("2")))
		}
		reqs = append(reqs, Request{Seq: uint32(1001 + i), Type: MsgPublish, Data: data})
	}
	big := make([]byte, 4096)
	for i := range 20 {
		data, err := EncodePublish(group, big)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, Request{Seq: uint32(2001 + i), Type: MsgPublish, Data: data})
	}
	if n, _ := nextBatch(reqs[5:]); n >= 20 {
		t.Fatalf("twenty 4 KiB publishes fit in one datagram of %d bytes: the test needs more", BatchBytes)
	}
	if _, err := pub.SendBatch(reqs[:5]); err != nil {
		t.Fatalf("SendBatch of 5: %v", err)
	}
	if sent, err := pub.SendBatch(reqs[5:]); err != nil || sent != 20 {
		t.Fatalf("SendBatch of twenty 4 KiB: want 20 sent, got %d, %v", sent, err)
	}
	// The replies, in the order of the requests.
	want := map[uint32]uint64{1001: 1, 1002: 2, 1004: 3, 1005: 4}
	for i := range 20 {
		want[uint32(2001+i)] = uint64(5 + i)
	}
	var order []uint32
	for len(order) < len(reqs) {
		msgs, err := pub.Receive()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		for _, m := range msgs {
			order = append(order, m.Seq)
			if m.Seq == 1003 {
				if !errors.Is(m.Err, unix.ERANGE) {
					t.Errorf("publish to group 0 in the middle: want ERANGE, got %+v", m)
				}
				continue
			}
			r, ok := m.Reply.(*PublishReply)
			if !ok || m.Err != nil || r.Seq != want[m.Seq] {
				t.Errorf("reply to request %d: want seq %d, got %+v", m.Seq, want[m.Seq], m)
			}
		}
	}
	var wantOrder []uint32
	for _, r := range reqs {
		wantOrder = append(wantOrder, r.Seq)
	}
	if diff := cmp.Diff(wantOrder, order); diff != "" {
		t.Errorf("replies: want them in the order of the requests (-want +got):\n%s", diff)
	}
	// The subscriber sees the four small events in order, then the big ones.
	for i, payload := range []string{"0", "1", "3", "4"} {
		ev := receiveEvent(t, sub)
		if ev.Seq != uint64(i+1) || string(ev.Payload) != payload {
			t.Errorf("event %d: want seq %d payload %q, got seq %d payload %q", i, i+1, payload, ev.Seq, ev.Payload)
		}
	}
	for i := range 20 {
		if ev := receiveEvent(t, sub); ev.Seq != uint64(5+i) || len(ev.Payload) != len(big) {
			t.Errorf("big event %d: want seq %d of %d bytes, got seq %d of %d", i, 5+i, len(big), ev.Seq, len(ev.Payload))
		}
	}
}

func TestIntegrationStats(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	c := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	if _, err := c.Echo(nil); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if _, err := c.Publish(3, []byte("nobody listens")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got, err := c.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	want := &Stats{
		Echo:       1,
		Publish:    1,
		NoListener: 1,
		NetnsInum:  uint32(inode(t, int(ns))),
		Instances:  got.Instances,
		InstanceID: got.InstanceID,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Stats of a fresh namespace (-want +got):\n%s", diff)
	}
	// This namespace and the initial one have instances at least.
	if got.Instances < 2 || got.InstanceID == 0 {
		t.Errorf("Stats: want at least 2 instances and a non-zero instance id, got %d and %d", got.Instances, got.InstanceID)
	}
}

// TestIntegrationOverrunReportsDropped fills a subscriber's receive buffer:
// its next Receive must report the loss, and the events it still gets show
// the gap in their sequence numbers.
func TestIntegrationOverrunReportsDropped(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	const group, events = 2, 200
	sub := dialModule(t, &Config{Unit: unit, NetNS: int(ns), ReadBuffer: 16 << 10})
	pub := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	if err := sub.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	payload := make([]byte, 1024)
	for range events {
		if _, err := pub.Publish(group, payload); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}

	if _, err := sub.Receive(); !errors.Is(err, ErrDropped) {
		t.Fatalf("Receive after an overrun: want %v, got %v", ErrDropped, err)
	}
	// Drain what the buffer kept; the socket stays usable.
	var got int
	var last uint64
	for {
		if err := sub.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatalf("SetReadDeadline: %v", err)
		}
		msgs, err := sub.Receive()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("Receive while draining: %v", err)
		}
		for _, m := range msgs {
			ev, ok := m.Reply.(*Event)
			if !ok {
				t.Fatalf("want an event, got %+v", m)
			}
			if ev.Seq <= last {
				t.Errorf("event seq %d after %d: want increasing", ev.Seq, last)
			}
			last = ev.Seq
			got++
		}
	}
	if got == 0 || got >= events {
		t.Errorf("events kept: want some but fewer than %d, got %d", events, got)
	}
	st, err := pub.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	// The subscriber was a member throughout: every event it lost is an
	// overrun (Dial's broadcast-error option lets the module see it), none
	// is an event without listeners.
	if want := uint64(events - got); st.Publish != events || st.Overrun < want || st.NoListener != 0 {
		t.Errorf("Stats: want %d published, at least %d overruns and no NoListener, got %+v", events, want, st)
	}
}

// TestIntegrationLargestDatagrams: Receive reads into a fixed buffer of
// receiveBufferSize, so the largest datagrams the module sends must arrive
// whole — an event with a PayloadMax payload and the rejection of a
// publish of that size, which carries the request back — and a payload
// must stay intact after the next receive reuses the buffer.
func TestIntegrationLargestDatagrams(t *testing.T) {
	unit := testenv.RequireModule(t)
	ns := newNetns(t)
	const group = 5
	sub := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	pub := dialModule(t, &Config{Unit: unit, NetNS: int(ns)})
	if err := sub.JoinGroup(group); err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	first, second := bytes.Repeat([]byte{'a'}, PayloadMax), bytes.Repeat([]byte{'b'}, PayloadMax)
	for _, p := range [][]byte{first, second} {
		if _, err := pub.Publish(group, p); err != nil {
			t.Fatalf("Publish %d bytes: %v", len(p), err)
		}
	}
	a := receiveEvent(t, sub)
	b := receiveEvent(t, sub)
	if a.Seq != 1 || !bytes.Equal(a.Payload, first) {
		t.Errorf("first event after the second was received: want seq 1 with %d bytes of 'a', got seq %d with %d bytes, equal %v",
			PayloadMax, a.Seq, len(a.Payload), bytes.Equal(a.Payload, first))
	}
	if b.Seq != 2 || !bytes.Equal(b.Payload, second) {
		t.Errorf("second event: want seq 2 with %d bytes of 'b', got seq %d with %d bytes", PayloadMax, b.Seq, len(b.Payload))
	}

	seq, err := pub.Send(MsgPublish, 0, body(Version, attrU32(AttrGroup, 0), attrBytes(AttrPayload, first)))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	msgs, err := pub.Receive()
	if err != nil {
		t.Fatalf("Receive the rejection of a %d-byte publish: %v", PayloadMax, err)
	}
	if len(msgs) != 1 || msgs[0].Seq != seq || !errors.Is(msgs[0].Err, unix.ERANGE) {
		t.Fatalf("rejection of a %d-byte publish to group 0: want one ERANGE for seq %d, got %+v", PayloadMax, seq, msgs)
	}
}
