#!/usr/bin/env bash
# The project's test command: vet, then every test with the race detector,
# with a private RabbitMQ broker (STOMP + AMQP 1.0 over TLS, aksign HTTP auth)
# that this script installs if needed, starts on loopback and stops again.
#
#   scripts/test.sh            # everything (installs rabbitmq-server via apt when missing and run as root)
#   NO_BROKER=1 scripts/test.sh  # skip the broker; its tests then skip (fail under CI=true)
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

if [ -n "${FUZZ_TIME:-}" ]; then
  echo "== fuzzing each target for $FUZZ_TIME"
  scripts/fuzz.sh "$FUZZ_TIME"
fi
