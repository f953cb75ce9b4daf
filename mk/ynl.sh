#!/usr/bin/env bash
# ynl.sh: the kernel's YNL tools, from Debian's linux-source package.
#
#   mk/ynl.sh tools DIR   extract them into DIR (once per package version) and
#                         print DIR/<source>: tools/net/ynl/cli.py, lib/ and
#                         Documentation/netlink/netlink-raw.yaml under it
#   mk/ynl.sh check SPEC  validate SPEC against the kernel's netlink-raw
#                         schema, then load it with ynl's own spec parser
#
# Installs what is missing (linux-source-6.12, python3, python3-yaml,
# python3-jsonschema) when run as root. Debian's python runs everything:
# /usr/bin/python3, never another one on PATH.
set -euo pipefail
shopt -s inherit_errexit

LINUX_SOURCE=${LINUX_SOURCE:-linux-source-6.12}
PACKAGES=("$LINUX_SOURCE" python3 python3-yaml python3-jsonschema)
PYTHON=/usr/bin/python3

die() { echo "ynl: $*" >&2; exit 1; }

ensure_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	((EUID == 0)) || die "missing ${missing[*]}; run as root or install them"
	echo "ynl: apt-get install ${missing[*]}" >&2
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# tools DIR: extract tools/net/ynl and Documentation/netlink from the
# source tarball into DIR/<package>-<version>, unless done already.
tools() {
	local dir=$1 tar version dest
	ensure_packages
	tar=/usr/src/$LINUX_SOURCE.tar.xz
	[[ -f $tar ]] || die "$tar missing although $LINUX_SOURCE is installed"
	version=$(dpkg-query -W -f='${Version}' "$LINUX_SOURCE")
	dest=$dir/$LINUX_SOURCE-$version
	if [[ ! -f $dest/.complete ]]; then
		rm -rf "$dest"
		mkdir -p "$dest"
		tar -xJf "$tar" -C "$dest" --strip-components=1 \
			--wildcards '*/tools/net/ynl/cli.py' '*/tools/net/ynl/lib/*.py' \
			'*/Documentation/netlink/*.yaml'
		[[ -f $dest/tools/net/ynl/cli.py && -f $dest/Documentation/netlink/netlink-raw.yaml ]] ||
			die "$tar has no tools/net/ynl/cli.py or netlink-raw.yaml"
		touch "$dest/.complete"
	fi
	printf '%s\n' "$dest"
}

check() {
	local spec=$1 src
	[[ -f $spec ]] || die "$spec not found"
	src=$(tools "${YNL_DIR:-.build/ynl}")
	"$PYTHON" - "$spec" "$src" <<'EOF'
import sys

import jsonschema
import yaml

spec_path, src = sys.argv[1], sys.argv[2]
schema_path = src + "/Documentation/netlink/netlink-raw.yaml"
with open(spec_path) as f:
    spec = yaml.safe_load(f)
with open(schema_path) as f:
    schema = yaml.safe_load(f)
try:
    jsonschema.validate(spec, schema)
except jsonschema.ValidationError as e:
    sys.exit(f"spec-check: {spec_path} does not validate against {schema_path}:\n{e}")

# What ynl itself makes of it: every reference resolved.
sys.path.insert(0, src + "/tools/net/ynl")
from lib.nlspec import SpecFamily

family = SpecFamily(spec_path, schema_path)
ops = ", ".join(family.ops)
ntfs = ", ".join(family.ntfs)
print(f"spec-check: {spec_path} validates against {schema_path};"
      f" ynl reads operations {ops}, notifications {ntfs},"
      f" {len(family.mcast_groups)} multicast groups")
EOF
}

case ${1:-} in
tools) [[ $# -eq 2 ]] || die "usage: $0 tools DIR"; tools "$2" ;;
check) [[ $# -eq 2 ]] || die "usage: $0 check SPEC"; check "$2" ;;
*) die "usage: $0 tools DIR | check SPEC" ;;
esac
