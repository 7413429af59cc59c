# Starts berthd (its Docker API) and Debian's dockerd 20.10 side by side in
# temp dirs, each with its own socket and bridge, with hack/make-image's
# busybox image loaded into both; removes everything on exit. Source it
# from a bench script after lib.sh:
#   . "$here/docker-daemons.sh"; start_docker_daemons
# then drive them with `d berthd ARGS` / `d dockerd ARGS`. Sets $tmp
# (scratch dir), $image (the image's name) and pid[berthd|dockerd].
# shellcheck shell=bash

need_root
command -v dockerd >/dev/null || die "dockerd missing: apt-get install docker.io"
docker_cli=/usr/bin/docker
[ -x "$docker_cli" ] || docker_cli="$(command -v docker)" || die "no docker CLI"

tmp="$(mktemp -d /tmp/bdock.XXXXXX)"
bench_bridge="bdk$$"
image=berth-busybox
declare -A sock pid
sock[berthd]="$tmp/berthd/docker.sock"
sock[dockerd]="$tmp/dockerd/docker.sock"

# d DAEMON ARGS...: the docker CLI against one of the daemons (the legacy
# builder for `docker build`, which is what berthd speaks).
d() {
	local which="$1"
	shift
	DOCKER_HOST="unix://${sock[$which]}" DOCKER_CONFIG="$tmp/cli" DOCKER_BUILDKIT=0 "$docker_cli" "$@"
}

stop_docker_daemons() {
	local which link
	for which in berthd dockerd; do
		[ -n "${pid[$which]:-}" ] || continue
		# shellcheck disable=SC2046
		d "$which" rm -f $(d "$which" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
		kill "${pid[$which]}" 2>/dev/null || true
		wait "${pid[$which]}" 2>/dev/null || true
	done
	grep -F "$tmp" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	for link in "$bench_bridge" "${bench_bridge}b"; do
		ip link delete "$link" 2>/dev/null || true
		drop_iptables_rules "$link"
	done
	rm -rf "$tmp"
}

trap stop_docker_daemons EXIT

start_docker_daemons() {
	cd "$BERTH_SRC"
	build_release berth-runtime containerd-shim-berth-v2 berthd || die "build failed"
	mkdir -p "$tmp/bin" "$tmp/berthd" "$tmp/dockerd" "$tmp/cli"
	for b in containerd-shim-berth-v2 berth berthd berth-logger berthctl; do
		ln -s "$BERTH_SRC/target/release/$b" "$tmp/bin/"
	done
	cat >"$tmp/berthd/config.toml" <<TOML
[docker]
address = "${sock[berthd]}"
[network]
bridge = "${bench_bridge}b"
subnet = "10.97.0.0/24"
TOML
	PATH="$tmp/bin:$PATH" "$tmp/bin/berthd" --config "$tmp/berthd/config.toml" --root "$tmp/berthd/root" \
		--state "$tmp/berthd/state" --address "$tmp/berthd/berthd.sock" >"$tmp/berthd.log" 2>&1 &
	pid[berthd]=$!

	ip link add "$bench_bridge" type bridge
	ip addr add 10.98.0.1/24 dev "$bench_bridge"
	ip link set "$bench_bridge" up
	dockerd --data-root "$tmp/dockerd/root" --exec-root "$tmp/dockerd/exec" --pidfile "$tmp/dockerd/pid" \
		--host "unix://${sock[dockerd]}" --bridge "$bench_bridge" --storage-driver overlay2 \
		>"$tmp/dockerd.log" 2>&1 &
	pid[dockerd]=$!

	"$here/../make-image" "$tmp/image.tar" >/dev/null
	local which link
	for which in berthd dockerd; do
		for _ in $(seq 1 200); do
			d "$which" version >/dev/null 2>&1 && break
			sleep 0.1
		done
		d "$which" version >/dev/null 2>&1 || die "$which did not start; see $tmp/$which.log"
	done
	# dockerd 20.10 loads only docker's archive format: it gets the image as
	# berthd saves it (with docker's manifest.json).
	d berthd load -i "$tmp/image.tar" >/dev/null
	d berthd save -o "$tmp/image-docker.tar" "$image"
	d dockerd load -i "$tmp/image-docker.tar" >/dev/null
}

# stats FILE: "median min max" of the numbers in FILE, one a line.
stats() { sort -n "$1" | awk '{ v[NR] = $1 } END { printf "%d %d %d\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
ms() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
