#!/usr/bin/env bash
# Builds the release artifacts into OUTDIR:
#
#   iot-mns-bridge_<version>_linux_amd64.tar.gz   each holds iot-mns-bridge_<version>_linux_<arch>/
#   iot-mns-bridge_<version>_linux_arm64.tar.gz     with the binary, config.example.yaml, the
#   iot-mns-bridge_<version>_linux_armv7.tar.gz     systemd unit, the env file and README.md
#                                                 (<version>: VERSION without a leading "v")
#   iot-mns-bridge_<debversion>_<amd64|arm64|armhf>.deb
#   SHA256SUMS                                    sha256sum -c SHA256SUMS checks all of the above
#   bin/iot-mns-bridge_linux_<arch>               the bare binaries (what the tarballs hold)
#
# Usage: scripts/release.sh OUTDIR
#        VERSION=v1.2.3 scripts/release.sh dist
#
# The binaries are built by scripts/build.sh (static: CGO_ENABLED=0,
# -trimpath, stripped, the version stamped) with GOOS=linux and GOARCH
# amd64, arm64 and arm with GOARM=7. VERSION defaults to `git describe --tags
# --always --dirty`. RELEASE_ARCHES (default "amd64 arm64 armv7") limits the
# architectures. The .debs are built with dpkg-deb (--root-owner-group), see
# scripts/deb.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-}
if [ -z "$out" ] || [ $# -ne 1 ]; then
	echo "usage: scripts/release.sh OUTDIR" >&2
	exit 2
fi
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
export VERSION=$version
fileversion=${version#v} # file names carry the version without its "v"
arches=${RELEASE_ARCHES:-amd64 arm64 armv7}

mkdir -p "$out/bin"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/release.XXXXXX")
trap 'rm -rf "$stage"' EXIT

artifacts=()
for arch in $arches; do
	case $arch in
	amd64) goarch=amd64 goarm= debarch=amd64 ;;
	arm64) goarch=arm64 goarm= debarch=arm64 ;;
	armv7) goarch=arm goarm=7 debarch=armhf ;;
	*)
		echo "scripts/release.sh: unknown architecture $arch (amd64, arm64, armv7)" >&2
		exit 2
		;;
	esac
	bin=$out/bin/iot-mns-bridge_linux_$arch
	echo "release: building $bin ($version)"
	GOOS=linux GOARCH=$goarch GOARM=$goarm scripts/build.sh "$bin"

	name=iot-mns-bridge_${fileversion}_linux_$arch
	dir=$stage/$name
	mkdir -p "$dir"
	install -m 0755 "$bin" "$dir/iot-mns-bridge"
	install -m 0644 configs/example.yaml "$dir/config.example.yaml"
	install -m 0644 configs/iot-mns-bridge.service "$dir/iot-mns-bridge.service"
	install -m 0644 configs/iot-mns-bridge.env "$dir/iot-mns-bridge.env"
	install -m 0644 README.md "$dir/README.md"
	# Reproducible: fixed owner, order and times.
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
		-C "$stage" -czf "$out/$name.tar.gz" "$name"
	artifacts+=("$name.tar.gz")

	deb=$(scripts/deb.sh "$bin" "$debarch" "$out")
	artifacts+=("$(basename "$deb")")
done

(cd "$out" && sha256sum "${artifacts[@]}" >SHA256SUMS)
echo "release: $out"
(cd "$out" && ls -l "${artifacts[@]}" SHA256SUMS)
