# Turns what the guest wrote to its results port into the vmtest report.
#
# The guest (guest/init.sh) frames everything with marker lines:
#   @@vmtest begin STEP              output of STEP follows
#   @@vmtest end STEP rc=N start=S stop=S
#   @@vmtest klog STEP               kernel log written during STEP follows
#   @@vmtest tainted N               /proc/sys/kernel/tainted at the end
#   @@vmtest done                    the guest finished
# A marker can follow output that did not end its line, so it is searched
# anywhere in a line. STEP is insmod, rmmod, extra or NAME.test (go test -v).
#
# Environment: VMTEST_STEPS (the steps expected, in order), VMTEST_EXTRA_LABEL
# (how to name the extra step), VMTEST_VERBOSE (non-empty: print every output
# line), VMTEST_KLOG (file for "STEP<TAB>kernel line"), VMTEST_COUNTS (file for
# "passed failed skipped done tainted", then one line per failure).
#
# Go test output is attributed to its top-level test by the -test.v framing
# (=== RUN/PAUSE/CONT/NAME and --- PASS/FAIL/SKIP lines). Passing tests show
# only that framing; failing and skipped tests show all their output.

BEGIN {
	verbose = ENVIRON["VMTEST_VERBOSE"] != ""
	klog_file = ENVIRON["VMTEST_KLOG"]
	printf "" > klog_file
	nexpected = split(ENVIRON["VMTEST_STEPS"], expected, " ")
	section = ""
	tainted = ""
}

{
	sub(/\r+$/, "")
	p = index($0, "@@vmtest ")
	if (p == 0) {
		content($0)
		next
	}
	if (p > 1)
		content(substr($0, 1, p - 1))
	marker(substr($0, p + 9))
}

END {
	if (section == "step")
		finish_step(step, "", "")
	for (i = 1; i <= nexpected; i++)
		if (!(expected[i] in begun))
			fail(expected[i], expected[i] " was not run")
	print passed + 0, failed + 0, skipped + 0, done + 0, (tainted == "" ? "-" : tainted) > ENVIRON["VMTEST_COUNTS"]
	for (i = 1; i <= nfailures; i++)
		print failures[i] > ENVIRON["VMTEST_COUNTS"]
}

function marker(text,    f, n, i, kv) {
	n = split(text, f, " ")
	if (section == "step")
		finish_step(step, field(f, n, "rc"), field(f, n, "stop") - field(f, n, "start"))
	section = ""
	if (f[1] == "begin") {
		section = "step"
		start_step(f[2])
	} else if (f[1] == "klog") {
		section = "klog"
		klog_step = f[2]
	} else if (f[1] == "tainted") {
		tainted = f[2]
	} else if (f[1] == "done") {
		done = 1
	}
}

# The value of key=value among the marker's fields, or "".
function field(f, n, key,    i) {
	for (i = 2; i <= n; i++)
		if (index(f[i], key "=") == 1)
			return substr(f[i], length(key) + 2)
	return ""
}

function content(line) {
	if (section == "klog")
		print klog_step "\t" line > klog_file
	else if (section == "step") {
		if (verbose)
			print line
		step_out = step_out line "\n"
		if (step ~ /\.test$/)
			go_test_line(line)
	}
}

function fail(name, message) {
	failed++
	failures[++nfailures] = name
	if (message != "")
		print "vmtest: FAIL: " message
}

function emit(text) {
	if (!verbose)
		printf "%s", text
}

function start_step(name) {
	step = name
	begun[name] = 1
	step_out = ""
	loose = ""
	current = ""
	step_failures = 0
	ntests = 0
	split("", active)
	split("", out)
	split("", frame)
	if (name ~ /\.test$/)
		print "vmtest: running " name
}

# rc is "" when the guest stopped in the middle of the step.
function finish_step(name, rc, secs,    took) {
	section = ""
	took = (rc == "") ? "" : sprintf(" (%.1f s)", secs)
	if (name ~ /\.test$/)
		finish_go_binary(name, rc, took)
	else if (name == "extra")
		finish_extra(rc, took)
	else
		finish_module_step(name, rc)
}

function finish_go_binary(name, rc, took,    top) {
	flush_pending()
	for (top in active) {
		emit(out[top])
		fail(name "/" top, top " has no result (" (rc == "" ? "the guest stopped" : "the binary exited " rc) ")")
		step_failures++
	}
	if (rc != "0" && loose != "")
		emit(loose)
	if (rc == "") {
		fail(name, name " did not finish")
	} else if (rc != "0" && step_failures == 0) {
		fail(name, name " exited " rc (rc == "137" ? " (killed: per-binary time limit)" : ""))
	}
	if (rc != "")
		print "vmtest: " name " exited " rc took (ntests == 0 ? ", ran no tests matching VM_RUN" : "")
}

function finish_extra(rc, took,    label) {
	label = ENVIRON["VMTEST_EXTRA_LABEL"]
	print "=== RUN   " label
	if (rc == "0") {
		print "--- PASS: " label took
		passed++
		return
	}
	emit(step_out)
	print "--- FAIL: " label took
	fail(label, label (rc == "" ? " did not finish" : " exited " rc))
}

function finish_module_step(name, rc) {
	if (rc == "0") {
		print "vmtest: " name ": ok" (step_out == "" ? "" : ": " first_line(step_out))
		return
	}
	emit(step_out)
	fail(name, name (rc == "" ? " did not finish" : " failed with status " rc))
}

function first_line(s) {
	sub(/\n.*/, "", s)
	return s
}

# One line of go test -v output.
function go_test_line(line,    name, top) {
	if (line ~ /^ +--- (PASS|FAIL|SKIP): / && pending_top != "" && test_top(line) == pending_top) {
		# Results of parallel subtests follow their parent's result.
		pending_text = pending_text line "\n"
		return
	}
	flush_pending()
	if (line ~ /^=== (RUN|PAUSE|CONT|NAME) /) {
		top = test_top(line)
		if (line ~ /^=== RUN/ && index(line, "/") == 0) {
			ntests++
			active[top] = 1
			out[top] = ""
			frame[top] = ""
		}
		current = top
		out[top] = out[top] line "\n"
		if (line ~ /^=== RUN/)
			frame[top] = frame[top] line "\n"
		return
	}
	if (line ~ /^ *--- (PASS|FAIL|SKIP): /) {
		top = test_top(line)
		out[top] = out[top] line "\n"
		frame[top] = frame[top] line "\n"
		if (line ~ /^---/)
			finish_test(top, substr(line, 5, 4))
		return
	}
	if (current != "")
		out[current] = out[current] line "\n"
	else
		loose = loose line "\n"
}

# The top-level test a framing line names.
function test_top(line,    name) {
	name = line
	sub(/^=== [A-Z]+ +/, "", name)
	sub(/^ *--- [A-Z]+: /, "", name)
	sub(/ \([0-9.]+s\)$/, "", name)
	sub(/\/.*/, "", name)
	return name
}

# Count a finished top-level test; what it prints waits in pending_text for
# the results of its parallel subtests.
function finish_test(top, result) {
	delete active[top]
	current = ""
	pending_top = top
	if (result == "PASS") {
		pending_text = frame[top]
		passed++
	} else if (result == "SKIP") {
		pending_text = out[top]
		skipped++
	} else {
		pending_text = out[top]
		fail(step "/" top, "")
		step_failures++
	}
}

function flush_pending() {
	if (pending_top == "")
		return
	emit(pending_text)
	pending_top = ""
	pending_text = ""
}
