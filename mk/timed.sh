#!/usr/bin/env bash
# timed.sh NAME COMMAND...: run COMMAND, then print how long stage NAME took.
set -uo pipefail
name=$1
shift
start=$(date +%s.%N)
echo "== stage $name"
"$@"
rc=$?
end=$(date +%s.%N)
printf '== stage %s: %s in %.1f s\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")" \
	"$(echo "$end - $start" | bc)"
exit $rc
