package fault

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// resumeGroup is the group the resume tests publish to.
const resumeGroup = 7

// TestIntegrationResumeReconnect: a subscriber that goes away and comes
// back with a resume point accounts for every sequence number it missed:
// all of them replayed while the retention ring still holds them; the
// oldest as one NOT_RETAINED gap with the exact range, the rest replayed,
// once the ring has dropped some. Then live events follow, none twice.
func TestIntegrationResumeReconnect(t *testing.T) {
	requireDaemon(t)
	const retain = 16
	ns := newNetns(t)
	d := startDaemon(t, filepath.Join(t.TempDir(), "nsbroker.sock"), "--attach", ns.name, "--retain-events", fmt.Sprint(retain))
	_, adminConn := d.client(t)
	waitServing(t, adminConn, ns.name)
	tn := newTenant(t, ns.name)

	point := firstPoint(t, tn)
	for _, missed := range []int{retain / 2, 3 * retain} {
		t.Run(fmt.Sprintf("missed %d of a ring of %d", missed, retain), func(t *testing.T) {
			published := publishN(t, tn, missed)
			want := accounting{from: point.Seq + 1, to: published[len(published)-1]}
			if want.to-want.from+1 != uint64(missed) {
				t.Fatalf("published %v after seq %d; want %d consecutive numbers", published, point.Seq, missed)
			}
			items, next := resume(t, tn, point, want.to+1)
			got := account(t, items, want)
			wantReplayed := min(missed, retain)
			if got.events != wantReplayed {
				t.Errorf("replayed: got %d events, want %d\n%s", got.events, wantReplayed, describeItems(items))
			}
			if missed > retain {
				wantGap := fmt.Sprintf("gap %d-%d NOT_RETAINED", want.from, want.to-retain)
				if len(got.gaps) != 1 || got.gaps[0] != wantGap {
					t.Errorf("gaps: got %q, want [%q]\n%s", got.gaps, wantGap, describeItems(items))
				}
			} else if len(got.gaps) != 0 {
				t.Errorf("gaps: got %q, want none: the ring held every missed event\n%s", got.gaps, describeItems(items))
			}
			point = next
		})
	}
}

// TestIntegrationResumeAfterRestart: nsbrokerd killed with SIGKILL and
// started again while a raw publisher goes on in the namespace. A
// subscriber that resumes from its last number gets what the new daemon
// cannot replay as one DAEMON_RESTARTED gap with the exact range, and
// then every live event: every number accounted for, none twice.
func TestIntegrationResumeAfterRestart(t *testing.T) {
	unit := requireDaemon(t)
	ns := newNetns(t)
	d := startDaemon(t, filepath.Join(t.TempDir(), "nsbroker.sock"), "--attach", ns.name)
	_, adminConn := d.client(t)
	waitServing(t, adminConn, ns.name)
	tn := newTenant(t, ns.name)
	raw := dialIn(t, unit, ns.name)

	point := firstPoint(t, tn)
	d.kill(t)
	// Published while no daemon runs: only the module knows of them.
	during := raw.publishN(t, resumeGroup, 5)
	d = d.restart(t)
	_, adminConn = d.client(t)
	waitServing(t, adminConn, ns.name)

	items, _ := resume(t, tn, point, during[len(during)-1]+1)
	got := account(t, items, accounting{from: point.Seq + 1, to: during[len(during)-1]})
	wantGap := fmt.Sprintf("gap %d-%d DAEMON_RESTARTED", point.Seq+1, during[len(during)-1])
	if len(got.gaps) != 1 || got.gaps[0] != wantGap {
		t.Errorf("gaps: got %q, want [%q]\n%s", got.gaps, wantGap, describeItems(items))
	}
}

// firstPoint subscribes, publishes one event through the daemon and
// returns the resume point after it.
func firstPoint(t *testing.T, tn *tenant) *nsbrokerv1.ResumePoint {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), waitTimeout)
	defer cancel()
	s := openStream(t, ctx, tn, nil)
	seqs := publishN(t, tn, 1)
	resp, err := s.Recv()
	ev := resp.GetEvent()
	if err != nil || ev.GetSeq() != seqs[0] {
		t.Fatalf("first event: got %v, %v; want seq %d", resp, err, seqs[0])
	}
	return &nsbrokerv1.ResumePoint{Group: resumeGroup, Instance: ev.GetInstance(), Seq: ev.GetSeq()}
}

// publishN publishes n events to resumeGroup through the daemon and
// returns their numbers.
func publishN(t *testing.T, tn *tenant, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		r, err := tn.Publish(rpcContext(t), &nsbrokerv1.PublishRequest{Group: resumeGroup, Payload: []byte(fmt.Sprintf("p%d", i))})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		seqs = append(seqs, r.GetSeq())
	}
	return seqs
}

// openStream subscribes to resumeGroup from point (nil: now), retrying
// while a restarted daemon comes up, and waits until the subscription is
// in place.
func openStream(t *testing.T, ctx context.Context, tn *tenant, point *nsbrokerv1.ResumePoint) grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse] {
	t.Helper()
	req := &nsbrokerv1.SubscribeRequest{Groups: []uint32{resumeGroup}}
	if point != nil {
		req.Resume = []*nsbrokerv1.ResumePoint{point}
	}
	var last error
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		s, err := tn.Subscribe(ctx, req)
		if err == nil {
			if _, err = s.Header(); err == nil {
				return s
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Subscribe from %v: %v", point, last)
	return nil
}

// resume subscribes from point, publishes one live event once what was
// missed has arrived, and returns every item up to that live event (whose
// number must be live) and the point after it.
func resume(t *testing.T, tn *tenant, point *nsbrokerv1.ResumePoint, live uint64) ([]*nsbrokerv1.SubscribeResponse, *nsbrokerv1.ResumePoint) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testContext(t), waitTimeout)
	defer cancel()
	s := openStream(t, ctx, tn, point)
	var items []*nsbrokerv1.SubscribeResponse
	published := false
	for {
		if !published && caughtUp(items, live-1) {
			if got := publishN(t, tn, 1); got[0] != live {
				t.Fatalf("live publish: got seq %d, want %d", got[0], live)
			}
			published = true
		}
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("after %d items:\n%s\nRecv: %v", len(items), describeItems(items), err)
		}
		items = append(items, resp)
		if ev := resp.GetEvent(); ev.GetSeq() >= live {
			if ev.GetSeq() != live {
				t.Fatalf("got event %d, want the live event %d next\n%s", ev.GetSeq(), live, describeItems(items))
			}
			return items, &nsbrokerv1.ResumePoint{Group: resumeGroup, Instance: ev.GetInstance(), Seq: ev.GetSeq()}
		}
	}
}

// caughtUp reports whether items account for every number up to seq.
func caughtUp(items []*nsbrokerv1.SubscribeResponse, seq uint64) bool {
	for _, it := range items {
		if ev := it.GetEvent(); ev != nil && ev.GetSeq() >= seq {
			return true
		}
		if g := it.GetGap(); g != nil && g.GetToSeq() >= seq {
			return true
		}
	}
	return false
}

// accounting is a range of numbers a subscriber must account for.
type accounting struct{ from, to uint64 }

// accounted is what account found.
type accounted struct {
	events int      // events within the range
	gaps   []string // "gap FROM-TO REASON"
}

// account checks that items, then one live event, account for every
// number in want exactly once, in order, as an event or inside a gap,
// and nothing outside it but the live event.
func account(t *testing.T, items []*nsbrokerv1.SubscribeResponse, want accounting) accounted {
	t.Helper()
	return accountItems(t, items[:len(items)-1], want, items)
}

// accountItems checks that items account for every number in want
// exactly once, in order, as an event or inside a gap, and for nothing
// else; all is what a failure shows.
func accountItems(t *testing.T, items []*nsbrokerv1.SubscribeResponse, want accounting, all []*nsbrokerv1.SubscribeResponse) accounted {
	t.Helper()
	var got accounted
	next := want.from
	for _, it := range items {
		switch {
		case it.GetEvent() != nil:
			if seq := it.GetEvent().GetSeq(); seq != next {
				t.Fatalf("event %d where %d is due\n%s", seq, next, describeItems(all))
			}
			got.events++
			next++
		case it.GetGap() != nil:
			g := it.GetGap()
			if g.GetFromSeq() != next || g.GetToSeq() < next {
				t.Fatalf("gap %d-%d where %d is due\n%s", g.GetFromSeq(), g.GetToSeq(), next, describeItems(all))
			}
			got.gaps = append(got.gaps, fmt.Sprintf("gap %d-%d %s", g.GetFromSeq(), g.GetToSeq(), strings.TrimPrefix(g.GetReason().String(), "LOSS_REASON_")))
			next = g.GetToSeq() + 1
		}
	}
	if next != want.to+1 {
		t.Fatalf("accounted for %d..%d, want %d..%d\n%s", want.from, next-1, want.from, want.to, describeItems(all))
	}
	return got
}

func describeItems(items []*nsbrokerv1.SubscribeResponse) string {
	var b strings.Builder
	for _, it := range items {
		if ev := it.GetEvent(); ev != nil {
			fmt.Fprintf(&b, "    event %d\n", ev.GetSeq())
		} else if g := it.GetGap(); g != nil {
			fmt.Fprintf(&b, "    gap %d-%d %v\n", g.GetFromSeq(), g.GetToSeq(), g.GetReason())
		}
	}
	return b.String()
}
