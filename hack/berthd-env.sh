# A berthd and a docker-registry in a temp dir, for hack/soak and hack/chaos.
# Source it after lib.sh: . "$here/berthd-env.sh"
# shellcheck shell=bash
#
# env_setup PROFILE [ROOT]: makes $tmp, links the PROFILE (release|debug)
# binaries into $tmp/bin; berthd's root is ROOT (default $tmp/root), its
# state $tmp/state. The caller sets `trap env_cleanup EXIT` right after.
# Then start_registry, start_berthd, and the clients d (docker) and c (ctr).

tmp=""
root=""
state=""
bridge=""
group=""
registry=""
berthd_pid=""
registry_pid=""

env_setup() {
	local profile="$1" b
	tmp="$(mktemp -d /tmp/bsoak.XXXXXX)"
	root="${2:-$tmp/root}"
	state="$tmp/state"
	bridge="bsk$$"
	# Containers' cgroups (Docker's parent, and containerd's namespace) and
	# images under a name of this run's own, apart from other engines'.
	group="berth-soak-$$"
	mkdir -p "$tmp/bin" "$tmp/cli" "$tmp/registry"
	for b in containerd-shim-berth-v2 berth berthd berth-logger; do
		[ -x "$BERTH_SRC/target/$profile/$b" ] || die "$BERTH_SRC/target/$profile/$b missing: build it first"
		ln -s "$BERTH_SRC/target/$profile/$b" "$tmp/bin/"
	done
	cat >"$tmp/config.toml" <<TOML
[docker]
address = "$tmp/docker.sock"
cgroup_parent = "/$group"
[network]
bridge = "$bridge"
subnet = "10.96.0.0/24"
TOML
	export tmp root state group
}

# build_binaries PROFILE: cargo build of the daemon, shim and runtime.
build_binaries() {
	local flag=()
	[ "$1" = release ] && flag=(--release)
	log "building $1 binaries"
	(cd "$BERTH_SRC" && cargo build "${flag[@]}" -q -p berth-runtime -p containerd-shim-berth-v2 -p berthd) ||
		die "build failed"
}

# stop_pid PID [SIGNAL]: signal a process we started and reap it.
stop_pid() {
	[ -n "$1" ] || return 0
	kill "-${2:-TERM}" "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

env_cleanup() {
	local status=$?
	[ -n "$tmp" ] || return "$status"
	# Containers outlive berthd: remove them through it while it runs.
	if [ -n "$berthd_pid" ] && kill -0 "$berthd_pid" 2>/dev/null; then
		remove_all_containers >/dev/null 2>&1 || true
	fi
	stop_pid "$berthd_pid"
	stop_pid "$registry_pid"
	# Shims that a killed berthd left, and the processes of containers a
	# failed run left in our cgroups.
	pkill -KILL -f "containerd-shim-berth-v2.*$tmp" 2>/dev/null || true
	find /sys/fs/cgroup -mindepth 3 -maxdepth 4 -name cgroup.procs -path "*/$group/*" -exec cat {} + 2>/dev/null |
		sort -u | xargs -r kill -KILL 2>/dev/null || true
	sleep 0.2
	grep -F "$tmp" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	ip link delete "$bridge" 2>/dev/null || true
	drop_iptables_rules "$bridge"
	# The runtime removes containers' cgroups, not their parents; nor the
	# shim its runtime's state directory for the namespace.
	find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -depth -type d -path "*/$group*" -exec rmdir {} + 2>/dev/null || true
	rm -rf "/run/containerd/berth/$group"
	rm -rf "$tmp"
	return "$status"
}

start_registry() {
	local port
	port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
	registry="127.0.0.1:$port"
	cat >"$tmp/registry/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $tmp/registry/data
http:
  addr: $registry
log:
  level: error
YML
	/usr/bin/docker-registry serve "$tmp/registry/config.yml" >/dev/null 2>&1 &
	registry_pid=$!
	export registry
}

# start_berthd: starts berthd over $root and $state (appending to its log)
# and waits until both APIs answer.
start_berthd() {
	PATH="$tmp/bin:$PATH" "$tmp/bin/berthd" --config "$tmp/config.toml" --root "$root" \
		--state "$state" --address "$tmp/berthd.sock" >>"$tmp/berthd.log" 2>&1 &
	berthd_pid=$!
	local _
	for _ in $(seq 1 300); do
		d version >/dev/null 2>&1 && c version >/dev/null 2>&1 && return 0
		kill -0 "$berthd_pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -20 "$tmp/berthd.log" >&2
	die "berthd did not start"
}

d() { DOCKER_HOST="unix://$tmp/docker.sock" DOCKER_CONFIG="$tmp/cli" timeout 120 docker "$@"; }
c() { timeout 120 ctr --address "$tmp/berthd.sock" --namespace "$group" "$@"; }

# remove_all_containers: every Docker container, then every containerd task
# and container in the default namespace.
remove_all_containers() {
	local ids id
	ids="$(d ps -aq)"
	[ -z "$ids" ] || d rm -f $ids >/dev/null
	for id in $(c task ls -q); do c task kill -s KILL "$id" >/dev/null 2>&1 || true; done
	for id in $(c task ls -q); do c task rm -f "$id" >/dev/null 2>&1 || true; done
	for id in $(c containers ls -q); do c containers rm "$id" >/dev/null; done
}

# What berthd holds, one "name value" line each.
census() {
	local count
	echo "mounts $(grep -cF "$tmp" /proc/self/mountinfo || true)"
	echo "cgroups $(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path "*/$group/*" 2>/dev/null | wc -l)"
	echo "netns $(find "$state" -path '*netns*' -type f 2>/dev/null | wc -l)"
	echo "shims $(pgrep -f "containerd-shim-berth-v2.*$tmp" | wc -l)"
	echo "shim_sockets $(find "$tmp" -path '*/s/*' -type s 2>/dev/null | wc -l)"
	echo "bundles $(find "$state" -mindepth 3 -maxdepth 3 -path '*io.containerd.runtime.v2.task*' -type d 2>/dev/null | wc -l)"
	echo "snapshots $(find "$root/snapshotter/overlayfs/snapshots" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)"
	echo "ingests $(find "$root/content/ingest" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
	echo "containers $(d ps -aq | wc -l)"
	echo "fds $(find "/proc/$berthd_pid/fd" -mindepth 1 2>/dev/null | wc -l)"
	# Zombies berthd or its shims did not reap (a container's processes
	# are reparented to its shim).
	local parents
	parents=" $berthd_pid $(pgrep -f "containerd-shim-berth-v2.*$tmp" | tr "\n" " " || true)"
	echo "zombies $(ps -eo ppid=,stat= | awk -v p="$parents" '$2 ~ /^Z/ && index(p, " " $1 " ") { n++ } END { print n + 0 }')"
	echo "rss_kb $(awk '/^VmRSS:/ { print $2 }' "/proc/$berthd_pid/status")"
}

# compare_census BEFORE AFTER [IGNORED...]: prints both columns; fails if a
# count grew (rss_kb and the IGNORED names are printed, not judged).
compare_census() {
	local before_file="$1" after_file="$2" status=0 name before after verdict
	shift 2
	printf '%-14s %22s %10s\n' "" before after
	while read -r name before; do
		after="$(awk -v k="$name" '$1 == k { print $2 }' "$after_file")"
		verdict=""
		case " rss_kb $* " in
		*" $name "*) ;;
		*) [ "$after" -le "$before" ] || verdict="LEAKED" ;;
		esac
		[ -z "$verdict" ] || status=1
		printf '%-14s %22s %10s %s\n' "$name" "$before" "$after" "$verdict"
	done <"$before_file"
	return "$status"
}

# lifecycle API N [TAG]: one container lifecycle through the Docker API
# (docker) or the containerd API (containerd), its container named
# TAG-API-N (TAG defaults to soak). One in five Docker ones is detached,
# exec'd into, has its logs read and is stopped and removed.
lifecycle() {
	local api="$1" i="$2" name="${3:-soak}-$1-$2"
	if [ "$api" = containerd ]; then
		c run --rm --fifo-dir "$tmp/fifo" "docker.io/library/$image:latest" "$name" sh -c "echo $i" >/dev/null
	elif [ $((i % 5)) -eq 0 ]; then
		d run -d --name "$name" "$image" sh -c "echo started $i; sleep 60" >/dev/null
		d exec "$name" sh -c "echo exec $i" >/dev/null
		d logs "$name" | grep -q "started $i"
		d stop -t 1 "$name" >/dev/null
		d rm "$name" >/dev/null
	else
		d run --rm "$image" sh -c "echo $i" >/dev/null
	fi
	if [ $((i % 50)) -eq 0 ] && [ "$api" = docker ]; then
		d pull -q "$remote" >/dev/null
	fi
}

# workload FIRST LAST P FAILURES [TAG]: lifecycles FIRST..LAST on each API,
# P at once; one line per failed lifecycle goes to FAILURES.
workload() {
	local first="$1" last="$2" p="$3" failures="$4" tag="${5:-soak}"
	export -f lifecycle d c
	export image remote
	{ for i in $(seq "$first" "$last"); do
		echo "docker $i $tag"
		echo "containerd $i $tag"
	done; } |
		xargs -P "$p" -n 3 bash -c 'lifecycle "$0" "$1" "$2" || echo "lifecycle $2-$0-$1 failed" >&2' 2>>"$failures" || true
}

# seed_images: the busybox image in berthd under both APIs, and pushed to
# the registry as $remote (pulled back by the workload).
seed_images() {
	image=berth-busybox
	remote="$registry/soak/busybox:1"
	"$here/make-image" "$tmp/image.tar" >/dev/null
	d load -i "$tmp/image.tar" >/dev/null
	c images import "$tmp/image.tar" >/dev/null
	d tag "$image" "$remote"
	d push "$remote" >/dev/null
	d rmi "$remote" >/dev/null
	export image remote
}
