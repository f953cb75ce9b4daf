# shellcheck shell=bash
# Booting the guest and judging what came out of it.

# Kernel log lines that fail the run: warnings, oopses, the sanitizers'
# and lock checkers' reports, leaks, hangs, panics.
readonly KLOG_PATTERNS=(
	'WARNING:' 'BUG:' 'kernel BUG' 'Oops' 'Call Trace:' 'general protection fault'
	'KASAN:' 'UBSAN:' 'KFENCE:' 'unreferenced object' 'kmemleak:.*suspected memory leak'
	'possible recursive locking' 'possible circular locking dependency'
	'inconsistent lock state' 'suspicious RCU usage' 'DEBUG_LOCKS_WARN_ON'
	'INFO: task .* blocked' 'rcu.*detected stalls?' 'soft lockup' 'hard LOCKUP'
	'Kernel panic' 'list_(add|del) corruption' 'refcount_t: '
	'ref_tracker: .*has [0-9]+/[0-9]+ users'
)

# Taint flags that mean the kernel hit trouble: M machine check, B bad page,
# D died (oops), W warning, L soft lockup. (O and E, out-of-tree and
# unsigned, are expected for the module under test.)
readonly BAD_TAINT_BITS=(4:M 5:B 7:D 9:W 14:L)

# How the guest's progress lines on the console start: not kernel output.
readonly GUEST_PROGRESS='^vmtest: guest: '

# Boot the kernel with the initramfs. The console (first serial port) is
# shown live and saved; the guest writes results to the second one.
boot_guest() {
	CONSOLE_LOG=$VM_BUILD/console.log
	RESULTS_FILE=$VM_BUILD/results.txt
	rm -f "$CONSOLE_LOG" "$RESULTS_FILE"
	local qemu=(
		qemu-system-x86_64 -nodefaults -no-user-config
		-accel "tcg,thread=multi" -cpu max -smp "$QEMU_SMP" -m "$QEMU_MEM"
		-display none -no-reboot
		-kernel "$KERNEL_IMAGE" -initrd "$INITRAMFS"
		-append "console=ttyS0 quiet panic=-1${VM_KERNEL_ARGS:+ $VM_KERNEL_ARGS}"
		-serial stdio -serial "file:$RESULTS_FILE"
	)
	log "[boot+run] qemu-system-x86_64 -smp $QEMU_SMP -m $QEMU_MEM (limit ${VM_TIMEOUT} s)"
	local statuses
	set +o errexit
	timeout --kill-after=10 "$VM_TIMEOUT" "${qemu[@]}" </dev/null 2>&1 | stdbuf -oL tr -d '\r' | tee "$CONSOLE_LOG"
	statuses=("${PIPESTATUS[@]}")
	set -o errexit
	QEMU_STATUS=${statuses[0]}
	case $QEMU_STATUS in
	0) ;;
	124 | 137) log "[boot+run] the guest did not finish within VM_TIMEOUT=$VM_TIMEOUT s; QEMU stopped" ;;
	*) die "QEMU failed (status $QEMU_STATUS); see the lines above" ;;
	esac
	[[ -f $RESULTS_FILE ]] || die "QEMU wrote no results file"
}

# boot_guest, once more if the guest's kernel crashed while booting,
# before the guest began any step: nothing of the project had run yet.
# Under TCG with a thread per vCPU, 6.12 has been seen to oops at boot on an
# int3 of its own code patching (text_poke_bp) that the other vCPU hit. The
# crashed boot's console is kept; a second crash fails the run as usual.
boot_guest_retrying() {
	boot_guest
	if [[ -f $RESULTS_FILE ]] && ! grep -q '@@vmtest begin' "$RESULTS_FILE" &&
		grep -qE 'Oops|Kernel panic|BUG:' "$CONSOLE_LOG"; then
		cp "$CONSOLE_LOG" "$VM_BUILD/console-boot-crash.log"
		log "[boot+run] the guest's kernel crashed while booting, before any step began; booting once more (that console: $VM_BUILD/console-boot-crash.log)"
		boot_guest
	fi
}

# Print the "STEP<TAB>line" kernel log lines that match KLOG_PATTERNS.
find_kernel_reports() {
	local file=$1 pattern
	pattern=$(IFS='|'; printf '%s' "${KLOG_PATTERNS[*]}")
	grep -E -- "$pattern" "$file" || true
}

# The kernel log of STEP from its line matching TEXT on, for the first report.
print_kernel_report() {
	local klog=$1 step=$2 text=$3
	awk -F '\t' -v step="$step" -v text="$text" '
		$1 == step && (shown || index($0, text)) { shown++; print "  " substr($0, length($1) + 2) }
		shown >= 30 { exit }' "$klog"
}

# Fail the run (through add_failure) on any kernel problem in the guest's
# kernel log or on the console, then on bad taint flags.
check_kernel_log() {
	local klog=$VM_BUILD/kernel.log console_only=$VM_BUILD/console-kernel.log reports problems first
	# Console lines that are also in the guest's kernel log are reported once.
	grep -vE "$GUEST_PROGRESS" "$CONSOLE_LOG" | grep -vxFf <(cut -f2- "$klog") |
		sed 's/^/console\t/' >"$console_only" || true
	reports=$(find_kernel_reports "$klog"; find_kernel_reports "$console_only")
	problems=$reports
	if [[ -n $VM_KLOG_IGNORE && -n $reports ]]; then
		problems=$(grep -vE -- "$VM_KLOG_IGNORE" <<<"$reports" || true)
	fi
	if [[ -n $problems ]]; then
		log "FAIL: the kernel log has $(wc -l <<<"$problems") problem line(s):"
		awk -F '\t' '{ print "  " ($1 == "console" ? "on the console" : "during " $1) ": " substr($0, length($1) + 2) }' <<<"$problems"
		first=$(head -n 1 <<<"$problems")
		log "the first report in full:"
		if [[ ${first%%$'\t'*} == console ]]; then
			print_kernel_report "$console_only" console "${first#*$'\t'}"
		else
			print_kernel_report "$klog" "${first%%$'\t'*}" "${first#*$'\t'}"
		fi
		log "the whole kernel log: $klog (STEP<TAB>line)"
		add_failure "kernel log"
	elif [[ -n $reports ]]; then
		# The taint flags are then explained by the ignored reports.
		log "ignored $(wc -l <<<"$reports") kernel report line(s) matching VM_KLOG_IGNORE"
	else
		check_taint
	fi
}

check_taint() {
	local entry bit letter flags=""
	[[ $TAINTED =~ ^[0-9]+$ ]] || return 0
	for entry in "${BAD_TAINT_BITS[@]}"; do
		bit=${entry%%:*} letter=${entry#*:}
		if ((TAINTED >> bit & 1)); then
			flags+=$letter
		fi
	done
	if [[ -n $flags ]]; then
		log "FAIL: the kernel is tainted ($TAINTED: $flags) though its log shows no report"
		add_failure "kernel taint"
	fi
}

add_failure() {
	FAILED=$((FAILED + 1))
	FAILURES+=("$1")
}

# Steps the guest must run, in order, as the guest and the report name them.
expected_steps() {
	local name steps=(insmod)
	for name in "${TEST_NAMES[@]}"; do
		steps+=("$name.test")
	done
	[[ -z $VM_CMD ]] || steps+=(extra)
	steps+=(rmmod)
	printf '%s\n' "${steps[*]}"
}

# Report what the guest wrote (with the program REPORT_PROGRAM, which
# also writes the kernel log, the counts and the failures' summary), then
# judge the kernel log and how the guest ended. The summary comes last,
# before the totals, where a short tail of the output still shows it.
report_results() {
	local counts=$VM_BUILD/counts.txt summary=$VM_BUILD/summary.txt passed skipped finished verbose=()
	FAILURES=()
	log "results:"
	[[ -z $VM_VERBOSE ]] || verbose=(-verbose)
	"$REPORT_PROGRAM" -steps "$(expected_steps)" -extra-label "extra: $VM_CMD" "${verbose[@]}" \
		-klog "$VM_BUILD/kernel.log" -counts "$counts" -summary "$summary" "$RESULTS_FILE"
	{
		read -r passed FAILED skipped finished TAINTED
		mapfile -t FAILURES
	} <"$counts"
	local failed_before=$FAILED
	check_kernel_log
	if [[ $QEMU_STATUS != 0 ]]; then
		log "FAIL: the guest did not finish within VM_TIMEOUT=$VM_TIMEOUT s (see the last step above)"
		add_failure "time limit"
	elif ((finished == 0)); then
		log "FAIL: the guest stopped before finishing (kernel panic?)"
		if ((FAILED == failed_before)); then
			log "the last console lines:"
			tail -n 30 "$CONSOLE_LOG" | sed 's/^/  /'
		fi
		add_failure "guest stopped"
	fi
	cat "$summary"
	print_stage_times
	((FAILED == 0)) || log "failed: $(printf '%s; ' "${FAILURES[@]}" | sed 's/; $//')"
	log "$passed passed, $FAILED failed, $skipped skipped"
	((FAILED == 0))
}
