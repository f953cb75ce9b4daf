package server

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

func TestShutOutDoublesAndIsForgotten(t *testing.T) {
	now := time.Unix(1000, 0)
	s := shutOuts{now: func() time.Time { return now }}
	k := tenantKey{netns: nsmgr.ID{Dev: 4, Ino: 4026532000}}
	other := tenantKey{tls: "acme"}
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		if got := s.begin(k); got != want {
			t.Fatalf("begin: got %v, want %v", got, want)
		}
		if got := s.left(k); got != want {
			t.Fatalf("left right after begin: got %v, want %v", got, want)
		}
		if got := s.left(other); got != 0 {
			t.Fatalf("left of another tenant: got %v, want 0", got)
		}
		// A second connection of the tenant while it is shut out does
		// not lengthen it.
		now = now.Add(want / 2)
		if got := s.begin(k); got != want/2 {
			t.Fatalf("begin while shut out: got %v, want the %v left", got, want/2)
		}
		now = now.Add(want / 2)
		if got := s.left(k); got != 0 {
			t.Fatalf("left once it ended: got %v, want 0", got)
		}
	}
	now = now.Add(ShutOutForget + time.Second)
	if got := s.begin(k); got != ShutOutFirst {
		t.Fatalf("begin after %v of good behaviour: got %v, want %v", ShutOutForget, got, ShutOutFirst)
	}
	if got := s.left(tenantKey{}); got != 0 {
		t.Fatalf("the admin's key: left %v, want 0", got)
	}
}

func TestConnGuardRefill(t *testing.T) {
	now := time.Unix(1000, 0)
	var g connGuard
	for i := range RefusalBurst {
		if !g.take(now) {
			t.Fatalf("refusal %d of the burst: not allowed", i+1)
		}
	}
	if g.take(now) {
		t.Fatalf("refusal %d at once: allowed, want the connection over its refusals", RefusalBurst+1)
	}
	now = now.Add(time.Second)
	for i := range RefusalRate {
		if !g.take(now) {
			t.Fatalf("refusal %d a second later: not allowed", i+1)
		}
	}
	if g.take(now) {
		t.Fatalf("refusal %d a second later: allowed", RefusalRate+1)
	}
}

// TestIntegrationShutOut: a tenant that goes on after RefusalBurst
// refused rpcs loses its connection and cannot connect while shut out;
// another tenant and the admin are served meanwhile, and the tenant
// connects again once the shut-out ends.
func TestIntegrationShutOut(t *testing.T) {
	var mu sync.Mutex
	var refusals []Refusal
	report := func(r Refusal) {
		mu.Lock()
		defer mu.Unlock()
		refusals = append(refusals, r)
	}
	e := newEnv(t, &Config{Budget: NewBudget(&Limits{RequestRate: 0.001, RequestBurst: 1}, report)})
	ctx := testContext(t)
	tenantA, tenantB, admin := e.localClient("A"), e.localClient("B"), e.adminClient()
	if _, err := tenantA.Echo(ctx, &nsbrokerv1.EchoRequest{}); err != nil {
		t.Fatalf("tenant A's first rpc: %v", err)
	}
	for range RefusalBurst {
		_, err := tenantA.Echo(ctx, &nsbrokerv1.EchoRequest{})
		wantStatus(t, "tenant A past its rate", err, codes.ResourceExhausted, "(request_rate)")
	}
	shutAt := time.Now()
	// The refusal past the allowance closes the connection: its status
	// may or may not reach the client first.
	_, err := tenantA.Echo(ctx, &nsbrokerv1.EchoRequest{})
	if c := status.Code(err); c != codes.ResourceExhausted && c != codes.Unavailable {
		t.Fatalf("tenant A's refusal past its allowance: got %v, want ResourceExhausted or Unavailable", err)
	}
	// It cannot connect again while shut out.
	_, err = tenantA.Echo(ctx, &nsbrokerv1.EchoRequest{})
	if time.Since(shutAt) < ShutOutFirst {
		wantStatus(t, "tenant A while shut out", err, codes.Unavailable, "")
	}
	if _, err := tenantB.Echo(ctx, &nsbrokerv1.EchoRequest{}); err != nil {
		t.Fatalf("tenant B while A is shut out: %v", err)
	}
	if _, err := admin.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: e.names["A"]}); err != nil {
		t.Fatalf("the admin while A is shut out: %v", err)
	}
	var shut []Refusal
	mu.Lock()
	for _, r := range refusals {
		if r.ShutOut > 0 {
			shut = append(shut, r)
		}
	}
	mu.Unlock()
	if len(shut) != 1 || shut[0].Limit != limitShutOut || shut[0].ShutOut != ShutOutFirst || !shut[0].Local {
		t.Fatalf("shut-outs reported: %+v, want one of %v, limit %s, local", shut, ShutOutFirst, limitShutOut)
	}
	// Once it ends, tenant A connects again (and is still over its rate).
	time.Sleep(time.Until(shutAt.Add(ShutOutFirst + 100*time.Millisecond)))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = tenantA.Echo(ctx, &nsbrokerv1.EchoRequest{})
		if status.Code(err) == codes.ResourceExhausted || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantStatus(t, "tenant A after the shut-out", err, codes.ResourceExhausted, "(request_rate)")
}

func TestRateExhaustedUntilShutOutEnds(t *testing.T) {
	now := time.Unix(1000, 0)
	r := newRateLimits(limitRequestRate, "request", 10, 10)
	r.now = func() time.Time { return now }
	id := Identity{Role: RoleTenant, Tenant: "acme"}
	if err := r.allow(id); err != nil {
		t.Fatalf("first request: %v", err)
	}
	r.exhaust(id.key(), now.Add(time.Second))
	for _, at := range []time.Duration{0, 500 * time.Millisecond, time.Second} {
		now = time.Unix(1000, 0).Add(at)
		if err := r.allow(id); err == nil {
			t.Fatalf("request %v into a 1 s shut-out: allowed, want refused", at)
		}
	}
	now = time.Unix(1000, 0).Add(time.Second + 100*time.Millisecond)
	if err := r.allow(id); err != nil {
		t.Fatalf("request 0.1 s after the shut-out at 10 per second: %v", err)
	}
	if err := r.allow(id); err == nil {
		t.Fatalf("second request 0.1 s after the shut-out: allowed, want no burst")
	}
}
