// Command report turns what the vmtest guest wrote to its results port
// into the vmtest report. test/netns/vm/lib/run.sh runs it once the guest
// has stopped:
//
//	report -steps 'insmod NAME.test ... rmmod' [-extra-label LABEL] [-verbose]
//		[-klog FILE] [-counts FILE] [-summary FILE] RESULTS
//
// The guest (test/netns/vm/guest/init.sh) frames everything with marker
// lines:
//
//	@@vmtest begin STEP              output of STEP follows
//	@@vmtest end STEP rc=N start=S stop=S
//	@@vmtest klog STEP               kernel log written during STEP follows
//	@@vmtest tainted N               /proc/sys/kernel/tainted at the end
//	@@vmtest done                    the guest finished
//
// A marker can follow output that did not end its line, so it is searched
// anywhere in a line. STEP is insmod, rmmod, extra (the command VM_CMD) or
// NAME.test, a test binary run with -test.v, whose output go tool test2json
// turns into test events.
//
// The report, on standard output: for each test binary, the === RUN and
// --- PASS lines of passing tests and all the output of failing and
// skipped tests, then its exit status; the results of the module steps and
// the extra command; with -verbose, every line the steps wrote instead of
// their tests' output. Then the summary (into the -summary file if one is
// named): each failure and the lines that say why, for a test the lines it
// logged (t.Log, t.Error, t.Fatal: "file_test.go:123: message") without the
// further lines of multi-line messages such as a daemon's log.
//
// Into the -klog file go the kernel log lines as "STEP<TAB>line"; into the
// -counts file "passed failed skipped done tainted" (done 1 if the guest
// finished, tainted "-" if it did not say), then each failure's name on a
// line of its own. -steps lists the steps the guest must run, in order; one
// that did not begin is a failure. -extra-label names the extra step in the
// report.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

func main() {
	var (
		o                     options
		steps                 string
		klog, counts, summary string
	)
	flag.StringVar(&steps, "steps", "", "the steps the guest must run, in order, separated by spaces")
	flag.StringVar(&o.extraLabel, "extra-label", "extra", "how the report names the extra step")
	flag.BoolVar(&o.verbose, "verbose", false, "print every line the steps wrote")
	flag.StringVar(&klog, "klog", "", "write the kernel log to `file`, as STEP<TAB>line")
	flag.StringVar(&counts, "counts", "", "write the counts and the failures to `file`")
	flag.StringVar(&summary, "summary", "", "write the summary of the failures to `file`, not to standard output")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: report [flags] RESULTS")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	o.steps = strings.Fields(steps)
	if err := run(o, flag.Arg(0), klog, counts, summary); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

// run reports on the results file: the report on standard output, the
// other files where they are named ("" for none; the summary then goes to
// standard output).
func run(o options, results, klog, counts, summary string) (err error) {
	in, err := os.Open(results)
	if err != nil {
		return err
	}
	defer in.Close()
	klogW, closeKlog, err := create(klog)
	if err != nil {
		return err
	}
	defer closeKlog(&err)
	out := bufio.NewWriter(os.Stdout)
	r := newReporter(o, out, klogW)
	if err := r.read(in); err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return err
	}
	countsW, closeCounts, err := create(counts)
	if err != nil {
		return err
	}
	defer closeCounts(&err)
	r.writeCounts(countsW)
	summaryW := io.Writer(os.Stdout)
	if summary != "" {
		w, closeSummary, err := create(summary)
		if err != nil {
			return err
		}
		defer closeSummary(&err)
		summaryW = w
	}
	r.writeSummary(summaryW)
	return nil
}

// create creates the file name ("": a writer that discards) and returns
// it buffered, with a function that flushes and closes it and sets *err if
// that fails and *err is nil.
func create(name string) (io.Writer, func(*error), error) {
	if name == "" {
		return io.Discard, func(*error) {}, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, nil, err
	}
	w := bufio.NewWriter(f)
	return w, func(err *error) {
		ferr := w.Flush()
		if cerr := f.Close(); ferr == nil {
			ferr = cerr
		}
		if *err == nil {
			*err = ferr
		}
	}, nil
}

type options struct {
	steps      []string // the steps the guest must run
	extraLabel string   // the extra step's name in the report
	verbose    bool     // print every line the steps wrote
}

// A reporter reads the results file and reports on it.
type reporter struct {
	o    options
	w    io.Writer // the report
	klog io.Writer // STEP<TAB>kernel log line

	section  string // "step" or "klog" while the lines are theirs, else ""
	step     *step  // the step that began last
	klogStep string // the step the kernel log lines belong to
	begun    map[string]bool

	passed, skipped int
	failures        []failure
	done            bool   // the guest said it finished
	tainted         string // what it said of its taint flags
}

// A step is what the guest ran between its begin and end markers.
type step struct {
	name string
	out  []string // its output lines
}

// A failure is one failure of the run.
type failure struct {
	name  string   // how the counts file and run.sh name it
	why   string   // "failed", "exited 1", ...
	lines []string // what it said about it (summaryLines)
}

func newReporter(o options, w, klog io.Writer) *reporter {
	return &reporter{o: o, w: w, klog: klog, begun: make(map[string]bool)}
}

// marker is how marker lines begin.
const marker = "@@vmtest "

// read reads the results file to its end, and then fails each step that
// did not finish or did not begin.
func (r *reporter) read(in io.Reader) error {
	br := bufio.NewReader(in)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			line = strings.TrimRight(strings.TrimSuffix(line, "\n"), "\r")
			if err := r.line(line); err != nil {
				return err
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if r.section == "step" {
		// The guest stopped in the middle of the step.
		if err := r.finishStep("", 0); err != nil {
			return err
		}
	}
	for _, name := range r.o.steps {
		if !r.begun[name] {
			r.fail(name, name, "was not run", nil)
		}
	}
	return nil
}

func (r *reporter) line(line string) error {
	i := strings.Index(line, marker)
	if i < 0 {
		r.content(line)
		return nil
	}
	if i > 0 {
		r.content(line[:i])
	}
	return r.marker(strings.Fields(line[i+len(marker):]))
}

// marker acts on a marker line's fields. Any marker ends the step that
// began before it; without an end marker's rc= the step did not finish.
func (r *reporter) marker(f []string) error {
	if r.section == "step" {
		secs := number(field(f, "stop")) - number(field(f, "start"))
		if err := r.finishStep(field(f, "rc"), secs); err != nil {
			return err
		}
	}
	r.section = ""
	if len(f) == 0 {
		return nil
	}
	arg := ""
	if len(f) > 1 {
		arg = f[1]
	}
	switch f[0] {
	case "begin":
		r.section = "step"
		r.startStep(arg)
	case "klog":
		r.section = "klog"
		r.klogStep = arg
	case "tainted":
		r.tainted = arg
	case "done":
		r.done = true
	}
	return nil
}

// field is the value of key=value among a marker's arguments, or "".
func field(f []string, key string) string {
	for i := 1; i < len(f); i++ {
		if v, ok := strings.CutPrefix(f[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// number is s as a number, 0 if it is none.
func number(s string) float64 {
	n, _ := strconv.ParseFloat(s, 64)
	return n
}

func (r *reporter) content(line string) {
	switch r.section {
	case "klog":
		fmt.Fprintf(r.klog, "%s\t%s\n", r.klogStep, line)
	case "step":
		if r.o.verbose {
			fmt.Fprintln(r.w, line)
		}
		r.step.out = append(r.step.out, line)
	}
}

// emit prints what a step wrote, unless every line was printed already.
func (r *reporter) emit(text string) {
	if !r.o.verbose {
		fmt.Fprint(r.w, text)
	}
}

// fail counts a failure: name in the counts file, "vmtest: FAIL: SUBJECT
// WHY" in the report unless subject is empty (a test whose own output says
// it failed), and why and lines in the summary.
func (r *reporter) fail(name, subject, why string, lines []string) {
	r.failures = append(r.failures, failure{name: name, why: why, lines: lines})
	if subject != "" {
		fmt.Fprintf(r.w, "vmtest: FAIL: %s %s\n", subject, why)
	}
}

func (r *reporter) startStep(name string) {
	r.step = &step{name: name}
	r.begun[name] = true
	if strings.HasSuffix(name, ".test") {
		fmt.Fprintf(r.w, "vmtest: running %s\n", name)
	}
}

// finishStep reports on the step that began last, which exited rc ("" if
// the guest stopped in the middle of it) after secs seconds.
func (r *reporter) finishStep(rc string, secs float64) error {
	st := r.step
	r.section = ""
	took := ""
	if rc != "" {
		took = fmt.Sprintf(" (%.1f s)", secs)
	}
	switch {
	case strings.HasSuffix(st.name, ".test"):
		return r.finishBinary(st, rc, took)
	case st.name == "extra":
		r.finishExtra(st, rc, took)
	default:
		r.finishModuleStep(st, rc)
	}
	return nil
}

// finishExtra reports the extra command as the test extra-label.
func (r *reporter) finishExtra(st *step, rc, took string) {
	label := r.o.extraLabel
	fmt.Fprintf(r.w, "=== RUN   %s\n", label)
	if rc == "0" {
		fmt.Fprintf(r.w, "--- PASS: %s%s\n", label, took)
		r.passed++
		return
	}
	r.emit(joinLines(st.out))
	fmt.Fprintf(r.w, "--- FAIL: %s%s\n", label, took)
	r.fail(label, label, exitedWhy(rc), lastLines(st.out))
}

// finishModuleStep reports insmod or rmmod: the first line it wrote if
// it succeeded, else all of them.
func (r *reporter) finishModuleStep(st *step, rc string) {
	if rc == "0" {
		first := ""
		if len(st.out) > 0 {
			first = ": " + st.out[0]
		}
		fmt.Fprintf(r.w, "vmtest: %s: ok%s\n", st.name, first)
		return
	}
	r.emit(joinLines(st.out))
	why := "did not finish"
	if rc != "" {
		why = "failed with status " + rc
	}
	r.fail(st.name, st.name, why, lastLines(st.out))
}

func exitedWhy(rc string) string {
	if rc == "" {
		return "did not finish"
	}
	return "exited " + rc
}

func joinLines(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

func (r *reporter) writeCounts(w io.Writer) {
	done := 0
	if r.done {
		done = 1
	}
	tainted := r.tainted
	if tainted == "" {
		tainted = "-"
	}
	fmt.Fprintln(w, r.passed, len(r.failures), r.skipped, done, tainted)
	for _, f := range r.failures {
		fmt.Fprintln(w, f.name)
	}
}

// writeSummary writes each failure and its lines, if anything failed.
func (r *reporter) writeSummary(w io.Writer) {
	if len(r.failures) == 0 {
		return
	}
	fmt.Fprintln(w, "vmtest: the failures and what they said:")
	for _, f := range r.failures {
		fmt.Fprintf(w, "  %s: %s\n", f.name, f.why)
		for _, l := range f.lines {
			fmt.Fprintf(w, "    %s\n", l)
		}
	}
}
