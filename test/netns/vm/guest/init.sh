#!/bin/busybox sh
# shellcheck shell=dash
# PID 1 of the test VM (busybox sh). Sets the machine up, loads the module,
# runs each test binary and the extra command, and writes everything to the
# results port (the second serial port), framed by "@@vmtest" marker lines
# that the host's report program (test/netns/vm/report) reads. Then reboots:
# QEMU runs with -no-reboot, so that ends it (poweroff would halt a kernel
# without ACPI).

PATH=/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
HOME=/root
TMPDIR=/tmp
export PATH HOME TMPDIR

RESULTS=/dev/ttyS1
CONFIG=/vmtest
MODULE=$(cat "$CONFIG/module")
MODULE_NAME=$(cat "$CONFIG/module_name")
TEST_TIMEOUT=$(cat "$CONFIG/timeout")

mount_filesystems() {
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mkdir -p /dev/pts /dev/shm
	mount -t devpts devpts /dev/pts
	mount -t tmpfs tmpfs /dev/shm
	mount -t tmpfs tmpfs /run
	mount -t tmpfs tmpfs /tmp
	ln -s /run /var/run
	# cgroup v2, where tests hold the daemon to the deployment's memory
	# limit.
	mount -t cgroup2 cgroup2 /sys/fs/cgroup
	# Only for kmemleak on debug kernels; harmless elsewhere.
	mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
	# kmemleak's periodic scan holds its lock while it walks all memory,
	# minutes under emulation, and every allocation meanwhile waits for
	# it: the suites scan once, at the end (report_kernel_state).
	if [ -w /sys/kernel/debug/kmemleak ]; then
		echo scan=off >/sys/kernel/debug/kmemleak
	fi
	ip link set lo up
}

# Write a marker line to the results port.
mark() { echo "@@vmtest $*" >&3; }

# Progress for the console, which the host shows as it happens.
progress() { echo "vmtest: guest: $*"; }

uptime_secs() {
	read -r up _ </proc/uptime
	echo "$up"
}

# run_step NAME DIR COMMAND...: run a command in DIR with the test
# environment and a time limit, its output framed by begin/end markers.
run_step() {
	name=$1 dir=$2
	shift 2
	progress "running $name"
	mark "begin $name"
	start=$(uptime_secs)
	(cd "$dir" && exec env NSB_VM=1 NSB_MODULE="$MODULE" \
		timeout -s KILL $((TEST_TIMEOUT + 30)) "$@") </dev/null >&3 2>&1
	rc=$?
	mark "end $name rc=$rc start=$start stop=$(uptime_secs)"
	report_kernel_log "$name"
	return $rc
}

load_modules() {
	if [ -f /kmod/veth.ko ]; then
		insmod /kmod/veth.ko || return
	fi
	# shellcheck disable=SC2046 # module parameters are separate words
	insmod "$MODULE" $(cat "$CONFIG/kmod_args") || return
	echo "loaded $MODULE_NAME, unit $(cat "/sys/module/$MODULE_NAME/parameters/unit" 2>/dev/null)"
}

unload_module() {
	if [ ! -d "/sys/module/$MODULE_NAME" ]; then
		echo "$MODULE_NAME already unloaded"
		return 0
	fi
	rmmod "$MODULE_NAME"
}

run_test_binaries() {
	run=$(cat "$CONFIG/run")
	testargs=$(cat "$CONFIG/testargs")
	while read -r name; do
		# shellcheck disable=SC2086 # VM_TESTARGS are separate words
		run_step "$name.test" "/tests/$name" "./$name.test" -test.v -test.run "$run" \
			-test.timeout "${TEST_TIMEOUT}s" $testargs
	done <"$CONFIG/tests"
}

run_extra_command() {
	[ -f "$CONFIG/cmd" ] || return 0
	# By path: busybox's env and timeout would run their own sh applet.
	run_step extra /extra /bin/sh -c "$(cat "$CONFIG/cmd")"
}

# The kernel log since the last call, attributed to the step that just ran
# (read and cleared, so a long run cannot overflow the ring buffer).
report_kernel_log() {
	mark "klog $1"
	dmesg -c >&3
}

# kmemleak's report where the kernel has it, and the taint flags.
report_kernel_state() {
	if [ -w /sys/kernel/debug/kmemleak ]; then
		# kmemleak skips objects younger than 5 s; let the last
		# step's allocations (the rmmod) age past that first.
		sleep 6
		echo scan >/sys/kernel/debug/kmemleak
		mark "klog kmemleak"
		cat /sys/kernel/debug/kmemleak >&3
	fi
	report_kernel_log end
	mark "tainted $(cat /proc/sys/kernel/tainted)"
}

main() {
	mount_filesystems
	stty -F "$RESULTS" raw -echo
	exec 3>"$RESULTS"
	report_kernel_log boot
	if run_step insmod / env VMTEST_STEP=load_modules /init; then
		run_test_binaries
		run_extra_command
		# Stray processes left by tests would hold the results port open
		# and could keep the module busy.
		kill -KILL -1 2>/dev/null
		run_step rmmod / env VMTEST_STEP=unload_module /init
	fi
	report_kernel_state
	mark "done"
	# Setting the port's mode waits until everything written has been sent.
	stty -F "$RESULTS" raw
	exec 3>&-
	progress "finished"
	reboot -f
}

# run_step runs programs, not shell functions: the module steps re-enter
# this script with VMTEST_STEP naming the function.
case ${VMTEST_STEP:-} in
load_modules | unload_module) "$VMTEST_STEP" ;;
*) main ;;
esac
