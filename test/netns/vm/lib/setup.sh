# shellcheck shell=bash
# Host preparation: the Debian packages the harness needs and the kernel it boots.

# Debian packages the harness needs on the host.
readonly HOST_PACKAGES=(
	qemu-system-x86 linux-image-cloud-amd64 linux-headers-cloud-amd64
	busybox-static cpio kmod iproute2 dash
	# ynl in the guest (install_ynl): Debian's python and linux-source.
	python3 python3-yaml python3-jsonschema linux-source-6.12
)

package_installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# Install whatever of HOST_PACKAGES is missing; apt-get update only then.
ensure_host_packages() {
	local missing=() pkg apt_log=$VM_BUILD/logs/apt.log
	command -v go >/dev/null || die "go is not on PATH (the tests are built with the host's Go toolchain)"
	for pkg in "${HOST_PACKAGES[@]}"; do
		package_installed "$pkg" || missing+=("$pkg")
	done
	if ((${#missing[@]} == 0)); then
		log "[install] all host packages present"
		return
	fi
	((EUID == 0)) || die "missing packages (${missing[*]}); run as root or install them"
	log "[install] missing: ${missing[*]}"
	log "[install] apt-get update"
	apt-get update -qq >"$apt_log" 2>&1 || { show_log_tail "$apt_log"; die "apt-get update failed"; }
	log "[install] apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >>"$apt_log" 2>&1 || { show_log_tail "$apt_log"; die "apt-get install failed"; }
}

# The newest installed Debian cloud kernel's release, from /boot.
newest_cloud_kernel() {
	local images=(/boot/vmlinuz-*-cloud-amd64) release
	[[ -e ${images[0]} ]] || die "no /boot/vmlinuz-*-cloud-amd64 (is linux-image-cloud-amd64 installed?)"
	release=$(printf '%s\n' "${images[@]}" | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n 1)
	printf '%s\n' "$release"
}

# Set KERNEL_IMAGE, KDIR, KERNEL_RELEASE and VETH_MODULE (empty if the kernel
# has veth built in or not at all). With KERNEL_CHROOT, KDIR is a path in
# that chroot, where the module is built.
resolve_kernel() {
	local release
	if [[ -n $KERNEL_CHROOT ]]; then
		[[ -d $KERNEL_CHROOT && -n $KDIR && -n $KERNEL_IMAGE ]] ||
			die "KERNEL_CHROOT=$KERNEL_CHROOT needs KERNEL_IMAGE and KDIR (a path in the chroot)"
	fi
	if [[ -z $KERNEL_IMAGE && -z $KDIR ]]; then
		release=$(newest_cloud_kernel)
		KERNEL_IMAGE=/boot/vmlinuz-$release
		KDIR=/lib/modules/$release/build
	elif [[ -z $KERNEL_IMAGE || -z $KDIR ]]; then
		die "set both KERNEL_IMAGE and KDIR to boot another kernel (or neither for the cloud kernel)"
	fi
	[[ -r $KERNEL_IMAGE ]] || die "kernel image $KERNEL_IMAGE is not readable"
	KERNEL_RELEASE=$(kernel_release "$KERNEL_CHROOT$KDIR")
	VETH_MODULE=$(find_veth_module)
	log "kernel $KERNEL_RELEASE: $KERNEL_IMAGE, module built against $KDIR${KERNEL_CHROOT:+ in the chroot $KERNEL_CHROOT}"
}

# The release string modules built in a kernel build dir carry (Debian's
# include/config/kernel.release holds the upstream version instead).
kernel_release() {
	local header=$1/include/generated/utsrelease.h
	[[ -r $header ]] || die "KDIR=$1 is not a prepared kernel build dir (no $header)"
	sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' "$header"
}

find_veth_module() {
	local candidate modules=${KERNEL_MODULES:-/lib/modules/$KERNEL_RELEASE}
	for candidate in "$modules/kernel/drivers/net/veth.ko"{,.xz,.zst,.gz} \
		"$KERNEL_CHROOT$KDIR/drivers/net/veth.ko"; do
		if [[ -f $candidate ]]; then
			printf '%s\n' "$candidate"
			return
		fi
	done
	if grep -qs '^CONFIG_VETH=y' "$KERNEL_CHROOT$KDIR/.config"; then
		note "veth is built into $KERNEL_RELEASE" >&2
	else
		note "no veth.ko for $KERNEL_RELEASE; tests that need veth pairs will fail" >&2
	fi
}
