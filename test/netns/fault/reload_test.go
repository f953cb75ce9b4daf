package fault

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// moduleEnv names the module file in the guest, for loading it again.
const moduleEnv = "NSB_MODULE"

const moduleName = "nsbroker"

// module unloads and loads the nsbroker module.
type module struct {
	image  []byte
	params string
}

// requireModuleFile reads the module file the harness names. A test that
// fails with the module unloaded loads it again when it ends.
func requireModuleFile(t *testing.T, unit int) module {
	t.Helper()
	path := os.Getenv(moduleEnv)
	if path == "" {
		if testenv.InVM() {
			t.Fatalf("%s is not set inside the test VM", moduleEnv)
		}
		t.Skipf("%s is not set", moduleEnv)
	}
	image, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := module{image, fmt.Sprintf("unit=%d", unit)}
	t.Cleanup(func() {
		if _, err := testenv.ModuleUnit(); err == nil {
			return
		}
		if err := unix.InitModule(m.image, m.params); err != nil {
			t.Errorf("cleanup: load the module again: %v", err)
		}
	})
	return m
}

// unload removes the module. The kernel refuses with EAGAIN while any
// user socket of the unit is open; a socket just closed lets go of the
// module a moment later, so EAGAIN is retried for a while.
func (m module) unload(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tries := 0
	for {
		tries++
		err := unix.DeleteModule(moduleName, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EAGAIN) || time.Now().After(deadline) {
			t.Fatalf("delete_module after ReleaseModule (try %d): %v; a user socket of the unit is still open", tries, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("module unloaded (delete_module tries: %d)", tries)
}

func (m module) load(t *testing.T) {
	t.Helper()
	if err := unix.InitModule(m.image, m.params); err != nil {
		t.Fatalf("load the module again with %q: %v", m.params, err)
	}
}

// TestIntegrationReleaseReload: the module is released through the daemon
// (ReleaseModule), unloaded and loaded again while processes inside two
// namespaces publish and a tenant and the admin subscribe in each. Every
// subscriber gets, in order: the events from before, a RELEASED gap from
// the next number on (open: the stream was cut there; what the old module
// published meanwhile is lost with it), a MODULE_RELOADED gap naming
// exactly the events the new module published before the daemon was
// connected again, and then every later event.
//
// "resume": the daemon waits for ResumeModule (its retry interval is too
// long to notice the reload), so the events published before the resume
// are known in number. "automatic": the daemon notices the reload by
// itself, with publishers running all along.
func TestIntegrationReleaseReload(t *testing.T) {
	unit := requireDaemon(t)
	m := requireModuleFile(t, unit)
	t.Run("resume", func(t *testing.T) { releaseReload(t, unit, m, true) })
	t.Run("automatic", func(t *testing.T) { releaseReload(t, unit, m, false) })
}

func releaseReload(t *testing.T, unit int, m module, resume bool) {
	const (
		group   = 5
		before  = 5                      // events published before the release
		during  = 4                      // published by the old module while released
		pending = 3                      // published by the new module before ResumeModule
		later   = 5                      // published after the resume
		retry   = 100 * time.Millisecond // --retry-interval when resuming by itself
	)
	interval := retry.String()
	if resume {
		interval = "1h"
	}
	nss := []netns{newNetns(t), newNetns(t)}
	args := []string{"--retry-interval", interval}
	for _, ns := range nss {
		args = append(args, "--attach", ns.name)
	}
	d := startDaemon(t, filepath.Join(t.TempDir(), "nsbroker.sock"), args...)
	admin, adminConn := d.client(t)
	ctx := testContext(t)
	subs := map[string][]*subscriber{}
	for _, ns := range nss {
		waitServing(t, adminConn, ns.name)
		subs[ns.name] = []*subscriber{
			subscribe(ctx, "tenant of "+ns.name, newTenant(t, ns.name), "", group, false),
			subscribe(ctx, "admin on "+ns.name, admin, ns.name, group, false),
		}
		waitSubscribers(t, admin, ns.name, 2)
	}

	// Before: events 1..before reach everyone.
	raw := map[string]rawConn{}
	for _, ns := range nss {
		raw[ns.name] = dialIn(t, unit, ns.name)
		if got := raw[ns.name].publishN(t, group, before); !slices.Equal(got, seqRange(1, before)) {
			t.Fatalf("%s: published seqs %v, want 1..%d", ns.name, got, before)
		}
	}
	waitItems(t, subs, before)

	r, err := admin.ReleaseModule(rpcContext(t), &nsbrokerv1.ReleaseModuleRequest{})
	if err != nil {
		t.Fatalf("ReleaseModule: %v", err)
	}
	for _, ns := range r.GetNamespaces() {
		if ns.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_UNAVAILABLE {
			t.Errorf("ReleaseModule answered %s %v, want UNAVAILABLE", ns.GetName(), ns.GetState())
		}
	}
	if len(r.GetNamespaces()) != len(nss) {
		t.Errorf("ReleaseModule answered %d namespaces, want %d", len(r.GetNamespaces()), len(nss))
	}
	// The gap comes at once: the stream was cut after event before.
	waitItems(t, subs, before+1)

	// The old module goes on numbering while released; nobody in the
	// daemon hears it.
	for _, ns := range nss {
		if got := raw[ns.name].publishN(t, group, during); !slices.Equal(got, seqRange(before+1, before+during)) {
			t.Fatalf("%s: published while released: seqs %v, want %d..%d", ns.name, got, before+1, before+during)
		}
		raw[ns.name].Close()
	}
	m.unload(t)
	if !resume {
		// The daemon notices a reload only if it looks while the module
		// is out: keep it out for several retry intervals.
		time.Sleep(10 * retry)
	}
	m.load(t)

	newSeqs := map[string][]uint64{}
	if resume {
		// The new module numbers from 1; the daemon is not connected.
		for _, ns := range nss {
			raw[ns.name] = dialIn(t, unit, ns.name)
			newSeqs[ns.name] = raw[ns.name].publishN(t, group, pending)
		}
		resumed := time.Now()
		r, err := admin.ResumeModule(rpcContext(t), &nsbrokerv1.ResumeModuleRequest{Wait: true})
		if err != nil {
			t.Fatalf("ResumeModule: %v", err)
		}
		t.Logf("ResumeModule with wait answered after %v", time.Since(resumed).Round(time.Millisecond))
		for _, ns := range r.GetNamespaces() {
			if ns.GetState() != nsbrokerv1.NamespaceState_NAMESPACE_STATE_READY || ns.GetEpoch() != 2 {
				t.Errorf("ResumeModule answered %s %v epoch %d, want READY epoch 2", ns.GetName(), ns.GetState(), ns.GetEpoch())
			}
		}
		for _, ns := range nss {
			newSeqs[ns.name] = append(newSeqs[ns.name], raw[ns.name].publishN(t, group, later)...)
		}
	} else {
		// Publish all along; the daemon connects again by itself.
		pubs := map[string]*publisher{}
		for _, ns := range nss {
			pubs[ns.name] = publishLoop(ns.name, 10*time.Millisecond, dialIn(t, unit, ns.name).publish(group))
		}
		loaded := time.Now()
		for _, ns := range nss {
			waitServing(t, adminConn, ns.name)
		}
		t.Logf("module loaded to every namespace ready again: %v", time.Since(loaded).Round(time.Millisecond))
		atReady := map[string]int{}
		for name, p := range pubs {
			atReady[name] = p.count()
		}
		eventually(t, waitTimeout, fmt.Sprintf("%d publishes after the reconnection", later), func() (bool, string) {
			for name, p := range pubs {
				if n := p.count(); n < atReady[name]+later {
					return false, fmt.Sprintf("%s: %d publishes", name, n)
				}
			}
			return true, ""
		})
		for name, p := range pubs {
			for _, pub := range p.halt() {
				newSeqs[name] = append(newSeqs[name], pub.seq)
			}
		}
	}

	for _, ns := range nss {
		seqs := newSeqs[ns.name]
		last := seqs[len(seqs)-1]
		if !slices.Equal(seqs, seqRange(1, last)) {
			t.Fatalf("%s: the new module numbered the publishes %v, want 1..%d", ns.name, seqs, last)
		}
		for _, s := range subs[ns.name] {
			gens := s.waitFor(t, waitTimeout, fmt.Sprintf("event %d of the new module", last), func(gens []generation) bool {
				items := gens[0].items
				it := items[len(items)-1]
				return gens[0].err != nil || len(items) > before+2 && it.ev != nil && it.ev.Seq >= last
			})
			missed := checkReload(t, s.who, gens[0], before, last)
			if resume && missed != pending {
				t.Errorf("%s: MODULE_RELOADED gap of %d events, want %d (published before ResumeModule)", s.who, missed, pending)
			}
			t.Logf("%s: gaps %v; new module published %d, %d of them before the daemon connected again",
				s.who, gapsOf(gens[0]), last, missed)
		}
	}
	d.Stop(t, waitTimeout)
}

// waitItems waits until every subscriber has n items.
func waitItems(t *testing.T, subs map[string][]*subscriber, n int) {
	t.Helper()
	for _, ss := range subs {
		for _, s := range ss {
			s.waitFor(t, waitTimeout, fmt.Sprintf("%d items", n), func(gens []generation) bool {
				return len(gens) == 1 && (len(gens[0].items) >= n || gens[0].err != nil)
			})
		}
	}
}

// checkReload checks a subscription through a release and reload: events
// 1..before at epoch 1; the gap RELEASED before+1..(open); a gap
// MODULE_RELOADED 1..k if the new module published k events before the
// daemon connected again; events k+1..last at epoch 2, nothing else. It
// returns k.
func checkReload(t *testing.T, who string, g generation, before, last uint64) uint64 {
	t.Helper()
	if g.err != nil {
		t.Errorf("%s: stream ended: %v", who, g.err)
	}
	var got []string
	for _, it := range g.items {
		s := it.String()
		if it.ev != nil {
			s += fmt.Sprintf(" epoch %d", it.ev.Epoch)
		}
		got = append(got, s)
	}
	var want []string
	for q := uint64(1); q <= before; q++ {
		want = append(want, fmt.Sprintf("event %d epoch 1", q))
	}
	want = append(want, fmt.Sprintf("gap %d-0 RELEASED", before+1))
	var missed uint64
	if len(g.items) > int(before)+1 {
		if gap := g.items[before+1].gap; gap != nil {
			missed = gap.ToSeq
		}
	}
	if missed > 0 {
		want = append(want, fmt.Sprintf("gap 1-%d MODULE_RELOADED", missed))
	}
	for q := missed + 1; q <= last; q++ {
		want = append(want, fmt.Sprintf("event %d epoch 2", q))
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: received\n %v\nwant\n %v", who, got, want)
	}
	return missed
}

func gapsOf(g generation) []string {
	var out []string
	for _, it := range g.items {
		if it.gap != nil {
			out = append(out, it.String())
		}
	}
	return out
}
