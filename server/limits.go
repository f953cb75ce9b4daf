package server

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// subscriberCount bounds the open subscriptions, in all and per tenant.
type subscriberCount struct {
	max, perTenant int

	mu       sync.Mutex // guards the fields below
	total    int
	byTenant map[string]int
}

func newSubscriberCount(max, perTenant int) *subscriberCount {
	return &subscriberCount{max: max, perTenant: perTenant, byTenant: make(map[string]int)}
}

// acquire takes a subscription slot for id; release gives it back.
func (c *subscriberCount) acquire(id Identity) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.total >= c.max {
		return nil, status.Errorf(codes.ResourceExhausted, "too many subscribers: the server's limit of %d is reached", c.max)
	}
	tenant := id.Role == RoleTenant
	if tenant && c.byTenant[id.Tenant] >= c.perTenant {
		return nil, status.Errorf(codes.ResourceExhausted, "too many subscribers: tenant %q has %d, its limit", id.Tenant, c.perTenant)
	}
	c.total++
	if tenant {
		c.byTenant[id.Tenant]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.total--
			if tenant {
				if c.byTenant[id.Tenant]--; c.byTenant[id.Tenant] == 0 {
					delete(c.byTenant, id.Tenant)
				}
			}
		})
	}, nil
}

// rateLimits is a token bucket per tenant.
type rateLimits struct {
	rate  float64 // tokens per second; 0: unlimited
	burst float64
	now   func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

// pruneAt is the number of buckets past which full ones are dropped: a
// full bucket is the same as none.
const pruneAt = 1024

func newRateLimits(rate float64, burst int) *rateLimits {
	return &rateLimits{rate: rate, burst: float64(burst), now: time.Now, buckets: make(map[string]*bucket)}
}

// allow takes a token from the tenant's bucket, or says why it cannot.
// The admin is not limited.
func (r *rateLimits) allow(id Identity) error {
	if r.rate == 0 || id.Role == RoleAdmin {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	b, ok := r.buckets[id.Tenant]
	if !ok {
		if len(r.buckets) >= pruneAt {
			r.lockedPrune(now)
		}
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[id.Tenant] = b
	}
	r.refill(b, now)
	if b.tokens < 1 {
		return status.Errorf(codes.ResourceExhausted, "publish rate limit exceeded: tenant %q may publish %g times per second (burst %g)", id.Tenant, r.rate, r.burst)
	}
	b.tokens--
	return nil
}

func (r *rateLimits) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(r.burst, b.tokens+d.Seconds()*r.rate)
	}
	b.at = now
}

func (r *rateLimits) lockedPrune(now time.Time) {
	for t, b := range r.buckets {
		if r.refill(b, now); b.tokens >= r.burst {
			delete(r.buckets, t)
		}
	}
}
