package fault

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationKillDaemon: nsbrokerd killed with SIGKILL while tenants
// in three namespaces publish through it and they and the admin subscribe,
// then started again with the same arguments. The streams end with
// UNAVAILABLE; every client reconnects and subscribes again by itself;
// every event published once the subscriptions are back arrives, in order,
// with no gap, from the same namespace (attached again by --attach), its
// numbering continuing where it was. Once the namespaces are deleted the
// module's live-instance count is back to what it was before the test:
// neither daemon leaked a namespace.
func TestIntegrationKillDaemon(t *testing.T) {
	requireDaemon(t)
	baseline := moduleInstances(t)
	const (
		group    = 3
		interval = 5 * time.Millisecond // each publisher's pace
		warm     = 20                   // events each subscriber gets before the kill
		after    = 20                   // publishes each publisher makes once all are back
	)
	nss := []netns{newNetns(t), newNetns(t), newNetns(t)}
	held := moduleInstances(t)
	var args []string
	for _, ns := range nss {
		args = append(args, "--attach", ns.name)
	}
	d := startDaemon(t, filepath.Join(t.TempDir(), "nsbroker.sock"), args...)
	admin, adminConn := d.client(t)
	for _, ns := range nss {
		waitServing(t, adminConn, ns.name)
	}

	ctx, stopSubs := context.WithCancel(testContext(t))
	defer stopSubs()
	subs := map[string][]*subscriber{}
	pubs := map[string]*publisher{}
	var tenants []*tenant
	for _, ns := range nss {
		tn := newTenant(t, ns.name)
		tenants = append(tenants, tn)
		subs[ns.name] = []*subscriber{
			subscribe(ctx, "tenant of "+ns.name, tn, "", group, true),
			subscribe(ctx, "admin on "+ns.name, admin, ns.name, group, true),
		}
		waitSubscribers(t, admin, ns.name, 2)
		pubs[ns.name] = publishLoop(ns.name, interval, daemonPublish(tn, "", group))
	}
	for _, ss := range subs {
		for _, s := range ss {
			s.waitFor(t, waitTimeout, fmt.Sprintf("%d events before the kill", warm), func(gens []generation) bool {
				return len(gens) == 1 && len(gens[0].items) >= warm
			})
		}
	}
	lastBefore := map[string]uint64{}
	for name, p := range pubs {
		p.mu.Lock()
		lastBefore[name] = p.ok[len(p.ok)-1].seq
		p.mu.Unlock()
	}

	killed := time.Now()
	d.kill(t)
	d = d.restart(t)
	restarted := time.Now()

	// Every client is back once each subscriber has a second stream.
	var back time.Time
	for _, ss := range subs {
		for _, s := range ss {
			gens := s.waitFor(t, waitTimeout, "a second subscription", func(gens []generation) bool { return len(gens) >= 2 })
			if code := status.Code(gens[0].err); code != codes.Unavailable {
				t.Errorf("%s: first stream ended with %v (%v), want %v", s.who, code, gens[0].err, codes.Unavailable)
			}
			if len(gens) != 2 {
				t.Errorf("%s: %d streams, want 2: %s", s.who, len(gens), describe(gens))
			}
			if r := s.refusals(); len(r) > 0 {
				t.Logf("%s: %d refused resubscriptions, the last: %v", s.who, len(r), r[len(r)-1])
			}
			// The new daemon serves only once its --attach namespaces are
			// attached: a reconnecting client never finds one missing.
			for _, err := range s.refusals() {
				if status.Code(err) == codes.NotFound {
					t.Errorf("%s: resubscribing after the restart: %v; want the namespace there", s.who, err)
					break
				}
			}
			if gens[1].started.After(back) {
				back = gens[1].started
			}
		}
	}
	t.Logf("kill to READY of the new daemon: %v; READY to every subscriber subscribed again: %v; kill to all back: %v",
		restarted.Sub(killed).Round(time.Millisecond), back.Sub(restarted).Round(time.Millisecond), back.Sub(killed).Round(time.Millisecond))

	// The publishers went on through the outage; count those sent after
	// every subscription was back in place.
	eventually(t, waitTimeout, fmt.Sprintf("%d publishes per namespace after reconnecting", after), func() (bool, string) {
		for name, p := range pubs {
			p.mu.Lock()
			n := 0
			for _, pub := range p.ok {
				if pub.started.After(back) {
					n++
				}
			}
			failed, last := p.failed, p.last
			p.mu.Unlock()
			if n < after {
				return false, fmt.Sprintf("%s: %d publishes after reconnecting, %d failed (last: %v)", name, n, failed, last)
			}
		}
		return true, ""
	})
	for _, ns := range nss {
		p := pubs[ns.name]
		ok := p.halt()
		t.Logf("%s: %d publishes, %d failed during the outage", ns.name, len(ok), p.failed)
		first := slices.IndexFunc(ok, func(pub published) bool { return pub.started.After(back) })
		var seqs []uint64
		for _, pub := range ok[first:] {
			seqs = append(seqs, pub.seq)
		}
		from, to := seqs[0], seqs[len(seqs)-1]
		if !slices.Equal(seqs, seqRange(from, to)) {
			t.Fatalf("%s: publishes after reconnecting got seqs %v, want consecutive (the only publisher there)", ns.name, seqs)
		}
		// The module was not reloaded: numbering went on.
		if from <= lastBefore[ns.name] {
			t.Errorf("%s: first seq after the restart %d, want above %d (published before the kill)", ns.name, from, lastBefore[ns.name])
		}
		for _, s := range subs[ns.name] {
			gens := s.waitFor(t, waitTimeout, fmt.Sprintf("event %d", to), func(gens []generation) bool {
				items := gens[len(gens)-1].items
				return len(items) > 0 && items[len(items)-1].ev != nil && items[len(items)-1].ev.Seq >= to
			})
			checkResumed(t, s.who, gens[1], ns, from, to)
		}
	}

	// The namespaces were attached again, as the same namespaces.
	list, err := admin.ListNamespaces(rpcContext(t), &nsbrokerv1.ListNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, ns := range list.GetNamespaces() {
		got = append(got, fmt.Sprintf("%s inode %d %v", ns.GetName(), ns.GetInode(), ns.GetState()))
	}
	for _, ns := range nss {
		want = append(want, fmt.Sprintf("%s inode %d %v", ns.name, ns.inode, nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("namespaces after the restart: got %v, want %v", got, want)
	}

	// No leak: with the clients gone and the namespaces deleted, the
	// module is back to the instances it had before the test.
	stopSubs()
	for _, tn := range tenants {
		tn.close()
	}
	for _, ns := range nss {
		delNetns(t, ns.name)
	}
	eventually(t, waitTimeout, "the daemon to detach the deleted namespaces", func() (bool, string) {
		l, err := admin.ListNamespaces(rpcContext(t), &nsbrokerv1.ListNamespacesRequest{})
		return err == nil && len(l.GetNamespaces()) == 0, fmt.Sprintf("%v %v", l, err)
	})
	// Namespaces that earlier tests deleted may still have been in
	// teardown when the baseline was read: the count may end below it,
	// never above, and it falls by at least the namespaces deleted here.
	most := min(baseline, held-uint32(len(nss)))
	final, took := waitInstances(t, most)
	t.Logf("module instances %d (%d before the test, %d with its namespaces) %v after the daemon let go",
		final, baseline, held, took.Round(time.Millisecond))
	d.Stop(t, waitTimeout)
}

// checkResumed checks a subscription made after the restart: events only,
// consecutive, from namespace ns, at epoch 1 of the new daemon, and
// including every event from..to.
func checkResumed(t *testing.T, who string, g generation, ns netns, from, to uint64) {
	t.Helper()
	seqs, gaps := g.split()
	if len(gaps) != 0 {
		t.Errorf("%s: gaps after resubscribing: %v", who, gaps)
	}
	if len(seqs) == 0 || seqs[0] > from || seqs[len(seqs)-1] < to || !slices.Equal(seqs, seqRange(seqs[0], seqs[len(seqs)-1])) {
		t.Errorf("%s: after resubscribing got %s, want consecutive events covering %d..%d", who, describe([]generation{g}), from, to)
	}
	for _, it := range g.items {
		if ev := it.ev; ev != nil && (ev.NetnsInode != uint64(ns.inode) || ev.Namespace != ns.name || ev.Epoch != 1) {
			t.Errorf("%s: event %d from %s inode %d epoch %d, want %s inode %d epoch 1",
				who, ev.Seq, ev.Namespace, ev.NetnsInode, ev.Epoch, ns.name, ns.inode)
			break
		}
	}
}
