package quote

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	long := strings.Repeat("a", 100*1024)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", `""`},
		{"short", "red", `"red"`},
		{"escaped", "a\"b\x00", `"a\"b\x00"`},
		{"exactly Max", strings.Repeat("b", Max), `"` + strings.Repeat("b", Max) + `"`},
		{"one over", strings.Repeat("b", Max+1), `"` + strings.Repeat("b", Max) + `"…(65 bytes)`},
		{"100 KB", long, `"` + long[:Max] + `"…(102400 bytes)`},
		// "é" is 2 bytes: the 64th byte is its first, so it is dropped whole.
		{"cut character", strings.Repeat("x", Max-1) + "é" + long, `"` + strings.Repeat("x", Max-1) + `"…(102465 bytes)`},
		{"not UTF-8", strings.Repeat("\xff", Max+10), `"` + strings.Repeat(`\xff`, Max) + `"…(74 bytes)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := String(tt.in); got != tt.want {
				t.Errorf("String: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCut(t *testing.T) {
	if got := Cut("red", 3); got != "red" {
		t.Errorf("Cut(red, 3): got %q, want %q", got, "red")
	}
	if got, want := Cut("abcdé", 5), "abcd…(6 bytes)"; got != want {
		t.Errorf("Cut(abcdé, 5): got %q, want %q", got, want)
	}
}
