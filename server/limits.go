package server

import (
	"fmt"
	"sync"
	"time"
)

// rateLimits is a token bucket per tenant; the admin is not limited.
type rateLimits struct {
	key   string  // the rate's configuration key
	what  string  // "publish"
	rate  float64 // tokens per second; negative: unlimited
	burst float64
	now   func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[tenantKey]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

// pruneAt is the number of buckets past which full ones are dropped: a
// full bucket is the same as none.
const pruneAt = 1024

func newRateLimits(key, what string, rate float64, burst int) *rateLimits {
	return &rateLimits{key: key, what: what, rate: rate, burst: float64(burst), now: time.Now, buckets: make(map[tenantKey]*bucket)}
}

// allow takes a token from the tenant's bucket, or says why it cannot.
func (r *rateLimits) allow(id Identity) *limitError {
	if r.rate < 0 || id.Role != RoleTenant {
		return nil
	}
	k := id.key()
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	b, ok := r.buckets[k]
	if !ok {
		if len(r.buckets) >= pruneAt {
			r.lockedPrune(now)
		}
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[k] = b
	}
	r.refill(b, now)
	if b.tokens < 1 {
		return &limitError{r.key, fmt.Sprintf("%s rate limit exceeded: %s may make %g per second, bursts of %g (%s)", r.what, tenantLabel(id), r.rate, r.burst, r.key)}
	}
	b.tokens--
	return nil
}

// refill adds the tokens earned since b.at. An at in the future (see
// exhaust) earns nothing until then.
func (r *rateLimits) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(r.burst, b.tokens+d.Seconds()*r.rate)
		b.at = now
	}
}

// exhaust empties the bucket of the tenant of k and lets it earn nothing
// before until: a tenant shut out starts again without a burst.
func (r *rateLimits) exhaust(k tenantKey, until time.Time) {
	if r.rate < 0 || k == (tenantKey{}) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buckets[k] = &bucket{tokens: 0, at: until}
}

func (r *rateLimits) lockedPrune(now time.Time) {
	for t, b := range r.buckets {
		if r.refill(b, now); b.tokens >= r.burst {
			delete(r.buckets, t)
		}
	}
}
