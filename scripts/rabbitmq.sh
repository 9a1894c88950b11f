#!/usr/bin/env bash
# rabbitmq.sh: a private, loopback-only RabbitMQ 3.x test broker (STOMP 1.2 and
# AMQP 1.0, plain and TLS) whose logins are checked by the aksign-auth service
# (internal/testbroker/cmd/aksign-auth) through rabbitmq_auth_backend_http.
#
# Usage: scripts/rabbitmq.sh start|stop|restart|status
#
#   start    install rabbitmq-server with apt-get if missing (needs root), make
#            certs and config under $RMQ_DIR, build and start aksign-auth, epmd
#            and the broker, wait for the ports, write $RMQ_DIR/env.
#            Does nothing if the broker is already running.
#   stop     shut the broker down and kill, by recorded PID only, everything
#            start started (epmd, aksign-auth, a leftover beam). Removes the env file.
#   restart  stop and start the broker only (auth service, epmd, certs, users
#            and the env file stay), then wait for the ports.
#   status   print what runs; exit 0 when all of it runs, 3 otherwise.
#
# Environment (all optional):
#   RMQ_DIR          state directory (default <repo>/.tmp/rabbitmq, gitignored)
#   RMQ_AMQP_PORT    25670   RMQ_AMQPS_PORT  25671
#   RMQ_STOMP_PORT   26613   RMQ_STOMPS_PORT 26614
#   RMQ_DIST_PORT    25680   RMQ_EPMD_PORT   24369
#   RMQ_AUTH_PORT    25690   RMQ_START_TIMEOUT 90 (seconds to wait for the ports)
#
# After start, `source $RMQ_DIR/env` exports RABBITMQ_* for the tests
# (see internal/testbroker). Everything listens on 127.0.0.1 only.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RMQ_DIR=${RMQ_DIR:-$REPO/.tmp/rabbitmq}
# While a node made by start exists, every command uses the ports start chose,
# whatever the caller's env says.
if [[ -s $RMQ_DIR/ports && -s $RMQ_DIR/epmd.pid ]] && kill -0 "$(<"$RMQ_DIR/epmd.pid")" 2>/dev/null; then
	# shellcheck disable=SC1091
	source "$RMQ_DIR/ports"
fi
AMQP_PORT=${RMQ_AMQP_PORT:-25670}
AMQPS_PORT=${RMQ_AMQPS_PORT:-25671}
STOMP_PORT=${RMQ_STOMP_PORT:-26613}
STOMPS_PORT=${RMQ_STOMPS_PORT:-26614}
DIST_PORT=${RMQ_DIST_PORT:-25680}
EPMD_PORT=${RMQ_EPMD_PORT:-24369}
AUTH_PORT=${RMQ_AUTH_PORT:-25690}
START_TIMEOUT=${RMQ_START_TIMEOUT:-90}
RMQ_BIN=/usr/lib/rabbitmq/bin

log() { echo "$(date +%T) rabbitmq.sh: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# running_pid PID: PID is a live process (a zombie waiting for its reaper is not).
running_pid() {
	kill -0 "$1" 2>/dev/null || return 1
	local state
	state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
	[[ $state != Z ]]
}

# pid_alive FILE: the PID recorded in FILE is a running process.
pid_alive() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] && running_pid "$pid"
}

# kill_pidfile FILE NAME [group]: TERM the process in FILE (with "group": its
# process group, which setsid made for it), KILL it after 10 s, remove FILE.
kill_pidfile() {
	local file=$1 name=$2 pid target i
	if pid_alive "$file"; then
		pid=$(<"$file")
		target=$pid
		[[ ${3:-} == group ]] && target=-$pid
		log "stopping $name (pid $pid)"
		kill -- "$target" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			running_pid "$pid" || break
			sleep 0.1
		done
		if running_pid "$pid"; then
			log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
			kill -9 -- "$target" 2>/dev/null || true
		fi
	fi
	rm -f "$file"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ports SECONDS PORT...: wait until every port accepts connections.
wait_ports() {
	local deadline=$((SECONDS + $1)) p
	shift
	for p in "$@"; do
		until port_open "$p"; do
			((SECONDS < deadline)) || return 1
			sleep 0.2
		done
	done
}

# rmq_env: the environment of our private node, for rabbitmq-server and
# rabbitmqctl. Call it in a subshell only: it changes HOME.
# ERL_EPMD_PORT must never be empty (each erl would start a stray epmd).
rmq_env() {
	export HOME=$RMQ_DIR/home \
		RABBITMQ_NODENAME=rabbit@localhost \
		RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
		RABBITMQ_NODE_PORT=$AMQP_PORT \
		RABBITMQ_DIST_PORT=$DIST_PORT \
		RABBITMQ_CONFIG_FILE=$RMQ_DIR/rabbitmq.conf \
		RABBITMQ_ADVANCED_CONFIG_FILE=$RMQ_DIR/advanced.config \
		RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_DIR/enabled_plugins \
		RABBITMQ_CONF_ENV_FILE=$RMQ_DIR/rabbitmq-env.conf \
		RABBITMQ_MNESIA_BASE=$RMQ_DIR/mnesia \
		RABBITMQ_LOG_BASE=$RMQ_DIR/log \
		RABBITMQ_PID_FILE=$RMQ_DIR/beam.pid \
		ERL_EPMD_ADDRESS=127.0.0.1 \
		ERL_EPMD_PORT=$EPMD_PORT \
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

install_if_missing() {
	local pkgs=()
	[[ -x $RMQ_BIN/rabbitmq-server ]] || pkgs+=(rabbitmq-server)
	command -v openssl >/dev/null || pkgs+=(openssl)
	((${#pkgs[@]} == 0)) && return 0
	[[ $(id -u) == 0 ]] || die "${pkgs[*]} not installed and not root: run as root, or apt-get install ${pkgs[*]}"
	log "installing ${pkgs[*]} with apt-get"
	# Keep the package from starting the system-wide broker (and an epmd on
	# 0.0.0.0:4369) where no policy-rc.d forbids it already.
	local policy=/usr/sbin/policy-rc.d own_policy=""
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
	fi
	local rc=0
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; } || rc=$?
	[[ -n $own_policy ]] && rm -f "$policy"
	((rc == 0)) || die "apt-get install ${pkgs[*]} failed (exit $rc)"
	[[ -x $RMQ_BIN/rabbitmq-server ]] || die "apt-get installed rabbitmq-server but $RMQ_BIN/rabbitmq-server is missing"
}

random_token() { openssl rand -hex "$1"; }

# make_certs: a CA and a server cert for localhost / 127.0.0.1, made once.
make_certs() {
	local c=$RMQ_DIR/certs
	[[ -s $c/ca.pem && -s $c/server.pem && -s $c/server.key ]] && return 0
	log "making test CA and server certificate"
	mkdir -p "$c"
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=iot-mns-bridge test CA" \
		-keyout "$c/ca.key" -out "$c/ca.pem" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
		-keyout "$c/server.key" -out "$c/server.csr" 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$c/server.ext"
	openssl x509 -req -in "$c/server.csr" -CA "$c/ca.pem" -CAkey "$c/ca.key" -CAcreateserial \
		-days 3650 -extfile "$c/server.ext" -out "$c/server.pem" 2>/dev/null
	chmod 600 "$c"/*.key
	# beam runs as the invoking user; the key must be readable by it.
}

# make_secrets: the test AccessKey and the publisher password, made once and kept
# in $RMQ_DIR/secrets (mode 600) so that restarts and re-starts reuse them.
make_secrets() {
	local f=$RMQ_DIR/secrets
	if [[ ! -s $f ]]; then
		(
			umask 077
			{
				echo "AK_ID=LTAItest$(random_token 6)"
				echo "AK_SECRET=$(random_token 15)"
				echo "PUBLISHER_USER=publisher"
				echo "PUBLISHER_PASSWORD=$(random_token 12)"
			} >"$f"
		)
	fi
	# shellcheck disable=SC1090
	source "$f"
	(
		umask 077
		echo "$AK_ID:$AK_SECRET" >"$RMQ_DIR/aksign-keys"
	)
}

write_config() {
	local vh perms=""
	mkdir -p "$RMQ_DIR/home" "$RMQ_DIR/log" "$RMQ_DIR/mnesia"
	: >"$RMQ_DIR/rabbitmq-env.conf"
	echo '[rabbitmq_stomp,rabbitmq_amqp1_0,rabbitmq_auth_backend_http].' >"$RMQ_DIR/enabled_plugins"
	for vh in / localhost 127.0.0.1; do
		perms+="${perms:+,}{\"user\":\"$PUBLISHER_USER\",\"vhost\":\"$vh\",\"configure\":\".*\",\"write\":\".*\",\"read\":\".*\"}"
	done
	(
		umask 077
		cat >"$RMQ_DIR/definitions.json" <<EOF
{
  "users": [{"name": "$PUBLISHER_USER", "password": "$PUBLISHER_PASSWORD", "tags": ""}],
  "vhosts": [{"name": "/"}, {"name": "localhost"}, {"name": "127.0.0.1"}],
  "permissions": [$perms]
}
EOF
	)
	cat >"$RMQ_DIR/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
listeners.ssl.default = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $RMQ_DIR/certs/ca.pem
ssl_options.certfile   = $RMQ_DIR/certs/server.pem
ssl_options.keyfile    = $RMQ_DIR/certs/server.key
ssl_options.verify     = verify_none
ssl_options.fail_if_no_peer_cert = false
stomp.listeners.tcp.1 = 127.0.0.1:$STOMP_PORT
stomp.listeners.ssl.1 = 127.0.0.1:$STOMPS_PORT
loopback_users = none
load_definitions = $RMQ_DIR/definitions.json
auth_backends.1 = internal
auth_backends.2 = http
auth_http.http_method   = post
auth_http.user_path     = http://127.0.0.1:$AUTH_PORT/auth/user
auth_http.vhost_path    = http://127.0.0.1:$AUTH_PORT/auth/vhost
auth_http.resource_path = http://127.0.0.1:$AUTH_PORT/auth/resource
auth_http.topic_path    = http://127.0.0.1:$AUTH_PORT/auth/topic
log.console = false
log.file.level = info
EOF
}

find_go() {
	if command -v go >/dev/null; then
		command -v go
	elif [[ -x /usr/local/go/bin/go ]]; then
		echo /usr/local/go/bin/go
	else
		die "go not found on PATH or in /usr/local/go/bin: it is needed to build aksign-auth"
	fi
}

start_auth() {
	if pid_alive "$RMQ_DIR/aksign-auth.pid"; then
		return 0
	fi
	port_open "$AUTH_PORT" && die "port $AUTH_PORT is taken by a process this script did not start; free it or set RMQ_AUTH_PORT"
	log "building aksign-auth"
	(cd "$REPO" && "$(find_go)" build -buildvcs=false -o "$RMQ_DIR/aksign-auth" ./internal/testbroker/cmd/aksign-auth)
	setsid "$RMQ_DIR/aksign-auth" -listen "127.0.0.1:$AUTH_PORT" -keys-file "$RMQ_DIR/aksign-keys" \
		</dev/null >>"$RMQ_DIR/log/aksign-auth.log" 2>&1 9>&- &
	echo $! >"$RMQ_DIR/aksign-auth.pid"
	wait_ports 15 "$AUTH_PORT" || {
		tail -n 20 "$RMQ_DIR/log/aksign-auth.log" >&2 || true
		die "aksign-auth did not listen on 127.0.0.1:$AUTH_PORT within 15 s (log above: $RMQ_DIR/log/aksign-auth.log)"
	}
}

start_epmd() {
	local epmd
	if pid_alive "$RMQ_DIR/epmd.pid"; then
		return 0
	fi
	epmd=$(command -v epmd || ls /usr/lib/erlang/erts-*/bin/epmd 2>/dev/null | head -n 1)
	[[ -n $epmd ]] || die "epmd not found (is erlang-base installed?)"
	port_open "$EPMD_PORT" && die "port $EPMD_PORT is taken by a process this script did not start; free it or set RMQ_EPMD_PORT"
	setsid "$epmd" -address 127.0.0.1 -port "$EPMD_PORT" </dev/null >>"$RMQ_DIR/log/epmd.log" 2>&1 9>&- &
	echo $! >"$RMQ_DIR/epmd.pid"
	wait_ports 10 "$EPMD_PORT" || die "epmd did not listen on 127.0.0.1:$EPMD_PORT within 10 s"
}

# start_broker: launch rabbitmq-server and wait for every listener.
start_broker() {
	local p
	for p in "$AMQP_PORT" "$AMQPS_PORT" "$STOMP_PORT" "$STOMPS_PORT" "$DIST_PORT"; do
		port_open "$p" && die "port $p is taken by a process this script did not start; free it or set the RMQ_*_PORT variables"
	done
	log "starting rabbitmq-server (log: $RMQ_DIR/log)"
	# The subshell keeps rmq_env (HOME!) away from the rest of this script.
	(
		rmq_env
		exec setsid "$RMQ_BIN/rabbitmq-server"
	) </dev/null >"$RMQ_DIR/log/server.out" 2>&1 9>&- &
	echo $! >"$RMQ_DIR/server-sh.pid"
	if ! wait_ports "$START_TIMEOUT" "$AMQP_PORT" "$AMQPS_PORT" "$STOMP_PORT" "$STOMPS_PORT"; then
		log "broker listeners not up within ${START_TIMEOUT}s; last lines of its logs:"
		tail -n 30 "$RMQ_DIR/log/server.out" >&2 || true
		tail -n 30 "$RMQ_DIR/log/rabbit@localhost.log" >&2 2>/dev/null || true
		stop_broker || true
		die "rabbitmq-server did not start; see $RMQ_DIR/log"
	fi
}

stop_broker() {
	local i
	if pid_alive "$RMQ_DIR/beam.pid" || pid_alive "$RMQ_DIR/server-sh.pid"; then
		log "rabbitmqctl shutdown"
		(
			rmq_env
			exec timeout 30 "$RMQ_BIN/rabbitmqctl" shutdown
		) >/dev/null 2>&1 || log "rabbitmqctl shutdown failed; killing the node by PID"
	fi
	kill_pidfile "$RMQ_DIR/beam.pid" "beam (rabbit node)"
	# rabbitmq-server (the shell wrapper) exits with the node.
	for ((i = 0; i < 50; i++)); do
		pid_alive "$RMQ_DIR/server-sh.pid" || break
		sleep 0.1
	done
	kill_pidfile "$RMQ_DIR/server-sh.pid" "rabbitmq-server wrapper" group
}

write_ports() {
	cat >"$RMQ_DIR/ports" <<EOF
RMQ_AMQP_PORT=$AMQP_PORT RMQ_AMQPS_PORT=$AMQPS_PORT RMQ_STOMP_PORT=$STOMP_PORT RMQ_STOMPS_PORT=$STOMPS_PORT
RMQ_DIST_PORT=$DIST_PORT RMQ_EPMD_PORT=$EPMD_PORT RMQ_AUTH_PORT=$AUTH_PORT
EOF
}

write_env() {
	local tmp=$RMQ_DIR/env.tmp
	(
		umask 077
		cat >"$tmp" <<EOF
export RABBITMQ_DIR='$RMQ_DIR'
export RABBITMQ_STOMPS_ADDR='127.0.0.1:$STOMPS_PORT'
export RABBITMQ_AMQPS_ADDR='127.0.0.1:$AMQPS_PORT'
export RABBITMQ_STOMP_ADDR='127.0.0.1:$STOMP_PORT'
export RABBITMQ_AMQP_ADDR='127.0.0.1:$AMQP_PORT'
export RABBITMQ_CA_FILE='$RMQ_DIR/certs/ca.pem'
export RABBITMQ_AK_ID='$AK_ID'
export RABBITMQ_AK_SECRET='$AK_SECRET'
export RABBITMQ_PUBLISHER_USER='$PUBLISHER_USER'
export RABBITMQ_PUBLISHER_PASSWORD='$PUBLISHER_PASSWORD'
EOF
	)
	mv "$tmp" "$RMQ_DIR/env"
}

running() {
	pid_alive "$RMQ_DIR/beam.pid" && pid_alive "$RMQ_DIR/aksign-auth.pid" &&
		port_open "$STOMPS_PORT" && [[ -s $RMQ_DIR/env ]]
}

cmd_start() {
	if running; then
		log "already running (env: $RMQ_DIR/env)"
		return 0
	fi
	local t0=$SECONDS p
	install_if_missing
	mkdir -p "$RMQ_DIR/log"
	# Clear what an earlier, broken run may have left (by its PID files), and
	# start from a fresh node: no queues or messages from earlier runs.
	cmd_stop >/dev/null 2>&1 || true
	rm -rf "$RMQ_DIR/mnesia" "$RMQ_DIR/log"
	mkdir -p "$RMQ_DIR/log"
	for p in "$AUTH_PORT" "$EPMD_PORT" "$AMQP_PORT" "$AMQPS_PORT" "$STOMP_PORT" "$STOMPS_PORT" "$DIST_PORT"; do
		port_open "$p" && die "port 127.0.0.1:$p is in use by a process this script did not start: free it, or choose other ports with the RMQ_*_PORT variables"
	done
	# From here on, a failed start stops whatever it started.
	trap 'rc=$?; if ((rc != 0)); then log "start failed; stopping what was started"; cmd_stop || true; fi' EXIT
	make_certs
	make_secrets
	write_config
	write_ports
	start_auth
	start_epmd
	start_broker
	write_env
	trap - EXIT
	log "started in $((SECONDS - t0))s: source $RMQ_DIR/env"
}

cmd_stop() {
	if [[ ! -d $RMQ_DIR ]]; then
		log "nothing to stop ($RMQ_DIR does not exist)"
		return 0
	fi
	rm -f "$RMQ_DIR/env"
	stop_broker
	kill_pidfile "$RMQ_DIR/epmd.pid" "epmd"
	kill_pidfile "$RMQ_DIR/aksign-auth.pid" "aksign-auth"
	log "stopped"
}

cmd_restart() {
	[[ -s $RMQ_DIR/env ]] || die "not started: run scripts/rabbitmq.sh start first"
	source "$RMQ_DIR/secrets"
	stop_broker
	start_auth
	start_epmd
	start_broker
	log "restarted"
}

cmd_status() {
	local ok=0 f
	for f in aksign-auth epmd server-sh beam; do
		if pid_alive "$RMQ_DIR/$f.pid"; then
			echo "$f: running (pid $(<"$RMQ_DIR/$f.pid"))"
		else
			echo "$f: not running"
			ok=3
		fi
	done
	[[ -s $RMQ_DIR/env ]] && echo "env: $RMQ_DIR/env" || echo "env: none"
	return $ok
}

case ${1:-} in
start | stop | restart | status) ;;
*)
	echo "usage: $0 start|stop|restart|status" >&2
	exit 2
	;;
esac
# One command at a time per $RMQ_DIR (test runs of several packages or
# engineers may call start, restart and stop concurrently). Processes we
# launch must not inherit fd 9, or they would hold the lock forever.
mkdir -p "$RMQ_DIR"
exec 9>"$RMQ_DIR/script.lock"
flock -w 300 9 || die "another rabbitmq.sh has held $RMQ_DIR/script.lock for 300 s"

case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
restart) cmd_restart ;;
status) cmd_status ;;
esac
