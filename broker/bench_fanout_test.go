package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// BenchmarkFanout measures the broker's delivery of one namespace's events
// to 1, 8 and 64 subscribers, on the fake kernel (no module needed): each
// iteration is one event published, and the benchmark ends when every
// subscriber has received or been told it lost every event.
func BenchmarkFanout(b *testing.B) {
	for _, size := range []int{64, 4096} {
		for _, n := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%dB/%dsubs", size, n), func(b *testing.B) { benchFanout(b, n, size) })
		}
	}
}

func benchFanout(b *testing.B, n, size int) {
	k := brokertest.NewKernel()
	br := New(fakeConfig(k))
	defer br.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	self, err := nsmgr.Current()
	if err != nil {
		b.Skipf("no namespace to attach: %v", err)
	}
	inum := self.Inode()
	self.Close()
	const name = "bench"
	if _, err := br.Attach(ctx, name, nsmgr.Ref{Path: "/proc/self/ns/net"}); err != nil {
		b.Skipf("attach: %v", err)
	}
	payload := make([]byte, size)
	var wg sync.WaitGroup
	lost := make([]uint64, n)
	for i := range n {
		ch, err := subscribe(ctx, br, name, []uint32{1})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var seen uint64
			for seen < uint64(b.N) {
				select {
				case ev := <-ch:
					switch ev.Kind {
					case KindMessage:
						seen = ev.Message.Seq
					case KindGap:
						if ev.Gap.To == 0 {
							b.Errorf("subscriber %d: stream cut after seq %d: %v", i, seen, ev.Gap)
							return
						}
						lost[i] += ev.Gap.Count()
						seen = ev.Gap.To
					default:
						b.Errorf("subscriber %d: %v after seq %d", i, ev.Kind, seen)
						return
					}
				case <-time.After(10 * time.Second):
					b.Errorf("subscriber %d: stuck at seq %d of %d", i, seen, b.N)
					return
				}
			}
		}()
	}
	b.SetBytes(int64(size))
	b.ResetTimer()
	for range b.N {
		k.Publish(inum, 1, payload)
	}
	wg.Wait()
	b.StopTimer()
	var total uint64
	for _, l := range lost {
		total += l
	}
	b.ReportMetric(float64(uint64(b.N)*uint64(n)-total)/b.Elapsed().Seconds(), "delivered/s")
	b.ReportMetric(float64(total)/float64(b.N*n), "lost/event")
}
