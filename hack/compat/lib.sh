# shellcheck shell=bash
# hack/compat/lib.sh: what runc-suite and crun-suite share. Sourced; needs bash.

# Every cgroup directory below the hierarchies' roots (v1 and v2), sorted; not plain
# directories on the tmpfs at /sys/fs/cgroup (where a hidden cgroup2 mount was).
cgroup_dirs() {
	find /sys/fs/cgroup -mindepth 2 -maxdepth 5 -type d \( -fstype cgroup -o -fstype cgroup2 \) 2>/dev/null | sort
}

# report_leaked_cgroups BEFORE: warn about cgroups created since BEFORE (a cgroup_dirs
# listing) that still hold processes or are frozen, e.g. a container whose `delete --force`
# failed. Report only: on a shared host new cgroups may belong to someone else.
report_leaked_cgroups() {
	local before=$1 d procs fz leaks=
	while IFS= read -r d; do
		[ -d "$d" ] || continue
		procs=$(tr '\n' ' ' <"$d/cgroup.procs" 2>/dev/null || true)
		fz=$(cat "$d/freezer.state" 2>/dev/null || true)
		if [ -n "${procs// /}" ] || [ "$fz" = FROZEN ]; then
			leaks+="  $d${fz:+ ($fz)}${procs:+ pids: $procs}"$'\n'
		fi
	done < <(cgroup_dirs | comm -13 "$before" -)
	if [ -n "$leaks" ]; then
		echo "${prog:-compat}: WARNING: cgroups created during this run still hold processes or are frozen"
		echo "  (leaked by the runtime under test?  thaw, kill and rmdir them before the next run):"
		printf '%s' "$leaks"
	fi
}

# compare_with_expected RESULTS EXPECTED TMPDIR: RESULTS holds FILE<TAB>pass|fail|skip|
# unreported<TAB>name lines, EXPECTED the FILE<TAB>name<TAB>reason lines of tests expected to
# fail ('#' comments and blank lines ignored). Prints the stale entries and the regressions
# (failed, not expected) and a summary line; returns 1 when there are regressions.
compare_with_expected() {
	local results=$1 expected=$2 t=$3 nexp
	awk -F'\t' '!/^[[:space:]]*(#|$)/ {
		if (NF < 2) { print "malformed: " $0 > "/dev/stderr"; next }
		print $1 "\t" $2 }' "$expected" | sort -u >"$t/expected"
	awk -F'\t' '$2=="fail"||$2=="unreported" {print $1 "\t" $3}' "$results" | sort -u >"$t/failed"
	awk -F'\t' '$2=="pass" {print $1 "\t" $3}' "$results" | sort -u >"$t/passed"
	comm -23 "$t/failed" "$t/expected" >"$t/regressions"
	comm -12 "$t/passed" "$t/expected" >"$t/stale"
	nexp=$(comm -12 "$t/failed" "$t/expected" | wc -l)
	if [ -s "$t/stale" ]; then
		echo "== note: listed in $(basename "$expected") but passed now (remove these lines) =="
		sed 's/\t/: /; s/^/  /' "$t/stale"
	fi
	if [ -s "$t/regressions" ]; then
		echo "== REGRESSIONS: failed and not listed in $(basename "$expected") =="
		sed 's/\t/: /; s/^/  /' "$t/regressions"
	fi
	echo "expected failures: $nexp; regressions: $(wc -l <"$t/regressions"); stale entries: $(wc -l <"$t/stale")"
	[ ! -s "$t/regressions" ]
}
