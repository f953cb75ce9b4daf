#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# checker-valid.sh CHECKER [FLAGS...]: print 1 if CHECKER (sparse) can check
# this kernel's sources, 0 if not.
#
# Since 7.0 kbuild runs $(srctree)/scripts/checker-valid.sh before it honours
# C=1 or C=2, and turns the checker off, with only a warning, unless it
# prints 1: under __CHECKER__ the kernel's headers use __typeof_unqual__(),
# which sparse before 0.6.5 does not parse. Debian's 7.x headers packages do
# not ship the script, so kbuild would never run sparse there; setup.sh
# installs this one in the chroot's headers in its place. It asks the same
# question: does CHECKER take __typeof_unqual__() without an error?

checker=${1:-}
[ -n "$checker" ] && command -v "$checker" >/dev/null 2>&1 || { echo 0; exit 0; }

probe=$(mktemp --suffix=.c) || { echo 0; exit 0; }
trap 'rm -f "$probe"' EXIT
cat >"$probe" <<'EOF'
static inline int nsb_probe(const volatile int *p)
{
	__typeof_unqual__(*p) copy = *p;

	return copy;
}
EOF

# sparse exits 0 after errors too: judge by what it prints.
if "$@" "$probe" 2>&1 | grep -q 'error'; then
	echo 0
else
	echo 1
fi
