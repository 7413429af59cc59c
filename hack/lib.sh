# Shared helpers for Berth's scripts. Source it: . "$(dirname "$0")/lib.sh"
# shellcheck shell=bash

BERTH_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BERTH_SRC

case ":$PATH:" in
*":$HOME/.cargo/bin:"*) ;;
*) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARN: %s\n' "$*" >&2; }
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "$(basename "$0") must run as root"
}

pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# ensure_pkgs PKG...: apt-get install only the packages that are missing.
ensure_pkgs() {
	local missing=() p
	for p in "$@"; do
		pkg_installed "$p" || missing+=("$p")
	done
	[ "${#missing[@]}" -eq 0 ] && return 0
	need_root
	log "installing ${missing[*]}"
	apt-get update -q </dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

# ensure_docker_cli: Debian's docker.io for its 20.10 CLI (the Docker API
# tests run it against berthd). Its maintainer scripts would start dockerd,
# which creates docker0 and rewrites iptables: a policy-rc.d forbids every
# service start during the install (removed after, if it was ours), and the
# units it enables are disabled again so no boot or socket starts dockerd.
ensure_docker_cli() {
	pkg_installed docker.io && return 0
	local policy=/usr/sbin/policy-rc.d ours="" status=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# hack/test: no service starts while docker.io installs\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		ours=1
	fi
	ensure_pkgs docker.io || status=1
	[ -n "$ours" ] && rm -f "$policy"
	if [ "$status" -eq 0 ] && [ -d /run/systemd/system ]; then
		systemctl disable docker.service docker.socket >/dev/null 2>&1 || true
	fi
	return "$status"
}

ensure_cargo() {
	command -v cargo >/dev/null 2>&1 || die "cargo not found (expected in ~/.cargo/bin)"
}

# berth_bin [release|debug]: path of the built berth binary (may not exist).
berth_bin() {
	local profile="${1:-release}"
	local target="${CARGO_TARGET_DIR:-$BERTH_SRC/target}"
	echo "$target/$profile/berth"
}

# build_berth_release: build berth in release mode unless it is already there.
build_berth_release() {
	local bin
	bin="$(berth_bin release)"
	if [ -z "${BERTH_PREBUILT:-}" ] && { [ ! -x "$bin" ] || [ -n "${BERTH_REBUILD:-}" ]; }; then
		ensure_cargo
		log "building berth (release)"
		(cd "$BERTH_SRC" && cargo build --release -p berth-runtime) >&2 || return 1
	fi
	[ -x "$bin" ] || return 1
	echo "$bin"
}

# build_release PKG...: `cargo build --release` of the packages, unless
# BERTH_PREBUILT is set: hack/bench/all builds once for all its benchmarks,
# so that every figure of a report comes from the same binaries.
build_release() {
	[ -z "${BERTH_PREBUILT:-}" ] || return 0
	ensure_cargo
	log "building release binaries"
	local args=() p
	for p in "$@"; do args+=(-p "$p"); done
	(cd "$BERTH_SRC" && cargo build --release -q "${args[@]}")
}

# drop_iptables_rules LINK: deletes the filter and nat rules that name LINK
# (dockerd's for its bridge, berthd's and the CNI plugins' for theirs): a
# stopped daemon leaves them behind.
drop_iptables_rules() {
	local link="$1" table rule
	command -v iptables-save >/dev/null || return 0
	for table in filter nat; do
		{ iptables-save -t "$table" 2>/dev/null || true; } |
			{ grep -E -- "^-A .*[[:space:]]$link([[:space:]]|\$)" || true; } |
			while IFS= read -r rule; do
				# xargs splits the rule as iptables-save quoted it.
				printf '%s\n' "${rule#-A }" | xargs iptables -t "$table" -D 2>/dev/null || true
			done
	done
}

# make_rootfs DIR: busybox-static plus its applet links and a minimal /etc.
make_rootfs() {
	local root="$1" a
	mkdir -p "$root"/{bin,etc,proc,sys,dev,tmp,root,home,var,run,mnt}
	chmod 1777 "$root/tmp"
	cp /bin/busybox "$root/bin/busybox"
	chmod 755 "$root/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] && continue
		[ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:1000:1000:nobody:/home:/bin/sh\n' >"$root/etc/passwd"
	printf 'root:x:0:\ntty:x:5:\nnobody:x:1000:\n' >"$root/etc/group"
}

# make_bundle DIR SPEC_BIN ARGS...: rootfs plus a config.json from `SPEC_BIN spec`,
# tweaked with jq (terminal false, the given args).
make_bundle() {
	local dir="$1" spec_bin="$2"
	shift 2
	mkdir -p "$dir"
	make_rootfs "$dir/rootfs"
	rm -f "$dir/config.json"
	(cd "$dir" && "$spec_bin" spec) || die "$spec_bin spec failed"
	[ -s "$dir/config.json" ] || die "$spec_bin spec wrote no config.json"
	local args
	args="$(jq -cn '$ARGS.positional' --args -- "$@")"
	jq --argjson args "$args" '.process.terminal = false | .process.args = $args' \
		"$dir/config.json" >"$dir/config.json.new"
	mv "$dir/config.json.new" "$dir/config.json"
}
