package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Latency summarises the round trips of one path.
type Latency struct {
	Name   string  `json:"name"`
	N      int     `json:"n"`
	P50us  float64 `json:"p50_us"`
	P99us  float64 `json:"p99_us"`
	MeanUs float64 `json:"mean_us"`
}

// Summarise returns the median, 99th percentile and mean of samples.
// It sorts samples in place.
func Summarise(name string, samples []time.Duration) Latency {
	l := Latency{Name: name, N: len(samples)}
	if len(samples) == 0 {
		return l
	}
	slices.Sort(samples)
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	l.P50us = us(percentile(samples, 50))
	l.P99us = us(percentile(samples, 99))
	l.MeanUs = us(sum / time.Duration(len(samples)))
	return l
}

// percentile returns the nearest-rank percentile p of sorted samples.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100 // ceil(n*p/100), 1-based rank
	if i < 1 {
		i = 1
	}
	return sorted[i-1]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// Rate is a throughput measurement: messages expected, delivered and lost.
// Rate is only claimed (Valid) when every lost message was reported.
type Rate struct {
	Name      string  `json:"name"`
	Payload   int     `json:"payload"`
	Receivers int     `json:"receivers"`
	Expected  uint64  `json:"expected"`
	Delivered uint64  `json:"delivered"`
	Reported  uint64  `json:"reported_lost"`
	Seconds   float64 `json:"seconds"`
	PerSec    float64 `json:"msgs_per_sec"`
	Valid     bool    `json:"valid"`
	// GuestBusy is the share of the guest's CPU time that was busy
	// during the run (0 to 1), and CPUPerMsgUs that busy time divided by
	// the messages delivered: the CPU one message cost, counting
	// everything the guest did for it (the daemon, the kernel, the
	// clients).
	GuestBusy   float64 `json:"guest_busy"`
	CPUPerMsgUs float64 `json:"cpu_us_per_msg"`
}

// Unreported is the number of messages neither delivered nor reported lost.
func (r Rate) Unreported() uint64 {
	if r.Delivered+r.Reported >= r.Expected {
		return 0
	}
	return r.Expected - r.Delivered - r.Reported
}

// Finish computes PerSec and Valid from the counts and the elapsed time.
func (r *Rate) Finish(elapsed time.Duration) {
	r.Seconds = elapsed.Seconds()
	if r.Seconds > 0 {
		r.PerSec = float64(r.Delivered) / r.Seconds
	}
	r.Valid = r.Unreported() == 0
}

// SetCPU records the guest's CPU time over a run that took wall time on
// cpus CPUs, of which busy and total clock ticks (/proc/stat) were busy
// and counted. Call it after Finish.
func (r *Rate) SetCPU(busy, total uint64, wall time.Duration, cpus int) {
	if total == 0 {
		return
	}
	r.GuestBusy = float64(busy) / float64(total)
	if r.Delivered > 0 {
		r.CPUPerMsgUs = r.GuestBusy * wall.Seconds() * float64(cpus) / float64(r.Delivered) * 1e6
	}
}

// Ratio is a measured ratio against its target.
type Ratio struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
	// Limit is the target's bound (0: no target), a lower bound if
	// AtLeast, else an upper one; Combine judges the median against it.
	Limit   float64 `json:"limit,omitempty"`
	AtLeast bool    `json:"at_least,omitempty"`
}

// Scale is the cost of attaching N namespaces.
type Scale struct {
	N int `json:"namespaces"`
	// AttachSeconds is N AttachNamespace calls, one after the other;
	// AttachManySeconds the same namespaces in AttachNamespaces calls of
	// up to 1,000 each.
	AttachSeconds     float64 `json:"attach_seconds"`
	AttachManySeconds float64 `json:"attach_many_seconds"`
	ByHandSeconds     float64 `json:"by_hand_seconds"`
	RSSPerNsKiB       float64 `json:"rss_per_ns_kib"`
	GoroutinesPerNs   float64 `json:"goroutines_per_ns"`
	SlabPerNsKiB      float64 `json:"slab_per_ns_kib"`
	// HeapPerNsKiB and StackPerNsKiB split the Go runtime's part of the
	// RSS: live heap (HeapInuse) and goroutine stacks (StackInuse).
	HeapPerNsKiB  float64 `json:"heap_per_ns_kib"`
	StackPerNsKiB float64 `json:"stack_per_ns_kib"`
	// RuntimePerNsKiB is all the Go runtime holds from the kernel (Sys
	// less HeapReleased): heap, stacks and the runtime's own structures.
	// RSS above it is memory outside the Go runtime's accounts.
	RuntimePerNsKiB float64 `json:"runtime_per_ns_kib"`
	EchoP50us       float64 `json:"echo_p50_us"`
	EchoOneP50us    float64 `json:"echo_one_p50_us"`
	// RawEchoP50us and RawEchoOneP50us are the kernel's floor at the same
	// two moments: a raw netlink echo in the same namespace, no daemon.
	RawEchoP50us    float64 `json:"raw_echo_p50_us"`
	RawEchoOneP50us float64 `json:"raw_echo_one_p50_us"`
	// BusyAtRest and BusyAtRestOne are the share of the guest's CPU time
	// that was not idle over 2 s in which the bench did nothing: the
	// kernel's and the daemon's background work with N attached, and
	// with one.
	BusyAtRest    float64 `json:"busy_at_rest"`
	BusyAtRestOne float64 `json:"busy_at_rest_one"`
	Err           string  `json:"error,omitempty"`
}

// Results is everything one run measured, with where it ran.
type Results struct {
	Kernel     string    `json:"kernel"`
	CPU        string    `json:"cpu"`
	CPUs       int       `json:"cpus"`
	QEMU       string    `json:"qemu"`
	Started    time.Time `json:"started"`
	RoundTrips []Latency `json:"round_trips"`
	Rates      []Rate    `json:"rates"`
	Ratios     []Ratio   `json:"ratios"`
	Scale      []Scale   `json:"scale"`
	Notes      []string  `json:"notes,omitempty"`
	// Clocksource is the guest kernel's current clocksource, and
	// ClockReadNs what one time.Now cost in the guest (the median of
	// several loops), measured at the start of the run.
	Clocksource string  `json:"clocksource,omitempty"`
	ClockReadNs float64 `json:"clock_read_ns,omitempty"`
}

// Latency returns the round trips named name, or a zero Latency.
func (r *Results) Latency(name string) Latency {
	for _, l := range r.RoundTrips {
		if l.Name == name {
			return l
		}
	}
	return Latency{}
}

// Rate returns the rate named name with payload and receivers, or a zero Rate.
func (r *Results) Rate(name string, payload, receivers int) Rate {
	for _, x := range r.Rates {
		if x.Name == name && x.Payload == payload && x.Receivers == receivers {
			return x
		}
	}
	return Rate{}
}

// WriteJSON writes r as indented JSON.
func (r *Results) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Markdown renders r as markdown tables.
func (r *Results) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kernel %s, CPU %s (%d), QEMU %s, %s\n\n", r.Kernel, r.CPU, r.CPUs, r.QEMU, r.Started.UTC().Format(time.RFC3339))
	if r.Clocksource != "" {
		fmt.Fprintf(&b, "clocksource %s, time.Now %.0f ns\n\n", r.Clocksource, r.ClockReadNs)
	}
	b.WriteString("| round trip | n | p50 µs | p99 µs | mean µs |\n|---|---:|---:|---:|---:|\n")
	for _, l := range r.RoundTrips {
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f |\n", l.Name, l.N, l.P50us, l.P99us, l.MeanUs)
	}
	if len(r.Ratios) > 0 {
		b.WriteString("\n| ratio | value | target | met |\n|---|---:|---|---|\n")
		for _, x := range r.Ratios {
			fmt.Fprintf(&b, "| %s | %.2f | %s | %s |\n", x.Name, x.Value, x.Target, yesNo(x.Met))
		}
	}
	if len(r.Rates) > 0 {
		b.WriteString("\n| throughput | payload B | receivers | expected | delivered | reported lost | unreported | msg/s | CPU µs/msg | guest busy |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, x := range r.Rates {
			rate := fmt.Sprintf("%.0f", x.PerSec)
			if !x.Valid {
				rate = "not claimed"
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %s | %.1f | %.0f%% |\n", x.Name, x.Payload, x.Receivers, x.Expected, x.Delivered, x.Reported, x.Unreported(), rate,
				x.CPUPerMsgUs, 100*x.GuestBusy)
		}
	}
	if len(r.Scale) > 0 {
		b.WriteString("\n| namespaces | attach s | attach batched s | by hand s | RSS KiB/ns | Go runtime KiB/ns | heap KiB/ns | stacks KiB/ns | goroutines/ns | slab KiB/ns | echo p50 µs | echo p50 µs (1 attached) | raw echo p50 µs | raw echo p50 µs (1 attached) | guest busy at rest | guest busy at rest (1 attached) | error |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
		for _, s := range r.Scale {
			fmt.Fprintf(&b, "| %d | %.2f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f%% | %.1f%% | %s |\n", s.N, s.AttachSeconds, s.AttachManySeconds, s.ByHandSeconds,
				s.RSSPerNsKiB, s.RuntimePerNsKiB, s.HeapPerNsKiB, s.StackPerNsKiB, s.GoroutinesPerNs, s.SlabPerNsKiB, s.EchoP50us, s.EchoOneP50us,
				s.RawEchoP50us, s.RawEchoOneP50us, 100*s.BusyAtRest, 100*s.BusyAtRestOne, s.Err)
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}
