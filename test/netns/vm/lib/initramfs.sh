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

# Copy the shared libraries ldd finds for a host file (a program or an
# extension module) to the same paths under the root.
install_host_libraries() {
	local root=$1 file=$2 lib
	while read -r lib; do
		[[ -e $root/$lib ]] && continue
		mkdir -p "$root/$(dirname "$lib")"
		cp -L "$lib" "$root/$lib"
	done < <(ldd "$file" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
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

# The top-level modules of Debian's dist-packages that importing and using
# yaml and jsonschema loads, one a line.
python_dist_modules() {
	/usr/bin/python3 -c '
import sys
import jsonschema
import yaml
jsonschema.validate({"a": 1}, {"type": "object"})
yaml.safe_load("a: 1")
tops = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None) or ""
    if "/dist-packages/" in f:
        tops.add(f.split("/dist-packages/", 1)[1].split("/", 1)[0])
print("\n".join(sorted(tops)))
'
}

# The kernel's ynl CLI for the netlink-raw spec (kmod/nsbroker.yaml), which
# test/netns/kmodtest/ynl_test.go drives: Debian's python3 with its
# standard library (without tests, build files and GUI), PyYAML and
# jsonschema with what they import, and tools/net/ynl with the netlink-raw
# schema from Debian's linux-source package (mk/ynl.sh extracts them).
# In the guest: /usr/local/bin/ynl, /usr/local/share/ynl/netlink-raw.yaml,
# /usr/local/share/nsbroker/nsbroker.yaml.
install_ynl() {
	local root=$1 src py ver stdlib dist mods pkg so
	src=$(bash "$REPO_ROOT/mk/ynl.sh" tools "$REPO_ROOT/.build/ynl") ||
		die "mk/ynl.sh could not provide the ynl tools"
	py=$(readlink -f /usr/bin/python3)
	ver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	install_host_program "$root" "$py" "${py#/}"
	ln -sf "$(basename "$py")" "$root/usr/bin/python3"
	stdlib=/usr/lib/python$ver
	mkdir -p "$root$stdlib"
	tar -C "$stdlib" -cf - --exclude=./test --exclude='./config-*' --exclude=./idlelib \
		--exclude=./tkinter --exclude=./turtledemo --exclude=./ensurepip --exclude=./lib2to3 \
		--exclude=./pydoc_data --exclude=./site-packages --exclude=./dist-packages . |
		tar -C "$root$stdlib" -xf -
	dist=/usr/lib/python3/dist-packages
	mkdir -p "$root$dist"
	mods=$(python_dist_modules) || die "python3 cannot import yaml and jsonschema (apt-get install python3-yaml python3-jsonschema)"
	while read -r pkg; do
		[[ -n $pkg ]] && cp -a "$dist/$pkg" "$root$dist/"
	done <<<"$mods"
	while read -r so; do
		install_host_libraries "$root" "${so#"$root"}"
	done < <(find "$root$stdlib/lib-dynload" "$root$dist" -name '*.so')
	install -D -m 0644 "$src/tools/net/ynl/cli.py" "$root/usr/local/lib/ynl/cli.py"
	mkdir -p "$root/usr/local/lib/ynl/lib"
	cp -a "$src/tools/net/ynl/lib/." "$root/usr/local/lib/ynl/lib/"
	install -D -m 0644 "$src/Documentation/netlink/netlink-raw.yaml" "$root/usr/local/share/ynl/netlink-raw.yaml"
	install -D -m 0644 "$REPO_ROOT/kmod/nsbroker.yaml" "$root/usr/local/share/nsbroker/nsbroker.yaml"
	mkdir -p "$root/usr/local/bin"
	printf '#!/bin/sh\nexec /usr/bin/python3 /usr/local/lib/ynl/cli.py "$@"\n' >"$root/usr/local/bin/ynl"
	chmod 0755 "$root/usr/local/bin/ynl"
	log "[initramfs] ynl from $(basename "$src"), python $ver ($(echo "$mods" | tr '\n' ' '))"
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
	install_ynl "$root"
	[[ -z $VM_EXTRA ]] || cp -a "$VM_EXTRA/." "$root/extra/"
	write_guest_config "$root"
	install -m 0755 "$VM_DIR/guest/init.sh" "$root/init"
	# Uncompressed: unpacking gzip under emulation costs more than it saves.
	(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$INITRAMFS"
	log "[initramfs] $INITRAMFS ($(du -m "$INITRAMFS" | cut -f1) MB)"
}
