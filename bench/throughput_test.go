package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

const (
	daemonGroup = 1 // events for the daemon's subscribers
	rawGroup    = 2 // events for raw receivers
	pubGroup    = 3 // publishing runs: nobody listens
	// drain is the least time receivers wait once the publisher is done;
	// they wait as long again as the publishing took if that is longer
	// (64 streams of 4 KiB events under TCG drain slower than 15 s).
	drain = 15 * time.Second
)

var (
	payloadSizes = []int{64, 4096}
	receivers    = []int{1, 8, 64}
)

var runFor = flag.Duration("bench.runfor", 3*time.Second, "how long one sized throughput run lasts")

// The first count of each kind of run: a pilot, from whose rate the
// count of the measured runs is sized to last -bench.runfor.
const (
	pilotDelivery = 1000 // events per delivery run
	pilotPublish  = 2000 // publishes per publishing run
	pilotUnary    = 100  // unary Publish calls
)

// throughputRounds is how many times each path of a comparison is
// measured, in turns with the others, keeping the best.
const throughputRounds = 2

// flow is one path of a throughput comparison: run moves m messages and
// says at what rate.
type flow struct {
	run     func(m uint64) Rate
	m       uint64 // messages per run: the pilot's, then the sized count
	best    Rate
	runs    int
	profile string // the name of its last run's CPU profile, from the pilot's rate
}

// compare measures flows in turns, throughputRounds times each, after a
// pilot run of each that sizes its count to last runFor. Each flow's rate
// is the best of its rounds: under emulation and a busy host, noise only
// ever slows a run down, and the turns let a slow phase fall on every
// path alike. A flow with unreported losses in any round is invalid. The
// last round of each flow is profiled on its own, so that a profile shows
// one path.
func compare(t *testing.T, flows ...*flow) []Rate {
	for _, f := range flows {
		pilot := f.run(f.m)
		f.m = sizedCount(f.m, pilot.Seconds, runFor.Seconds())
		f.profile = fmt.Sprintf("throughput-%s-%dB-%d", strings.ReplaceAll(pilot.Name, " ", "-"), pilot.Payload, pilot.Receivers)
	}
	for round := range throughputRounds {
		for _, f := range flows {
			var r Rate
			if round == throughputRounds-1 {
				profile(t, f.profile, func() { r = f.measure() })
			} else {
				r = f.measure()
			}
			switch {
			case f.runs == 0:
				f.best = r
			case !r.Valid:
				f.best.Valid = false
			case r.PerSec > f.best.PerSec:
				r.Valid = f.best.Valid
				f.best = r
			}
			f.runs++
		}
	}
	out := make([]Rate, len(flows))
	for i, f := range flows {
		out[i] = f.best
	}
	return out
}

// measure runs f with its count and records the guest's CPU time over
// the run (its setup and drain included: idle time adds nothing to the
// CPU per message).
func (f *flow) measure() Rate {
	before, errBefore := cpuTimes()
	start := time.Now()
	r := f.run(f.m)
	wall := time.Since(start)
	after, errAfter := cpuTimes()
	if errBefore == nil && errAfter == nil {
		total, idle := after[0]-before[0], after[1]-before[1]
		r.SetCPU(total-idle, total, wall, runtime.NumCPU())
	}
	return r
}

// sizedCount is the count that runs about want seconds at the rate at
// which m messages took took seconds: at least m, at most 100 times it.
func sizedCount(m uint64, took, want float64) uint64 {
	if took <= 0 {
		return 100 * m
	}
	return min(max(m, uint64(float64(m)*want/took)), 100*m)
}

func measureThroughput(t *testing.T, e *env, res *Results) {
	for _, size := range payloadSizes {
		for _, n := range receivers {
			rates := compare(t,
				&flow{m: pilotDelivery, run: func(m uint64) Rate { return deliveryDaemon(t, e, n, size, m) }},
				&flow{m: pilotDelivery, run: func(m uint64) Rate { return deliveryRaw(t, e, n, size, m) }},
				&flow{m: pilotDelivery, run: func(m uint64) Rate { return deliveryBare(t, e, n, size, m) }},
			)
			d, r, b := rates[0], rates[1], rates[2]
			res.Rates = append(res.Rates, rates...)
			floor := min(r.PerSec, b.PerSec)
			switch {
			case !d.Valid || !r.Valid || !b.Valid:
				res.Notes = append(res.Notes, fmt.Sprintf("delivery to %d, %d B: no ratio, a rate had unreported losses", n, size))
			case n == 1:
				atLeast(res, fmt.Sprintf("delivery to 1, %d B: nsbrokerd / lower floor", size), d.PerSec/floor, 0.8)
				// The daemon does the work of both floors for each
				// event: a netlink receive and a gRPC send.
				if r.CPUPerMsgUs > 0 && b.CPUPerMsgUs > 0 {
					ratio(res, fmt.Sprintf("delivery to 1, %d B: CPU per event, nsbrokerd / (raw + bare)", size), d.CPUPerMsgUs/(r.CPUPerMsgUs+b.CPUPerMsgUs), 0)
				}
			case n == 64:
				atLeast(res, fmt.Sprintf("delivery to 64, %d B: nsbrokerd total / lower floor total", size), d.PerSec/floor, 0.8)
			}
		}
		rates := compare(t,
			&flow{m: pilotPublish, run: func(m uint64) Rate { return publishRaw(t, e, size, m) }},
			&flow{m: pilotPublish, run: func(m uint64) Rate { return publishRawBatched(t, e, size, m) }},
			&flow{m: pilotUnary, run: func(m uint64) Rate { return publishUnary(t, e, size, m) }},
			&flow{m: pilotPublish, run: func(m uint64) Rate {
				return publishStream(t, "publish nsbrokerd PublishStream", dialConn(t, e.admin, nil), e.name, size, m)
			}},
			&flow{m: pilotPublish, run: func(m uint64) Rate {
				return publishStream(t, "publish bare gRPC client stream", dialConn(t, e.bare.path, nil), e.name, size, m)
			}},
		)
		raw, batched, stream, bare := rates[0], rates[1], rates[3], rates[4]
		res.Rates = append(res.Rates, rates...)
		if raw.Valid && stream.Valid {
			atLeast(res, fmt.Sprintf("PublishStream, %d B: nsbrokerd / raw single publish", size), stream.PerSec/raw.PerSec, 1.0)
		}
		if batched.Valid && stream.Valid && bare.Valid {
			atLeast(res, fmt.Sprintf("PublishStream, %d B: nsbrokerd / lower of raw batched and bare stream", size), stream.PerSec/min(batched.PerSec, bare.PerSec), 0)
			// The stream does the work of both for each message: a
			// gRPC receive and a publish in a batch.
			if batched.CPUPerMsgUs > 0 && bare.CPUPerMsgUs > 0 {
				ratio(res, fmt.Sprintf("PublishStream, %d B: CPU per message, nsbrokerd / (raw batched + bare stream)", size), stream.CPUPerMsgUs/(batched.CPUPerMsgUs+bare.CPUPerMsgUs), 0)
			}
		}
	}
}

// subscriberCount counts one gRPC subscriber's events in first..last and
// the losses reported to it as gaps.
func subscriberCount(st grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse], first, last uint64) (delivered, reported uint64) {
	next := first
	for next <= last {
		r, err := st.Recv()
		if err != nil {
			return
		}
		if ev := r.GetEvent(); ev != nil {
			if ev.GetSeq() >= next && ev.GetSeq() <= last {
				delivered++
				next = ev.GetSeq() + 1
			}
			continue
		}
		g := r.GetGap()
		from, to := max(g.GetFromSeq(), next), g.GetToSeq()
		if to == 0 || to > last {
			to = last
		}
		if to >= from {
			reported += to - from + 1
			next = to + 1
		}
	}
	return
}

// deliveryDaemon publishes m events by a raw socket in the namespace and
// counts what n subscribers of nsbrokerd receive.
func deliveryDaemon(t *testing.T, e *env, n, size int, m uint64) Rate {
	rate := Rate{Name: "delivery nsbrokerd", Payload: size, Receivers: n, Expected: m * uint64(n)}
	pub, err := rawPublisher(e.ns, e.unit, daemonGroup, make([]byte, size))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	s0, err := pub.publish() // before anyone subscribes: the numbering so far
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := make([]grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse], n)
	for i := range streams {
		conn := dialConn(t, e.admin, nil)
		defer conn.Close()
		st, err := nsbrokerv1.NewBrokerClient(conn).Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Namespace: e.name, Groups: []uint32{daemonGroup}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Header(); err != nil { // sent once the daemon joined the group
			t.Fatal(err)
		}
		streams[i] = st
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for _, st := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, r := subscriberCount(st, s0+1, s0+m)
			mu.Lock()
			rate.Delivered += d
			rate.Reported += r
			mu.Unlock()
		}()
	}
	for range m {
		if _, err := pub.publish(); err != nil {
			t.Fatal(err)
		}
	}
	stop := time.AfterFunc(max(drain, time.Since(start)), cancel)
	defer stop.Stop()
	wg.Wait()
	rate.Finish(time.Since(start))
	return rate
}

// deliveryRaw is the kernel floor: the same events multicast to n raw
// sockets with the daemon's receive buffer.
func deliveryRaw(t *testing.T, e *env, n, size int, m uint64) Rate {
	rate := Rate{Name: "delivery raw multicast", Payload: size, Receivers: n, Expected: m * uint64(n)}
	pub, err := rawPublisher(e.ns, e.unit, rawGroup, make([]byte, size))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	s0, err := pub.publish()
	if err != nil {
		t.Fatal(err)
	}
	socks := make([]*rawSock, n)
	for i := range socks {
		s, err := openRaw(e.ns, e.unit, 4<<20)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.join(rawGroup, 2*time.Second); err != nil {
			t.Fatal(err)
		}
		socks[i] = s
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for _, s := range socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, r, err := s.receiveEvents(s0+1, s0+m)
			if err != nil {
				t.Errorf("raw receiver: %v", err)
			}
			mu.Lock()
			rate.Delivered += d
			rate.Reported += r
			mu.Unlock()
		}()
	}
	for range m {
		if _, err := pub.publish(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	rate.Finish(time.Since(start))
	return rate
}

// deliveryBare is gRPC's floor: a bare server streaming m events to each
// of n subscribers, with nothing behind it.
func deliveryBare(t *testing.T, e *env, n, size int, m uint64) Rate {
	rate := Rate{Name: "delivery bare gRPC stream", Payload: size, Receivers: n, Expected: m * uint64(n)}
	e.bare.count.Store(int64(m))
	e.bare.size.Store(int64(size))
	gate := make(chan struct{})
	e.bare.gate.Store(&gate)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	streams := make([]grpc.ServerStreamingClient[nsbrokerv1.SubscribeResponse], n)
	for i := range streams {
		conn := dialConn(t, e.bare.path, nil)
		defer conn.Close()
		st, err := nsbrokerv1.NewBrokerClient(conn).Subscribe(ctx, &nsbrokerv1.SubscribeRequest{Groups: []uint32{1}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Header(); err != nil {
			t.Fatal(err)
		}
		streams[i] = st
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	close(gate)
	for _, st := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, r := subscriberCount(st, 1, m)
			mu.Lock()
			rate.Delivered += d
			rate.Reported += r
			mu.Unlock()
		}()
	}
	stop := time.AfterFunc(time.Minute, cancel)
	defer stop.Stop()
	wg.Wait()
	rate.Finish(time.Since(start))
	return rate
}

// publishRaw is the kernel floor of publishing: m synchronous publishes.
func publishRaw(t *testing.T, e *env, size int, m uint64) Rate {
	rate := Rate{Name: "publish raw netlink", Payload: size, Receivers: 0, Expected: m}
	pub, err := rawPublisher(e.ns, e.unit, pubGroup, make([]byte, size))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	start := time.Now()
	var first, last uint64
	for i := range m {
		seq, err := pub.publish()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = seq
		}
		last = seq
	}
	rate.Delivered = last - first + 1 // the kernel numbered every one
	rate.Finish(time.Since(start))
	return rate
}

// publishRawBatched is the kernel's limit for publishing: m publishes in
// datagrams of as many as the daemon's batches hold (rawSock.batchSize),
// each datagram's replies read before the next is sent.
func publishRawBatched(t *testing.T, e *env, size int, m uint64) Rate {
	rate := Rate{Name: "publish raw netlink batched", Payload: size, Receivers: 0, Expected: m}
	pub, err := rawPublisher(e.ns, e.unit, pubGroup, make([]byte, size))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	k := uint64(pub.batchSize())
	start := time.Now()
	var first, last uint64
	for sent := uint64(0); sent < m; sent += k {
		f, l, err := pub.publishBatch(int(min(k, m-sent)))
		if err != nil {
			t.Fatal(err)
		}
		if sent == 0 {
			first = f
		}
		last = l
	}
	rate.Delivered = last - first + 1 // the kernel numbered every one
	rate.Finish(time.Since(start))
	return rate
}

// publishUnary publishes m events with one Publish call each.
func publishUnary(t *testing.T, e *env, size int, m uint64) Rate {
	rate := Rate{Name: "publish nsbrokerd Publish", Payload: size, Expected: m}
	conn := dialConn(t, e.admin, nil)
	defer conn.Close()
	cl := nsbrokerv1.NewBrokerClient(conn)
	req := &nsbrokerv1.PublishRequest{Namespace: e.name, Group: pubGroup, Payload: make([]byte, size)}
	start := time.Now()
	var first, last uint64
	for i := range m {
		r, err := cl.Publish(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = r.GetSeq()
		}
		last = r.GetSeq()
	}
	rate.Delivered = last - first + 1
	rate.Finish(time.Since(start))
	return rate
}

// publishStream publishes m events on one PublishStream and counts what the
// server says it published.
func publishStream(t *testing.T, name string, conn *grpc.ClientConn, ns string, size int, m uint64) Rate {
	defer conn.Close()
	rate := Rate{Name: name, Payload: size, Expected: m}
	st, err := nsbrokerv1.NewBrokerClient(conn).PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req := &nsbrokerv1.PublishRequest{Namespace: ns, Group: pubGroup, Payload: make([]byte, size)}
	start := time.Now()
	for range m {
		if err := st.Send(req); err != nil {
			if err == io.EOF {
				break // the server ended the stream; CloseAndRecv says why
			}
			t.Fatal(err)
		}
	}
	r, err := st.CloseAndRecv()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	rate.Delivered = r.GetPublished()
	rate.Finish(time.Since(start))
	return rate
}
