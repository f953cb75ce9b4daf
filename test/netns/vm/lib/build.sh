# shellcheck shell=bash
# Building what runs in the guest: the module and the static test binaries.

# Build the module against KDIR and set MODULE_FILE.
build_module() {
	local build_log=$VM_BUILD/logs/module.log vermagic src=$VM_BUILD/kmod
	[[ -f $VM_KMOD_DIR/Makefile ]] || die "$VM_KMOD_DIR/Makefile not found (VM_KMOD_DIR=$VM_KMOD_DIR)"
	# Built from a fresh copy in VM_BUILD: runs with different VM_BUILDs
	# may build at once, the source tree gets no objects, and kbuild never
	# reuses objects compiled against another tree whose compiler flags are
	# the same (two debug kernel configurations; such a module crashes at
	# insmod).
	rm -rf "$src"
	mkdir -p "$src"
	cp -r "$VM_KMOD_DIR"/. "$src"/
	make -C "$src" clean >/dev/null 2>&1 || true
	if [[ -n $KERNEL_CHROOT ]]; then
		# The kernel's kbuild binaries and compiler need its suite's libc.
		log "[module] make -C $VM_KMOD_DIR KDIR=$KDIR (in $src, in the chroot $KERNEL_CHROOT)"
		"$KERNELS_SCRIPT" --run-in "$KERNEL_CHROOT" "$src" -- make KDIR="$KDIR" >"$build_log" 2>&1 ||
			{ show_log_tail "$build_log" 60; die "module build failed"; }
	else
		log "[module] make -C $VM_KMOD_DIR KDIR=$KDIR (in $src)"
		make -C "$src" KDIR="$KDIR" >"$build_log" 2>&1 ||
			{ show_log_tail "$build_log" 60; die "module build failed"; }
	fi
	if grep -q 'warning:' "$build_log"; then
		log "[module] compiler warnings:"
		grep -A3 'warning:' "$build_log" | sed 's/^/  /'
	fi
	MODULE_FILE=$src/$MODULE_NAME.ko
	[[ -f $MODULE_FILE ]] || die "the build did not produce $MODULE_FILE"
	# A stale module built for another kernel would only fail at insmod.
	vermagic=$(modinfo -F vermagic "$MODULE_FILE")
	[[ ${vermagic%% *} == "$KERNEL_RELEASE" ]] ||
		die "$MODULE_FILE is built for ${vermagic%% *}, not $KERNEL_RELEASE"
}

# Print "import-path<TAB>dir<TAB>number-of-test-files" for each package
# VM_PKGS names (patterns such as ./... expand to several).
list_test_packages() {
	local pkgs
	read -ra pkgs <<<"$VM_PKGS"
	((${#pkgs[@]} > 0)) || return 0
	go list -e -f '{{.ImportPath}}{{"\t"}}{{.Dir}}{{"\t"}}{{len .TestGoFiles}}{{"\t"}}{{len .XTestGoFiles}}' \
		"${pkgs[@]}" | awk -F '\t' '{ print $1 "\t" $2 "\t" $3 + $4 }'
}

# Build one static test binary per package into $VM_BUILD/tests/<name>/,
# with the package's testdata, and set TEST_NAMES (in run order); first the
# host's half, the program that reads what they write.
build_test_binaries() {
	local out=$VM_BUILD/tests packages pkg dir count name build_log
	local -A taken=()
	TEST_NAMES=()
	build_report_program
	rm -rf "$out"
	mkdir -p "$out"
	packages=$(list_test_packages) || die "go list failed for VM_PKGS='$VM_PKGS'"
	while IFS=$'\t' read -r pkg dir count; do
		[[ -n $pkg ]] || continue
		if [[ -z $dir || ! -d $dir ]]; then
			note "$pkg does not exist, skipped"
			continue
		fi
		if ((count == 0)); then
			note "$pkg has no test files, skipped"
			continue
		fi
		name=${pkg##*/}
		# Two packages with the same last element: fall back to the path.
		[[ -z ${taken[$name]:-} ]] || name=$(realpath --relative-to="$REPO_ROOT" "$dir" | tr / -)
		taken[$name]=1
		build_log=$VM_BUILD/logs/$name.test.log
		log "[tests] $pkg -> $name.test"
		mkdir -p "$out/$name"
		CGO_ENABLED=0 go test -c -o "$out/$name/$name.test" "$pkg" >"$build_log" 2>&1 ||
			{ show_log_tail "$build_log" 60; die "building the tests of $pkg failed"; }
		[[ -f $out/$name/$name.test ]] || die "$pkg: go test -c wrote no binary"
		[[ ! -d $dir/testdata ]] || cp -a "$dir/testdata" "$out/$name/"
		TEST_NAMES+=("$name")
	done <<<"$packages"
	((${#TEST_NAMES[@]} > 0)) || note "no test binaries to run (VM_PKGS='$VM_PKGS')"
}

# Build the program that turns what the guest wrote into the report
# (test/netns/vm/report) into $VM_BUILD/report and set REPORT_PROGRAM:
# before the boot, so that a broken build costs no run.
build_report_program() {
	local build_log=$VM_BUILD/logs/report.log
	REPORT_PROGRAM=$VM_BUILD/report
	log "[tests] ./test/netns/vm/report -> $REPORT_PROGRAM (on the host: reads the results)"
	go build -o "$REPORT_PROGRAM" ./test/netns/vm/report >"$build_log" 2>&1 ||
		{ show_log_tail "$build_log" 60; die "building the report program failed"; }
}

# Build each command VM_BINS names, static, into $VM_BUILD/bin/ (installed
# in the guest at /usr/local/bin), and go install each of VM_GO_INSTALL there.
build_guest_programs() {
	local out=$VM_BUILD/bin pkgs listed pkg dir kind name build_log
	rm -rf "$out"
	mkdir -p "$out"
	install_guest_modules "$out"
	read -ra pkgs <<<"$VM_BINS"
	((${#pkgs[@]} > 0)) || return 0
	listed=$(go list -e -f '{{.ImportPath}}{{"\t"}}{{.Dir}}{{"\t"}}{{.Name}}' "${pkgs[@]}") ||
		die "go list failed for VM_BINS='$VM_BINS'"
	while IFS=$'\t' read -r pkg dir kind; do
		[[ -n $pkg ]] || continue
		if [[ -z $dir || ! -d $dir ]]; then
			note "$pkg does not exist, not installed in the guest"
			continue
		fi
		[[ $kind == main ]] || die "VM_BINS: $pkg is package $kind, not a command"
		name=${pkg##*/}
		build_log=$VM_BUILD/logs/$name.bin.log
		log "[bins] $pkg -> /usr/local/bin/$name"
		CGO_ENABLED=0 go build -o "$out/$name" "$pkg" >"$build_log" 2>&1 ||
			{ show_log_tail "$build_log" 60; die "building $pkg failed"; }
	done <<<"$listed"
}

# go install each PACKAGE@VERSION of VM_GO_INSTALL, static, into $1: commands
# of other modules, at the version pinned there, from the Go module proxy.
install_guest_modules() {
	local out pkgs pkg name build_log
	out=$(cd "$1" && pwd) # GOBIN must be absolute
	read -ra pkgs <<<"$VM_GO_INSTALL"
	for pkg in "${pkgs[@]}"; do
		[[ $pkg == *@* ]] || die "VM_GO_INSTALL: $pkg has no @version"
		name=${pkg%@*}
		name=${name##*/}
		build_log=$VM_BUILD/logs/$name.bin.log
		log "[bins] go install $pkg -> /usr/local/bin/$name"
		# Outside the repository, so that its go.mod plays no part.
		(cd / && GOBIN=$out CGO_ENABLED=0 go install "$pkg") >"$build_log" 2>&1 ||
			{ show_log_tail "$build_log" 60; die "go install $pkg failed"; }
		[[ -x $out/$name ]] || die "go install $pkg wrote no $out/$name"
	done
}
