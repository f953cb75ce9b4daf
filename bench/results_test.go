package bench

import (
	"strings"
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	var s []time.Duration
	for i := 100; i >= 1; i-- {
		s = append(s, time.Duration(i)*time.Microsecond)
	}
	l := Summarise("x", s)
	if l.N != 100 || l.P50us != 50 || l.P99us != 99 || l.MeanUs != 50.5 {
		t.Errorf("Summarise: want n 100, p50 50, p99 99, mean 50.5; got %+v", l)
	}
	if l := Summarise("one", []time.Duration{7 * time.Microsecond}); l.P50us != 7 || l.P99us != 7 {
		t.Errorf("Summarise of one sample: want p50 = p99 = 7; got %+v", l)
	}
}

func TestRateValidity(t *testing.T) {
	r := Rate{Expected: 100, Delivered: 90, Reported: 10}
	r.Finish(time.Second)
	if !r.Valid || r.PerSec != 90 {
		t.Errorf("all losses reported: want valid, 90/s; got valid %v, %v/s", r.Valid, r.PerSec)
	}
	r = Rate{Expected: 100, Delivered: 90, Reported: 5}
	r.Finish(time.Second)
	if r.Valid || r.Unreported() != 5 {
		t.Errorf("5 unreported: want not valid, 5 unreported; got valid %v, %d", r.Valid, r.Unreported())
	}
	r.SetCPU(50, 200, 2*time.Second, 2)
	if r.GuestBusy != 0.25 || r.CPUPerMsgUs != 0.25*2*2/90*1e6 {
		t.Errorf("50 of 200 ticks busy over 2 s on 2 CPUs, 90 delivered: want busy 0.25, %.1f µs/msg; got %v, %.1f", 0.25*2*2/90*1e6, r.GuestBusy, r.CPUPerMsgUs)
	}
	res := Results{Rates: []Rate{r}}
	if md := res.Markdown(); !strings.Contains(md, "not claimed") {
		t.Errorf("markdown of an invalid rate: want \"not claimed\"; got\n%s", md)
	}
}

func TestStatMedianRangeSpread(t *testing.T) {
	for _, tc := range []struct {
		vals             []float64
		median, min, max float64
		wide             bool
	}{
		{[]float64{1.2, 1.0, 1.1}, 1.1, 1.0, 1.2, false},      // ±9%
		{[]float64{0.44, 0.88, 0.57}, 0.57, 0.44, 0.88, true}, // +54%
		{[]float64{1.0, 0.86, 1.0}, 1.0, 0.86, 1.0, false},    // -14%
		{[]float64{1.0, 0.84, 1.0}, 1.0, 0.84, 1.0, true},     // -16%
		{[]float64{2, 1, 4, 3}, 2.5, 1, 4, true},              // even count: mean of the middle two
		{[]float64{5}, 5, 5, 5, false},
	} {
		s := NewStat(tc.vals)
		if s.Median != tc.median || s.Min != tc.min || s.Max != tc.max || s.Wide() != tc.wide {
			t.Errorf("NewStat(%v): want median %v, min %v, max %v, wide %v; got median %v, min %v, max %v, wide %v (spread %.3f)",
				tc.vals, tc.median, tc.min, tc.max, tc.wide, s.Median, s.Min, s.Max, s.Wide(), s.Spread())
		}
	}
}

func TestCombinedRatiosAndMarkdown(t *testing.T) {
	boot := func(echo, delivery float64, rate float64, valid bool) *Results {
		r := &Results{}
		ratio(r, "d/(a+f) admin echo p50", echo, 1.2)
		atLeast(r, "delivery to 1, 64 B", delivery, 0.8)
		r.Rates = []Rate{{Name: "delivery nsbrokerd", Payload: 64, Receivers: 1, PerSec: rate, Valid: valid,
			GuestBusy: rate / 2000, CPUPerMsgUs: 1e6 / rate}}
		return r
	}
	// Boot 2 misses the echo target and boot 3 meets it: the median (boot 1) decides.
	c := Combined{Boots: []*Results{boot(1.15, 0.9, 1000, true), boot(1.3, 0.5, 1100, true), boot(1.1, 0.85, 5000, false)}}
	rs := c.Ratios()
	if len(rs) != 2 {
		t.Fatalf("Ratios: want 2; got %+v", rs)
	}
	if rs[0].Stat.Median != 1.15 || rs[0].Stat.Min != 1.1 || rs[0].Stat.Max != 1.3 || !rs[0].Met || rs[0].Stat.Wide() {
		t.Errorf("echo ratio: want median 1.15 (1.1–1.3), met, not wide; got %+v, met %v, spread %.3f", rs[0].Stat, rs[0].Met, rs[0].Stat.Spread())
	}
	if rs[1].Stat.Median != 0.85 || !rs[1].Met || !rs[1].Stat.Wide() {
		t.Errorf("delivery ratio: want median 0.85, met, wide (0.5 is 41%% below); got %+v, met %v", rs[1].Stat, rs[1].Met)
	}
	l, err := ParseLoad(strings.NewReader("1765100000 0.50 0.40 0.30 1/200 999 1\n1765100005 2.50 0.90 0.35 3/210 1000 2\n1765100010 1.00 0.95 0.36 1/200 1001 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.Loads = []Load{l}
	md := c.Markdown()
	for _, want := range []string{
		"| d/(a+f) admin echo p50 | 1.15 (1.10–1.30, ±13%) | ≤ 1.2 | yes |",
		"| delivery to 1, 64 B | 0.85 (0.50–0.90, ±41%) **wide** | ≥ 0.80 | yes |",
		// the invalid rate of boot 3 is left out of the median and counted
		"| delivery nsbrokerd | 64 | 1 | 1050 (1000–1100, ±5%) | 954.5 (909.1–1000.0, ±5%) | 52 (50–55, ±5%) | 1 |",
		"| 0.50 / 1.00 / 2.50 | 1 |", // boot 1's load; one other QEMU at most
		"| 3 | 0001-01-01 00:00:00 |  |  | 0 | not recorded | — |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown: want a line with %q; got\n%s", want, md)
		}
	}
}
