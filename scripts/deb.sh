#!/usr/bin/env bash
# Builds the Debian package of a release binary with dpkg-deb and prints the
# path of the .deb. scripts/release.sh calls it once per architecture.
#
# Usage: VERSION=v1.2.3 scripts/deb.sh BINARY DEBARCH OUTDIR
#   DEBARCH: amd64 | arm64 | armhf
#
# The package installs
#   /usr/bin/iot-mns-bridge
#   /lib/systemd/system/iot-mns-bridge.service  (configs/iot-mns-bridge.service,
#       ExecStart pointed at /usr/bin; DynamicUser=yes, so no account is created)
#   /etc/iot-mns-bridge/config.yaml             (configs/example.yaml; conffile)
#   /etc/iot-mns-bridge/iot-mns-bridge.env      (mode 0600; conffile)
#   /usr/share/doc/iot-mns-bridge/{README.md,copyright}
# and does not enable or start the service (see the maintainer scripts
# below for upgrade, remove and purge): the config must be edited and
# the secret written to /etc/iot-mns-bridge/access_key_secret first. Config
# files are conffiles: an upgrade never overwrites a changed one, and only
# `dpkg --purge` removes them.
#
# The Debian version is VERSION without a leading "v", with "-" turned into
# "+" (v1.2.3-4-gabc -> 1.2.3+4+gabc, which sorts after 1.2.3); a VERSION that
# does not start with a digit becomes 0~VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 3 ]; then
	echo "usage: VERSION=... scripts/deb.sh BINARY DEBARCH OUTDIR" >&2
	exit 2
fi
bin=$1 arch=$2 out=$3
case $arch in amd64 | arm64 | armhf) ;; *)
	echo "scripts/deb.sh: DEBARCH $arch: use amd64, arm64 or armhf" >&2
	exit 2
	;;
esac
version=${VERSION:?scripts/deb.sh: set VERSION}
debver=${version#v}
debver=${debver//-/+}
case $debver in [0-9]*) ;; *) debver=0~$debver ;; esac

root=$(mktemp -d "${TMPDIR:-/tmp}/deb.XXXXXX")
trap 'rm -rf "$root"' EXIT

install -D -m 0755 "$bin" "$root/usr/bin/iot-mns-bridge"
install -d -m 0755 "$root/lib/systemd/system"
sed 's#^ExecStart=/usr/local/bin/iot-mns-bridge #ExecStart=/usr/bin/iot-mns-bridge #' \
	configs/iot-mns-bridge.service >"$root/lib/systemd/system/iot-mns-bridge.service"
grep -q '^ExecStart=/usr/bin/iot-mns-bridge ' "$root/lib/systemd/system/iot-mns-bridge.service" || {
	echo "scripts/deb.sh: could not point the unit's ExecStart at /usr/bin" >&2
	exit 1
}
chmod 0644 "$root/lib/systemd/system/iot-mns-bridge.service"
install -D -m 0644 configs/example.yaml "$root/etc/iot-mns-bridge/config.yaml"
install -D -m 0600 configs/iot-mns-bridge.env "$root/etc/iot-mns-bridge/iot-mns-bridge.env"
install -D -m 0644 README.md "$root/usr/share/doc/iot-mns-bridge/README.md"
cat >"$root/usr/share/doc/iot-mns-bridge/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: iot-mns-bridge
Source: https://github.com/iot-mns-bridge/iot-mns-bridge
EOF

install -d -m 0755 "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<EOF
Package: iot-mns-bridge
Version: $debver
Architecture: $arch
Maintainer: iot-mns-bridge maintainers <iot-mns-bridge@users.noreply.github.com>
Section: net
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Homepage: https://github.com/iot-mns-bridge/iot-mns-bridge
Description: forwards Alibaba Cloud IoT Platform subscription messages to MNS
 A daemon that takes the IoT Platform's server-side subscription (STOMP over
 TLS or AMQP 1.0) and sends each message to an MNS queue or topic by route,
 with retries, a dead-letter file and an optional local spool. The systemd
 unit is installed but not enabled: edit /etc/iot-mns-bridge/config.yaml,
 write the AccessKey secret to /etc/iot-mns-bridge/access_key_secret, then
 systemctl enable --now iot-mns-bridge.
EOF
printf '%s\n' /etc/iot-mns-bridge/config.yaml /etc/iot-mns-bridge/iot-mns-bridge.env >"$root/DEBIAN/conffiles"

# Maintainer scripts (paths under $DPKG_ROOT; systemctl only for the running
# system). Every script tells a running systemd about the unit; none enables,
# starts or restarts it: an upgrade leaves a running bridge to the operator
# (`systemctl restart iot-mns-bridge` runs the new binary). Removing the
# package stops it (else it runs on from a deleted binary, without a unit
# file, taking the platform's messages): it drains for up to
# shutdown_timeout, and what MNS has not accepted stays in the spool. A purge
# also removes what the install steps had the operator add (the secret file,
# the unit's enablement) but keeps /var/lib/iot-mns-bridge: its spool and
# dead letters may hold messages MNS has not accepted.
reload='if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi'
cat >"$root/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
$reload
exit 0
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl --system stop iot-mns-bridge.service || true
fi
exit 0
EOF
cat >"$root/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
$reload
if [ "\$1" = purge ]; then
	rm -f "\${DPKG_ROOT:-}/etc/iot-mns-bridge/access_key_secret" \\
		"\${DPKG_ROOT:-}/etc/systemd/system/multi-user.target.wants/iot-mns-bridge.service"
	rmdir "\${DPKG_ROOT:-}/etc/iot-mns-bridge" 2>/dev/null || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

deb=$out/iot-mns-bridge_${debver}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
