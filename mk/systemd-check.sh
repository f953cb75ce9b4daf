#!/usr/bin/env bash
# systemd-check.sh: check deploy/systemd/nsbrokerd.service with systemd's
# own tools, offline: `systemd-analyze verify` (any warning fails), and
# `systemd-analyze security` against a ceiling, so that hardening is not
# lost by accident. Run from the repository root (make systemd-check).
set -euo pipefail

die() { echo "systemd-check: $*" >&2; exit 1; }

unit=deploy/systemd/nsbrokerd.service
# Exposure is "3.2 OK" today; systemd counts in tenths.
ceiling=${SYSTEMD_EXPOSURE_CEILING:-35}

command -v systemd-analyze >/dev/null || die "systemd-analyze not found (apt-get install systemd)"
[[ -f $unit ]] || die "$unit not found; run from the repository root"

# verify wants ExecStart's binary to exist: build it, and point a copy of
# the unit at it.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/nsbrokerd" ./cmd/nsbrokerd
sed "s#/usr/local/bin/nsbrokerd#$tmp/nsbrokerd#" "$unit" >"$tmp/nsbrokerd.service"

out=$(systemd-analyze verify "$tmp/nsbrokerd.service" 2>&1) || die "verify failed: $out"
[[ -z $out ]] || die "verify warns: ${out//$tmp/deploy\/systemd}"

systemd-analyze security --offline=true --threshold="$ceiling" "$tmp/nsbrokerd.service" >"$tmp/security.txt" 2>&1 ||
	die "exposure above $((ceiling / 10)).$((ceiling % 10)):$(echo; grep -E '^(✗|→)' "$tmp/security.txt")"
echo "systemd-check: $unit verifies; $(grep -o 'Overall exposure level.*' "$tmp/security.txt")"
