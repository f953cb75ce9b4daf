package server

import (
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/nsmgr"
)

// Tenants as the budgets see them: two namespace-local ones, a TLS one
// named like the first namespace, and the admin.
var (
	localRed  = Identity{Role: RoleTenant, Tenant: "red", Namespaces: []string{"red"}, netns: nsmgr.ID{Dev: 4, Ino: 100}}
	localBlue = Identity{Role: RoleTenant, Tenant: "blue", Namespaces: []string{"blue"}, netns: nsmgr.ID{Dev: 4, Ino: 200}}
	tlsRed    = Identity{Role: RoleTenant, Tenant: "red", Namespaces: []string{"red"}}
	admin     = Identity{Role: RoleAdmin}
)

func TestRateLimitsRefillPerTenant(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRateLimits("publish_rate", "publish", 2, 3) // 2/s, burst 3
	r.now = func() time.Time { return now }

	take := func(id Identity, want bool) {
		t.Helper()
		err := r.allow(id)
		if got := err == nil; got != want {
			t.Fatalf("allow(%s) at %v: got %v, want allowed=%v", tenantLabel(id), now.Sub(time.Unix(1000, 0)), err, want)
		}
		if err != nil && err.limit != "publish_rate" {
			t.Fatalf("refusal names limit %q, want publish_rate", err.limit)
		}
	}
	for range 3 {
		take(localRed, true)
	}
	take(localRed, false)
	take(localBlue, true) // buckets are per tenant
	take(tlsRed, true)    // a TLS tenant named like a namespace is another tenant
	for range 10 {
		take(admin, true) // the admin is not limited
	}
	now = now.Add(499 * time.Millisecond) // 0.998 tokens
	take(localRed, false)
	now = now.Add(2 * time.Millisecond) // 1.002 tokens
	take(localRed, true)
	take(localRed, false)
	now = now.Add(time.Hour) // refills to the burst, no more
	for range 3 {
		take(localRed, true)
	}
	take(localRed, false)
}

func TestRateLimitsUnlimitedAndPruned(t *testing.T) {
	if err := newRateLimits("k", "x", -1, 1).allow(localRed); err != nil {
		t.Fatalf("negative rate: got %v, want unlimited", err)
	}
	now := time.Unix(0, 0)
	r := newRateLimits("k", "x", 1, 1)
	r.now = func() time.Time { return now }
	for i := range pruneAt {
		r.allow(Identity{Role: RoleTenant, Tenant: "t", netns: nsmgr.ID{Dev: 1, Ino: uint64(i + 1)}})
	}
	now = now.Add(time.Second) // every bucket full again
	r.allow(localBlue)
	if n := len(r.buckets); n != 1 {
		t.Fatalf("buckets after pruning: got %d, want 1", n)
	}
}

func TestSlotsPerTenantAndAdminReserve(t *testing.T) {
	s := newSlots("streams", "max_streams", "max_streams_per_tenant", 5, 2, 2)
	acquire := func(id Identity) (func(), *limitError) { return s.acquire(tenantLabel(id), id.key()) }
	r1, err1 := acquire(localRed)
	_, err2 := acquire(localRed)
	if err1 != nil || err2 != nil {
		t.Fatalf("two of red: got %v, %v, want both allowed", err1, err2)
	}
	if _, err := acquire(localRed); err == nil || err.limit != "max_streams_per_tenant" {
		t.Fatalf("third of red: got %v, want refused by max_streams_per_tenant", err)
	}
	// The TLS tenant "red" is not the namespace "red".
	if _, err := acquire(tlsRed); err != nil {
		t.Fatalf("TLS tenant red: got %v, want allowed", err)
	}
	// Tenants hold 3 of 5: the last 2 are the admin's.
	if _, err := acquire(localBlue); err == nil || err.limit != "max_streams" {
		t.Fatalf("blue into the admin's reserve: got %v, want refused by max_streams", err)
	}
	for i := range 2 {
		if _, err := acquire(admin); err != nil {
			t.Fatalf("admin %d in its reserve: got %v", i+1, err)
		}
	}
	if _, err := acquire(admin); err == nil || err.limit != "max_streams" {
		t.Fatalf("admin past the total: got %v, want refused by max_streams", err)
	}
	r1()
	r1() // a second release is a no-op
	if s.used != 4 || s.tenantsUsed != 2 || s.byTenant[localRed.key()] != 1 {
		t.Fatalf("after one release: used %d, tenants %d, red %d; want 4, 2, 1", s.used, s.tenantsUsed, s.byTenant[localRed.key()])
	}
	if _, err := acquire(localBlue); err != nil {
		t.Fatalf("blue after a release: got %v, want allowed", err)
	}
}

func TestQueueBudgetPerTenant(t *testing.T) {
	b := NewBudget(&Limits{MaxQueuedBytes: 1000, MaxQueuedBytesPerTenant: 400, AdminQueuedBytes: 300}, nil)
	red1, done1 := b.queueBudget(localRed)
	red2, done2 := b.queueBudget(localRed)
	tls, doneTLS := b.queueBudget(tlsRed)
	if red1 != red2 {
		t.Fatal("two subscriptions of one tenant got different budgets, want one shared")
	}
	if red1 == tls {
		t.Fatal("the TLS tenant red shares the namespace red's budget")
	}
	if red1.Limit() != 400 {
		t.Fatalf("tenant budget: got %d, want 400", red1.Limit())
	}
	adminBudget, _ := b.queueBudget(admin)
	if adminBudget.Limit() != 1000 {
		t.Fatalf("admin budget: got %d, want the total 1000", adminBudget.Limit())
	}
	done1()
	done1()
	if len(b.queued) != 2 {
		t.Fatalf("budgets kept: got %d, want 2 (red still has a subscription)", len(b.queued))
	}
	done2()
	doneTLS()
	if len(b.queued) != 0 {
		t.Fatalf("budgets kept after every subscription ended: got %d, want 0", len(b.queued))
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := (&Limits{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, l := range []Limits{
		{MaxConnections: 10, AdminConnections: 10},
		{MaxStreams: 10, AdminStreams: 11},
		{MaxQueuedBytes: 10, AdminQueuedBytes: 10},
	} {
		if err := l.Validate(); err == nil {
			t.Errorf("%+v: got no error, want the reserve refused", l)
		}
	}
}
