package broker

import (
	"sync/atomic"
	"unsafe"
)

// ByteBudget bounds the bytes queued for the subscriptions that share it,
// for example every subscription of one tenant. A budget may draw on a
// parent as well, so that the tenants together have a bound of their own
// below the daemon's. An event that does not fit is a queue-full loss of
// the subscriber that could not take it, reported as a gap like any other.
// A ByteBudget is safe for concurrent use.
type ByteBudget struct {
	limit  int64
	parent *ByteBudget
	used   atomic.Int64
}

// NewByteBudget returns a budget of limit bytes that also draws on parent
// (nil: no parent).
func NewByteBudget(limit int64, parent *ByteBudget) *ByteBudget {
	return &ByteBudget{limit: limit, parent: parent}
}

// Used is the number of bytes the budget's subscriptions hold now.
func (b *ByteBudget) Used() int64 { return b.used.Load() }

// Limit is the budget's bound in bytes.
func (b *ByteBudget) Limit() int64 { return b.limit }

// take reserves n bytes on b and its ancestors, all or nothing.
func (b *ByteBudget) take(n int64) bool {
	if b == nil {
		return true
	}
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		return false
	}
	if !b.parent.take(n) {
		b.used.Add(-n)
		return false
	}
	return true
}

// give returns n bytes that take reserved.
func (b *ByteBudget) give(n int64) {
	for ; b != nil; b = b.parent {
		b.used.Add(-n)
	}
}

// eventOverhead is what a queued event costs besides its payload: its
// slot in the queue and the rest of the datagram it was decoded from.
const eventOverhead = int64(unsafe.Sizeof(Event{})) + 128

// queuedCost is what a queued event of n payload bytes is charged.
func queuedCost(n int) int64 { return int64(n) + eventOverhead }
