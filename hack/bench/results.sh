# Machine-readable results for the hack/bench scripts. Source it after
# lib.sh. Every function does nothing unless BENCH_RESULTS names a file, to
# which it appends one JSON object on one line (JSON Lines); the scripts'
# human output is the same either way. hack/bench/all sets BENCH_RESULTS and
# turns the file into docs/benchmarks.md.
#
# A measured case:
#   {"bench":"run","case":"ctr run --rm true","unit":"ms","better":"lower",
#    "samples":30,"reference":"berthd",
#    "subjects":{"berthd":{"median":46.0,"min":40.1,"max":60.2},
#                "containerd":{"median":95.3,"min":88.0,"max":130.9}}}
# Subjects keep the order the script gives them, the reference (Berth's
# component) first. The median is the lower median of the samples (element
# (n+1)/2 of the sorted list, as the human tables print it). A figure read
# once per subject (a throughput, an RSS) has "samples":1 and its value as
# median, min and max alike.
#
# A note on a benchmark's setup, shown under its table:
#   {"bench":"runtime","note":"crun ran in a private mount namespace ..."}
# shellcheck shell=bash

# The scripts change directory: a relative BENCH_RESULTS is made absolute.
case "${BENCH_RESULTS:-}" in
"" | /*) ;;
*) BENCH_RESULTS="$PWD/$BENCH_RESULTS" ;;
esac

# bench_samples BENCH CASE UNIT BETTER SCALE REFERENCE SUBJECT FILE [SUBJECT FILE]...
#   Each FILE holds one number a line, in UNIT times SCALE (e.g. nanoseconds
#   with UNIT ms and SCALE 1e6); BETTER is lower or higher.
bench_samples() {
	[ -n "${BENCH_RESULTS:-}" ] || return 0
	local bench="$1" case="$2" unit="$3" better="$4" scale="$5" ref="$6" stats
	shift 6
	local subjects='[]'
	while [ "$#" -gt 0 ]; do
		[ "$#" -ge 2 ] || die "bench_samples: subject $1 without a file"
		stats="$(jq -s -c --argjson scale "$scale" --arg file "$2" '
			if length == 0 then error("no samples in \($file)") else . end
			| map(. / $scale) | sort
			| {median: .[((length + 1) / 2 | floor) - 1], min: .[0], max: .[-1], n: length}' "$2")" ||
			die "bench_samples: cannot read $2"
		subjects="$(jq -c --arg name "$1" --argjson s "$stats" '. + [[$name, $s]]' <<<"$subjects")"
		shift 2
	done
	_bench_emit "$bench" "$case" "$unit" "$better" "$ref" "$subjects"
}

# bench_values BENCH CASE UNIT BETTER SCALE REFERENCE SUBJECT VALUE [SUBJECT VALUE]...
#   One figure per subject, in UNIT times SCALE.
bench_values() {
	[ -n "${BENCH_RESULTS:-}" ] || return 0
	local bench="$1" case="$2" unit="$3" better="$4" scale="$5" ref="$6"
	shift 6
	local subjects='[]'
	while [ "$#" -gt 0 ]; do
		[ "$#" -ge 2 ] || die "bench_values: subject $1 without a value"
		subjects="$(jq -c --arg name "$1" --argjson v "$2" --argjson scale "$scale" \
			'. + [[$name, {median: ($v / $scale), min: ($v / $scale), max: ($v / $scale), n: 1}]]' \
			<<<"$subjects")" || die "bench_values: $1's value '$2' is not a number"
		shift 2
	done
	_bench_emit "$bench" "$case" "$unit" "$better" "$ref" "$subjects"
}

# bench_note BENCH TEXT...: a line about the benchmark's setup.
bench_note() {
	[ -n "${BENCH_RESULTS:-}" ] || return 0
	local bench="$1"
	shift
	jq -cn --arg bench "$bench" --arg note "$*" '{bench: $bench, note: $note}' >>"$BENCH_RESULTS"
}

# _bench_emit BENCH CASE UNIT BETTER REFERENCE SUBJECTS: SUBJECTS is a JSON
# array of [name, {median, min, max, n}] pairs.
_bench_emit() {
	case "$4" in lower | higher) ;; *) die "bench results: better must be lower or higher, not '$4'" ;; esac
	jq -cn --arg bench "$1" --arg case "$2" --arg unit "$3" --arg better "$4" --arg ref "$5" \
		--argjson subjects "$6" '
		if ($subjects | map(.[0]) | index($ref)) == null then error("reference \($ref) is not a subject") else . end
		| {bench: $bench, case: $case, unit: $unit, better: $better,
		   samples: ($subjects | map(.[1].n) | min), reference: $ref,
		   subjects: ($subjects | map({key: .[0], value: (.[1] | del(.n))}) | from_entries)}' \
		>>"$BENCH_RESULTS" || die "bench results: cannot record $2 of $1"
}
