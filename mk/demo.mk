# `make demo`: nsbrokerd, three tenant namespaces and the isolation check,
# in a QEMU VM with the module, from a fresh machine (demo/run.sh).
#   DEMO_BUILD    build dir (default .build/demo)
#   DEMO_TIMEOUT  seconds for the VM (default 300)

DEMO_SCRIPT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))../demo/run.sh)

.PHONY: demo
demo:
	@bash $(DEMO_SCRIPT)
