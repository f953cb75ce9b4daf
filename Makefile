# nsbroker: top-level build and test.
#
#   make demo      nsbrokerd, three tenants and the isolation check in the VM
#   make test      everything CI runs: lint, host tests, the module's checks
#                  and the VM suites on Debian's 6.1, 6.12 and 7.x kernels,
#                  the VM suites on the debug kernel, and the module's
#                  netlink fuzzer
#   make vmtest    the in-kernel suites in a QEMU guest (see test/netns/README.md)
#   make bench     what the broker costs over the bare kernel and gRPC paths (VM)
#   make vmtest KERNEL=debug   the VM suites on a KASAN/lockdep/kmemleak kernel
#   make vmtest KERNEL=6.12    ... on Debian 13's kernel; KERNEL=7: Debian
#                  unstable's (mk/kernels.mk; kmod and kmod-check take KERNEL= too)
#   make fuzzmodule  the module's netlink fuzzer on that kernel
#   make fuzz      every Go fuzz target for FUZZTIME (default 60s) each
#   make kmod      build kmod/nsbroker.ko against the installed cloud kernel
#   make checkpatch  checkpatch.pl --strict on kmod/ (make -C kmod style)
#   make spec-check  kmod/nsbroker.yaml against the kernel's netlink-raw schema
#   make kmod-check  the module with sparse and W=1, warnings are errors
#   make proto     regenerate the gRPC code from proto/ (pinned generators)

export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin
GO ?= go
STATICCHECK_VERSION ?= v0.8.2
FUZZTIME ?= 60s
TIMED := mk/timed.sh
# The newest installed Debian cloud kernel's build dir, by version.
CLOUD_KDIR := $(shell ls -d /lib/modules/*-cloud-amd64/build 2>/dev/null | sort -V | tail -n 1)

include mk/vm.mk
include mk/demo.mk
include mk/packaging.mk
include mk/bench.mk
include mk/debug.mk
include mk/kernels.mk

.PHONY: all deps build kmod lint gotest kmod-check checkpatch spec-check test fuzz clean proto proto-check

# Generated code is committed; `make proto` regenerates it with these
# generator versions and Debian's protoc.
PROTOC_GEN_GO_VERSION ?= v1.36.12
PROTOC_GEN_GO_GRPC_VERSION ?= v1.6.0
PROTO_FILES := proto/nsbroker/v1/broker.proto
PROTO_BIN := $(CURDIR)/.build/bin

proto:
	@command -v protoc >/dev/null && test -f /usr/include/google/protobuf/timestamp.proto || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null; }
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(PROTO_BIN):$$PATH protoc -I proto -I /usr/include \
		--go_out=paths=source_relative:proto --go-grpc_out=paths=source_relative:proto $(PROTO_FILES)

# Fails when the committed generated code is not what `make proto` makes.
proto-check: proto
	@git diff --exit-code -- proto || { echo "generated code is stale: run make proto and commit"; exit 1; }

all: build kmod

deps:
	@mk/deps.sh

build:
	$(GO) build ./...

# KERNEL=6.12 or 7: in that kernel's chroot, from a copy in .build/kmod-KERNEL.
kmod: kernel-setup
ifneq ($(filter $(CHROOT_KERNELS),$(KERNEL)),)
	$(call kmod_in_chroot,modules)
else
	$(MAKE) -C kmod KDIR=$(or $(KDIR),$(CLOUD_KDIR))
endif

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

gotest:
	$(GO) test -race -count=1 ./...

kmod-check: kernel-setup
ifneq ($(filter $(CHROOT_KERNELS),$(KERNEL)),)
	$(call kmod_in_chroot,check)
else
	$(MAKE) -C kmod check KDIR=$(or $(KDIR),$(CLOUD_KDIR))
endif

# checkpatch.pl from Debian's linux-source-6.12, which mk/deps.sh installs.
checkpatch:
	$(MAKE) -C kmod style

# The YNL spec against the netlink-raw schema of the same package, and
# loaded by its ynl (family/spec_test.go checks it against the header).
spec-check:
	@mk/ynl.sh check kmod/nsbroker.yaml

# Each decoder's fuzz target, briefly in CI, longer by hand. CI gives each
# a count of inputs (FUZZTIME=200000x) rather than a duration: with a
# duration, Go 1.26's fuzzing coordinator can report its own deadline as a
# failure of the target (go.dev/issue/75804, fixed in Go 1.27).
FUZZ_TARGETS = $(shell $(GO) test -list '^Fuzz' ./family | grep '^Fuzz')
fuzz:
	@for f in $(FUZZ_TARGETS); do \
		echo "fuzz $$f for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) ./family || exit 1; \
	done

test:
	@$(TIMED) deps mk/deps.sh
	@$(TIMED) lint $(MAKE) --no-print-directory lint proto-check
	@$(TIMED) host-tests $(MAKE) --no-print-directory gotest
	@$(TIMED) kmod-check $(MAKE) --no-print-directory kmod-check
	@$(TIMED) checkpatch $(MAKE) --no-print-directory checkpatch
	@$(TIMED) spec-check $(MAKE) --no-print-directory spec-check
	@$(TIMED) kernel-chroots $(MAKE) --no-print-directory kernels
	@$(TIMED) kmod-check-6.12 $(MAKE) --no-print-directory kmod-check KERNEL=6.12
	@$(TIMED) kmod-check-7 $(MAKE) --no-print-directory kmod-check KERNEL=7
	@$(TIMED) packaging-check $(MAKE) --no-print-directory packaging-check
	@$(TIMED) fuzz-smoke $(MAKE) --no-print-directory fuzz FUZZTIME=200000x
	@$(TIMED) vmtest $(MAKE) --no-print-directory vmtest
	@$(TIMED) vmtest-6.12 $(MAKE) --no-print-directory vmtest KERNEL=6.12 VM_BUILD=$(CURDIR)/.build/vm-6.12
	@$(TIMED) vmtest-7 $(MAKE) --no-print-directory vmtest KERNEL=7 VM_BUILD=$(CURDIR)/.build/vm-7
	@$(TIMED) debug-kernel $(MAKE) --no-print-directory debugkernel
	@$(TIMED) debug-vmtest $(MAKE) --no-print-directory vmtest KERNEL=debug VM_BUILD=$(CURDIR)/.build/vm-debug
	@$(TIMED) fuzz-module $(MAKE) --no-print-directory fuzzmodule VM_BUILD=$(CURDIR)/.build/vm-fuzz

clean:
	$(MAKE) -C kmod clean KDIR=$(or $(KDIR),$(CLOUD_KDIR))
	rm -rf .build
