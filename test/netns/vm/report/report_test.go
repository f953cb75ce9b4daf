package main

import (
	"fmt"
	"strings"
	"testing"
)

// results is what a guest could write: a module step, a binary with a
// passing test, parallel subtests, a failure that dumps a daemon's log and
// a skip; one killed in the middle of a test; one that ran no tests; one
// that panicked; one that exited 1 after its tests passed; the extra
// command; and the kernel log between them.
const results = `@@vmtest klog boot
[    0.000000] Linux version 6.1.0-57-cloud-amd64
@@vmtest begin insmod
loaded nsbroker, unit 25
@@vmtest end insmod rc=0 start=1.00 stop=1.50
@@vmtest klog insmod
[    1.200000] nsbroker: loaded
@@vmtest begin kmodtest.test
=== RUN   TestPass
    pass_test.go:9: progress
=== RUN   TestPass/a
    pass_test.go:10: in a
=== RUN   TestPass/b
=== RUN   TestPass/b/deep
    pass_test.go:12: deep
--- PASS: TestPass (0.01s)
    --- PASS: TestPass/a (0.00s)
    --- PASS: TestPass/b (0.00s)
        --- PASS: TestPass/b/deep (0.00s)
=== RUN   TestPar
=== RUN   TestPar/x
=== PAUSE TestPar/x
=== RUN   TestPar/y
=== PAUSE TestPar/y
=== CONT  TestPar/x
=== CONT  TestPar/y
=== NAME  TestPar/x
    par_test.go:21: par x
=== NAME  TestPar/y
    par_test.go:21: par y
--- PASS: TestPar (0.02s)
    --- PASS: TestPar/x (0.01s)
    --- PASS: TestPar/y (0.02s)
=== RUN   TestRestart
    restart_test.go:30: restarting the daemon
=== RUN   TestRestart/first
=== PAUSE TestRestart/first
=== RUN   TestRestart/second
=== PAUSE TestRestart/second
=== CONT  TestRestart/first
=== CONT  TestRestart/second
=== NAME  TestRestart/first
    restart_test.go:41: subscriber one is back
=== NAME  TestRestart/second
    restart_test.go:44: daemon did not come back: context deadline exceeded
=== NAME  TestRestart
    daemontest.go:160: nsbrokerd (pid 812) log:
        {"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"listening"}
        {"time":"2026-01-01T00:00:01Z","level":"DEBUG","msg":"attach","ns":"a"}
        restart.go:17: not a message of the test
        {"time":"2026-01-01T00:00:02Z","level":"INFO","msg":"stopping"}
--- FAIL: TestRestart (5.00s)
    --- PASS: TestRestart/first (1.00s)
    --- FAIL: TestRestart/second (5.00s)
=== RUN   TestSkip
    skip_test.go:35: no kernel
--- SKIP: TestSkip (0.00s)
FAIL
@@vmtest end kmodtest.test rc=1 start=2.00 stop=9.25
@@vmtest klog kmodtest.test
@@vmtest begin fault.test
=== RUN   TestDone
--- PASS: TestDone (0.10s)
=== RUN   TestHang
    hang_test.go:40: waiting for the subscriber
=== RUN   TestHang/inner
    hang_test.go:41: still wai@@vmtest end fault.test rc=137 start=9.50 stop=640.00
@@vmtest klog fault.test
[  640.000000] WARNING: CPU: 1 PID: 99 at kmod/nsbroker.c:12
@@vmtest begin empty.test
testing: warning: no tests to run
PASS
@@vmtest end empty.test rc=0 start=640.10 stop=640.20
@@vmtest klog empty.test
@@vmtest begin panic.test
=== RUN   TestPanic
    panic_test.go:14: before
--- FAIL: TestPanic (0.00s)
panic: boom [recovered, repanicked]

goroutine 19 [running]:
testing.tRunner.func1.2({0x552000, 0x595a60})
	/usr/local/go/src/testing/testing.go:1974 +0x232
@@vmtest end panic.test rc=2 start=641.00 stop=641.50
@@vmtest klog panic.test
@@vmtest begin leak.test
=== RUN   TestA
--- PASS: TestA (0.00s)
PASS
goroutines left running: 3
@@vmtest end leak.test rc=1 start=642.00 stop=643.00
@@vmtest klog leak.test
@@vmtest begin extra
ok
@@vmtest end extra rc=0 start=643.00 stop=643.70
@@vmtest klog extra
@@vmtest begin rmmod
@@vmtest end rmmod rc=0 start=644.00 stop=644.10
@@vmtest klog rmmod
@@vmtest klog end
@@vmtest tainted 512
@@vmtest done
`

type outputs struct{ report, klog, counts, summary string }

func report(t *testing.T, o options, results string) outputs {
	t.Helper()
	var report, klog, counts, summary strings.Builder
	r := newReporter(o, &report, &klog)
	if err := r.read(strings.NewReader(results)); err != nil {
		t.Fatal(err)
	}
	r.writeCounts(&counts)
	r.writeSummary(&summary)
	return outputs{report.String(), klog.String(), counts.String(), summary.String()}
}

var steps = strings.Fields("insmod kmodtest.test fault.test empty.test panic.test leak.test extra rmmod")

func TestReport(t *testing.T) {
	got := report(t, options{steps: steps, extraLabel: "extra: ./check.sh"}, results)

	wantCounts := `5 4 1 1 512
kmodtest.test/TestRestart
fault.test/TestHang
panic.test/TestPanic
leak.test
`
	if got.counts != wantCounts {
		t.Errorf("counts:\n%s\nwant:\n%s", got.counts, wantCounts)
	}
	wantKlog := "boot\t[    0.000000] Linux version 6.1.0-57-cloud-amd64\n" +
		"insmod\t[    1.200000] nsbroker: loaded\n" +
		"fault.test\t[  640.000000] WARNING: CPU: 1 PID: 99 at kmod/nsbroker.c:12\n"
	if got.klog != wantKlog {
		t.Errorf("kernel log:\n%s\nwant:\n%s", got.klog, wantKlog)
	}

	for _, want := range []string{
		"vmtest: insmod: ok: loaded nsbroker, unit 25\n",
		"vmtest: running kmodtest.test\n",
		// A passing test shows its framing only.
		"=== RUN   TestPass\n=== RUN   TestPass/a\n=== RUN   TestPass/b\n=== RUN   TestPass/b/deep\n" +
			"--- PASS: TestPass (0.01s)\n    --- PASS: TestPass/a (0.00s)\n" +
			"    --- PASS: TestPass/b (0.00s)\n        --- PASS: TestPass/b/deep (0.00s)\n",
		"=== RUN   TestPar\n=== RUN   TestPar/x\n=== RUN   TestPar/y\n" +
			"--- PASS: TestPar (0.02s)\n    --- PASS: TestPar/x (0.01s)\n    --- PASS: TestPar/y (0.02s)\n",
		// A failing or skipped test shows all of its output.
		"    restart_test.go:41: subscriber one is back\n",
		`        {"time":"2026-01-01T00:00:01Z","level":"DEBUG","msg":"attach","ns":"a"}` + "\n",
		"--- FAIL: TestRestart (5.00s)\n    --- PASS: TestRestart/first (1.00s)\n    --- FAIL: TestRestart/second (5.00s)\n",
		"=== RUN   TestSkip\n    skip_test.go:35: no kernel\n--- SKIP: TestSkip (0.00s)\n",
		"vmtest: kmodtest.test exited 1 (7.2 s)\n",
		"    hang_test.go:41: still wai\n",
		"vmtest: FAIL: TestHang has no result (the binary exited 137)\n",
		"vmtest: fault.test exited 137 (630.5 s)\n",
		"vmtest: empty.test exited 0 (0.1 s), ran no tests matching VM_RUN\n",
		"panic: boom [recovered, repanicked]\n",
		"vmtest: FAIL: leak.test exited 1\n",
		"PASS\ngoroutines left running: 3\n",
		"=== RUN   extra: ./check.sh\n--- PASS: extra: ./check.sh (0.7 s)\n",
		"vmtest: rmmod: ok\n",
	} {
		if !strings.Contains(got.report, want) {
			t.Errorf("the report lacks\n%s", want)
		}
	}
	for _, notWant := range []string{
		"in a\n", "par x\n", "warning: no tests to run", "vmtest: FAIL: fault.test",
	} {
		if strings.Contains(got.report, notWant) {
			t.Errorf("the report has %q", notWant)
		}
	}

	wantSummary := `vmtest: the failures and what they said:
  kmodtest.test/TestRestart: failed
    restart_test.go:30: restarting the daemon
    restart_test.go:44: daemon did not come back: context deadline exceeded
    daemontest.go:160: nsbrokerd (pid 812) log:
  fault.test/TestHang: has no result (the binary exited 137)
    hang_test.go:40: waiting for the subscriber
    hang_test.go:41: still wai
  panic.test/TestPanic: failed
    panic_test.go:14: before
    panic: boom [recovered, repanicked]
  leak.test: exited 1
`
	if got.summary != wantSummary {
		t.Errorf("summary:\n%s\nwant:\n%s", got.summary, wantSummary)
	}
}

// TestReportVerbose: every line is printed once, as it came.
func TestReportVerbose(t *testing.T) {
	got := report(t, options{steps: steps, extraLabel: "extra", verbose: true}, results)
	for _, want := range []string{"    pass_test.go:10: in a\n", "testing: warning: no tests to run\n", "\nok\n"} {
		if n := strings.Count(got.report, want); n != 1 {
			t.Errorf("the report has %q %d times, want once", want, n)
		}
	}
	if strings.Contains(got.report, "=== RUN   TestPass/b/deep\n--- PASS") {
		t.Error("the report has a passing test's framing after the lines it came from")
	}
}

// TestReportGuestStopped: the results end in the middle of a test.
func TestReportGuestStopped(t *testing.T) {
	const results = `@@vmtest begin insmod
loaded nsbroker, unit 25
@@vmtest end insmod rc=0 start=1.00 stop=1.50
@@vmtest begin fault.test
=== RUN   TestHang
    hang_test.go:40: waiting for the subscriber
`
	got := report(t, options{steps: strings.Fields("insmod fault.test rmmod")}, results)
	wantCounts := "0 3 0 0 -\nfault.test/TestHang\nfault.test\nrmmod\n"
	if got.counts != wantCounts {
		t.Errorf("counts:\n%s\nwant:\n%s", got.counts, wantCounts)
	}
	for _, want := range []string{
		"vmtest: FAIL: TestHang has no result (the guest stopped)\n",
		"vmtest: FAIL: fault.test did not finish\n",
		"vmtest: FAIL: rmmod was not run\n",
	} {
		if !strings.Contains(got.report, want) {
			t.Errorf("the report lacks\n%s", want)
		}
	}
	if strings.Contains(got.report, "exited") {
		t.Errorf("the report says fault.test exited:\n%s", got.report)
	}
	wantSummary := `vmtest: the failures and what they said:
  fault.test/TestHang: has no result (the guest stopped)
    hang_test.go:40: waiting for the subscriber
  fault.test: did not finish
  rmmod: was not run
`
	if got.summary != wantSummary {
		t.Errorf("summary:\n%s\nwant:\n%s", got.summary, wantSummary)
	}
}

// TestReportModuleFailed: insmod fails, nothing else runs.
func TestReportModuleFailed(t *testing.T) {
	const results = "@@vmtest begin insmod\r\ninsmod: can't insert '/kmod/nsbroker.ko': invalid parameters\r\n" +
		"@@vmtest end insmod rc=1 start=1.00 stop=1.50\r\n@@vmtest tainted 0\r\n@@vmtest done\r\n"
	got := report(t, options{steps: strings.Fields("insmod rmmod")}, results)
	if want := "0 2 0 1 0\ninsmod\nrmmod\n"; got.counts != want {
		t.Errorf("counts:\n%s\nwant:\n%s", got.counts, want)
	}
	want := "insmod: can't insert '/kmod/nsbroker.ko': invalid parameters\nvmtest: FAIL: insmod failed with status 1\n"
	if !strings.Contains(got.report, want) {
		t.Errorf("the report lacks\n%s\nit is:\n%s", want, got.report)
	}
	wantSummary := `vmtest: the failures and what they said:
  insmod: failed with status 1
    insmod: can't insert '/kmod/nsbroker.ko': invalid parameters
  rmmod: was not run
`
	if got.summary != wantSummary {
		t.Errorf("summary:\n%s\nwant:\n%s", got.summary, wantSummary)
	}
}

func TestCut(t *testing.T) {
	var lines []string
	for i := range 25 {
		lines = append(lines, fmt.Sprintf("    x_test.go:%d: line %d", i, i))
	}
	lines[3] += strings.Repeat("é", 300)
	got := cut(lines)
	if len(got) != maxLines+1 {
		t.Fatalf("%d lines, want %d:\n%s", len(got), maxLines+1, strings.Join(got, "\n"))
	}
	if got[0] != "x_test.go:0: line 0" || got[5] != "(15 more lines)" || got[10] != "x_test.go:24: line 24" {
		t.Errorf("got\n%s", strings.Join(got, "\n"))
	}
	if l := got[3]; len(l) > maxLineLen+len(" [...]") || !strings.HasSuffix(l, "é [...]") {
		t.Errorf("the long line is cut to %d bytes: %q", len(l), l)
	}
}
