package daemon

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/server"
)

// What the daemon holds per unit of each thing it is bounded by. The
// numbers are upper bounds of what grpc-go and the broker keep, rounded
// up; the abuse suite (test/netns/abuse) fills every bound at once and
// checks the daemon's RSS against the total.
const (
	// baseMemory: the runtime, the binary's data, gRPC, metrics, with
	// nothing attached and nobody connected.
	baseMemory = 40 << 20
	// sizedNamespaces is the number of attached namespaces the budget is
	// sized for, and namespaceMemory what each costs (measured at most
	// 24 KiB, docs/performance.md).
	sizedNamespaces = 1024
	namespaceMemory = 32 << 10
	// connectionMemory: a connection's read and write buffers, its
	// HPACK tables, framer and goroutines (reader, writer, keepalive).
	connectionMemory = 2*server.ConnBufferSize + 64<<10
	// streamOverhead: a stream's goroutine, its state and the copies of
	// its headers (the header list, decoded, then as metadata).
	streamOverhead = 16<<10 + 2*server.MaxHeaderListSize
	// watchEventMemory is what one queued namespace event costs a
	// watcher that falls behind; only the admin's watchers see more
	// than their own namespace.
	watchEventMemory = 256
	watchQueueLen    = 4096
)

// streamMemory is what one open rpc can make the daemon hold at most: its
// overhead, the request data its flow-control window admits, a request
// message being assembled, and the responses queued for a peer that does
// not read (grpc-go's write quota, plus the message being written).
func (c *Config) streamMemory() int64 {
	return streamOverhead + server.StreamWindow + int64(c.MaxMsgSize) +
		server.StreamWriteQuota + family.PayloadMax + 1<<10
}

// retainedMemory is what the retention rings of every namespace and group
// hold at most together: retain_total_bytes, which counts each event's
// overhead with its payload; per-ring bounds only share it out.
func (c *Config) retainedMemory() int64 {
	if c.RetainEvents == 0 || c.RetainBytes == 0 {
		return 0
	}
	return c.RetainTotalBytes
}

// memoryItem is one line of the memory budget.
type memoryItem struct {
	What  string
	Count int64
	Each  int64
}

// Bytes is the line's total.
func (m memoryItem) Bytes() int64 { return m.Count * m.Each }

// memoryBudget is what the daemon can be made to hold with every bound of
// c filled at once, line by line; docs/operations.md shows it for the
// defaults, and the deployment's memory limit must exceed its total.
func (c *Config) memoryBudget() []memoryItem {
	return []memoryItem{
		{"base (runtime, gRPC, metrics)", 1, baseMemory},
		{"attached namespaces (sized for)", sizedNamespaces, namespaceMemory},
		{"connections (max_connections)", int64(c.MaxConnections), connectionMemory},
		{"rpcs being read or answered (max_requests)", int64(c.MaxRequests), c.streamMemory()},
		{"open streaming rpcs (max_streams)", int64(c.MaxStreams), c.streamMemory()},
		{"queued events (max_queued_bytes)", 1, c.MaxQueuedBytes},
		{"retained events (retain_total_bytes)", 1, c.retainedMemory()},
		{"admin watchers' backlog (admin_streams)", int64(c.AdminStreams), watchQueueLen * watchEventMemory},
	}
}

// MemoryBound is the total of the memory budget of c (nil: Defaults), in
// bytes: what the daemon can hold with every bound filled at once.
func MemoryBound(c *Config) int64 {
	if c == nil {
		c = Defaults()
	}
	var total int64
	for _, m := range c.memoryBudget() {
		total += m.Bytes()
	}
	return total
}

// printMemoryBudget writes the memory budget of c as a table.
func printMemoryBudget(w io.Writer, c *Config) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "what\tcount\teach (KiB)\ttotal (MiB)")
	for _, m := range c.memoryBudget() {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\n", m.What, m.Count, m.Each>>10, float64(m.Bytes())/(1<<20))
	}
	fmt.Fprintf(tw, "total\t\t\t%.1f\n", float64(MemoryBound(c))/(1<<20))
	return tw.Flush()
}
