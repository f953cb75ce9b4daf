#!/usr/bin/env bash
# deps.sh: install what the host side of `make test` needs, on a fresh
# Debian machine, as root. Only missing packages are installed.
set -euo pipefail

packages=(sparse iproute2 util-linux bc make gcc libelf-dev protobuf-compiler libprotobuf-dev
	runc containernetworking-plugins busybox-static dkms
	# checkpatch.pl and the YNL tools (make checkpatch, make spec-check, and
	# ynl in the VM); python3 is Debian's, for ynl.
	linux-source-6.12 python3 python3-yaml python3-jsonschema)
missing=()
for p in "${packages[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Headers of the newest installed cloud kernel (the VM harness boots it).
if ! compgen -G '/lib/modules/*-cloud-amd64/build' >/dev/null; then
	missing+=(linux-image-cloud-amd64 linux-headers-cloud-amd64)
fi
if ((${#missing[@]})); then
	((EUID == 0)) || { echo "deps: missing ${missing[*]}; run as root" >&2; exit 1; }
	echo "deps: apt-get install ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	echo "deps: all host packages present"
fi
go mod download
