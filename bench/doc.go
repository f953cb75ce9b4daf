// Package bench measures what nsbroker costs over the bare kernel and gRPC
// paths, and how the daemon scales with attached namespaces. The
// measurements need the module and run in the VM (make bench, see
// docs/performance.md); this package holds the result types they fill in and
// render as a table, JSON and markdown.
package bench
