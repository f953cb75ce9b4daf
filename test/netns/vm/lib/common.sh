# shellcheck shell=bash
# Messages and stage timing shared by the vmtest scripts.

log() { printf 'vmtest: %s\n' "$*"; }
note() { printf 'vmtest: note: %s\n' "$*"; }
die() {
	printf 'vmtest: error: %s\n' "$*" >&2
	exit 1
}

# Print the last lines of a log file, for a step that failed.
show_log_tail() {
	local file=$1 lines=${2:-40}
	printf 'vmtest: last %d lines of %s:\n' "$lines" "$file" >&2
	tail -n "$lines" "$file" | sed 's/^/  /' >&2
}

# Microseconds since the epoch.
now_us() { local t=$EPOCHREALTIME; printf '%s\n' "${t/./}"; }

# Format microseconds as seconds with one decimal.
format_secs() {
	local us=$1
	printf '%d.%d s' $((us / 1000000)) $((us % 1000000 / 100000))
}

# Stage names and durations, in the order run, for the closing summary.
STAGE_TIMES=()

# run_stage NAME COMMAND...: run one stage and report how long it took.
run_stage() {
	local name=$1 start took
	shift
	start=$(now_us)
	"$@"
	took=$(($(now_us) - start))
	STAGE_TIMES+=("$name $(format_secs "$took")")
	log "[$name] took $(format_secs "$took")"
}

print_stage_times() {
	local joined
	joined=$(printf '%s, ' "${STAGE_TIMES[@]}")
	log "times: ${joined%, }"
}
