package abuse

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationBurstNoSilentLoss: raw publishers inside the namespace
// publish bursts at more than ten times what a slow subscriber reads; every
// sequence number the subscriber does not get as an event is inside a gap
// it gets, in order, and no number arrives twice.
func TestIntegrationBurstNoSilentLoss(t *testing.T) {
	testenv.SkipOnDebugKernel(t)
	const (
		publishers = 2
		bursts     = 4
		perBurst   = 500 // per publisher
		// A payload large enough that gRPC's buffers hold few events, so
		// the backlog is in the daemon's queue.
		payload   = 1024
		readDelay = 20 * time.Millisecond // the subscriber's work per item
	)
	// A short queue and a small socket buffer, so that both the queue
	// and the kernel drop events.
	d := startDaemon(t, "--queue-len", "64", "--read-buffer", "262144")
	name := d.attach(t)
	admin, _ := d.admin(t)
	tc, _ := tenant(t, name, grpc.WithInitialWindowSize(smallWindow), grpc.WithInitialConnWindowSize(smallWindow))
	ctx, cancel := context.WithTimeout(context.Background(), 2*rpcTimeout)
	defer cancel()
	stream := subscribe(t, ctx, tc, name, 1)
	waitSubscribers(t, admin, name, 1)
	pubs := make([]*family.Conn, publishers)
	for i := range pubs {
		pubs[i] = rawPublisher(t, name)
	}

	// The subscriber: reads one item, works readDelay, reads the next.
	cov := newCoverage(map[uint32]uint64{1: 1})
	var mu sync.Mutex // guards cov, items, firstAt, lastAt, recvErr
	var items int
	var firstAt, lastAt time.Time
	var recvErr error
	go func() {
		for {
			resp, err := stream.Recv()
			now := time.Now()
			mu.Lock()
			if err != nil {
				recvErr = err
				mu.Unlock()
				return
			}
			if items == 0 {
				firstAt = now
			}
			items++
			lastAt = now
			cov.add(resp)
			mu.Unlock()
			time.Sleep(readDelay)
		}
	}()

	var publishTime time.Duration
	for range bursts {
		start := time.Now()
		var wg sync.WaitGroup
		for _, p := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pl := make([]byte, payload)
				for range perBurst {
					if _, err := p.Publish(1, pl); err != nil {
						t.Errorf("raw publish: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		publishTime += time.Since(start)
		time.Sleep(50 * time.Millisecond) // a pause between bursts, not a synchronisation
	}
	total := uint64(publishers * bursts * perBurst)
	last := map[uint32]uint64{1: total}
	if st := stats(t, admin, name); st.GetKernel().GetPublish() != total {
		t.Fatalf("kernel publish counter: got %d, want %d", st.GetKernel().GetPublish(), total)
	}

	// Wait until every number is accounted for; a stream that ends, or
	// stays silent for idle once everything was published, will not
	// account for more.
	const idle = 5 * time.Second
	waitFor(2*rpcTimeout-10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return cov.covered(last) || recvErr != nil || (items > 0 && time.Since(lastAt) > idle)
	})
	mu.Lock()
	defer mu.Unlock()
	if !cov.covered(last) {
		for _, e := range cov.errs {
			t.Errorf("subscriber: %s", e)
		}
		t.Fatalf("subscriber: numbers up to %d not accounted for: next %d, %d events, lost %v; stream: %v", total, cov.next[1], cov.events, cov.lost, recvErr)
	}
	pubRate := float64(total) / publishTime.Seconds()
	subRate := float64(items-1) / lastAt.Sub(firstAt).Seconds()
	st := stats(t, admin, name).GetDaemon()
	t.Logf("published %d events at %.0f ev/s; the subscriber read %d items at %.0f items/s (ratio %.1f): %d events, %d gaps reporting %d lost %v; daemon overruns %d (%d events), queue_lost %d",
		total, pubRate, items, subRate, pubRate/subRate, cov.events, cov.gaps, cov.lostTotal(), cov.lost, st.GetOverruns(), st.GetOverrunLost(), st.GetQueueLost())
	if pubRate < 10*subRate {
		t.Errorf("publish rate %.0f ev/s is less than 10 times the subscriber's %.0f items/s: the test did not overload it", pubRate, subRate)
	}
	for _, e := range cov.errs {
		t.Errorf("subscriber: %s", e)
	}
	if cov.events+cov.lostTotal() != total {
		t.Errorf("subscriber: %d events + %d reported lost = %d, want %d published", cov.events, cov.lostTotal(), cov.events+cov.lostTotal(), total)
	}
	if cov.lostTotal() == 0 {
		t.Errorf("subscriber: lost nothing of %d; the bursts did not exceed what it takes", total)
	}
	for r := range cov.lost {
		if r != nsbrokerv1.LossReason_LOSS_REASON_QUEUE_FULL && r != nsbrokerv1.LossReason_LOSS_REASON_KERNEL_OVERRUN {
			t.Errorf("subscriber: loss reason %v, want queue_full or kernel_overrun", r)
		}
	}
}
