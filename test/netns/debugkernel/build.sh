#!/usr/bin/env bash
# Build the test VM's debug kernel (KASAN, lockdep, kmemleak, ...) from
# Debian's linux-source-6.1, or reuse the one already built from the same
# inputs. Normally run by `make debugkernel` (mk/debug.mk); README.md in this
# directory explains it.
#
#   build.sh              build or reuse; print KERNEL_IMAGE= and KDIR=
#   build.sh --print-dir  print the tree (KDIR) for the current inputs; no build
#
# Environment: NSB_DEBUGKERNEL_CACHE (default /var/cache/nsbroker/debugkernel),
# LINUX_SOURCE_TAR (default /usr/src/linux-source-6.1.tar.xz), JOBS (default
# one more than the number of CPUs).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENT=$HERE/debug.config
SCRIPT=$HERE/$(basename "${BASH_SOURCE[0]}")
CACHE=${NSB_DEBUGKERNEL_CACHE:-/var/cache/nsbroker/debugkernel}
LINUX_SOURCE_TAR=${LINUX_SOURCE_TAR:-/usr/src/linux-source-6.1.tar.xz}
SOURCE_PACKAGE=linux-source-6.1
BUILD_PACKAGES=("$SOURCE_PACKAGE" flex bison bc libelf-dev libssl-dev gcc make xz-utils)
JOBS=${JOBS:-$(($(nproc) + 1))}

log() { printf 'debugkernel: %s\n' "$*"; }
die() {
	printf 'debugkernel: error: %s\n' "$*" >&2
	exit 1
}

package_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# Install whatever the build needs and is missing; apt-get update only then.
ensure_packages() {
	local missing=() pkg
	for pkg in "${BUILD_PACKAGES[@]}"; do
		package_installed "$pkg" || missing+=("$pkg")
	done
	((${#missing[@]} > 0)) || return 0
	((EUID == 0)) || die "missing packages (${missing[*]}); run as root or install them"
	log "apt-get install ${missing[*]}"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null
}

# The cache key: everything that decides what the build produces. The
# compiler counts too: KASAN's instrumentation comes from it.
cache_key() {
	local version
	version=$(dpkg-query -W -f='${Version}' "$SOURCE_PACKAGE" 2>/dev/null) || version=none
	{
		printf '%s %s\n' "$SOURCE_PACKAGE" "$version"
		"${CC:-gcc}" --version 2>/dev/null | head -n 1
		sha256sum <"$FRAGMENT"
		sha256sum <"$SCRIPT"
	} | sha256sum | cut -c1-16
}

# Every line of the fragment must be in the final .config as written; an
# "is not set" line is also satisfied by the option being absent (its menu
# is off). Kconfig itself only warns, so an unmet dependency would otherwise
# silently give a kernel without the detector.
check_config() {
	local config=$1 line name bad=0
	while IFS= read -r line; do
		if [[ $line =~ ^CONFIG_[A-Z0-9_]+= ]]; then
			grep -qxF -- "$line" "$config" && continue
			name=${line%%=*}
		elif [[ $line =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set$ ]]; then
			name=${BASH_REMATCH[1]}
			grep -q "^$name=" "$config" || continue
		else
			continue
		fi
		printf 'debugkernel: want %s, .config has: %s\n' "$line" \
			"$(grep -E "^$name=|^# $name is not set" "$config" || echo 'nothing (a dependency is missing)')" >&2
		bad=1
	done <"$FRAGMENT"
	((bad == 0)) || die "the final .config lacks options of $FRAGMENT"
}

# Extract, configure, check and build into $1/linux. The marker file
# "complete" is written last, so an interrupted build is never reused.
build() {
	local dir=$1 tree=$1/linux start
	start=$(date +%s)
	[[ -r $LINUX_SOURCE_TAR ]] || die "$LINUX_SOURCE_TAR not found"
	rm -rf "$dir"
	mkdir -p "$tree"
	log "extracting $LINUX_SOURCE_TAR into $tree"
	tar -xJf "$LINUX_SOURCE_TAR" -C "$tree" --strip-components=1
	log "configuring: tinyconfig + $(basename "$FRAGMENT")"
	(
		cd "$tree"
		make tinyconfig
		scripts/kconfig/merge_config.sh -m .config "$FRAGMENT"
		make olddefconfig
	) >"$dir/config.log" 2>&1 || { tail -n 40 "$dir/config.log" >&2; die "configuration failed"; }
	check_config "$tree/.config"
	log "make -j$JOBS bzImage modules (log: $dir/build.log)"
	make -C "$tree" -j"$JOBS" bzImage modules >"$dir/build.log" 2>&1 ||
		{ tail -n 60 "$dir/build.log" >&2; die "kernel build failed"; }
	[[ -f $tree/arch/x86/boot/bzImage && -f $tree/Module.symvers ]] ||
		die "the build produced no bzImage or Module.symvers"
	printf 'release %s\nbuilt %s\nseconds %d\n' "$(make -s -C "$tree" kernelrelease)" \
		"$(date -u +%FT%TZ)" $(($(date +%s) - start)) >"$dir/complete"
	log "built in $(($(date +%s) - start)) s"
}

# Keep the cache to the current build and the newest one before it.
prune_cache() {
	local keep=$1 old
	while read -r old; do
		[[ $old == "$CACHE/$keep" ]] && continue
		log "removing old build $old"
		rm -rf "$old" "$old.lock"
	done < <(find "$CACHE" -mindepth 2 -maxdepth 2 -name complete -printf '%T@ %h\n' |
		sort -rn | tail -n +3 | cut -d' ' -f2-)
}

main() {
	local key dir lock_fd
	key=$(cache_key)
	dir=$CACHE/$key
	if [[ ${1:-} == --print-dir ]]; then
		printf '%s\n' "$dir/linux"
		return
	fi
	[[ $# -eq 0 ]] || die "usage: $0 [--print-dir]"
	if [[ ! -f $dir/complete ]]; then
		ensure_packages
		# The key may change once the source package is installed.
		key=$(cache_key)
		dir=$CACHE/$key
		mkdir -p "$CACHE"
		exec {lock_fd}>"$dir.lock"
		if ! flock -n "$lock_fd"; then
			log "another build of $key is running; waiting for it"
			flock "$lock_fd"
		fi
		[[ -f $dir/complete ]] || build "$dir"
		prune_cache "$key"
	else
		log "reusing $dir ($(sed -n 's/^release //p' "$dir/complete"), built in $(sed -n 's/^seconds //p' "$dir/complete") s)"
	fi
	printf 'KERNEL_IMAGE=%s\nKDIR=%s\n' "$dir/linux/arch/x86/boot/bzImage" "$dir/linux"
}

main "$@"
