package abuse

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/internal/testenv"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// TestIntegrationPublishFlood: a tenant publishing as fast as it can is
// held to the per-tenant rate limit with RESOURCE_EXHAUSTED, while another
// tenant publishing below the limit keeps at least 90% of the rate it
// achieves without the flood, measured in the same test.
func TestIntegrationPublishFlood(t *testing.T) {
	testenv.SkipOnDebugKernel(t)
	const (
		// Low enough that the flooder exceeds it many times over even in
		// an emulated, shared VM, where a unary rpc takes milliseconds.
		rate     = 20 // per tenant, per second
		burst    = 5
		steady   = 10 // the other tenant's publishes per second, under the limit
		window   = 3 * time.Second
		flooders = 4
	)
	d := startDaemon(t, "--publish-rate", strconv.Itoa(rate), "--publish-burst", strconv.Itoa(burst))
	flooded, calm := d.attach(t), d.attach(t)
	admin, _ := d.admin(t)
	fc, _ := tenant(t, flooded)
	cc, _ := tenant(t, calm)

	// publishSteady publishes at steady per second for window, each
	// publish at its scheduled time or as soon as the previous one
	// returned, and returns the achieved rate and the refusals.
	publishSteady := func() (float64, []error) {
		ctx, cancel := context.WithTimeout(context.Background(), window+rpcTimeout)
		defer cancel()
		n := int(steady * window.Seconds())
		start := time.Now()
		var errs []error
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / steady)))
			if _, err := cc.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 1, Payload: []byte("calm")}); err != nil {
				errs = append(errs, err)
			}
		}
		return float64(n-len(errs)) / time.Since(start).Seconds(), errs
	}

	for attempt := 1; attempt <= 3; attempt++ {
		alone, errs := publishSteady()
		if len(errs) > 0 {
			t.Fatalf("calm tenant alone: %d publishes refused, first %v", len(errs), errs[0])
		}

		before := stats(t, admin, flooded).GetKernel().GetPublish()
		ctx, cancel := context.WithCancel(context.Background())
		var ok, limited, cancelled, other atomic.Int64
		var firstOther atomic.Value
		var wg sync.WaitGroup
		for range flooders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					_, err := fc.Publish(ctx, &nsbrokerv1.PublishRequest{Group: 1, Payload: []byte("flood")})
					switch status.Code(err) {
					case codes.OK:
						ok.Add(1)
					case codes.ResourceExhausted:
						limited.Add(1)
					case codes.Canceled: // may or may not have been published
						cancelled.Add(1)
					default:
						other.Add(1)
						firstOther.CompareAndSwap(nil, err)
					}
				}
			}()
		}
		time.Sleep(200 * time.Millisecond) // the flood is under way before the measurement
		floodStart := time.Now()
		during, errs := publishSteady()
		cancel()
		wg.Wait()
		floodTime := time.Since(floodStart) + 200*time.Millisecond
		published := stats(t, admin, flooded).GetKernel().GetPublish() - before

		maxOK := int64(rate*floodTime.Seconds()) + burst
		t.Logf("attempt %d: flooder: %d published, %d RESOURCE_EXHAUSTED, %d other errors in %v (limit %d/s, burst %d: at most %d); calm tenant: %.1f/s alone, %.1f/s during the flood (ratio %.2f)",
			attempt, ok.Load(), limited.Load(), other.Load(), floodTime.Round(time.Millisecond), rate, burst, maxOK, alone, during, during/alone)
		if len(errs) > 0 {
			t.Errorf("calm tenant during the flood: %d publishes refused, first %v", len(errs), errs[0])
		}
		if other.Load() > 0 {
			t.Errorf("flooder: %d errors other than RESOURCE_EXHAUSTED, first %v", other.Load(), firstOther.Load())
		}
		if limited.Load() == 0 {
			t.Errorf("flooder: no publish refused with RESOURCE_EXHAUSTED in %d", ok.Load())
		}
		if ok.Load() > maxOK {
			t.Errorf("flooder: %d publishes accepted in %v, want at most %d (rate %d/s, burst %d)", ok.Load(), floodTime, maxOK, rate, burst)
		}
		if published < uint64(ok.Load()) || published > uint64(ok.Load()+cancelled.Load()) {
			t.Errorf("flooded namespace: kernel counted %d publishes, want the %d accepted (and up to %d cancelled at the end)", published, ok.Load(), cancelled.Load())
		}
		if t.Failed() {
			return
		}
		if during >= 0.9*alone {
			return
		}
		if attempt == 3 {
			t.Errorf("calm tenant kept %.2f of its rate during the flood in 3 attempts (last: %.1f/s of %.1f/s), want at least 0.90", during/alone, during, alone)
		}
	}
}
