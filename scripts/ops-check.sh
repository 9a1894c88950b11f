#!/usr/bin/env bash
# Checks the deployment artefacts without a Docker engine or a running systemd:
#
#   build    the binary with scripts/build.sh, the script the Dockerfile runs
#            (static, -trimpath, version stamped), and that the Dockerfile
#            still runs it;
#   version  the built binary reports the stamped version;
#   run      the built binary runs the way the unit and the image run it:
#            config with ${VAR}s from configs/iot-mns-bridge.env, the secret
#            from $CREDENTIALS_DIRECTORY, spool and dead-letter file under
#            $STATE_DIRECTORY, umask 0077, against `iot-mns-bridge
#            iot-simulator` and `iot-mns-bridge mns-emulator` on loopback;
#            waits for /readyz, runs `healthcheck -url` and `healthcheck
#            -config`, sees the forwarded counter move, reloads with SIGHUP,
#            stops with SIGTERM and expects exit 0, and that the secret
#            appears in no output;
#   unit     `systemd-analyze verify` on a copy of configs/iot-mns-bridge.service
#            whose ExecStart points at the built binary (verify requires an
#            executable there; nothing is installed), failing on any warning
#            about the unit, and `systemd-analyze security --offline` with a
#            threshold so hardening cannot silently regress;
#   release  scripts/release.sh: the three static binaries (amd64, arm64,
#            armv7; checked with `go version -m`), the tarballs and their
#            contents, the .debs, SHA256SUMS verified with sha256sum -c;
#   deb      the host architecture's .deb installed with dpkg -i on this
#            machine (root only): the files, modes and conffiles, `check` on
#            the installed example config, the unit not enabled, an upgrade
#            that keeps a changed config, then dpkg --purge leaving nothing;
#   qemu     the arm64 and armv7 binaries under qemu-user-static: `version`
#            and a short `demo` (simulator, bridge, emulator; nothing lost);
#   rules    promtool (Debian package prometheus) on deploy/prometheus:
#            `check rules` and `test rules` (a unit test per alert), and
#            every query of the Grafana dashboard deploy/grafana/*.json
#            parsed by promtool too (as recording rules, the dashboard's
#            variables filled in). internal/app's TestDeployFilesUseExportedMetrics
#            checks that the metrics they use exist;
#   kube     deploy/kubernetes/validate (its own Go module, with k8s.io/api):
#            every manifest of the kustomization decoded strictly into its
#            API type, references, probes, resources, the client id from
#            the pod name, the grace period above shutdown_timeout, and the
#            ConfigMap's config loaded by the bridge's config package;
#   image    (not in the default list: internal/opscheck's TestImage runs
#            it and then runs the image) builds the Dockerfile's final stage
#            with podman, offline, from the release binary: the Dockerfile's
#            last stage with COPY --from=build rewritten to copy from a
#            context holding the release binary, on a local stand-in for
#            gcr.io/distroless/static-debian12:nonroot (FROM scratch with a
#            passwd/group entry for 65532, the host's CA bundle and /tmp),
#            tagged $OPS_CHECK_IMAGE (default localhost/iot-mns-bridge:opscheck).
#            Checks the user, HEALTHCHECK and `version`; the image is removed
#            at exit unless OPS_CHECK_KEEP_IMAGE=1. podman settings:
#            scripts/podman/containers.conf (CONTAINERS_CONF);
#   nspawn   (not in the default list: internal/opscheck's TestSystemdUnit
#            runs it, then boots systemd with systemd-nspawn over this
#            machine's root and runs the unit in it) installs
#            systemd-container when missing, and checks this is root.
#
# The heavy steps (release, deb, qemu) are skipped with OPS_CHECK_QUICK=1
# for local runs; under CI=true they always run. Missing tools (dpkg-deb,
# qemu-user-static, ...) are installed with apt-get when run as root, else
# the step is skipped, or fails under CI=true.
#
# Usage: scripts/ops-check.sh [STEP...]      (default: all, in the order above)
#
# Prints "ops-check: ok STEP" per passed step, "ops-check: SKIP STEP: reason"
# for a skipped one, and exits non-zero at the first failure with the logs.
# systemd-analyze is installed with apt when missing and run as root; when it
# is missing otherwise the unit step is skipped, or fails under CI=true.
#
# Environment: VERSION (stamped, default v0.0.0-opscheck), OPS_CHECK_HTTP_PORT
# (the bridge's HTTP port; default: a free one), OPS_CHECK_KEEP=1 (keep the
# work directory). NOTIFY_SOCKET and WATCHDOG_USEC, when set, reach only the
# bridge (internal/opscheck checks the sd_notify messages that way);
# OPS_CHECK_NOTIFY_LOG, a file where the test appends what arrives on that
# socket, makes the run step wait for the status line saying connected
# before it reloads.
#
# Everything listens on 127.0.0.1, every wait is bounded, and only the
# processes this script started are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

steps=("$@")
all_steps=(build version run unit release deb qemu rules kube image nspawn)
# image and nspawn are run by internal/opscheck's TestImage and TestSystemdUnit.
[ ${#steps[@]} -gt 0 ] || steps=(build version run unit release deb qemu rules kube)
for s in "${steps[@]}"; do
	case " ${all_steps[*]} " in *" $s "*) ;; *)
		echo "ops-check: unknown step $s (${all_steps[*]})" >&2
		exit 2
		;;
	esac
done

version=${VERSION:-v0.0.0-opscheck}
work=$(mktemp -d "${TMPDIR:-/tmp}/ops-check.XXXXXX")
bin=$work/bin/iot-mns-bridge
pids=()

cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -n "${OPS_CHECK_KEEP:-}" ]; then
		echo "ops-check: work directory kept: $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

ok() { echo "ops-check: ok $1"; }
note() { echo "ops-check: $*"; }
fail() {
	echo "ops-check: FAIL $*" >&2
	local f
	for f in "$work"/logs/*; do
		[ -s "$f" ] || continue
		echo "---- $f (last 40 lines)" >&2
		tail -n 40 "$f" >&2
	done
	exit 1
}

# waitfor SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.1s until it
# succeeds, failing after SECONDS.
waitfor() {
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		if "$@"; then return 0; fi
		sleep 0.1
	done
	fail "timed out after ${secs}s waiting for $what"
}

alive() { kill -0 "$1" 2>/dev/null; }

http_get() { # URL: the body on stdout; fails unless 200
	if command -v curl >/dev/null; then
		curl -fsS --max-time 5 "$1"
	else
		"$bin" healthcheck -url "$1" >/dev/null
	fi
}

# free_port prints a port nothing listens on, taken from 29000-32499: below
# Linux's ephemeral range (32768 and up), so no outgoing connection of a test
# running beside this one can take it between this probe and the bridge's bind.
free_port() {
	local p i
	for ((i = 0; i < 50; i++)); do
		p=$((29000 + RANDOM % 3500))
		if ! (: </dev/tcp/127.0.0.1/"$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	fail "no free port found"
}

ensure_built() {
	[ -x "$bin" ] && return 0
	mkdir -p "$work/bin"
	VERSION=$version scripts/build.sh "$bin" || fail "scripts/build.sh"
}

step_build() {
	ensure_built
	# Join continuation lines, then look for the RUN that calls the script.
	# (Into a variable first: with pipefail, grep -q ending the pipe early
	# would make sed's SIGPIPE a failure.)
	local joined
	joined=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' Dockerfile)
	grep -Eq '^RUN .*scripts/build\.sh' <<<"$joined" ||
		fail "the Dockerfile no longer builds with scripts/build.sh: CI would test a different binary"
	local info
	info=$(go version -m "$bin")
	grep -Eq $'^\tbuild\tCGO_ENABLED=0$' <<<"$info" || fail "binary not built with CGO_ENABLED=0: $info"
	grep -Eq $'^\tbuild\t-trimpath=true$' <<<"$info" || fail "binary not built with -trimpath: $info"
	note "binary $(wc -c <"$bin") bytes, $(head -n1 <<<"$info")"
	ok build
}

step_version() {
	ensure_built
	local out
	out=$("$bin" version) || fail "iot-mns-bridge version exited $?"
	[[ $out == "iot-mns-bridge $version "* ]] || fail "version printed \"$out\", want \"iot-mns-bridge $version ...\""
	note "version: $out"
	ok version
}

# listening_addr FILE PREFIX: the address after PREFIX in FILE's first matching line.
listening_addr() { sed -n "s#^$2\([^ ]*\).*#\1#p" "$1" | head -n1; }

step_run() {
	ensure_built
	mkdir -p "$work/logs" "$work/etc" "$work/credentials" "$work/state"
	chmod 0700 "$work/credentials" "$work/state"
	local secret
	secret="opscheck-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
	(umask 077 && printf '%s\n' "$secret" >"$work/credentials/access_key_secret")

	# The env file as systemd's EnvironmentFile= would load it, with the
	# endpoints pointed at the local peers below.
	set -a
	# shellcheck disable=SC1091
	. configs/iot-mns-bridge.env
	set +a
	[ -n "${ALIBABA_CLOUD_ACCESS_KEY_ID:-}" ] || fail "configs/iot-mns-bridge.env sets no ALIBABA_CLOUD_ACCESS_KEY_ID"
	local akid=$ALIBABA_CLOUD_ACCESS_KEY_ID
	local peer_env=(env -u NOTIFY_SOCKET -u WATCHDOG_USEC -u WATCHDOG_PID)

	"${peer_env[@]}" "$bin" mns-emulator -listen 127.0.0.1:0 -access-key-id "$akid" \
		-access-key-secret-file "$work/credentials/access_key_secret" \
		-auto-create -queue telemetry-a1SimProduct,iot-unrouted \
		>"$work/logs/mns-emulator.out" 2>"$work/logs/mns-emulator.err" &
	local emu=$!
	pids+=("$emu")
	"${peer_env[@]}" "$bin" iot-simulator -listen 127.0.0.1:0 -amqp-listen 127.0.0.1:0 -ca-out "$work/etc/ca.pem" \
		-access-key-id "$akid" -access-key-secret-file "$work/credentials/access_key_secret" \
		-devices 5 -rate 200 -log-level warn \
		>"$work/logs/iot-simulator.out" 2>"$work/logs/iot-simulator.err" &
	local sim=$!
	pids+=("$sim")
	waitfor 30 "the MNS emulator's address" grep -q '^mns-emulator listening on ' "$work/logs/mns-emulator.out"
	waitfor 30 "the IoT simulator's address and CA" grep -q '^iot-simulator CA certificate written' "$work/logs/iot-simulator.out"
	local mns_endpoint sim_addr
	mns_endpoint=$(listening_addr "$work/logs/mns-emulator.out" 'mns-emulator listening on ')
	sim_addr=$(listening_addr "$work/logs/iot-simulator.out" 'iot-simulator listening on ')
	[ -n "$mns_endpoint" ] && [ -n "$sim_addr" ] || fail "could not read the peers' addresses"

	local port=${OPS_CHECK_HTTP_PORT:-}
	[ -n "$port" ] || port=$(free_port)
	local cfg=$work/etc/config.yaml
	(umask 077 && cat >"$cfg") <<'EOF'
# Written by scripts/ops-check.sh: the layout configs/iot-mns-bridge.service
# and the Dockerfile document, pointed at local test peers.
source:
  protocol: stomp
  endpoint: ${IOT_ENDPOINT}
  client_id: ops-check
  credentials:
    access_key_id: ${ALIBABA_CLOUD_ACCESS_KEY_ID}
    access_key_secret_file: access_key_secret
  tls:
    ca_file: ca.pem
    server_name: localhost
mns:
  endpoint: ${MNS_ENDPOINT}
routes:
  - match: /{productKey}/{deviceName}/user/#
    queue: telemetry-{productKey}
default_route:
  queue: iot-unrouted
delivery:
  dead_letter:
    file: ${STATE_DIRECTORY}/dead-letter.jsonl
spool:
  dir: ${STATE_DIRECTORY}/spool
http:
  listen: 127.0.0.1:${OPS_HTTP_PORT}
log:
  level: info
  summary_interval: 0s
shutdown_timeout: 10s
EOF
	local bridge_env=(env "IOT_ENDPOINT=$sim_addr" "MNS_ENDPOINT=$mns_endpoint" "OPS_HTTP_PORT=$port"
		"CREDENTIALS_DIRECTORY=$work/credentials" "STATE_DIRECTORY=$work/state")
	local base=http://127.0.0.1:$port

	local t0=$SECONDS
	(umask 077 && exec "${bridge_env[@]}" "$bin" run -config "$cfg") \
		>"$work/logs/bridge.out" 2>"$work/logs/bridge.log" &
	local br=$!
	pids+=("$br")
	ready() {
		alive "$br" || fail "the bridge exited before it was ready"
		http_get "$base/readyz" >/dev/null 2>&1
	}
	waitfor 60 "/readyz to answer 200" ready
	note "ready after about $((SECONDS - t0))s"

	"$bin" healthcheck -url "$base/healthz" >/dev/null || fail "healthcheck -url $base/healthz exited $?"
	"${bridge_env[@]}" "$bin" healthcheck -config "$cfg" >/dev/null || fail "healthcheck -config exited $?"

	forwarded() { http_get "$base/metrics" | awk '/^iot_mns_bridge_forwarded_total/ {n += $NF} END {printf "%d\n", n}'; }
	local f0 f1 ts
	moved() { [ "$(forwarded)" -gt "$1" ]; }
	waitfor 30 "messages to be forwarded" moved 0
	f0=$(forwarded)
	ts=$(date +%s.%N)
	waitfor 30 "the forwarded counter to move past $f0" moved "$f0"
	f1=$(forwarded)
	note "forwarded $f0 -> $f1 in $(awk -v a="$ts" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')s"

	if [ -n "${OPS_CHECK_NOTIFY_LOG:-}" ]; then # the test's sd_notify socket: see internal/opscheck
		status_connected() { grep -q '^STATUS=connected ' "$OPS_CHECK_NOTIFY_LOG"; }
		waitfor 30 "the sd_notify status line to say connected" status_connected
	fi

	kill -HUP "$br"
	waitfor 30 "the reload to be logged" grep -q 'config reloaded' "$work/logs/bridge.log"
	"$bin" healthcheck -url "$base/healthz" >/dev/null || fail "healthcheck after SIGHUP exited $?"

	kill -TERM "$br"
	stopped() { ! alive "$br"; }
	waitfor 30 "the bridge to exit after SIGTERM" stopped
	local rc=0
	wait "$br" || rc=$?
	[ "$rc" -eq 0 ] || fail "the bridge exited $rc after SIGTERM, want 0"
	[ -d "$work/state/spool" ] || fail "no spool under \$STATE_DIRECTORY"
	if grep -rqF "$secret" "$work/logs" "$work/etc"; then
		fail "the AccessKey secret appears in: $(grep -rlF "$secret" "$work/logs" "$work/etc" | tr '\n' ' ')"
	fi
	ok run
}

step_unit() {
	if ! command -v systemd-analyze >/dev/null; then
		if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
			note "installing systemd for systemd-analyze (apt-get)"
			apt_install systemd || fail "apt-get install systemd"
		elif [ "${CI:-}" = true ]; then
			fail "systemd-analyze is missing and this is not root: install the systemd package"
		else
			echo "ops-check: SKIP unit: systemd-analyze is missing and this is not root (install the systemd package; under CI=true this fails)"
			return 0
		fi
	fi
	ensure_built
	local unit=configs/iot-mns-bridge.service
	grep -q '^ExecStart=/usr/local/bin/iot-mns-bridge ' "$unit" ||
		fail "$unit: ExecStart does not start /usr/local/bin/iot-mns-bridge"
	mkdir -p "$work/unit"
	sed "s#^ExecStart=/usr/local/bin/iot-mns-bridge #ExecStart=$bin #" "$unit" >"$work/unit/iot-mns-bridge.service"
	local out rc=0
	out=$(cd "$work/unit" && systemd-analyze verify ./iot-mns-bridge.service 2>&1) || rc=$?
	if [ "$rc" -ne 0 ] || grep -q 'iot-mns-bridge\.service' <<<"$out"; then
		fail "systemd-analyze verify $unit (exit $rc):"$'\n'"$out"
	fi
	[ -z "$out" ] || note "systemd-analyze verify, about other units: $out"

	local v
	v=$(systemd-analyze --version | sed -n 's/^systemd \([0-9]*\).*/\1/p')
	if [ "${v:-0}" -ge 250 ]; then
		# Exposure is scored 0.0 (locked down) to 10.0; this unit scores 1.2.
		out=$(cd "$work/unit" && systemd-analyze security --offline=yes --threshold=20 ./iot-mns-bridge.service 2>&1) ||
			fail "systemd-analyze security: exposure above 2.0; hardening was lost:"$'\n'"$out"
		note "$(grep -o 'Overall exposure level.*' <<<"$out")"
	else
		note "systemd $v has no 'security --offline'; exposure not scored"
	fi
	ok unit
}

# skip STEP REASON: prints the SKIP line (the test fails it under CI=true).
skip() { echo "ops-check: SKIP $1: $2"; }

# heavy STEP: false (after printing SKIP) when OPS_CHECK_QUICK asks to skip it.
heavy() {
	if [ -n "${OPS_CHECK_QUICK:-}" ] && [ "${CI:-}" != true ]; then
		skip "$1" "OPS_CHECK_QUICK is set (under CI=true this step runs)"
		return 1
	fi
}

# need_root STEP WHAT: true as root; otherwise false after printing SKIP
# (or fails under CI=true): WHAT needs root.
need_root() {
	[ "$(id -u)" -eq 0 ] && return 0
	[ "${CI:-}" = true ] && fail "$1: $2 needs root"
	skip "$1" "$2 needs root (under CI=true this fails)"
	return 1
}

# need_tools STEP PACKAGE TOOL...: installs PACKAGE with apt-get when a TOOL
# is missing and this is root; otherwise false after printing SKIP (or fails
# under CI=true).
need_tools() {
	local step=$1 pkg=$2 t missing=
	shift 2
	for t in "$@"; do command -v "$t" >/dev/null || missing+=" $t"; done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
		note "installing $pkg for$missing (apt-get)"
		apt_install "$pkg" || fail "apt-get install $pkg"
		return 0
	fi
	[ "${CI:-}" = true ] && fail "$step needs$missing (Debian package $pkg) and this is not root"
	skip "$step" "needs$missing (Debian package $pkg; under CI=true this fails)"
	return 1
}

# apt_install PACKAGE...: apt-get update once, then install. internal/opscheck
# runs several of these scripts at once: flock serializes them, and apt
# waits for a dpkg lock held by anything else.
apt_updated=
apt_lock=${TMPDIR:-/tmp}/iot-mns-bridge-ops-check-apt.lock
# dpkg_locked ARGS...: dpkg under the same lock (an apt-get install of a
# parallel run would make dpkg -i fail on the dpkg lock).
dpkg_locked() { flock -w 900 "$apt_lock" dpkg "$@"; }
apt_install() {
	local lock=$apt_lock
	if [ -z "$apt_updated" ]; then
		flock -w 900 "$lock" timeout 600 apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || return 1
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive flock -w 900 "$lock" timeout 600 \
		apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}

dist=$work/dist
fileversion=${version#v}
debversion() { # the Debian version scripts/deb.sh derives from VERSION $1
	local v=${1#v}
	v=${v//-/+}
	case $v in [0-9]*) echo "$v" ;; *) echo "0~$v" ;; esac
}

ensure_release() {
	[ -f "$dist/SHA256SUMS" ] && return 0
	need_tools release dpkg-dev dpkg-deb || return 1
	mkdir -p "$work/logs"
	VERSION=$version scripts/release.sh "$dist" >"$work/logs/release.log" 2>&1 || fail "scripts/release.sh $dist"
}

step_release() {
	heavy release || return 0
	ensure_release || return 0
	(cd "$dist" && sha256sum --quiet -c SHA256SUMS) || fail "sha256sum -c SHA256SUMS"
	# The stamped version is checked by running the binaries (deb, qemu).
	local arch goarch want info name f sums
	sums=$(cut -d' ' -f3 "$dist/SHA256SUMS" | sort | tr '\n' ' ')
	for arch in amd64 arm64 armv7; do
		case $arch in
		amd64) goarch=amd64 want=$'\tbuild\tGOAMD64=v1' ;;
		arm64) goarch=arm64 want=$'\tbuild\tGOARM64=v8.0' ;;
		armv7) goarch=arm want=$'\tbuild\tGOARM=7' ;;
		esac
		info=$(go version -m "$dist/bin/iot-mns-bridge_linux_$arch") || fail "go version -m on the $arch binary"
		for w in $'\tbuild\tCGO_ENABLED=0' $'\tbuild\t-trimpath=true' $'\tbuild\tGOOS=linux' $'\tbuild\tGOARCH='"$goarch" "$want"; do
			grep -qF -- "$w" <<<"$info" || fail "the $arch binary lacks \"${w//$'\t'/ }\" in go version -m: $info"
		done
		name=iot-mns-bridge_${fileversion}_linux_$arch
		[[ $sums == *"$name.tar.gz "* ]] || fail "SHA256SUMS does not list $name.tar.gz: $sums"
		local listing
		listing=$(tar -tzf "$dist/$name.tar.gz" | sort | tr '\n' ' ')
		local want_list="$name/ $name/README.md $name/config.example.yaml $name/iot-mns-bridge $name/iot-mns-bridge.env $name/iot-mns-bridge.service "
		[ "$listing" = "$want_list" ] || fail "$name.tar.gz holds \"$listing\", want \"$want_list\""
		tar -xzOf "$dist/$name.tar.gz" "$name/iot-mns-bridge" | cmp -s - "$dist/bin/iot-mns-bridge_linux_$arch" ||
			fail "$name.tar.gz: the binary differs from bin/iot-mns-bridge_linux_$arch"
		note "$name.tar.gz $(wc -c <"$dist/$name.tar.gz") bytes, binary $(wc -c <"$dist/bin/iot-mns-bridge_linux_$arch") bytes"
	done
	for arch in amd64 arm64 armhf; do
		f=iot-mns-bridge_$(debversion "$version")_$arch.deb
		[[ $sums == *"$f "* ]] || fail "SHA256SUMS does not list $f: $sums"
		[ "$(dpkg-deb -f "$dist/$f" Architecture)" = "$arch" ] || fail "$f: Architecture is not $arch"
		note "$f $(wc -c <"$dist/$f") bytes"
	done
	ok release
}

step_deb() {
	heavy deb || return 0
	need_root deb "dpkg -i" || return 0
	if [[ $(dpkg-query -W -f '${Status}' iot-mns-bridge 2>/dev/null) == *installed* ]]; then
		[ "${CI:-}" = true ] && fail "deb: iot-mns-bridge is already installed on this machine"
		skip deb "iot-mns-bridge is already installed here; not touching it"
		return 0
	fi
	ensure_release || return 0
	local arch deb
	arch=$(dpkg --print-architecture)
	deb=$dist/iot-mns-bridge_$(debversion "$version")_$arch.deb
	[ -f "$deb" ] || fail "no $deb for this machine's architecture $arch"
	mkdir -p "$work/logs"
	purge() { dpkg_locked --purge iot-mns-bridge >>"$work/logs/dpkg.log" 2>&1; }
	trap 'purge || true; cleanup' EXIT
	dpkg_locked -i "$deb" >"$work/logs/dpkg.log" 2>&1 || fail "dpkg -i $deb"

	local f mode
	for f in /usr/bin/iot-mns-bridge:755 /lib/systemd/system/iot-mns-bridge.service:644 \
		/etc/iot-mns-bridge/config.yaml:644 /etc/iot-mns-bridge/iot-mns-bridge.env:600 \
		/usr/share/doc/iot-mns-bridge/README.md:644; do
		mode=$(stat -c %a "${f%:*}" 2>/dev/null) || fail "the .deb did not install ${f%:*}"
		[ "$mode" = "${f#*:}" ] || fail "${f%:*} has mode $mode, want ${f#*:}"
	done
	cmp -s /usr/bin/iot-mns-bridge "$dist/bin/iot-mns-bridge_linux_$( [ "$arch" = armhf ] && echo armv7 || echo "$arch")" ||
		fail "/usr/bin/iot-mns-bridge is not the release binary"
	grep -q '^ExecStart=/usr/bin/iot-mns-bridge run -config /etc/iot-mns-bridge/config.yaml$' /lib/systemd/system/iot-mns-bridge.service ||
		fail "the installed unit does not start /usr/bin/iot-mns-bridge"
	grep -q '^DynamicUser=yes$' /lib/systemd/system/iot-mns-bridge.service || fail "the installed unit lost DynamicUser=yes"
	[ "$(dpkg-query -W -f '${Conffiles}' iot-mns-bridge | awk '{print $1}' | sort | tr '\n' ' ')" = \
		"/etc/iot-mns-bridge/config.yaml /etc/iot-mns-bridge/iot-mns-bridge.env " ] ||
		fail "conffiles: $(dpkg-query -W -f '${Conffiles}' iot-mns-bridge)"
	[ ! -e /etc/systemd/system/multi-user.target.wants/iot-mns-bridge.service ] || fail "installing enabled the unit"
	local out
	out=$(/usr/bin/iot-mns-bridge version) || fail "installed binary: version"
	[[ $out == "iot-mns-bridge $version "* ]] || fail "installed binary: version printed $out"
	(
		set -a
		. /etc/iot-mns-bridge/iot-mns-bridge.env
		ALIBABA_CLOUD_ACCESS_KEY_SECRET=example-secret
		exec /usr/bin/iot-mns-bridge check -config /etc/iot-mns-bridge/config.yaml
	) >"$work/logs/deb-check.log" 2>&1 || fail "check -config /etc/iot-mns-bridge/config.yaml (the installed example)"

	# Upgrade: a changed config survives, the new binary is in place.
	echo "# changed by the operator" >>/etc/iot-mns-bridge/config.yaml
	local v2=${version}.1 deb2
	mkdir -p "$work/deb2"
	deb2=$(VERSION=$v2 scripts/deb.sh "$dist/bin/iot-mns-bridge_linux_$( [ "$arch" = armhf ] && echo armv7 || echo "$arch")" "$arch" "$work/deb2") ||
		fail "scripts/deb.sh for the upgrade"
	dpkg_locked -i "$deb2" >>"$work/logs/dpkg.log" 2>&1 || fail "dpkg -i $deb2 (upgrade)"
	[ "$(dpkg-query -W -f '${Version}' iot-mns-bridge)" = "$(debversion "$v2")" ] || fail "the upgrade did not install $(debversion "$v2")"
	[ "$(tail -n1 /etc/iot-mns-bridge/config.yaml)" = "# changed by the operator" ] || fail "the upgrade overwrote the changed config.yaml"
	[ ! -e /etc/systemd/system/multi-user.target.wants/iot-mns-bridge.service ] || fail "the upgrade enabled the unit"

	dpkg_locked -r iot-mns-bridge >>"$work/logs/dpkg.log" 2>&1 || fail "dpkg -r"
	[ ! -e /usr/bin/iot-mns-bridge ] && [ ! -e /lib/systemd/system/iot-mns-bridge.service ] || fail "dpkg -r left the binary or the unit"
	[ -f /etc/iot-mns-bridge/config.yaml ] || fail "dpkg -r removed the config (only --purge should)"
	purge || fail "dpkg --purge"
	[ ! -e /etc/iot-mns-bridge ] || fail "dpkg --purge left /etc/iot-mns-bridge: $(ls -A /etc/iot-mns-bridge)"
	! dpkg-query -W iot-mns-bridge >/dev/null 2>&1 || fail "dpkg still knows iot-mns-bridge after --purge"
	trap cleanup EXIT
	ok deb
}

step_qemu() {
	heavy qemu || return 0
	need_tools qemu qemu-user-static qemu-aarch64-static qemu-arm-static || return 0
	ensure_release || return 0
	mkdir -p "$work/logs"
	local arch emu bin out
	for arch in arm64 armv7; do
		emu=qemu-aarch64-static
		[ "$arch" = armv7 ] && emu=qemu-arm-static
		bin=$dist/bin/iot-mns-bridge_linux_$arch
		out=$("$emu" "$bin" version) || fail "$emu $bin version"
		[[ $out == "iot-mns-bridge $version "* ]] || fail "$arch: version printed \"$out\""
		"$emu" "$bin" demo -duration 2s -devices 5 -dir "$work/demo-$arch" >"$work/logs/demo-$arch.log" 2>&1 ||
			fail "$arch: demo under $emu"
		grep -q '^OK: nothing lost' "$work/logs/demo-$arch.log" || fail "$arch: the demo did not report \"OK: nothing lost\""
		note "$arch under $emu: $out; demo $(grep -E '^ +forwarded' "$work/logs/demo-$arch.log" | tr -s ' ')"
	done
	ok qemu
}

step_rules() {
	need_tools rules prometheus promtool || return 0
	mkdir -p "$work/logs" "$work/rules"
	local out
	out=$(promtool check rules deploy/prometheus/iot-mns-bridge-rules.yml 2>&1) || fail "promtool check rules:"$'\n'"$out"
	out=$(cd deploy/prometheus && promtool test rules iot-mns-bridge-rules.test.yml 2>&1) || fail "promtool test rules:"$'\n'"$out"
	# Each alert must have a unit test.
	local a
	for a in $(sed -n 's/^ *- alert: *//p' deploy/prometheus/iot-mns-bridge-rules.yml); do
		grep -q "alertname: $a\$" deploy/prometheus/iot-mns-bridge-rules.test.yml || fail "alert $a has no unit test in iot-mns-bridge-rules.test.yml"
	done
	# The dashboard's queries, as recording rules, so promtool parses them.
	local f
	for f in deploy/grafana/*.json; do
		go run ./internal/opscheck/dashq "$f" >"$work/rules/dashboard.yml" || fail "reading the queries of $f"
		out=$(promtool check rules "$work/rules/dashboard.yml" 2>&1) || fail "$f: a query does not parse:"$'\n'"$out"
		note "$f: $(grep -c 'expr:' "$work/rules/dashboard.yml") queries parse"
	done
	ok rules
}

step_kube() {
	mkdir -p "$work/logs"
	local out
	# Its own module (k8s.io/api comes from the Go module proxy once, then
	# the module cache); the tests decode every manifest strictly and break
	# them one way at a time to show each check bites.
	out=$(cd deploy/kubernetes/validate && go test -count=1 ./ 2>&1 && go run . .. 2>&1) ||
		fail "deploy/kubernetes/validate:"$'\n'"$out"
	note "$(tail -n1 <<<"$out")"
	ok kube
}

step_nspawn() {
	heavy nspawn || return 0
	need_root nspawn "systemd-nspawn" || return 0
	need_tools nspawn systemd-container systemd-nspawn || return 0
	need_tools nspawn util-linux nsenter || return 0
	ok nspawn
}

distroless=gcr.io/distroless/static-debian12:nonroot
standin_label=org.iot-mns-bridge.standin

# build_standin_base: a FROM scratch image tagged as the distroless base,
# unless a real one (without our label) is present.
build_standin_base() {
	if podman image exists "$distroless" &&
		[ "$(podman image inspect -f "{{index .Labels \"$standin_label\"}}" "$distroless" 2>/dev/null)" != true ]; then
		note "using the local $distroless"
		return 0
	fi
	local ctx=$work/base
	mkdir -p "$ctx/etc/ssl/certs" "$ctx/tmp"
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/etc/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/etc/group"
	if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then
		need_tools image ca-certificates update-ca-certificates || return 1
	fi
	cp /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/ca-certificates.crt"
	chmod 0644 "$ctx"/etc/passwd "$ctx"/etc/group "$ctx/etc/ssl/certs/ca-certificates.crt"
	chmod 1777 "$ctx/tmp"
	cat >"$ctx/Containerfile" <<EOF
# A stand-in for $distroless: what the bridge needs of it.
FROM scratch
COPY etc/ /etc/
COPY tmp/ /tmp/
LABEL $standin_label=true
USER 65532:65532
EOF
	podman build --pull=never --format docker -q -t "$distroless" "$ctx" >>"$work/logs/podman.log" 2>&1 ||
		fail "podman build of the stand-in base"
}

step_image() {
	heavy image || return 0
	need_tools image podman podman || return 0
	need_tools image runc runc || return 0
	export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/scripts/podman/containers.conf}
	local img=${OPS_CHECK_IMAGE:-localhost/iot-mns-bridge:opscheck}
	mkdir -p "$work/logs"
	build_standin_base || return 0

	local arch bin
	arch=$(go env GOARCH)
	[ "$arch" = arm ] && arch=armv7
	if [ ! -f "$dist/bin/iot-mns-bridge_linux_$arch" ]; then
		need_tools release dpkg-dev dpkg-deb || return 0
		VERSION=$version RELEASE_ARCHES=$arch scripts/release.sh "$dist" >"$work/logs/release.log" 2>&1 ||
			fail "scripts/release.sh (RELEASE_ARCHES=$arch)"
	fi
	bin=$dist/bin/iot-mns-bridge_linux_$arch

	# The Dockerfile's final stage, copying from this context instead of the
	# build stage (same paths: /out/iot-mns-bridge and /out/state).
	local ctx=$work/image
	mkdir -p "$ctx/out/state"
	cp "$bin" "$ctx/out/iot-mns-bridge"
	chmod 0700 "$ctx/out/state"
	awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' Dockerfile |
		sed 's#^COPY --from=build \(.*\)/out/#COPY \1out/#' >"$ctx/Containerfile"
	if grep -q -- '--from=' "$ctx/Containerfile"; then
		fail "the final stage copies from a stage this build cannot replace: $(grep -- '--from=' "$ctx/Containerfile")"
	fi
	grep -q "^FROM $distroless\$" "$ctx/Containerfile" || fail "the Dockerfile's final stage is not FROM $distroless"
	local t0=$SECONDS
	podman build --pull=never --format docker -t "$img" -f "$ctx/Containerfile" "$ctx" >>"$work/logs/podman.log" 2>&1 ||
		fail "podman build of the final stage"
	built_image=$img
	[ -n "${OPS_CHECK_KEEP_IMAGE:-}" ] || trap 'podman rmi -f "$built_image" >/dev/null 2>&1 || true; cleanup' EXIT
	note "built $img in $((SECONDS - t0))s, $(podman image inspect -f '{{.Size}}' "$img") bytes"

	local user hc out
	user=$(podman image inspect -f '{{.Config.User}}' "$img")
	[ "$user" = 65532:65532 ] || fail "image user $user, want 65532:65532"
	hc=$(podman image inspect -f '{{json .Config.Healthcheck}}' "$img")
	[[ $hc == *iot-mns-bridge* ]] || fail "the image has no HEALTHCHECK (built without --format docker?): $hc"
	out=$(podman run --rm --pull=never --no-healthcheck "$img" version) || fail "podman run $img version"
	[[ $out == "iot-mns-bridge $version "* ]] || fail "the image's version printed \"$out\""
	note "image: $out"
	ok image
}

for s in "${steps[@]}"; do "step_$s"; done
