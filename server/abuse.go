package server

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/nsmgr"
)

// A client that goes on opening rpcs after they are refused makes the
// server decode and answer every one: refusing is cheaper than serving,
// but not free, and a tenant that writes rpcs as fast as it can keeps the
// server busy refusing them, at the other tenants' expense. So refusals
// are themselves bounded. Each tenant connection may be refused
// RefusalBurst rpcs at once and RefusalRate per second after that; the
// next refusal closes the connection and shuts its tenant out: for
// ShutOutFirst, doubled at each repeat up to ShutOutMax, until the tenant
// has kept within its refusals for ShutOutForget. While shut out, the
// tenant's namespace listeners accept nothing (the kernel turns its
// connections away once the backlog is full, at no cost to the daemon),
// and any of its connections that arrives anyway is closed at once. Its
// request and publish rates start again empty when the shut-out ends, not
// with a full burst. The admin is never shut out.
const (
	RefusalBurst  = 64
	RefusalRate   = 16
	ShutOutFirst  = time.Second
	ShutOutMax    = 8 * time.Second
	ShutOutForget = time.Minute
)

// limitShutOut names the shut-out in refusals and metrics.
const limitShutOut = "refused_rpcs_per_connection"

// connGuard counts the refusals of one tenant connection.
type connGuard struct {
	close  func()      // closes the connection
	closed atomic.Bool // close was called

	mu     sync.Mutex // guards refuse
	refuse bucket     // refusals left
}

// shut reports whether g's connection was closed for its refusals (false
// for a nil g, the admin's).
func (g *connGuard) shut() bool { return g != nil && g.closed.Load() }

// errShutOut refuses the rpcs that gRPC had read from a connection
// before it was closed for its refusals.
var errShutOut = status.Error(codes.ResourceExhausted, "the connection was closed for going on after refused rpcs ("+limitShutOut+")")

// newConnGuard returns the guard of a connection of id, or nil for the
// admin, who is never shut out.
func newConnGuard(id Identity, c net.Conn) *connGuard {
	if id.Role != RoleTenant {
		return nil
	}
	return &connGuard{close: func() { c.Close() }}
}

// take spends one refusal and reports whether the connection was within
// its allowance.
func (g *connGuard) take(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse.at.IsZero() {
		g.refuse = bucket{tokens: RefusalBurst, at: now}
	}
	g.refuse.tokens = min(RefusalBurst, g.refuse.tokens+now.Sub(g.refuse.at).Seconds()*RefusalRate)
	g.refuse.at = now
	if g.refuse.tokens < 1 {
		return false
	}
	g.refuse.tokens--
	return true
}

// shutOut is a tenant's record of abuse.
type shutOut struct {
	until   time.Time // shut out before it
	last    time.Time // the last shut-out began
	repeats int       // shut-outs since the tenant last kept within its refusals for ShutOutForget
}

// shutOuts holds the tenants shut out, and those shut out recently
// enough that the next shut-out lasts longer.
type shutOuts struct {
	now func() time.Time

	mu      sync.Mutex // guards tenants
	tenants map[tenantKey]*shutOut
}

// begin shuts the tenant of k out and returns for how long.
func (s *shutOuts) begin(k tenantKey) time.Duration {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tenants == nil {
		s.tenants = make(map[tenantKey]*shutOut)
	}
	for key, t := range s.tenants { // few: only tenants that abused lately
		if now.Sub(t.last) > ShutOutForget {
			delete(s.tenants, key)
		}
	}
	t := s.tenants[k]
	if t == nil {
		t = &shutOut{}
		s.tenants[k] = t
	}
	if now.Before(t.until) {
		return t.until.Sub(now) // already shut out: another of its connections
	}
	d := min(ShutOutFirst<<min(t.repeats, 8), ShutOutMax)
	t.repeats++
	t.last, t.until = now, now.Add(d)
	return d
}

// left returns how long the tenant of k stays shut out (0: it is not).
func (s *shutOuts) left(k tenantKey) time.Duration {
	if k == (tenantKey{}) {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tenants[k]; t != nil {
		if d := t.until.Sub(s.now()); d > 0 {
			return d
		}
	}
	return 0
}

// charge counts a refusal against the connection of ai and, if it was
// one too many, closes the connection and shuts its tenant out.
func (b *Budget) charge(ai AuthInfo) {
	if ai.guard == nil || ai.guard.take(b.shutOuts.now()) {
		return
	}
	if ai.guard.closed.Swap(true) {
		return
	}
	ai.guard.close()
	k := ai.Identity.key()
	d := b.shutOuts.begin(k)
	until := b.shutOuts.now().Add(d)
	b.requestRate.exhaust(k, until)
	b.publishRate.exhaust(k, until)
	if b.refused != nil {
		b.refused(Refusal{Identity: ai.Identity, Limit: limitShutOut, Local: ai.Identity.netns != (nsmgr.ID{}), ShutOut: d})
	}
}

// shutOutError is the handshake's refusal of a connection of a tenant
// that is shut out.
func shutOutError(id Identity, d time.Duration) error {
	return fmt.Errorf("connection of %s refused: %s is shut out for %v, for going on after %d refused rpcs on one connection (%s)",
		id.Peer, tenantLabel(id), d.Round(time.Millisecond), RefusalBurst, limitShutOut)
}

// Gate makes l, a listener from NamespaceListener or TenantListener not
// yet served, accept nothing while its tenant is shut out, and returns
// it. Other listeners are returned as they are.
func (b *Budget) Gate(l net.Listener) net.Listener {
	if tl, ok := l.(*tenantListener); ok {
		tl.gate, tl.done = b.shutOuts.left, make(chan struct{})
	}
	return l
}
