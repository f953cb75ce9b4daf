# The test VM's debug kernel (KASAN, UBSAN, lockdep, kmemleak, ...) and the
# module's netlink fuzzer. See test/netns/debugkernel/README.md.
#
#   make debugkernel           build the debug kernel, or reuse the cached one
#   make vmtest KERNEL=debug   the VM suites (mk/vm.mk) on the debug kernel
#   make fuzzmodule            the netlink fuzzer in the VM on the debug kernel
#                              (FUZZ_MESSAGES, FUZZ_SEED, FUZZ_ARGS)
#
# Works whether it is included before or after mk/vm.mk: the kernel settings
# are overrides whose values are computed when a recipe runs.

DEBUGKERNEL_SCRIPT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))../test/netns/debugkernel/build.sh)
# The cached kernel tree for the current inputs: computed on first use only.
DEBUG_KDIR = $(eval DEBUG_KDIR := $(shell $(DEBUGKERNEL_SCRIPT) --print-dir))$(DEBUG_KDIR)
DEBUG_KERNEL_IMAGE = $(DEBUG_KDIR)/arch/x86/boot/bzImage
# KASAN's shadow memory and quarantine need more than the default guest RAM.
DEBUG_QEMU_MEM ?= 2048

# The fuzzer: requests to hand the module (netlink messages it parses,
# several per datagram), the seed (empty: a new one each run) and more test
# flags (e.g. -nlfuzz.senders=6). Its time limit in the guest, in seconds:
# the fuzzer stops 90 s before it, runs its final checks, and fails for
# having sent too few (-nlfuzz.partial lets such a run pass).
FUZZ_MESSAGES ?= 1000000
FUZZ_SEED ?=
FUZZ_ARGS ?=
FUZZ_TEST_TIMEOUT ?= 3600

.PHONY: debugkernel fuzzmodule

debugkernel:
	@$(DEBUGKERNEL_SCRIPT)

# The debug kernel's checks make the suites several times slower: their
# time limits, unless given, are longer there.
DEBUG_VM_TIMEOUT ?= 2400
DEBUG_VM_TEST_TIMEOUT ?= 900

ifeq ($(KERNEL),debug)
override KERNEL_IMAGE = $(DEBUG_KERNEL_IMAGE)
override KDIR = $(DEBUG_KDIR)
ifeq ($(filter command line environment,$(origin QEMU_MEM)),)
override QEMU_MEM = $(DEBUG_QEMU_MEM)
endif
ifeq ($(filter command line environment,$(origin VM_TIMEOUT)),)
override VM_TIMEOUT = $(DEBUG_VM_TIMEOUT)
endif
ifeq ($(filter command line environment,$(origin VM_TEST_TIMEOUT)),)
override VM_TEST_TIMEOUT = $(DEBUG_VM_TEST_TIMEOUT)
endif
vmtest: debugkernel
endif

fuzzmodule: override KERNEL_IMAGE = $(DEBUG_KERNEL_IMAGE)
fuzzmodule: override KDIR = $(DEBUG_KDIR)
fuzzmodule: override KERNEL_CHROOT =
fuzzmodule: override KERNEL_MODULES =
fuzzmodule: override VM_PKGS = ./test/netns/nlfuzz
fuzzmodule: override VM_BINS =
fuzzmodule: override VM_GO_INSTALL =
fuzzmodule: override VM_TESTARGS = -nlfuzz.messages=$(FUZZ_MESSAGES) \
	$(if $(FUZZ_SEED),-nlfuzz.seed=$(FUZZ_SEED)) $(FUZZ_ARGS)
fuzzmodule: VM_TEST_TIMEOUT = $(FUZZ_TEST_TIMEOUT)
# Boot, module load and unload, and kmemleak's scan take a few minutes more.
fuzzmodule: VM_TIMEOUT = $(shell echo $$(($(FUZZ_TEST_TIMEOUT) + 300)))
# The fuzzer's counts and progress are the point of the run: show them.
fuzzmodule: VM_VERBOSE = 1
fuzzmodule: QEMU_MEM = $(DEBUG_QEMU_MEM)
fuzzmodule: debugkernel
	@$(foreach v,$(VM_SETTINGS),$(v)=$(call vm_quote,$($(v)))) bash $(VM_SCRIPT)
