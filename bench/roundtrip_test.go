package bench

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nsbroker/nsbroker/broker"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
	nsbrokerv1 "github.com/nsbroker/nsbroker/proto/nsbroker/v1"
)

// Round trips per path: the kernel paths are fast enough for many, the
// gRPC ones under TCG are not.
const (
	kernelTrips = 3000
	grpcTrips   = 600
	warmup      = 50
	rtPayload   = 64
	rtGroup     = 31 // nobody joins it: publish round trips multicast to no one
)

// timeN runs fn warmup+n times and returns the durations of the last n.
func timeN(t *testing.T, what string, n int, fn func() error) []time.Duration {
	t.Helper()
	out := make([]time.Duration, 0, n)
	for i := range warmup + n {
		start := time.Now()
		if err := fn(); err != nil {
			t.Fatalf("%s: round trip %d: %v", what, i, err)
		}
		if i >= warmup {
			out = append(out, time.Since(start))
		}
	}
	return out
}

// path is one round trip measured among others.
type path struct {
	name string
	n    int
	fn   func() error
}

// rounds is how many turns timeInterleaved takes through its paths.
const rounds = 10

// timeInterleaved measures paths in turns: after a warmup of each, every
// round runs each path n/rounds times, one path after the other. A slow
// phase of the host (the emulator, other load) then falls on all of them
// alike instead of on whichever path happened to run then, and their
// ratios are steadier than their absolute times.
func timeInterleaved(t *testing.T, res *Results, paths []path) {
	t.Helper()
	samples := make([][]time.Duration, len(paths))
	for i, p := range paths {
		timeN(t, p.name, 0, p.fn) // warmup only
		samples[i] = make([]time.Duration, 0, p.n)
	}
	for range rounds {
		for i, p := range paths {
			for range p.n / rounds {
				start := time.Now()
				if err := p.fn(); err != nil {
					t.Fatalf("%s: round trip %d: %v", p.name, len(samples[i]), err)
				}
				samples[i] = append(samples[i], time.Since(start))
			}
		}
	}
	for i, p := range paths {
		res.RoundTrips = append(res.RoundTrips, Summarise(p.name, samples[i]))
	}
}

// measureRoundTrips fills res with the round trips of paths (a) to (f):
// (a) to (c) interleaved with each other, (d) to (f) likewise.
func measureRoundTrips(t *testing.T, e *env, res *Results) {
	payload := bytes.Repeat([]byte{0xa5}, rtPayload)

	// (a) raw sockets, one per request so that each is built once.
	echoBody, _ := family.EncodeEcho(payload)
	pubBody, _ := family.EncodePublish(rtGroup, payload)
	rawEcho, err := openRaw(e.ns, e.unit, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rawEcho.Close()
	rawEcho.prepare(family.MsgEcho, echoBody)
	rawPub, err := openRaw(e.ns, e.unit, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rawPub.Close()
	rawPub.prepare(family.MsgPublish, pubBody)

	// (b) family.Conn.
	c, err := family.Dial(&family.Config{Unit: e.unit, NetNS: e.ns.Fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// (c) broker in-process, its own connection to the namespace.
	br := broker.New(&broker.Config{Unit: e.unit})
	defer br.Close()
	ctx := context.Background()
	if _, err := br.Attach(ctx, e.name, nsmgr.Ref{Name: e.name}); err != nil {
		t.Fatal(err)
	}
	timeInterleaved(t, res, []path{
		{"a raw netlink echo", kernelTrips, func() error {
			b, err := rawEcho.roundTrip()
			if err == nil && len(b) < family.HeaderLen+len(payload) {
				err = fmt.Errorf("echo reply of %d bytes", len(b))
			}
			return err
		}},
		{"a raw netlink publish", kernelTrips, func() error { _, err := rawPub.publish(); return err }},
		{"b family.Conn echo", kernelTrips, func() error { return checkEcho(c.Echo(payload)) }},
		{"b family.Conn publish", kernelTrips, func() error { _, err := c.Publish(rtGroup, payload); return err }},
		{"c broker echo", kernelTrips, func() error { return checkEcho(br.Echo(ctx, e.name, payload)) }},
		{"c broker publish", kernelTrips, func() error { _, err := br.Publish(ctx, e.name, rtGroup, payload); return err }},
	})

	// (d), (e) nsbrokerd; (f) the bare server, on each kind of socket.
	grpcPaths := []struct {
		label string
		cl    nsbrokerv1.BrokerClient
	}{
		{"d nsbrokerd admin socket", e.adminClient(t)},
		{"e nsbrokerd local socket", e.localClient(t)},
		{"f bare gRPC filesystem socket", dialUnix(t, e.bare.path, nil)},
		{"f bare gRPC abstract socket", dialUnix(t, e.bare.abstract, e.ns)},
		{"g bare gRPC with the budget's options, filesystem socket", dialUnix(t, e.budgeted, nil)},
	}
	var paths []path
	for _, p := range grpcPaths {
		paths = append(paths, path{p.label + " echo", grpcTrips, func() error {
			r, err := p.cl.Echo(ctx, &nsbrokerv1.EchoRequest{Namespace: e.name, Payload: payload})
			if err == nil && !bytes.Equal(r.GetPayload(), payload) {
				err = fmt.Errorf("echo: want the %d-byte payload back, got %d bytes", len(payload), len(r.GetPayload()))
			}
			return err
		}}, path{p.label + " publish", grpcTrips, func() error {
			_, err := p.cl.Publish(ctx, &nsbrokerv1.PublishRequest{Namespace: e.name, Group: rtGroup, Payload: payload})
			return err
		}})
	}
	timeInterleaved(t, res, paths)

	for _, op := range []string{"echo", "publish"} {
		a := res.Latency("a raw netlink " + op).P50us
		ratio(res, "b/a family.Conn "+op+" p50", res.Latency("b family.Conn "+op).P50us/a, 1.1)
		ratio(res, "c/a broker "+op+" p50", res.Latency("c broker "+op).P50us/a, 0)
		fFS := res.Latency("f bare gRPC filesystem socket " + op).P50us
		fAbs := res.Latency("f bare gRPC abstract socket " + op).P50us
		ratio(res, "d/(a+f) admin "+op+" p50", res.Latency("d nsbrokerd admin socket "+op).P50us/(a+fFS), 1.2)
		ratio(res, "e/(a+f) local "+op+" p50", res.Latency("e nsbrokerd local socket "+op).P50us/(a+fAbs), 1.2)
		// Not targets: how the daemon's admin path divides into the
		// budget's gRPC options and the rest.
		g := res.Latency("g bare gRPC with the budget's options, filesystem socket " + op).P50us
		ratio(res, "g/f budget's options over bare gRPC, "+op+" p50", g/fFS, 0)
		ratio(res, "d/(a+g) admin over budgeted bare gRPC, "+op+" p50", res.Latency("d nsbrokerd admin socket "+op).P50us/(a+g), 0)
	}
}

func checkEcho(r *family.EchoReply, err error) error {
	if err == nil && len(r.Payload) != rtPayload {
		return fmt.Errorf("echo: want %d bytes back, got %d", rtPayload, len(r.Payload))
	}
	return err
}

// atLeast records value against a lower bound (0: no target).
func atLeast(res *Results, name string, value, target float64) {
	if target == 0 {
		res.Ratios = append(res.Ratios, Ratio{Name: name, Value: value, Met: true})
		return
	}
	res.Ratios = append(res.Ratios, Ratio{Name: name, Value: value, Target: fmt.Sprintf("≥ %.2f", target), Limit: target, AtLeast: true, Met: value >= target})
}

// ratio records value against target (at most target; 0: no target).
func ratio(res *Results, name string, value, target float64) {
	r := Ratio{Name: name, Value: value, Met: true}
	if target > 0 {
		r.Target = fmt.Sprintf("≤ %.1f", target)
		r.Limit = target
		r.Met = value <= target
	}
	res.Ratios = append(res.Ratios, r)
}
