# shellcheck shell=bash
# The guest's root file system: busybox, iproute2's ip, the modules, the test
# binaries, the VM_BINS commands, the extra directory and the settings the
# guest init reads.

# Copy a dynamically linked host program and the shared libraries ldd finds
# for it to the same paths under the root.
install_host_program() {
	local root=$1 program=$2 dest=$3 lib
	install -D -m 0755 "$program" "$root/$dest"
	while read -r lib; do
		mkdir -p "$root/$(dirname "$lib")"
		cp -L "$lib" "$root/$lib"
	done < <(ldd "$program" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

host_ip_binary() {
	local candidate
	for candidate in "$(command -v ip || true)" /usr/sbin/ip /sbin/ip /usr/bin/ip /bin/ip; do
		[[ -n $candidate && -x $candidate ]] && { printf '%s\n' "$candidate"; return; }
	done
	die "iproute2's ip not found"
}

# busybox-static and a symlink for each applet, except where a real program
# (ip, sh) is already in place.
install_busybox() {
	local root=$1 busybox applet
	busybox=$(command -v busybox) || die "busybox not found (install busybox-static)"
	if ldd "$busybox" >/dev/null 2>&1; then
		die "$busybox is dynamically linked; the guest needs busybox-static"
	fi
	install -D -m 0755 "$busybox" "$root/bin/busybox"
	while read -r applet; do
		[[ -e $root/$applet || -L $root/$applet ]] && continue
		mkdir -p "$root/$(dirname "$applet")"
		ln -s /bin/busybox "$root/$applet"
	done < <("$busybox" --list-full)
}

# The module under test and veth.ko, uncompressed (busybox insmod cannot
# read compressed modules).
install_modules() {
	local root=$1
	install -D -m 0644 "$MODULE_FILE" "$root$GUEST_MODULE"
	[[ -n $VETH_MODULE ]] || return 0
	case $VETH_MODULE in
	*.xz) xz -dc "$VETH_MODULE" ;;
	*.zst) zstd -dcq "$VETH_MODULE" ;;
	*.gz) gzip -dc "$VETH_MODULE" ;;
	*) cat "$VETH_MODULE" ;;
	esac >"$root/kmod/veth.ko"
}

# Settings for the guest init, one file each so no quoting is involved.
write_guest_config() {
	local dir=$1/vmtest
	mkdir -p "$dir"
	printf '%s\n' "${TEST_NAMES[@]}" | sed '/^$/d' >"$dir/tests"
	printf '%s\n' "$VM_RUN" >"$dir/run"
	printf '%s\n' "$VM_TESTARGS" >"$dir/testargs"
	printf '%s\n' "$VM_TEST_TIMEOUT" >"$dir/timeout"
	printf '%s\n' "$VM_KMOD_ARGS" >"$dir/kmod_args"
	printf '%s\n' "$MODULE_NAME" >"$dir/module_name"
	printf '%s\n' "$GUEST_MODULE" >"$dir/module"
	[[ -z $VM_CMD ]] || printf '%s\n' "$VM_CMD" >"$dir/cmd"
}

pack_initramfs() {
	local root=$VM_BUILD/rootfs
	INITRAMFS=$VM_BUILD/initramfs.cpio
	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,var,root,kmod,tests,extra}
	install_host_program "$root" "$(host_ip_binary)" sbin/ip
	# busybox sh runs its own applets before searching PATH, so `ip` in a
	# busybox script would be busybox's ip, which has no netns command.
	# /bin/sh is dash instead; the init still runs under busybox sh.
	install_host_program "$root" "$(command -v dash)" bin/sh
	install_busybox "$root"
	install_modules "$root"
	cp -a "$VM_BUILD/tests/." "$root/tests/"
	# The commands VM_BINS built (build_guest_programs), on the guest's PATH.
	mkdir -p "$root/usr/local/bin"
	cp -a "$VM_BUILD/bin/." "$root/usr/local/bin/"
	[[ -z $VM_EXTRA ]] || cp -a "$VM_EXTRA/." "$root/extra/"
	write_guest_config "$root"
	install -m 0755 "$VM_DIR/guest/init.sh" "$root/init"
	# Uncompressed: unpacking gzip under emulation costs more than it saves.
	(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$INITRAMFS"
	log "[initramfs] $INITRAMFS ($(du -m "$INITRAMFS" | cut -f1) MB)"
}
