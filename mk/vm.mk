# `make vmtest`: build nsbroker.ko and the in-guest test binaries, boot them
# in QEMU on a Debian kernel and report. See test/netns/README.md.
#
# Every setting is a make variable; override on the command line, e.g.
#   make vmtest VM_PKGS=./family VM_RUN='^TestIntegrationEcho$$'
#   make vmtest VM_EXTRA=/tmp/mytests VM_CMD='sh ./run.sh'
# (make expands '$', so write '$$' for a literal '$').

# Go packages whose tests run in the guest, in this order. Missing packages
# and packages without test files are skipped with a note.
VM_PKGS ?= ./test/netns/kmodtest ./family ./broker ./test/netns/e2e ./test/netns/docs ./isolation ./test/netns/cni ./test/netns/fault ./test/netns/abuse
# Commands built static and installed in the guest at /usr/local/bin (on
# PATH for the tests and VM_CMD). Missing packages are skipped with a note.
VM_BINS ?= ./cmd/nsbrokerd ./cmd/nsbrokerctl ./cmd/nsbroker-isolation-check ./cmd/nsbroker-cni
# Commands of other modules, `go install`ed static at a pinned version (from
# the Go module proxy) into the guest's /usr/local/bin beside VM_BINS.
# grpcurl runs the documented grpcurl commands (test/netns/docs).
GRPCURL_VERSION ?= v1.9.3
VM_GO_INSTALL ?= github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
# -test.run pattern, and more flags for every test binary.
VM_RUN ?= ^TestIntegration
VM_TESTARGS ?=
# A directory copied into the guest at /extra and a command run there after
# the suites; its exit status counts as the pseudo-test "extra: <command>".
VM_EXTRA ?=
VM_CMD ?=
# Seconds for the whole boot and run, and for each test binary.
VM_TIMEOUT ?= 900
VM_TEST_TIMEOUT ?= 600
# Print every line the guest wrote, not only test results and failures.
VM_VERBOSE ?=
# Extended regex of kernel log lines that must not fail the run.
VM_KLOG_IGNORE ?=
# The module: its source directory and insmod parameters.
VM_KMOD_DIR ?= kmod
VM_KMOD_ARGS ?=
# Where artifacts go.
VM_BUILD ?= $(CURDIR)/.build/vm

# The kernel: empty means the newest installed Debian cloud kernel
# (/boot/vmlinuz-<version>-cloud-amd64 and /lib/modules/<version>/build).
# Set both to boot another one, e.g. a debug build; KERNEL= (mk/kernels.mk)
# names the kernels of the test matrix. With KERNEL_CHROOT the module is
# built in that chroot, KDIR a path in it; KERNEL_MODULES is where the
# kernel's own modules are (default /lib/modules/<release>).
KERNEL_IMAGE ?=
KDIR ?=
KERNEL_CHROOT ?=
KERNEL_MODULES ?=
QEMU_MEM ?= 2048
QEMU_SMP ?= 2
# Added to the guest kernel's command line, e.g. tsc=reliable clocksource=tsc.
VM_KERNEL_ARGS ?=

VM_SCRIPT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))../test/netns/vm/vmtest.sh)
VM_SETTINGS := VM_PKGS VM_BINS VM_GO_INSTALL VM_RUN VM_TESTARGS VM_EXTRA VM_CMD VM_TIMEOUT \
	VM_TEST_TIMEOUT VM_VERBOSE VM_KLOG_IGNORE VM_KMOD_DIR VM_KMOD_ARGS \
	VM_BUILD KERNEL_IMAGE KDIR KERNEL_CHROOT KERNEL_MODULES QEMU_MEM QEMU_SMP \
	VM_KERNEL_ARGS

# Single-quote a value for the shell, so commands and patterns pass intact.
vm_quote = '$(subst ','\'',$(1))'

.PHONY: vmtest
vmtest:
	@$(foreach v,$(VM_SETTINGS),$(v)=$(call vm_quote,$($(v)))) bash $(VM_SCRIPT)
