package kmodtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/vishvananda/netns"
)

// teardownTimeout bounds the wait for the kernel's asynchronous namespace
// cleanup (net/core/net_namespace.c cleanup_net, a workqueue).
const teardownTimeout = 30 * time.Second

// pollInstances asks STATS until done accepts the instance count or the
// deadline passes, and returns the last count.
func pollInstances(t *testing.T, c *conn, done func(uint32) bool) uint32 {
	t.Helper()
	deadline := time.Now().Add(teardownTimeout)
	for {
		n := c.stats().instances
		if done(n) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIntegrationNamespaceLifecycle creates 200 namespaces, echoes in each,
// destroys them all, and checks the module's instance count comes back:
// the module creates one kernel socket per namespace and releases it when
// the namespace goes, and neither it nor its sockets keep one alive.
func TestIntegrationNamespaceLifecycle(t *testing.T) {
	unit := testenv.RequireModule(t)
	const n = 200
	probe := dial(t, unit, netns.None())
	baseline := probe.stats().instances

	handles := make([]netns.NsHandle, 0, n)
	conns := make([]*conn, 0, n)
	release := func() {
		for _, c := range conns {
			c.close()
		}
		for i := range handles {
			handles[i].Close()
		}
		conns, handles = nil, nil
	}
	defer release()

	seen := map[uint32]int{}
	for i := 0; i < n; i++ {
		h, err := createNetns()
		if err != nil {
			t.Fatalf("namespace %d: %v", i, err)
		}
		handles = append(handles, h)
		c := dial(t, unit, h)
		conns = append(conns, c)
		payload := []byte(fmt.Sprintf("namespace %d", i))
		r := c.echo(payload)
		got, want := r.u32(t, attrNetnsInum), inode(t, h)
		if got != want || string(r.bytes(t, attrPayload)) != string(payload) {
			t.Fatalf("namespace %d: echo from inode %d payload %q, want inode %d payload %q",
				i, got, r.bytes(t, attrPayload), want, payload)
		}
		if j, dup := seen[got]; dup {
			t.Fatalf("namespaces %d and %d both answered with inode %d", j, i, got)
		}
		seen[got] = i
	}
	held := probe.stats().instances
	t.Logf("instances: %d before, %d with %d more namespaces alive", baseline, held, n)
	if held < n+1 {
		t.Errorf("instances with %d new namespaces alive = %d, want at least %d", n, held, n+1)
	}

	start := time.Now()
	release()
	// Namespaces earlier tests closed may still be in teardown when the
	// baseline was read, so the count may end below it, never above.
	final := pollInstances(t, probe, func(got uint32) bool { return got <= baseline })
	t.Logf("instances %d, %v after the last handle and socket were closed", final, time.Since(start).Round(time.Millisecond))
	if final > baseline {
		t.Errorf("instances after teardown = %d, want the baseline %d (waited %v)", final, baseline, teardownTimeout)
	}
	if held-final < n {
		t.Errorf("instances fell by %d (from %d to %d) after closing %d namespaces, want at least %d", held-final, held, final, n, n)
	}
}
