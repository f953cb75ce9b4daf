# `make bench`: boot the VM once and measure nsbroker against the bare
# kernel and gRPC paths (bench/, docs/performance.md). Results:
# $(BENCH_BUILD)/results.{json,md}, CPU profiles summarised in
# $(BENCH_BUILD)/profile-*.txt.
#
#   make bench                          everything
#   make bench BENCH_SECTIONS=roundtrip round trips only
#   make bench BENCH_SCALE=10,100       smaller scale runs
#   make bench-report                   extract the results of the last run again

BENCH_BUILD ?= $(CURDIR)/.build/bench
BENCH_MEM ?= 4096
BENCH_SCALE ?= 10,100,1000,4000
BENCH_SECTIONS ?= roundtrip,throughput,scale
BENCH_TIMEOUT ?= 3000
BENCH_OUT = $(BENCH_BUILD)/vm/results.txt

# bench_report extracts the results from what the guest wrote: the JSON
# printed after every section (the last block is the result), the markdown
# tables printed at the end, and each section's CPU profile in base64, all
# between marker lines.
bench_report = out=$(BENCH_OUT); \
		awk '/^==== nsbroker-bench json end/{p=0; last=buf} p{buf=buf $$0 "\n"} /^==== nsbroker-bench json begin/{p=1; buf=""} END{printf "%s", last}' \
			$$out >$(BENCH_BUILD)/results.json; \
		awk '/^==== nsbroker-bench json begin|^--- (PASS|FAIL)|^@@vmtest/{p=0} /^kernel .*, CPU /{p=1} p{print}' $$out >$(BENCH_BUILD)/results.md; \
		for s in $$(sed -n 's/^==== nsbroker-bench profile begin //p' $$out); do \
			awk -v s="$$s" '$$0=="==== nsbroker-bench profile begin " s{p=1; next} /^==== nsbroker-bench profile end/{p=0} p{print}' $$out \
				| base64 -d >$(BENCH_BUILD)/profile-$$s.pprof; \
			$(or $(GO),go) tool pprof -top -nodecount=40 $(BENCH_BUILD)/vm/tests/bench/bench.test $(BENCH_BUILD)/profile-$$s.pprof \
				>$(BENCH_BUILD)/profile-$$s.txt 2>&1 </dev/null; \
		done; \
		cat $(BENCH_BUILD)/results.md; \
		if [ ! -s $(BENCH_BUILD)/results.json ]; then echo "bench: no results in $$out"; exit 1; fi; \
		echo "bench: results in $(BENCH_BUILD)/results.json and results.md; profiles in $(BENCH_BUILD)/profile-*.txt"

.PHONY: bench bench-report
bench:
	@mkdir -p $(BENCH_BUILD)
	@rm -f $(BENCH_BUILD)/results.json $(BENCH_BUILD)/results.md $(BENCH_BUILD)/profile-*
	@$(MAKE) --no-print-directory vmtest VM_PKGS=./bench VM_BINS= VM_EXTRA= VM_CMD= \
		VM_RUN='^TestIntegrationBench$$' VM_VERBOSE=1 QEMU_MEM=$(BENCH_MEM) \
		VM_BUILD=$(BENCH_BUILD)/vm VM_TEST_TIMEOUT=$(BENCH_TIMEOUT) VM_TIMEOUT=$(BENCH_TIMEOUT) \
		VM_TESTARGS='-bench.qemu=tcg,thread=multi,-cpu=max,-smp=$(QEMU_SMP),-m=$(BENCH_MEM) -bench.scale=$(BENCH_SCALE) -bench.sections=$(BENCH_SECTIONS)' \
		>$(BENCH_BUILD)/vm.log 2>&1; status=$$?; \
	$(bench_report) || exit 1; \
	grep '^vmtest:' $(BENCH_BUILD)/vm.log | tail -n 3; \
	if [ $$status -ne 0 ]; then echo "bench: the VM run failed (status $$status); see $(BENCH_BUILD)/vm.log"; exit 1; fi

bench-report:
	@$(bench_report)
