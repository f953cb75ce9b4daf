#!/usr/bin/env bash
# The newer Debian kernels of the test matrix: per series, a chroot of the
# Debian suite that ships it, with the kernel's headers, the compiler and
# kbuild binaries they were made for, make, perl (kernel-doc, for W=1) and
# sparse; and the kernel's image and modules, unpacked beside it. Reused
# from the cache while its inputs are the same. README.md in this directory
# explains it.
#
#   setup.sh SERIES            make or reuse; print the settings below
#   setup.sh --print SERIES    print the settings for the current inputs; no setup
#   setup.sh --run SERIES DIR -- COMMAND...
#                              run COMMAND in SERIES's chroot, in DIR, which
#                              the chroot sees at the same path
#   setup.sh --run-in ROOT DIR -- COMMAND...
#                              the same in the chroot ROOT (KERNEL_CHROOT)
#
# SERIES is 6.12 (Debian 13 "trixie") or 7 (Debian unstable "sid"). The
# settings printed are KERNEL_CHROOT, KDIR (inside the chroot),
# KERNEL_IMAGE, KERNEL_MODULES and KERNEL_RELEASE.
#
# Environment: NSB_KERNELS_CACHE (default /var/cache/nsbroker/kernels),
# NSB_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT=$HERE/$(basename "${BASH_SOURCE[0]}")
CHECKER=$HERE/checker-valid.sh
CACHE=${NSB_KERNELS_CACHE:-/var/cache/nsbroker/kernels}
MIRROR=${NSB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What every chroot gets: the headers pull in their gcc and linux-kbuild.
CHROOT_PACKAGES=(linux-headers-cloud-amd64 make perl sparse)

log() { printf 'kernels: %s\n' "$*" >&2; }
die() {
	printf 'kernels: error: %s\n' "$*" >&2
	exit 1
}

# series_suite SERIES: the Debian suite that ships it.
series_suite() {
	case $1 in
	6.12) echo trixie ;;
	7) echo sid ;;
	*) die "unknown series '$1' (known: 6.12, 7; 6.1 is the host's own cloud kernel)" ;;
	esac
}

# apt options for the suite. sid's Release file may be past its Valid-Until
# when the archive has not been signed again for a while.
suite_aptopts() {
	case $1 in
	sid) printf '%s\n' '--aptopt=Acquire::Check-Valid-Until "false"' ;;
	esac
}

# The cache key: everything that decides what a new chroot would hold but
# the archive's current versions, which `complete` records.
cache_key() {
	local suite=$1
	{
		printf '%s %s %s\n' "$suite" "$MIRROR" "${CHROOT_PACKAGES[*]}"
		sha256sum <"$SCRIPT"
		sha256sum <"$CHECKER"
	} | sha256sum | cut -c1-16
}

package_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

ensure_mmdebstrap() {
	package_installed mmdebstrap && return 0
	((EUID == 0)) || die "mmdebstrap is missing; run as root or install it"
	log "apt-get install mmdebstrap"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		-o DPkg::Lock::Timeout=300 mmdebstrap >/dev/null
}

# in_chroot ROOT DIR COMMAND...: run COMMAND in ROOT with /proc mounted
# (objtool reads it) and DIR bound at its own path, in a private mount
# namespace, so nothing stays mounted when it ends.
in_chroot() {
	local root=$1 dir=$2
	shift 2
	[[ -d $dir ]] || die "$dir is not a directory"
	dir=$(cd "$dir" && pwd -P)
	unshare --mount --propagation private -- /bin/sh -euc '
		root=$1 dir=$2
		shift 2
		mount -t proc proc "$root/proc"
		if [ "$dir" != / ]; then
			mkdir -p "$root$dir"
			mount --bind "$dir" "$root$dir"
		fi
		exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/root LC_ALL=C.UTF-8 TERM=dumb /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$dir" "$@"
	' sh "$root" "$dir" "$@"
}

# The release of the one cloud kernel whose headers ROOT holds.
headers_release() {
	local root=$1 dirs
	dirs=$(find "$root/usr/src" -mindepth 1 -maxdepth 1 -name 'linux-headers-*-cloud-amd64' -printf '%f\n')
	[[ $(wc -l <<<"$dirs") -eq 1 && -n $dirs ]] || die "expected one cloud kernel's headers in $root/usr/src, found: ${dirs:-none}"
	printf '%s\n' "${dirs#linux-headers-}"
}

# fetch_kernel ROOT: in mmdebstrap's customize hook, while the chroot still
# has the suite's package lists, download the kernel that matches the
# headers and move it to ROOT/../kernel-debs (mmdebstrap empties /tmp
# afterwards). 6.12 has the image and the modules in
# linux-image-<release>; from 7.x on that package is empty and depends on
# linux-binary-<release> (the image, under /usr/lib/modules) and
# linux-modules-<release>.
fetch_kernel() {
	local root=$1 release pkg
	release=$(headers_release "$root")
	mkdir -p "$root/tmp/kernel-debs" "$root/../kernel-debs"
	chroot "$root" chown _apt /tmp/kernel-debs
	for pkg in "linux-image-$release" "linux-binary-$release" "linux-modules-$release"; do
		chroot "$root" apt-cache show "$pkg" >/dev/null 2>&1 || continue
		log "apt-get download $pkg"
		chroot "$root" /bin/sh -c 'cd /tmp/kernel-debs && apt-get download -q "$1"' sh "$pkg" ||
			die "apt-get download $pkg failed"
	done
	mv "$root"/tmp/kernel-debs/*.deb "$root/../kernel-debs/"
}

# remove_tree DIR: rm -rf DIR, unless something is mounted under it (an
# mmdebstrap killed mid-way leaves its chroot's /proc, /sys and /dev).
remove_tree() {
	local dir=$1
	[[ -e $dir ]] || return 0
	if awk -v d="$dir/" 'index($2 "/", d) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
		die "something is still mounted under $dir; unmount it, then run again"
	fi
	rm -rf "$dir"
}

# Make the chroot, unpack the kernel into $1/kernel, and write $1/complete
# last, so that an interrupted setup is never reused.
create() {
	local dir=$1 suite=$2 root=$1/root release pkgs=() pkg start aptopts
	start=$(date +%s.%N)
	remove_tree "$dir"
	mkdir -p "$dir"
	mapfile -t aptopts < <(suite_aptopts "$suite")
	log "mmdebstrap $suite with ${CHROOT_PACKAGES[*]} (log: $dir/setup.log)"
	mmdebstrap --variant=apt "${aptopts[@]}" --include="$(IFS=,; echo "${CHROOT_PACKAGES[*]}")" \
		--customize-hook="$SCRIPT --fetch-kernel \"\$1\"" \
		"$suite" "$root" "$MIRROR" >"$dir/setup.log" 2>&1 ||
		{ tail -n 40 "$dir/setup.log" >&2; die "mmdebstrap $suite failed"; }
	release=$(headers_release "$root")
	mkdir -p "$dir/kernel"
	for pkg in "$dir"/kernel-debs/*.deb; do
		[[ -f $pkg ]] || die "no kernel packages were downloaded (see $dir/setup.log)"
		dpkg-deb -x "$pkg" "$dir/kernel"
		pkgs+=("$(basename "$pkg")")
	done
	rm -rf "$dir/kernel-debs"

	# kbuild runs scripts/checker-valid.sh before sparse; Debian's 7.x
	# headers lack it, so kbuild would turn sparse off. Ours asks the
	# same question.
	local srctree
	for srctree in "$root"/usr/src/linux-headers-*; do
		grep -qs 'scripts/checker-valid.sh' "$srctree/Makefile" || continue
		[[ -e $srctree/scripts/checker-valid.sh ]] && continue
		log "installing checker-valid.sh into ${srctree#"$root"}/scripts"
		install -D -m 0755 "$CHECKER" "$srctree/scripts/checker-valid.sh"
	done

	find_image "$dir" "$release" >/dev/null
	{
		printf 'suite %s\nrelease %s\n' "$suite" "$release"
		in_chroot "$root" / dpkg-query -W -f='${db:Status-Abbrev}${Package} ${Version}\n' \
			"linux-headers-$release" "linux-kbuild-${release%%+*}*" "gcc-[0-9]*" make perl sparse 2>/dev/null |
			sed -n 's/^ii *\([^ ]* [^ ]*\)$/package \1/p' || true
		printf 'unpacked %s\n' "${pkgs[@]}"
		printf 'created %s\nseconds %.1f\n' "$(date -u +%FT%TZ)" "$(echo "$(date +%s.%N) - $start" | bc)"
	} >"$dir/complete.tmp"
	mv "$dir/complete.tmp" "$dir/complete"
	log "set up $suite's $release in $(sed -n 's/^seconds //p' "$dir/complete") s ($(du -sm "$dir" | cut -f1) MB)"
}

# The kernel image unpacked in DIR/kernel for RELEASE.
find_image() {
	local dir=$1 release=$2 candidate
	for candidate in "$dir/kernel/boot/vmlinuz-$release" "$dir/kernel/usr/lib/modules/$release/vmlinuz" \
		"$dir/kernel/lib/modules/$release/vmlinuz"; do
		[[ -f $candidate ]] && { printf '%s\n' "$candidate"; return; }
	done
	die "no kernel image for $release in $dir/kernel"
}

find_modules() {
	local dir=$1 release=$2 candidate
	for candidate in "$dir/kernel/lib/modules/$release" "$dir/kernel/usr/lib/modules/$release"; do
		[[ -d $candidate/kernel ]] && { printf '%s\n' "$candidate"; return; }
	done
	die "no modules for $release in $dir/kernel"
}

print_settings() {
	local dir=$1 release
	release=$(sed -n 's/^release //p' "$dir/complete")
	printf 'KERNEL_CHROOT=%s\nKDIR=%s\nKERNEL_IMAGE=%s\nKERNEL_MODULES=%s\nKERNEL_RELEASE=%s\n' \
		"$dir/root" "/usr/src/linux-headers-$release" "$(find_image "$dir" "$release")" \
		"$(find_modules "$dir" "$release")" "$release"
}

# Keep the cache to the current chroot of each series and the newest one
# before it.
prune_cache() {
	local series=$1 keep=$2 old
	while read -r old; do
		[[ $old == "$CACHE/$keep" ]] && continue
		log "removing old chroot $old"
		remove_tree "$old"
		rm -f "$old.lock"
	done < <(find "$CACHE" -mindepth 2 -maxdepth 2 -path "$CACHE/$series-*/complete" -printf '%T@ %h\n' |
		sort -rn | tail -n +3 | cut -d' ' -f2-)
}

main() {
	local mode=setup series suite key dir lock_fd
	if [[ ${1:-} == --fetch-kernel ]]; then
		[[ $# -eq 2 ]] || die "usage: $0 --fetch-kernel ROOT"
		fetch_kernel "$2"
		return
	fi
	if [[ ${1:-} == --run-in ]]; then
		[[ $# -ge 5 && $4 == -- ]] || die "usage: $0 --run-in ROOT DIR -- COMMAND..."
		[[ -x $2/usr/bin/env ]] || die "$2 is not a chroot"
		local root=$2 cwd=$3
		shift 4
		in_chroot "$root" "$cwd" "$@"
		return
	fi
	case ${1:-} in
	--print) mode=print; shift ;;
	--run) mode=run; shift ;;
	esac
	[[ $# -ge 1 ]] || die "usage: $0 [--print] SERIES | --run SERIES DIR -- COMMAND..."
	series=$1
	shift
	suite=$(series_suite "$series")
	key=$series-$(cache_key "$suite")
	dir=$CACHE/$key
	case $mode in
	print)
		[[ $# -eq 0 ]] || die "usage: $0 --print SERIES"
		[[ -f $dir/complete ]] || die "no chroot for $series yet: run $0 $series"
		print_settings "$dir"
		return
		;;
	run)
		[[ $# -ge 3 && $2 == -- ]] || die "usage: $0 --run SERIES DIR -- COMMAND..."
		[[ -f $dir/complete ]] || die "no chroot for $series yet: run $0 $series"
		local cwd=$1
		shift 2
		in_chroot "$dir/root" "$cwd" "$@"
		return
		;;
	esac
	[[ $# -eq 0 ]] || die "usage: $0 SERIES"
	if [[ -f $dir/complete ]]; then
		log "reusing $dir ($(sed -n 's/^release //p' "$dir/complete"), set up in $(sed -n 's/^seconds //p' "$dir/complete") s)"
	else
		((EUID == 0)) || die "making a chroot needs root"
		ensure_mmdebstrap
		mkdir -p "$CACHE"
		exec {lock_fd}>"$dir.lock"
		if ! flock -n "$lock_fd"; then
			log "another setup of $key is running; waiting for it"
			flock "$lock_fd"
		fi
		[[ -f $dir/complete ]] || create "$dir" "$suite"
		prune_cache "$series" "$key"
	fi
	print_settings "$dir"
}

main "$@"
exit
