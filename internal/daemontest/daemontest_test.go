package daemontest

import (
	"fmt"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	var log strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&log, "line %d\n", i)
	}
	for _, tt := range []struct {
		log  string
		n    int
		want string
	}{
		{log.String(), 5, log.String()},
		{log.String(), 2, "(first 3 lines omitted)\nline 4\nline 5\n"},
		{"a\nb\nc", 2, "(first 1 lines omitted)\nb\nc"},
		{"", 2, ""},
	} {
		if got := tail(tt.log, tt.n); got != tt.want {
			t.Errorf("tail(%q, %d) = %q, want %q", tt.log, tt.n, got, tt.want)
		}
	}
}
