#!/usr/bin/env bash
# Build nsbroker.ko and the in-guest test binaries, boot them in QEMU and
# report every test's result. Normally run by `make vmtest` (mk/vm.mk), which
# passes its settings as environment variables; test/netns/README.md explains
# them. Exits non-zero if anything failed.
set -euo pipefail

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$VM_DIR/../../.." && pwd)

: "${VM_PKGS=./test/netns/kmodtest ./family ./broker ./test/netns/e2e ./test/netns/docs ./isolation ./test/netns/cni ./test/netns/fault ./test/netns/abuse}"
: "${VM_BINS=./cmd/nsbrokerd ./cmd/nsbrokerctl ./cmd/nsbroker-isolation-check ./cmd/nsbroker-cni}"
: "${VM_GO_INSTALL=github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3}"
: "${VM_RUN=^TestIntegration}"
: "${VM_TESTARGS=}"
: "${VM_EXTRA=}"
: "${VM_CMD=}"
: "${VM_TIMEOUT:=900}"
: "${VM_TEST_TIMEOUT:=600}"
: "${VM_VERBOSE=}"
: "${VM_KLOG_IGNORE=}"
: "${VM_KMOD_DIR:=kmod}"
: "${VM_KMOD_ARGS=}"
: "${VM_BUILD:=$REPO_ROOT/.build/vm}"
: "${KERNEL_IMAGE=}"
: "${KDIR=}"
: "${KERNEL_CHROOT=}"
: "${KERNEL_MODULES=}"
: "${QEMU_MEM:=2048}"
: "${QEMU_SMP:=2}"
: "${VM_KERNEL_ARGS=}"

# The module's name; the guest loads it from $GUEST_MODULE.
readonly MODULE_NAME=nsbroker
readonly GUEST_MODULE=/kmod/$MODULE_NAME.ko
# Runs the module's build in a kernel's chroot (KERNEL_CHROOT).
readonly KERNELS_SCRIPT=$REPO_ROOT/test/netns/kernels/setup.sh

# shellcheck source=test/netns/vm/lib/common.sh
source "$VM_DIR/lib/common.sh"
# shellcheck source=test/netns/vm/lib/setup.sh
source "$VM_DIR/lib/setup.sh"
# shellcheck source=test/netns/vm/lib/build.sh
source "$VM_DIR/lib/build.sh"
# shellcheck source=test/netns/vm/lib/initramfs.sh
source "$VM_DIR/lib/initramfs.sh"
# shellcheck source=test/netns/vm/lib/run.sh
source "$VM_DIR/lib/run.sh"

check_settings() {
	local n
	for n in VM_TIMEOUT VM_TEST_TIMEOUT QEMU_MEM QEMU_SMP; do
		[[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, not '${!n}'"
	done
	if [[ -n $VM_EXTRA ]]; then
		[[ -d $VM_EXTRA ]] || die "VM_EXTRA=$VM_EXTRA is not a directory"
		[[ -n $VM_CMD ]] || die "VM_EXTRA is set but VM_CMD is empty: say what to run in /extra"
	fi
	if [[ -n $VM_KLOG_IGNORE ]]; then
		# grep exits 1 for "no match" and 2 for a bad pattern.
		local rc=0
		grep -qE -- "$VM_KLOG_IGNORE" </dev/null || rc=$?
		((rc < 2)) || die "VM_KLOG_IGNORE is not a valid extended regex"
	fi
}

# Create the build dir and hold its lock until exit: two runs sharing it
# would overwrite each other's root file system and results.
prepare_build_dir() {
	local lock_fd
	mkdir -p "$VM_BUILD/logs"
	exec {lock_fd}>"$VM_BUILD/.lock"
	if ! flock -n "$lock_fd"; then
		log "another vmtest is using $VM_BUILD; waiting for it (or set VM_BUILD)"
		flock "$lock_fd"
	fi
	# Keep the artifacts out of git wherever the build dir is.
	printf '*\n' >"$VM_BUILD/.gitignore"
}

main() {
	cd "$REPO_ROOT"
	check_settings
	prepare_build_dir
	run_stage install ensure_host_packages
	resolve_kernel
	run_stage module build_module
	run_stage tests build_test_binaries
	run_stage bins build_guest_programs
	run_stage initramfs pack_initramfs
	run_stage boot+run boot_guest_retrying
	report_results
}

main "$@"
