package server

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRateLimitsRefillPerTenant(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRateLimits(2, 3) // 2/s, burst 3
	r.now = func() time.Time { return now }
	acme := Identity{Role: RoleTenant, Tenant: "acme"}
	other := Identity{Role: RoleTenant, Tenant: "other"}
	admin := Identity{Role: RoleAdmin}

	take := func(id Identity, want codes.Code) {
		t.Helper()
		if got := status.Code(r.allow(id)); got != want {
			t.Fatalf("allow(%s) at %v: got %v, want %v", id.Tenant, now.Sub(time.Unix(1000, 0)), got, want)
		}
	}
	for range 3 {
		take(acme, codes.OK)
	}
	take(acme, codes.ResourceExhausted)
	take(other, codes.OK) // buckets are per tenant
	for range 10 {
		take(admin, codes.OK) // the admin is not limited
	}
	now = now.Add(499 * time.Millisecond) // 0.998 tokens
	take(acme, codes.ResourceExhausted)
	now = now.Add(2 * time.Millisecond) // 1.002 tokens
	take(acme, codes.OK)
	take(acme, codes.ResourceExhausted)
	now = now.Add(time.Hour) // refills to the burst, no more
	for range 3 {
		take(acme, codes.OK)
	}
	take(acme, codes.ResourceExhausted)
}

func TestRateLimitsUnlimitedAndPruned(t *testing.T) {
	if err := newRateLimits(0, 1).allow(Identity{Role: RoleTenant, Tenant: "x"}); err != nil {
		t.Fatalf("rate 0: got %v, want unlimited", err)
	}
	now := time.Unix(0, 0)
	r := newRateLimits(1, 1)
	r.now = func() time.Time { return now }
	for i := range pruneAt {
		r.allow(Identity{Role: RoleTenant, Tenant: string(rune('a'+i%26)) + time.Duration(i).String()})
	}
	now = now.Add(time.Second) // every bucket full again
	r.allow(Identity{Role: RoleTenant, Tenant: "new"})
	if n := len(r.buckets); n != 1 {
		t.Fatalf("buckets after pruning: got %d, want 1", n)
	}
}

func TestSubscriberCount(t *testing.T) {
	c := newSubscriberCount(3, 2)
	acme := Identity{Role: RoleTenant, Tenant: "acme"}
	admin := Identity{Role: RoleAdmin}
	r1, err1 := c.acquire(acme)
	_, err2 := c.acquire(acme)
	if err1 != nil || err2 != nil {
		t.Fatalf("two subscriptions of acme: got %v, %v, want both allowed", err1, err2)
	}
	if _, err := c.acquire(acme); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third of acme: got %v, want ResourceExhausted", err)
	}
	if _, err := c.acquire(admin); err != nil {
		t.Fatalf("admin: got %v, want allowed", err)
	}
	if _, err := c.acquire(admin); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("fourth in all: got %v, want ResourceExhausted", err)
	}
	r1()
	r1() // a second release is a no-op
	if _, err := c.acquire(acme); err != nil {
		t.Fatalf("acme after a release: got %v, want allowed", err)
	}
	if c.total != 3 || c.byTenant["acme"] != 2 {
		t.Fatalf("counts: got total %d acme %d, want 3 and 2", c.total, c.byTenant["acme"])
	}
}
