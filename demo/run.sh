#!/usr/bin/env bash
# make demo: on a fresh Debian 12 machine, as root, install what is
# missing, build the module and the programs, boot them in a QEMU VM with
# the harness of `make vmtest` (test/netns/README.md) and run
# demo/guest/demo.sh there. Shows the demo as it runs and exits non-zero
# if any of its checks failed.
#
# Settings (environment): DEMO_BUILD, the build dir (default .build/demo);
# DEMO_TIMEOUT, seconds for the VM (default 300).
#
# README.md shows several of these commands; demo/readme_test.go checks
# that they are here, word for word.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"
DEMO_BUILD=${DEMO_BUILD:-$REPO_ROOT/.build/demo}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-300}

say() { printf 'demo: %s\n' "$*"; }
START=$(date +%s)
elapsed() { printf '%d s' $(($(date +%s) - START)); }

# The harness's own package list, plus what building the module needs.
# shellcheck source=test/netns/vm/lib/common.sh
source test/netns/vm/lib/common.sh
# shellcheck source=test/netns/vm/lib/setup.sh
source test/netns/vm/lib/setup.sh
PACKAGES=("${HOST_PACKAGES[@]}" make gcc bc libelf-dev)

install_packages() {
	local missing=() p log=$DEMO_BUILD/apt.log
	for p in "${PACKAGES[@]}"; do
		package_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		say "[1/3 install] all Debian packages present"
		return
	fi
	((EUID == 0)) || { say "missing Debian packages (${missing[*]}): run as root"; exit 1; }
	say "[1/3 install] apt-get install ${missing[*]} (about a minute; log: $log)"
	apt-get update -qq >"$log" 2>&1 || { tail -n 20 "$log"; say "apt-get update failed"; exit 1; }
	# apt's progress, one line per package set up.
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" 2>&1 |
		tee -a "$log" | sed -un 's/^Setting up \([^ ]*\).*/demo: [1\/3 install] set up \1/p'
	((PIPESTATUS[0] == 0)) || { tail -n 20 "$log"; say "apt-get install failed"; exit 1; }
}

mkdir -p "$DEMO_BUILD"
command -v go >/dev/null || { say "go is not on PATH; install Go first"; exit 1; }
install_packages

say "[2/3 build] the module for this machine's kernel, and the programs (the first build downloads and compiles the Go dependencies: a minute or two)"
make -C kmod >"$DEMO_BUILD/kmod.log" 2>&1 || { tail -n 30 "$DEMO_BUILD/kmod.log"; say "make -C kmod failed"; exit 1; }
# Static, as the harness builds them for the guest: the two share the cache.
CGO_ENABLED=0 go build -o .build/bin/ ./cmd/...
say "[2/3 build] done after $(elapsed): $(cd .build/bin && echo *)"

say "[3/3 VM] boot Debian's cloud kernel in QEMU with the module and the programs, and run demo/guest/demo.sh there"
rc=0
VM_BINS="./cmd/nsbrokerd ./cmd/nsbrokerctl ./cmd/nsbroker-isolation-check" VM_GO_INSTALL= VM_BUILD="$DEMO_BUILD/vm" \
	VM_TIMEOUT="$DEMO_TIMEOUT" VM_TEST_TIMEOUT=$((DEMO_TIMEOUT - 60)) MAKEFLAGS=--no-print-directory \
	make vmtest VM_PKGS= VM_EXTRA=demo/guest VM_CMD=./demo.sh || rc=$?

if ((rc == 0)); then
	# The guest's verdict lines, from what the harness collected (it
	# shows them itself only when the demo fails).
	echo
	grep -a '^demo: ' "$DEMO_BUILD/vm/results.txt" || true
	say "passed in $(elapsed)"
else
	say "FAIL after $(elapsed): see the lines above (everything is kept in $DEMO_BUILD/vm)"
fi
exit "$rc"
