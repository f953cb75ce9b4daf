# The kernel matrix: which kernel KERNEL= names, for `make vmtest`,
# `make kmod-check` and `make kmod`. See test/netns/kernels/README.md.
#
#   (unset) or 6.1   Debian 12's cloud kernel, installed on the host
#   6.12             Debian 13's cloud kernel, built in a trixie chroot
#   7                Debian unstable's cloud kernel, built in a sid chroot
#   debug            the debug kernel of mk/debug.mk (6.1)
#
#   make kernels     make or reuse the chroots of every series
#
# Works whether it is included before or after mk/vm.mk and mk/debug.mk:
# the kernel settings are overrides whose values are computed when a recipe
# runs.

KERNELS_SCRIPT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))../test/netns/kernels/setup.sh)
# The series whose kernel is built in a chroot of its Debian suite.
CHROOT_KERNELS := 6.12 7
KNOWN_KERNELS := 6.1 $(CHROOT_KERNELS) debug

ifneq ($(filter-out $(KNOWN_KERNELS),$(KERNEL)),)
$(error KERNEL=$(KERNEL) is unknown: use one of $(KNOWN_KERNELS), or leave it unset for 6.1, the host's Debian cloud kernel)
endif
ifneq ($(word 2,$(KERNEL)),)
$(error KERNEL=$(KERNEL) names more than one kernel)
endif

.PHONY: kernels kernel-setup

kernels:
	@for s in $(CHROOT_KERNELS); do $(KERNELS_SCRIPT) $$s >/dev/null || exit 1; done

# The chroot of KERNEL's series; nothing for the other kernels.
kernel-setup:
ifneq ($(filter $(CHROOT_KERNELS),$(KERNEL)),)
	@$(KERNELS_SCRIPT) $(KERNEL) >/dev/null
endif

ifneq ($(filter $(CHROOT_KERNELS),$(KERNEL)),)
# setup.sh --print's NAME=value lines, read once, when a recipe first needs
# them (after kernel-setup has run).
KERNEL_SETTINGS = $(eval KERNEL_SETTINGS := $(shell $(KERNELS_SCRIPT) --print $(KERNEL)))$(KERNEL_SETTINGS)
kernel_setting = $(patsubst $(1)=%,%,$(filter $(1)=%,$(KERNEL_SETTINGS)))
override KERNEL_CHROOT = $(call kernel_setting,KERNEL_CHROOT)
override KERNEL_IMAGE = $(call kernel_setting,KERNEL_IMAGE)
override KERNEL_MODULES = $(call kernel_setting,KERNEL_MODULES)
override KDIR = $(call kernel_setting,KDIR)
vmtest: kernel-setup
endif

# kmod_in_chroot TARGET: make TARGET of kmod/ against KERNEL's headers in
# its chroot, from a copy in .build/kmod-KERNEL (kbuild writes its objects
# beside the sources, and the host's own builds use kmod/).
kmod_in_chroot = rm -rf $(CURDIR)/.build/kmod-$(KERNEL) && mkdir -p $(CURDIR)/.build/kmod-$(KERNEL) && \
	cp -r kmod/. $(CURDIR)/.build/kmod-$(KERNEL)/ && \
	$(KERNELS_SCRIPT) --run $(KERNEL) $(CURDIR)/.build/kmod-$(KERNEL) -- \
		sh -c 'make clean KDIR=$(KDIR) >/dev/null && make $(1) KDIR=$(KDIR)'
