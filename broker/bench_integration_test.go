package broker

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// These benchmarks compare the broker's one multiplexed connection per
// namespace with a pool of synchronous connections, under the same
// concurrency (-test.cpu sets it). They need the module: run them in the VM,
//
//	make vmtest VM_PKGS=./broker VM_RUN='^$$' VM_TESTARGS='-test.bench=Integration -test.cpu=1,4,16'

func BenchmarkIntegrationEchoMultiplexed(b *testing.B) {
	testenv.RequireModule(b)
	br := New(nil)
	defer br.Close()
	name, _ := benchNamespace(b)
	if _, err := br.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 64)
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Echo(context.Background(), name, payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkIntegrationEchoPool4(b *testing.B) {
	testenv.RequireModule(b)
	_, ns := benchNamespace(b)
	pool := make([]*family.Conn, 4)
	for i := range pool {
		c, err := family.Dial(&family.Config{NetNS: ns.Fd()})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		pool[i] = c
	}
	var next atomic.Uint32
	payload := make([]byte, 64)
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Each goroutine takes one connection of the pool; the synchronous
		// helpers serialise the goroutines that share it.
		c := pool[next.Add(1)%uint32(len(pool))]
		for pb.Next() {
			if _, err := c.Echo(payload); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func benchNamespace(b *testing.B) (string, *nsmgr.Namespace) {
	b.Helper()
	name := testenv.NetnsName()
	ns, err := nsmgr.NewNamed(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ns.Close(); nsmgr.DeleteNamed(name) })
	return name, ns
}
