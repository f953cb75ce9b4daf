# `make bench`: boot the VM BENCH_BOOTS times and measure nsbroker against
# the bare kernel and gRPC paths (bench/, docs/performance.md). Results:
# $(BENCH_BUILD)/results.md, every value as the median and min–max of the
# boots; each boot's own results-N.{json,md}, the host's load while it ran
# (load-N.txt) and its CPU profiles (profile-N-*.txt).
#
#   make bench                          everything, 3 boots
#   make bench BENCH_BOOTS=1            one boot
#   make bench BENCH_SECTIONS=roundtrip round trips only
#   make bench BENCH_SCALE=10,100       smaller scale runs
#   make bench BENCH_RUNFOR=5s          longer throughput runs
#   make bench-report                   extract the results of the last run again

BENCH_BUILD ?= $(CURDIR)/.build/bench
BENCH_BOOTS ?= 3
BENCH_MEM ?= 4096
BENCH_SCALE ?= 10,100,1000,4000
BENCH_SECTIONS ?= roundtrip,throughput,scale
BENCH_TIMEOUT ?= 3000
# How long each throughput run lasts, sized from a pilot run's rate.
BENCH_RUNFOR ?= 3s
# The guest's clock: see "The guest's clock" in docs/performance.md. The
# hung-task detector waits 900 s, not 120: after a scale run the kernel
# tears down thousands of namespaces for minutes under emulation, and the
# harness's rmmod waits for that (unregister_pernet_subsys).
BENCH_KERNEL_ARGS ?= tsc=reliable clocksource=tsc sysctl.kernel.hung_task_timeout_secs=900
# Seconds between two samples of the host's load while a boot runs.
BENCH_LOAD_EVERY ?= 5

# bench_extract extracts boot $$i's results from what its guest wrote
# (results-$$i.txt): the JSON printed after every section (the last block
# is the result), the markdown tables printed at the end, and each
# section's CPU profile in base64, all between marker lines.
bench_extract = out=$(BENCH_BUILD)/results-$$i.txt; \
		awk '/^==== nsbroker-bench json end/{p=0; last=buf} p{buf=buf $$0 "\n"} /^==== nsbroker-bench json begin/{p=1; buf=""} END{printf "%s", last}' \
			$$out >$(BENCH_BUILD)/results-$$i.json; \
		awk '/^==== nsbroker-bench json begin|^--- (PASS|FAIL)|^@@vmtest/{p=0} /^kernel .*, CPU /{p=1} p{print}' $$out >$(BENCH_BUILD)/results-$$i.md; \
		for s in $$(sed -n 's/^==== nsbroker-bench profile begin //p' $$out); do \
			awk -v s="$$s" '$$0=="==== nsbroker-bench profile begin " s{p=1; next} /^==== nsbroker-bench profile end/{p=0} p{print}' $$out \
				| base64 -d >$(BENCH_BUILD)/profile-$$i-$$s.pprof; \
			$(or $(GO),go) tool pprof -top -nodecount=40 $(BENCH_BUILD)/vm/tests/bench/bench.test $(BENCH_BUILD)/profile-$$i-$$s.pprof \
				>$(BENCH_BUILD)/profile-$$i-$$s.txt 2>&1 </dev/null; \
		done; \
		if [ ! -s $(BENCH_BUILD)/results-$$i.json ]; then echo "bench: no results in $$out"; fi

# bench_combine writes results.md from every boot's results-N.json.
bench_combine = $(or $(GO),go) run ./bench/combine $(BENCH_BUILD) >$(BENCH_BUILD)/results.md || exit 1; \
		cat $(BENCH_BUILD)/results.md; \
		echo "bench: results in $(BENCH_BUILD)/results.md; each boot's in results-N.{json,md}, its host load in load-N.txt, its profiles in profile-N-*.txt"

.PHONY: bench bench-report
bench:
	@mkdir -p $(BENCH_BUILD)
	@rm -f $(BENCH_BUILD)/results* $(BENCH_BUILD)/load-* $(BENCH_BUILD)/vm-*.log $(BENCH_BUILD)/profile-*
	@failed=0; \
	for i in $$(seq 1 $(BENCH_BOOTS)); do \
		echo "bench: boot $$i of $(BENCH_BOOTS)"; \
		( while :; do echo "$$(date +%s) $$(cat /proc/loadavg) $$(pgrep -c qemu-system)"; sleep $(BENCH_LOAD_EVERY); done ) \
			>$(BENCH_BUILD)/load-$$i.txt & sampler=$$!; \
		$(MAKE) --no-print-directory vmtest VM_PKGS=./bench VM_BINS= VM_GO_INSTALL= VM_EXTRA= VM_CMD= \
			VM_RUN='^TestIntegrationBench$$' VM_VERBOSE=1 QEMU_MEM=$(BENCH_MEM) \
			VM_KERNEL_ARGS='$(BENCH_KERNEL_ARGS)' \
			VM_BUILD=$(BENCH_BUILD)/vm VM_TEST_TIMEOUT=$(BENCH_TIMEOUT) VM_TIMEOUT=$(BENCH_TIMEOUT) \
			VM_TESTARGS='-bench.qemu=tcg,thread=multi,-cpu=max,-smp=$(QEMU_SMP),-m=$(BENCH_MEM) -bench.scale=$(BENCH_SCALE) -bench.sections=$(BENCH_SECTIONS) -bench.runfor=$(BENCH_RUNFOR)' \
			>$(BENCH_BUILD)/vm-$$i.log 2>&1; status=$$?; \
		kill $$sampler; \
		cp $(BENCH_BUILD)/vm/results.txt $(BENCH_BUILD)/results-$$i.txt 2>/dev/null; \
		$(bench_extract); \
		grep '^vmtest:' $(BENCH_BUILD)/vm-$$i.log | tail -n 3; \
		if [ $$status -ne 0 ]; then echo "bench: boot $$i failed (status $$status); see $(BENCH_BUILD)/vm-$$i.log"; failed=1; fi; \
	done; \
	$(bench_combine); \
	exit $$failed

bench-report:
	@for f in $(BENCH_BUILD)/results-*.txt; do \
		i=$${f##*/results-}; i=$${i%.txt}; $(bench_extract); \
	done; \
	$(bench_combine)
