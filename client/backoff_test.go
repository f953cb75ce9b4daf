package client

import (
	"testing"
	"time"
)

func TestRetryWaitBounded(t *testing.T) {
	b := retryWait{min: 10 * time.Millisecond, max: 300 * time.Millisecond}
	if d := b.next(); d != 0 {
		t.Errorf("first wait %v, want 0", d)
	}
	// Then min, doubling up to max, each less up to half at random.
	for i, full := range []time.Duration{10, 20, 40, 80, 160, 300, 300} {
		full *= time.Millisecond
		if i == 5 || i == 6 {
			full = 300 * time.Millisecond
		}
		if d := b.next(); d < full/2 || d > full {
			t.Errorf("wait %d: %v, want %v..%v", i+1, d, full/2, full)
		}
	}
	for range 1000 {
		if d := b.next(); d > b.max || d < b.max/2 {
			t.Fatalf("wait %v outside %v..%v", d, b.max/2, b.max)
		}
	}
	b.reset()
	if d := b.next(); d != 0 {
		t.Errorf("wait after reset %v, want 0", d)
	}
}
