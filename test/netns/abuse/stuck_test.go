package abuse

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// The daemon's per-subscriber bound in this test, and what is published.
const (
	stuckQueueLen   = 1024
	stuckQueueBytes = 1 << 20
	// eventOverhead over-estimates what one queued event costs besides its
	// payload: the broker's Event (about 200 bytes) in a queue slice that
	// may be twice as long as it holds.
	eventOverhead = 512
	// stuckBound is the documented bound on what one subscriber's queue
	// holds, in bytes: queue_bytes of payload in at most queue_len events.
	stuckBound = stuckQueueBytes + stuckQueueLen*eventOverhead
	// memAllowance is what the test allows over the bound: Go's collector
	// lets the heap grow to twice its live data (GOGC=100), so the bound
	// once more, and 8 MiB for gRPC's buffers for the stuck stream (its
	// 64 KiB write quota, the connection's framer buffers) and for the
	// garbage of reading 16 MiB of events that the heap holds until the
	// next collection (measured: 5 to 10 MiB of growth in all).
	memAllowance = stuckBound + 8<<20
	// fillEvents of fillPayload bytes are published to the stuck
	// subscriber alone: 16 MiB, over ten times its bound, so that an
	// unbounded queue would show in the daemon's RSS.
	fillEvents  = 4000
	fillPayload = 4096
	fillChunk   = 1000 // published before waiting for the daemon to read them
	// roundEvents of roundPayload bytes are published per round at
	// roundRate: fewer than a queue holds, so the readers never lose one
	// even when they lag.
	roundEvents  = 450
	roundPayload = 64
	roundRate    = 150 // per second, about half of what the VM delivers
	// smallWindow is gRPC's smallest flow-control window: with it the
	// stuck client stops accepting data after 64 KiB, so the daemon's
	// sends block and its queue, not gRPC's buffers, takes the backlog.
	smallWindow = 64 << 10
	// inFlight bounds the events of the stuck stream that sit in gRPC's
	// buffers (the client's window and the server's write quota) or in
	// the hands of the daemon's goroutines, instead of its queue.
	inFlight = 2*smallWindow/fillPayload + 2
)

// What the other subscribers keep with a stuck one beside them. The
// readers' median latency, about 2 ms under emulation, moved by 12–23%
// between rounds of one boot with a stuck subscriber whose queue was
// already full (it costs the reader one dropped push per event); a
// stuck subscriber that stalled the others would multiply it.
const (
	stuckMinThroughput = 0.9
	stuckMaxLatency    = 1.5
)

// TestIntegrationStuckSubscriber: a subscriber that never reads costs the
// daemon at most its queue bound (plus a stated allowance), learns of
// everything it lost once it reads, and does not slow the other
// subscribers down by more than 10% in throughput or 50% in median
// latency.
func TestIntegrationStuckSubscriber(t *testing.T) {
	testenv.SkipOnDebugKernel(t)
	d := startDaemon(t, "--queue-len", strconv.Itoa(stuckQueueLen), "--queue-bytes", strconv.Itoa(stuckQueueBytes),
		"--read-buffer", strconv.Itoa(32<<20))
	name := d.attach(t)
	admin, _ := d.admin(t)
	pub := rawPublisher(t, name)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readers := []*reader{}
	for range 2 {
		c, _ := d.admin(t)
		readers = append(readers, startReader(subscribe(t, ctx, c, name, 1)))
	}
	waitSubscribers(t, admin, name, 2)
	round(t, pub, readers, 100) // warm up the path

	// Rounds without and with the stuck subscriber alternate; each round
	// with it is compared with the mean of the rounds just before and
	// after it, so that a drift of the shared machine's speed cancels out.
	const attempts = 3
	var fails []string
	var group2 uint64 // the last sequence number of group 2
	before := round(t, pub, readers, roundEvents)
	for attempt := 1; attempt <= attempts; attempt++ {
		// The stuck subscriber: its own connection with the smallest
		// windows, group 1 like the readers and group 2 for itself.
		rss0 := d.rssKiB(t)
		c, _ := d.admin(t, grpc.WithInitialWindowSize(smallWindow), grpc.WithInitialConnWindowSize(smallWindow))
		sctx, scancel := context.WithCancel(ctx)
		stuck := subscribe(t, sctx, c, name, 1, 2)
		waitSubscribers(t, admin, name, 3)
		first := map[uint32]uint64{1: before.last + 1, 2: group2 + 1}
		fill := fillEvents
		if attempt > 1 {
			fill = 2 * (stuckQueueBytes/fillPayload + inFlight) // enough to fill it
		}
		group2 = fillStuck(t, pub, admin, name, fill)
		with := round(t, pub, readers, roundEvents)
		rss1 := d.rssKiB(t)

		if attempt == 1 {
			growth := (rss1 - rss0) * 1024
			t.Logf("stuck subscriber: %d events of %d bytes and %d of %d bytes published to it; daemon RSS %d KiB -> %d KiB, growth %d KiB; bound %d KiB + allowance %d KiB",
				fill, fillPayload, roundEvents, roundPayload, rss0, rss1, growth/1024, stuckBound/1024, memAllowance/1024)
			if growth > stuckBound+memAllowance {
				t.Errorf("daemon RSS grew by %d KiB with a stuck subscriber, want at most %d KiB (bound %d KiB + allowance %d KiB)",
					growth/1024, (stuckBound+memAllowance)/1024, stuckBound/1024, memAllowance/1024)
			}
			checkStuckLoss(t, stuck, first, map[uint32]uint64{1: with.last, 2: group2})
		}
		scancel()
		waitSubscribers(t, admin, name, 2)
		after := round(t, pub, readers, roundEvents)

		base := roundResult{throughput: (before.throughput + after.throughput) / 2, latency: (before.latency + after.latency) / 2}
		before = after
		thr, lat := with.throughput/base.throughput, with.latency/base.latency
		t.Logf("attempt %d: readers' throughput %.0f ev/s without (mean of the rounds before and after), %.0f ev/s with the stuck subscriber (ratio %.2f); median latency %.2f ms without, %.2f ms with (ratio %.2f)",
			attempt, base.throughput, with.throughput, thr, base.latency*1e3, with.latency*1e3, lat)
		if thr >= stuckMinThroughput && lat <= stuckMaxLatency {
			return
		}
		fails = append(fails, fmt.Sprintf("attempt %d: throughput ratio %.2f (want >= %.2f), latency ratio %.2f (want <= %.2f)", attempt, thr, stuckMinThroughput, lat, stuckMaxLatency))
	}
	t.Errorf("the stuck subscriber slowed the others in every attempt:\n%v", fails)
}

// fillStuck publishes n events to group 2, which only the stuck
// subscriber listens to, in chunks, waiting after each until the daemon
// has read them: none is lost in the kernel, so all of them reach the
// stuck subscriber's queue. It returns the last sequence number.
func fillStuck(t *testing.T, pub *family.Conn, admin nsbrokerv1.BrokerClient, name string, n int) uint64 {
	t.Helper()
	received := stats(t, admin, name).GetDaemon().GetReceived()
	var last uint64
	for done := 0; done < n; {
		k := min(fillChunk, n-done)
		last = publishRaw(t, pub, 2, k, fillPayload)
		done += k
		want := received + uint64(done)
		var st *nsbrokerv1.NamespaceStats
		if !waitFor(waitTimeout, func() bool {
			st = stats(t, admin, name)
			return st.GetDaemon().GetReceived() >= want
		}) {
			t.Fatalf("the daemon received %d events after %v, want %d (daemon counters %v)", st.GetDaemon().GetReceived(), waitTimeout, want, st.GetDaemon())
		}
	}
	return last
}

// checkStuckLoss reads the stuck subscriber until every number from first
// to last of each group is accounted for, and checks that each arrived
// once, as an event or in a queue-full gap, and that no more events
// arrived than its queue and gRPC's buffers hold.
func checkStuckLoss(t *testing.T, stream grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse], first, last map[uint32]uint64) {
	t.Helper()
	cov := newCoverage(maps.Clone(first))
	done := make(chan error, 1)
	go func() {
		for !cov.covered(last) {
			resp, err := stream.Recv()
			if err != nil {
				done <- err
				return
			}
			cov.add(resp)
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("stuck subscriber: stream ended before covering %v: %v", last, err)
		}
	case <-time.After(rpcTimeout):
		t.Fatalf("stuck subscriber: numbers up to %v not covered after %v", last, rpcTimeout)
	}
	var published uint64
	for g, l := range last {
		published += l - first[g] + 1
	}
	t.Logf("stuck subscriber, once it read: %d events, %d gaps reporting %d lost (%v), of %d published",
		cov.events, cov.gaps, cov.lostTotal(), cov.lost, published)
	for _, e := range cov.errs {
		t.Errorf("stuck subscriber: %s", e)
	}
	if q := cov.lost[nsbrokerv1.LossReason_LOSS_REASON_QUEUE_FULL]; q == 0 || q != cov.lostTotal() {
		t.Errorf("stuck subscriber: got losses %v, want every loss reported as queue_full", cov.lost)
	}
	if most := uint64(stuckQueueBytes/fillPayload + inFlight); cov.events > most {
		t.Errorf("stuck subscriber: got %d events, want at most %d (its queue and gRPC's buffers)", cov.events, most)
	}
}

// reader is a subscriber that reads as fast as it can and records when
// each event arrived.
type reader struct {
	mu      sync.Mutex // guards the fields below
	samples []sample
	gaps    []*nsbrokerv1.Gap
	err     error
}

type sample struct {
	seq     uint64
	at      time.Time     // when it arrived
	latency time.Duration // since the kernel's timestamp
}

func startReader(stream grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse]) *reader {
	r := &reader{}
	go func() {
		for {
			resp, err := stream.Recv()
			at := time.Now()
			r.mu.Lock()
			if err != nil {
				r.err = err
				r.mu.Unlock()
				return
			}
			if ev := resp.GetEvent(); ev != nil {
				r.samples = append(r.samples, sample{ev.GetSeq(), at, at.Sub(ev.GetTimestamp().AsTime())})
			} else {
				r.gaps = append(r.gaps, resp.GetGap())
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// since returns the samples of numbers first and later once the last one
// has arrived.
func (r *reader) since(t *testing.T, first, last uint64) []sample {
	t.Helper()
	var out []sample
	ok := waitFor(waitTimeout, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.err != nil || len(r.gaps) > 0 {
			t.Fatalf("reader: stream error %v, gaps %v; want every event", r.err, r.gaps)
		}
		n := len(r.samples)
		if n == 0 || r.samples[n-1].seq < last {
			return false
		}
		i := n
		for i > 0 && r.samples[i-1].seq >= first {
			i--
		}
		out = append(out[:0], r.samples[i:]...)
		return true
	})
	if !ok {
		t.Fatalf("reader: event %d not received after %v", last, waitTimeout)
	}
	if uint64(len(out)) != last-first+1 {
		t.Fatalf("reader: got %d events %d..%d, want %d", len(out), first, last, last-first+1)
	}
	return out
}

// roundResult is what the readers measured in one round.
type roundResult struct {
	last       uint64  // the round's last sequence number
	throughput float64 // events per second, the slower reader's
	latency    float64 // seconds, median over both readers
}

// round publishes n events to group 1 at roundRate, each at its
// scheduled time or as soon as the previous one returned, and measures
// how fast the readers got them and how long each took.
func round(t *testing.T, pub *family.Conn, readers []*reader, n int) roundResult {
	t.Helper()
	payload := make([]byte, roundPayload)
	start := time.Now()
	var last uint64
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / roundRate)))
		r, err := pub.Publish(1, payload)
		if err != nil {
			t.Fatalf("raw publish: %v", err)
		}
		last = r.Seq
	}
	first := last - uint64(n) + 1
	res := roundResult{last: last}
	var lats []float64
	for i, r := range readers {
		s := r.since(t, first, last)
		thr := float64(n-1) / s[len(s)-1].at.Sub(s[0].at).Seconds()
		if i == 0 || thr < res.throughput {
			res.throughput = thr
		}
		for _, x := range s {
			lats = append(lats, x.latency.Seconds())
		}
	}
	res.latency = median(lats)
	return res
}
