// Package quote puts strings that came from a client into messages,
// bounded. A gRPC status message travels in a header, and gRPC C-core
// and Java clients refuse headers over 8 KiB: a message that echoes a
// client's string whole turns the intended status into INTERNAL there.
// Every name, path or reference a message shows goes through String.
package quote

import (
	"strconv"
	"unicode/utf8"
)

// Max is the most bytes of a string that String shows.
const Max = 64

// String quotes s as strconv.Quote does when it is at most Max bytes. A
// longer s shows only its first Max bytes, cut at a character boundary
// and quoted, then "…(N bytes)" with its whole length: the result of a
// string of any length is at most a few hundred bytes.
func String(s string) string {
	if len(s) <= Max {
		return strconv.Quote(s)
	}
	return strconv.Quote(prefix(s, Max)) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// Cut returns s when it is at most n bytes, otherwise its first n bytes,
// cut at a character boundary, then "…(N bytes)" with its whole length.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return prefix(s, n) + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// prefix is the first n bytes of s, less the start of a character
// that the cut would split: that one is dropped rather than shown as
// \x escapes. Bytes that are not UTF-8 stay as they are.
func prefix(s string, n int) string {
	for i := n - 1; i >= 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if r, size := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError && i+size > n {
				return s[:i]
			}
			break
		}
	}
	return s[:n]
}
