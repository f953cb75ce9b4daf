package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"unicode/utf8"
)

// endOfOutput is fed to test2json after a binary's output. go test ends a
// failed binary's output the same way ("FAIL\tpackage"): test2json then
// reports the results it still holds, which a binary that panicked or was
// killed right after a test's --- line never lets it report otherwise. Its
// own output event is dropped.
const endOfOutput = "FAIL\tvmtest: end of output\n"

// An event is one of test2json's test events (go doc cmd/test2json).
type event struct {
	Action  string
	Test    string
	Elapsed float64 // with -t
	Output  string
}

// testEvents converts the output of the test binary name with go tool
// test2json.
func testEvents(name string, out []string) ([]event, error) {
	cmd := exec.Command("go", "tool", "test2json", "-t", "-p", name)
	cmd.Stdin = strings.NewReader(joinLines(out) + endOfOutput)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	js, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go tool test2json for %s: %v: %s", name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var events []event
	dec := json.NewDecoder(bytes.NewReader(js))
	for {
		var e event
		if err := dec.Decode(&e); errors.Is(err, io.EOF) {
			return events, nil
		} else if err != nil {
			return nil, fmt.Errorf("go tool test2json for %s: %v", name, err)
		}
		events = append(events, e)
	}
}

// A testRun is one run of a top-level test, with its subtests.
type testRun struct {
	name    string
	tests   []string          // it and its subtests, in the order they started
	results map[string]result // of those that finished
	out     strings.Builder   // everything they wrote
	said    []said            // the summary lines among it
}

type result struct {
	action  string // pass, fail or skip
	elapsed float64
}

// said is a summary line and the test that wrote it.
type said struct{ test, line string }

// finishBinary reports on the test binary st, which exited rc ("" if the
// guest stopped while it ran) and took took.
func (r *reporter) finishBinary(st *step, rc, took string) error {
	events, err := testEvents(st.name, st.out)
	if err != nil {
		return err
	}
	var (
		runs      []*testRun              // in the order they started
		latest    = map[string]*testRun{} // the last run of each top-level test
		finished  []*testRun              // in the order they finished
		loose     strings.Builder         // output of no test
		looseSaid []string
		lines     summaryLines
	)
	for _, e := range events {
		top, _, _ := strings.Cut(e.Test, "/")
		tr := latest[top]
		switch e.Action {
		case "run":
			if e.Test == top {
				tr = &testRun{name: top, results: make(map[string]result)}
				runs = append(runs, tr)
				latest[top] = tr
			}
			if tr != nil {
				tr.tests = append(tr.tests, e.Test)
			}
		case "pass", "fail", "skip":
			if tr == nil {
				break
			}
			if _, again := tr.results[e.Test]; !again && e.Test == top {
				finished = append(finished, tr)
			}
			tr.results[e.Test] = result{e.Action, e.Elapsed}
		case "output":
			if e.Output == endOfOutput {
				continue
			}
			if tr != nil {
				tr.out.WriteString(e.Output)
			} else {
				loose.WriteString(e.Output)
			}
			for _, line := range lines.add(e.Output) {
				if tr != nil {
					tr.said = append(tr.said, said{e.Test, line})
				} else {
					looseSaid = append(looseSaid, line)
				}
			}
		}
	}

	failures := 0
	for _, tr := range finished {
		switch tr.results[tr.name].action {
		case "pass":
			r.passed++
			r.emit(tr.frame())
		case "skip":
			r.skipped++
			r.emit(tr.out.String())
		default:
			r.emit(tr.out.String())
			r.fail(st.name+"/"+tr.name, "", "failed", tr.summary())
			failures++
		}
	}
	for _, tr := range runs {
		if _, ok := tr.results[tr.name]; ok {
			continue
		}
		r.emit(tr.out.String())
		why := "the guest stopped"
		if rc != "" {
			why = "the binary exited " + rc
		}
		r.fail(st.name+"/"+tr.name, tr.name, "has no result ("+why+")", tr.summary())
		failures++
	}
	if rc != "0" && loose.Len() > 0 {
		r.emit(loose.String())
	}
	switch {
	case rc == "":
		r.fail(st.name, st.name, "did not finish", cut(looseSaid))
	case rc != "0" && failures == 0:
		why := "exited " + rc
		if rc == "137" {
			why += " (killed: per-binary time limit)"
		}
		r.fail(st.name, st.name, why, cut(looseSaid))
	}
	if rc != "" {
		none := ""
		if len(runs) == 0 {
			none = ", ran no tests matching VM_RUN"
		}
		fmt.Fprintf(r.w, "vmtest: %s exited %s%s%s\n", st.name, rc, took, none)
	}
	return nil
}

// frame is what the report shows of a passing test: the === RUN line of
// it and its subtests, then their results as go test prints them.
func (tr *testRun) frame() string {
	var b strings.Builder
	for _, name := range tr.tests {
		fmt.Fprintf(&b, "=== RUN   %s\n", name)
	}
	// A subtest's parent is the longest name before one of its slashes
	// that started (a subtest's own name can hold a slash).
	started := make(map[string]bool)
	for _, name := range tr.tests {
		started[name] = true
	}
	children := make(map[string][]string)
	for _, name := range tr.tests[1:] {
		parent := name
		for {
			i := strings.LastIndexByte(parent, '/')
			if i < 0 {
				parent = tr.name
				break
			}
			if parent = parent[:i]; started[parent] {
				break
			}
		}
		children[parent] = append(children[parent], name)
	}
	var results func(name, indent string)
	results = func(name, indent string) {
		if res, ok := tr.results[name]; ok {
			fmt.Fprintf(&b, "%s--- %s: %s (%.2fs)\n", indent, strings.ToUpper(res.action), name, res.elapsed)
		}
		for _, child := range children[name] {
			results(child, indent+"    ")
		}
	}
	results(tr.name, "")
	return b.String()
}

// summary is what the summary shows of a failed test: the summary lines
// of it and of its subtests that did not pass or skip.
func (tr *testRun) summary() []string {
	var lines []string
	for _, s := range tr.said {
		if a := tr.results[s.test].action; a != "pass" && a != "skip" {
			lines = append(lines, s.line)
		}
	}
	return cut(lines)
}

var (
	// logLine is how a test's t.Log, t.Error or t.Fatal line begins.
	logLine = regexp.MustCompile(`^( *)[\w.+-]+\.go:\d+: `)
	// crashLine is how the Go runtime says a program crashed.
	crashLine = regexp.MustCompile(`^(panic|fatal error): `)
)

// summaryLines picks, from the lines of a binary's output, those that say
// why a test failed: the lines its t.Log, t.Error and t.Fatal calls wrote
// ("    file_test.go:123: message") and the runtime's "panic: " and "fatal
// error: " lines. The further lines of a multi-line message (indented
// deeper than its first, such as a daemon's log) are not among them.
type summaryLines struct {
	partial   string // output not yet ended by a newline
	inMessage bool   // the last line picked began a message ...
	indent    int    // ... indented this much, and the lines since are its
}

// add takes the next output and returns the summary lines it ends.
func (s *summaryLines) add(out string) []string {
	var picked []string
	s.partial += out
	for {
		line, rest, ok := strings.Cut(s.partial, "\n")
		if !ok {
			break
		}
		s.partial = rest
		if s.pick(line) {
			picked = append(picked, line)
		}
	}
	return picked
}

func (s *summaryLines) pick(line string) bool {
	indent := len(line) - len(strings.TrimLeft(line, " "))
	if s.inMessage && indent > s.indent {
		return false
	}
	s.inMessage = false
	if m := logLine.FindStringSubmatch(line); m != nil {
		s.inMessage, s.indent = true, len(m[1])
		return true
	}
	return crashLine.MatchString(line)
}

// Of the summary lines of a failure, the summary shows the first and last
// few, each shortened to at most maxLineLen bytes.
const (
	maxLines   = 10
	maxLineLen = 400
)

// cut shortens lines for the summary: the first and last maxLines/2 when
// there are more than maxLines, each without its indent and at most
// maxLineLen bytes long.
func cut(lines []string) []string {
	if len(lines) > maxLines {
		head, tail := lines[:maxLines/2], lines[len(lines)-maxLines/2:]
		omitted := fmt.Sprintf("(%d more lines)", len(lines)-len(head)-len(tail))
		lines = append(append(append([]string(nil), head...), omitted), tail...)
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if len(l) > maxLineLen {
			n := maxLineLen
			for n > 0 && !utf8.RuneStart(l[n]) {
				n--
			}
			l = l[:n] + " [...]"
		}
		out[i] = l
	}
	return out
}

// lastLines is what the summary shows of a step that is not a test
// binary: the last of its lines that are not empty.
func lastLines(lines []string) []string {
	var kept []string
	for i := len(lines) - 1; i >= 0 && len(kept) < maxLines; i-- {
		if strings.TrimSpace(lines[i]) != "" {
			kept = append(kept, lines[i])
		}
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	return cut(kept)
}
