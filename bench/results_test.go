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
	res := Results{Rates: []Rate{r}}
	if md := res.Markdown(); !strings.Contains(md, "not claimed") {
		t.Errorf("markdown of an invalid rate: want \"not claimed\"; got\n%s", md)
	}
}
