#!/usr/bin/env bash
# dkms-check.sh: install kmod/ with dkms for real, against the newest
# installed Debian cloud kernel's headers, check what it installed, and
# remove every trace again. The host cannot load the module; building and
# installing it is what dkms does on a user's machine, and what this
# proves. Run as root from the repository root (make dkms-check).
set -euo pipefail

die() { echo "dkms-check: $*" >&2; exit 1; }
log() { echo "dkms-check: $*"; }

((EUID == 0)) || die "must run as root (dkms installs into /usr/src and /lib/modules)"
conf=kmod/dkms.conf
[[ -f $conf ]] || die "$conf not found; run from the repository root"

build=$(ls -d /lib/modules/*-cloud-amd64/build 2>/dev/null | sort -V | tail -n 1 || true)
[[ -n $build ]] || die "no Debian cloud kernel headers (apt-get install linux-headers-cloud-amd64)"
kver=$(basename "$(dirname "$build")")

if ! command -v dkms >/dev/null; then
	log "installing dkms"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dkms >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dkms >/dev/null; }
fi

# dkms.conf is shell; only the two plain assignments are needed here.
conf_value() { sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$conf"; }
name=$(conf_value PACKAGE_NAME)
version=$(conf_value PACKAGE_VERSION)
[[ -n $name && -n $version ]] || die "$conf: PACKAGE_NAME or PACKAGE_VERSION missing"
src=/usr/src/$name-$version

# Never replace an installation someone made on purpose.
[[ -z $(dkms status -m "$name" -v "$version" 2>/dev/null) ]] ||
	die "$name/$version is registered with dkms already; dkms remove $name/$version --all first"
[[ ! -e $src ]] || die "$src exists already; remove it first"
# dkms makes a key to sign modules with when there is none; keep the
# machine as it was.
mok=/var/lib/dkms/mok.key
had_mok=0
[[ -e $mok ]] && had_mok=1

cleanup() {
	dkms remove -m "$name" -v "$version" --all >/dev/null 2>&1 || true
	rm -rf "$src"
	if ((had_mok == 0)); then rm -f /var/lib/dkms/mok.key /var/lib/dkms/mok.pub; fi
}
trap cleanup EXIT

# The committed sources only: no objects of an earlier in-tree build.
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z kmod | while IFS= read -r -d '' f; do
		install -D -m 0644 "$f" "$src/${f#kmod/}"
	done
else
	(cd kmod && find . -type f \( -name '*.[ch]' -o -name Kbuild -o -name Makefile -o -name dkms.conf \) \
		-exec install -D -m 0644 {} "$src/{}" \;)
fi

log "dkms add, build and install $name/$version for $kver"
dkms add -m "$name" -v "$version"
dkms build -m "$name" -v "$version" -k "$kver"
dkms install -m "$name" -v "$version" -k "$kver"

# What a user's machine would load: the module depmod knows for $kver.
status=$(dkms status -m "$name" -v "$version" -k "$kver")
[[ $status == *installed* ]] || die "dkms status says: $status"
file=$(modinfo -k "$kver" -F filename "$name") || die "modinfo does not find $name for $kver"
[[ $file == /lib/modules/$kver/* && -f $file ]] || die "installed at $file, not under /lib/modules/$kver"
vermagic=$(modinfo -k "$kver" -F vermagic "$name")
[[ $vermagic == "$kver "* ]] || die "$file has vermagic '$vermagic', not built for $kver"
aliases=$(modinfo -k "$kver" -F alias "$name")
[[ $aliases == *net-pf-16-proto-* ]] ||
	die "$file has no net-pf-16-proto alias: the kernel could not load it on demand"
# The version dkms knows it by is the one the module reports (version.h).
modversion=$(modinfo -k "$kver" -F version "$name")
[[ $modversion == "$version" ]] ||
	die "$file reports version '$modversion', dkms.conf says '$version' (kmod/version.h is the one place to change it)"
log "installed $file (vermagic $vermagic; alias $(echo "$aliases" | tr '\n' ' '))"

cleanup
trap - EXIT
# Removing must leave nothing behind either.
if find "/lib/modules/$kver" -name "$name.ko*" | grep -q .; then
	die "dkms remove left $(find "/lib/modules/$kver" -name "$name.ko*")"
fi
[[ -z $(dkms status -m "$name" -v "$version" 2>/dev/null) ]] || die "dkms remove left $name/$version registered"
log "removed again; dkms install of $name/$version for $kver works"
