package fault

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// endBound is how soon after `ip netns del` the namespace's streams must
// end (issue 7).
const endBound = 2 * time.Second

// TestIntegrationNetnsDelUnderLoad: `ip netns del` of an attached namespace
// while a process inside every namespace publishes. The deleted
// namespace's subscriptions, its tenant's and the admin's, end within
// endBound with ABORTED and a message saying the namespace is gone (the
// daemon cuts the tenant's connection only after its streams had time to
// end so); the publisher there keeps the namespace itself alive, so only the name's
// removal tells the daemon. The subscribers of the other namespaces
// receive every event their publishers published, before, during and
// after the deletion, in order and with no gap.
func TestIntegrationNetnsDelUnderLoad(t *testing.T) {
	unit := requireDaemon(t)
	const (
		group    = 4
		interval = 10 * time.Millisecond // each publisher's pace
		warm     = 50                    // events each subscriber gets before the deletion
		after    = 100                   // publishes each publisher makes after it
	)
	nss := []netns{newNetns(t), newNetns(t), newNetns(t)}
	gone := nss[0]
	args := []string{"--queue-len", "65536"} // any loss here would be the daemon's, not a slow test
	for _, ns := range nss {
		args = append(args, "--attach", ns.name)
	}
	d := startDaemon(t, filepath.Join(t.TempDir(), "nsbroker.sock"), args...)
	admin, adminConn := d.client(t)
	ctx := testContext(t)
	subs := map[string][]*subscriber{}
	pubs := map[string]*publisher{}
	for _, ns := range nss {
		waitServing(t, adminConn, ns.name)
		subs[ns.name] = []*subscriber{
			subscribe(ctx, "tenant of "+ns.name, newTenant(t, ns.name), "", group, false),
			subscribe(ctx, "admin on "+ns.name, admin, ns.name, group, false),
		}
		waitSubscribers(t, admin, ns.name, 2)
	}
	for _, ns := range nss {
		pubs[ns.name] = publishLoop(ns.name, interval, dialIn(t, unit, ns.name).publish(group))
	}
	for _, ns := range nss {
		for _, s := range subs[ns.name] {
			s.waitFor(t, waitTimeout, fmt.Sprintf("%d events", warm), func(gens []generation) bool {
				return len(gens) == 1 && len(gens[0].items) >= warm
			})
		}
	}

	deleted, started := delNetnsTimed(t, gone.name)
	t.Logf("ip netns del %s removed the name %v after the command started", gone.name, deleted.Sub(started).Round(time.Millisecond))
	atDelete := map[string]int{}
	for name, p := range pubs {
		atDelete[name] = p.count()
	}
	for _, s := range subs[gone.name] {
		gens := s.waitFor(t, waitTimeout, "the stream to end", func(gens []generation) bool {
			return len(gens) == 1 && gens[0].err != nil
		})
		g := gens[0]
		took := g.ended.Sub(deleted)
		t.Logf("%s: stream ended %v after the name was removed: %v", s.who, took.Round(time.Millisecond), g.err)
		if took > endBound {
			t.Errorf("%s: stream ended %v after the name was removed, want within %v", s.who, took, endBound)
		}
		st := status.Convert(g.err)
		saysGone := st.Code() == codes.Aborted && strings.Contains(st.Message(), "namespace gone") && strings.Contains(st.Message(), gone.name)
		if !saysGone {
			t.Errorf("%s: stream ended with %v %q, want %v saying namespace %s is gone",
				s.who, st.Code(), st.Message(), codes.Aborted, gone.name)
		}
		checkConsecutive(t, s.who, g, gone, 1)
	}
	if _, err := admin.GetNamespace(rpcContext(t), &nsbrokerv1.GetNamespaceRequest{Namespace: gone.name}); status.Code(err) != codes.NotFound {
		t.Errorf("GetNamespace of the deleted %s: got %v, want %v", gone.name, err, codes.NotFound)
	}

	eventually(t, waitTimeout, fmt.Sprintf("%d more publishes everywhere", after), func() (bool, string) {
		for name, p := range pubs {
			if n := p.count(); n < atDelete[name]+after {
				return false, fmt.Sprintf("%s: %d publishes", name, n)
			}
		}
		return true, ""
	})
	// The namespace outlived its name: its publisher went on.
	if n := len(pubs[gone.name].halt()); n < atDelete[gone.name]+after {
		t.Errorf("publisher in the deleted %s: %d publishes, want at least %d", gone.name, n, atDelete[gone.name]+after)
	}
	for _, ns := range nss[1:] {
		ok := pubs[ns.name].halt()
		last := ok[len(ok)-1].seq
		var seqs []uint64
		for _, pub := range ok {
			seqs = append(seqs, pub.seq)
		}
		if !slices.Equal(seqs, seqRange(1, last)) {
			t.Fatalf("%s: publishes got seqs %v, want 1..%d (the only publisher there)", ns.name, seqs, last)
		}
		for _, s := range subs[ns.name] {
			gens := s.waitFor(t, waitTimeout, fmt.Sprintf("event %d", last), func(gens []generation) bool {
				items := gens[0].items
				return gens[0].err != nil || len(items) > 0 && items[len(items)-1].ev != nil && items[len(items)-1].ev.Seq >= last
			})
			g := gens[0]
			if g.err != nil {
				t.Errorf("%s: stream ended: %v", s.who, g.err)
			}
			if seqs, _ := g.split(); len(seqs) != int(last) {
				t.Errorf("%s: %d events, want %d", s.who, len(seqs), last)
			}
			checkConsecutive(t, s.who, g, ns, 1)
		}
		t.Logf("%s: every subscriber received all %d events, %d of them after the deletion", ns.name, last, int(last)-atDelete[ns.name])
	}
	d.Stop(t, waitTimeout)
}

// checkConsecutive checks that a stream holds events only, numbered
// from first on without a hole, from namespace ns.
func checkConsecutive(t *testing.T, who string, g generation, ns netns, first uint64) {
	t.Helper()
	want := first
	for _, it := range g.items {
		if it.gap != nil || it.ev.Seq != want || it.ev.NetnsInode != uint64(ns.inode) || it.ev.Namespace != ns.name {
			got := it.String()
			if it.ev != nil {
				got = fmt.Sprintf("%v from %s inode %d", it, it.ev.Namespace, it.ev.NetnsInode)
			}
			t.Errorf("%s: item %d: got %s, want event %d from %s inode %d", who, want-first+1, got, want, ns.name, ns.inode)
			return
		}
		want++
	}
}
