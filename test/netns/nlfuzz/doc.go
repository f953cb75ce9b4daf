// Package nlfuzz fuzzes the nsbroker kernel module through its netlink
// interface, inside the test VM on the debug kernel (make fuzzmodule).
//
// TestIntegrationFuzzModule sends structure-aware requests (valid netlink
// and family headers around mutated attributes, mutated headers, batches
// of up to 32 messages per datagram) and raw random bytes from several
// goroutines, until the module has been handed -nlfuzz.messages requests
// (messages netlink passes to it, counted as netlink_rcv_skb walks them), in
// several network namespaces at once, while other goroutines create and
// destroy namespaces and join and leave multicast groups. One sender runs
// without privileges. Every datagram's generator is a pure function of the
// seed and the sender, so a seed replays the same inputs (their interleaving
// across senders is the scheduler's).
//
// After each datagram the sender reads the kernel log: a KASAN, UBSAN or
// lockdep report, a warning or an oops names the input that caused it (the
// report's task is the sender's thread), which the test prints in base64 for
// testdata/crashers/. The inputs kept there, one raw datagram per file, are
// replayed before fuzzing on every run. Answers are checked too: every errno
// must be one the protocol documents, and every reply and event must name
// the namespace of the socket that received it. The test also checks, every
// few thousand datagrams and at the end, that the module still answers ECHO
// in every namespace, and at the end that the module's per-namespace
// instances return to their number before the run.
package nlfuzz
