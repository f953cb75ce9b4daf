package bench

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// SpreadLimit is how far, as a fraction of the median, a boot's value may
// lie from the median of all boots before the value is marked as not
// holding from boot to boot (±15%).
const SpreadLimit = 0.15

// Stat summarises one value measured in several boots.
type Stat struct {
	N      int
	Median float64
	Min    float64
	Max    float64
}

// NewStat returns the median, minimum and maximum of values; the median of
// an even count is the mean of the two middle values.
func NewStat(values []float64) Stat {
	if len(values) == 0 {
		return Stat{}
	}
	v := slices.Clone(values)
	slices.Sort(v)
	s := Stat{N: len(v), Min: v[0], Max: v[len(v)-1]}
	if len(v)%2 == 1 {
		s.Median = v[len(v)/2]
	} else {
		s.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return s
}

// Spread is the largest distance of a boot's value from the median, as a
// fraction of the median.
func (s Stat) Spread() float64 {
	if s.Median == 0 {
		if s.Max == s.Min {
			return 0
		}
		return math.Inf(1)
	}
	return max(s.Max-s.Median, s.Median-s.Min) / math.Abs(s.Median)
}

// Wide reports whether the spread exceeds SpreadLimit.
func (s Stat) Wide() bool { return s.Spread() > SpreadLimit }

// cell renders the median and the range, and marks a wide spread.
func (s Stat) cell(format string) string {
	if s.N == 0 {
		return "—"
	}
	c := fmt.Sprintf(format+" ("+format+"–"+format+", ±%.0f%%)", s.Median, s.Min, s.Max, 100*s.Spread())
	if s.Wide() {
		c += " **wide**"
	}
	return c
}

// Load is the host's load average, sampled while one boot ran.
type Load struct {
	Samples   []float64 // 1-minute load averages
	OtherQEMU int       // the most QEMU processes seen besides the bench's own
}

// ParseLoad reads the samples mk/bench.mk writes while a boot runs: one
// line each, "UNIXTIME" followed by the fields of /proc/loadavg and then
// the number of QEMU processes running (the bench's own included).
func ParseLoad(r io.Reader) (Load, error) {
	var l Load
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return l, fmt.Errorf("load sample %q: %v", sc.Text(), err)
		}
		l.Samples = append(l.Samples, v)
		if len(f) >= 7 {
			if q, err := strconv.Atoi(f[6]); err == nil && q-1 > l.OtherQEMU {
				l.OtherQEMU = q - 1
			}
		}
	}
	return l, sc.Err()
}

// CombinedRatio is one ratio across boots, judged by its median.
type CombinedRatio struct {
	Name   string
	Target string
	Stat   Stat
	Met    bool
}

// Combined is several boots' results of the same code.
type Combined struct {
	Boots []*Results
	Loads []Load // by boot; may be shorter than Boots
}

// Ratios returns every ratio of the first boot that has a name, in its
// order, with its values from all boots that measured it. A ratio with a
// target is met when its median is.
func (c *Combined) Ratios() []CombinedRatio {
	var out []CombinedRatio
	for _, name := range c.names(func(r *Results) []string {
		var n []string
		for _, x := range r.Ratios {
			n = append(n, x.Name)
		}
		return n
	}) {
		var vals []float64
		cr := CombinedRatio{Name: name, Met: true}
		var limit float64
		var atLeast bool
		for _, b := range c.Boots {
			for _, x := range b.Ratios {
				if x.Name == name {
					vals = append(vals, x.Value)
					cr.Target, limit, atLeast = x.Target, x.Limit, x.AtLeast
				}
			}
		}
		cr.Stat = NewStat(vals)
		switch {
		case limit == 0:
		case atLeast:
			cr.Met = cr.Stat.Median >= limit
		default:
			cr.Met = cr.Stat.Median <= limit
		}
		out = append(out, cr)
	}
	return out
}

// names returns the names list gives for each boot, first seen first,
// without repeats.
func (c *Combined) names(list func(*Results) []string) []string {
	var out []string
	for _, b := range c.Boots {
		for _, n := range list(b) {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// Markdown renders the boots' medians and ranges as markdown tables.
func (c *Combined) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d boots; each value is the median (min–max, largest distance from the median); **wide**: a boot lies more than ±%.0f%% from the median.\n\n", len(c.Boots), 100*SpreadLimit)
	b.WriteString("| boot | started | kernel | clocksource | time.Now ns | host load (1 min) min / median / max | other QEMU processes |\n|---:|---|---|---|---:|---|---:|\n")
	for i, r := range c.Boots {
		load, other := "not recorded", "—"
		if i < len(c.Loads) && len(c.Loads[i].Samples) > 0 {
			s := NewStat(c.Loads[i].Samples)
			load = fmt.Sprintf("%.2f / %.2f / %.2f", s.Min, s.Median, s.Max)
			other = strconv.Itoa(c.Loads[i].OtherQEMU)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %.0f | %s | %s |\n", i+1, r.Started.UTC().Format("2006-01-02 15:04:05"), r.Kernel, r.Clocksource, r.ClockReadNs, load, other)
	}
	if rs := c.Ratios(); len(rs) > 0 {
		b.WriteString("\n| ratio | median (min–max, spread) | target | met (median) |\n|---|---|---|---|\n")
		for _, r := range rs {
			met := "—"
			if r.Target != "" {
				met = yesNo(r.Met)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.Name, r.Stat.cell("%.2f"), r.Target, met)
		}
	}
	rts := c.names(func(r *Results) []string {
		var n []string
		for _, l := range r.RoundTrips {
			n = append(n, l.Name)
		}
		return n
	})
	if len(rts) > 0 {
		b.WriteString("\n| round trip | p50 µs | p99 µs |\n|---|---|---|\n")
		for _, name := range rts {
			var p50, p99 []float64
			for _, r := range c.Boots {
				if l := r.Latency(name); l.N > 0 {
					p50 = append(p50, l.P50us)
					p99 = append(p99, l.P99us)
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", name, NewStat(p50).cell("%.1f"), NewStat(p99).cell("%.0f"))
		}
	}
	type rateKey struct {
		name       string
		payload, n int
	}
	var keys []rateKey
	for _, r := range c.Boots {
		for _, x := range r.Rates {
			if k := (rateKey{x.Name, x.Payload, x.Receivers}); !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	if len(keys) > 0 {
		b.WriteString("\n| throughput | payload B | receivers | msg/s | CPU µs/msg | guest busy % | boots not claimed |\n|---|---:|---:|---|---|---|---:|\n")
		for _, k := range keys {
			var vals, cpu, busy []float64
			invalid := 0
			for _, r := range c.Boots {
				x := r.Rate(k.name, k.payload, k.n)
				if x.Name == "" {
					continue
				}
				if !x.Valid {
					invalid++
					continue
				}
				vals = append(vals, x.PerSec)
				if x.GuestBusy > 0 {
					cpu = append(cpu, x.CPUPerMsgUs)
					busy = append(busy, 100*x.GuestBusy)
				}
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s | %d |\n", k.name, k.payload, k.n, NewStat(vals).cell("%.0f"),
				NewStat(cpu).cell("%.1f"), NewStat(busy).cell("%.0f"), invalid)
		}
	}
	var notes []string
	for i, r := range c.Boots {
		for _, n := range r.Notes {
			notes = append(notes, fmt.Sprintf("boot %d: %s", i+1, n))
		}
		for _, s := range r.Scale {
			if s.Err != "" {
				notes = append(notes, fmt.Sprintf("boot %d: scale %d: %s", i+1, s.N, s.Err))
			}
		}
	}
	for _, n := range notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	if len(notes) > 0 {
		b.WriteString("\n")
	}
	return b.String()
}
