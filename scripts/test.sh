#!/usr/bin/env bash
# The project's test command: vet, then every test with the race detector,
# with a private RabbitMQ broker (STOMP + AMQP 1.0 over TLS, aksign HTTP auth)
# that this script installs if needed, starts on loopback and stops again.
#
#   scripts/test.sh              # everything (installs rabbitmq-server via apt when missing and run as root)
#   NO_BROKER=1 scripts/test.sh  # skip the broker; its tests then skip (fail under CI=true)
#   FUZZ_TIME=1m scripts/test.sh # fuzz each target longer (default 10s; 0 skips fuzzing)
#
# go test also runs internal/opscheck, which runs scripts/ops-check.sh: the
# binary as the Dockerfile builds it, and systemd-analyze verify on the unit.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
echo "== go vet"
go vet ./...

if [ -z "${NO_BROKER:-}" ]; then
  echo "== starting RabbitMQ (scripts/rabbitmq.sh start)"
  scripts/rabbitmq.sh start
  trap 'scripts/rabbitmq.sh stop || true' EXIT
  # shellcheck disable=SC1091
  source "${RMQ_DIR:-$PWD/.tmp/rabbitmq}/env"
fi

echo "== go test -race ./..."
go test -race -count=1 -timeout 40m "$@" ./...

FUZZ_TIME="${FUZZ_TIME:-10s}"
if [ "$FUZZ_TIME" != "0" ]; then
  echo "== fuzzing each target for $FUZZ_TIME (scripts/fuzz.sh)"
  scripts/fuzz.sh "$FUZZ_TIME"
fi
