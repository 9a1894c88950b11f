#!/bin/sh
# Builds the release binary: static (CGO_ENABLED=0), -trimpath, stripped, with
# the version stamped into internal/app.stampedVersion. The Dockerfile runs
# this script, and scripts/ops-check.sh runs it too, so CI tests the binary
# the image ships, built with the same flags.
#
#   scripts/build.sh [OUT]                      # OUT defaults to ./iot-mns-bridge
#   VERSION=v1.2.3 scripts/build.sh /out/iot-mns-bridge
#
# VERSION defaults to `git describe --tags --always --dirty` (the revision is
# in it), or "devel" without git. VCS stamping by the go tool is off
# (-buildvcs=false) because the Docker build context has no .git: the version
# string is the one source of truth in both places. Extra flags for go build
# can be passed in $GOFLAGS (e.g. GOFLAGS=-mod=readonly).
set -eu
cd "$(dirname "$0")/.."

out=${1:-iot-mns-bridge}
version=${VERSION:-}
if [ -z "$version" ]; then
	version=$(git describe --tags --always --dirty 2>/dev/null || echo devel)
fi
case $version in
*[!A-Za-z0-9._+-]* | "")
	echo "scripts/build.sh: VERSION $version: use only letters, digits and . _ + -" >&2
	exit 2
	;;
esac

CGO_ENABLED=0 exec go build -trimpath -buildvcs=false \
	-ldflags "-s -w -X github.com/iot-mns-bridge/iot-mns-bridge/internal/app.stampedVersion=$version" \
	-o "$out" ./cmd/iot-mns-bridge
