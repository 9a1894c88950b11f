# syntax=docker/dockerfile:1
#
# iot-mns-bridge in a container: a static binary on a distroless, non-root base.
#
# Build (the version is stamped; the build context has no .git):
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t iot-mns-bridge .
#
# Run:
#   docker run -d --name iot-mns-bridge --restart unless-stopped --stop-timeout 45 \
#     -v /etc/iot-mns-bridge/config.yaml:/etc/iot-mns-bridge/config.yaml:ro \
#     -v /etc/iot-mns-bridge/access_key_secret.65532:/run/secrets/access_key_secret:ro \
#     -v iot-mns-bridge-state:/var/lib/iot-mns-bridge \
#     -e ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI... -p 127.0.0.1:9477:9477 iot-mns-bridge
# Check the config first (same -v and -e, with --rm and "check -config
# /etc/iot-mns-bridge/config.yaml" after the image): --restart restarts a
# config error (exit status 2) again and again, which the systemd unit
# does not (RestartPreventExitStatus=2).
#
# The config is mounted at /etc/iot-mns-bridge/config.yaml and must set:
#   http.listen: 0.0.0.0:9477          # the default 127.0.0.1:9477 is reachable only
#                                      # inside the container: HEALTHCHECK works, but
#                                      # Prometheus (and -p) could not reach /metrics.
#                                      # HEALTHCHECK reads http.listen from this config.
#   spool.dir: spool                   # relative: under $STATE_DIRECTORY, the volume
#   delivery.dead_letter.file: dead-letter.jsonl   # the default; also on the volume
#   source.credentials.access_key_secret_file: access_key_secret
#                                      # read from $CREDENTIALS_DIRECTORY=/run/secrets
#                                      # (a Docker/Compose secret or a bind mount)
# The secret file must be readable by uid 65532: the 0600 root file made for
# systemd is not. Mount a copy made with
#   install -m 0400 -o 65532 -g 65532 /etc/iot-mns-bridge/access_key_secret /etc/iot-mns-bridge/access_key_secret.65532
# or pass the secret as ALIBABA_CLOUD_ACCESS_KEY_SECRET with --env-file (read by
# the docker client as root) and write access_key_secret: ${ALIBABA_CLOUD_ACCESS_KEY_SECRET}.
# The same config works under the systemd unit (configs/iot-mns-bridge.service),
# which sets $STATE_DIRECTORY and $CREDENTIALS_DIRECTORY the same way.
#
# Stop timeout: on SIGTERM the bridge drains for up to shutdown_timeout
# (default 20s). Docker's default stop timeout is 10s, after which it sends
# SIGKILL: pass --stop-timeout 45 (Compose: stop_grace_period: 45s).
#
# The file owner and user are numeric (65532, "nonroot" in distroless) so that
# Kubernetes runAsNonRoot can check them.

# Multi-arch (docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7):
# the build stage runs on the builder's own platform and cross-compiles for
# TARGETOS/TARGETARCH (GOARM from TARGETVARIANT); no emulated Go compiler.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=devel
# scripts/build.sh holds the build flags (CGO_ENABLED=0 -trimpath -ldflags
# "-s -w -X ...stampedVersion=$VERSION"); CI builds with the same script
# (scripts/ops-check.sh, run by internal/opscheck).
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
	GOOS="$TARGETOS" GOARCH="$TARGETARCH" GOARM="${TARGETVARIANT#v}" VERSION="$VERSION" \
	scripts/build.sh /out/iot-mns-bridge \
	&& if [ "${TARGETARCH:-$(go env GOARCH)}" = "$(go env GOARCH)" ]; then /out/iot-mns-bridge version; \
	else go version -m /out/iot-mns-bridge | grep -q "GOARCH=$TARGETARCH"; fi \
	&& install -d -m 0700 -o 65532 -g 65532 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/iot-mns-bridge /iot-mns-bridge
COPY --from=build --chown=65532:65532 /out/state /var/lib/iot-mns-bridge
ENV STATE_DIRECTORY=/var/lib/iot-mns-bridge \
	CREDENTIALS_DIRECTORY=/run/secrets
USER 65532:65532
VOLUME ["/var/lib/iot-mns-bridge"]
# /metrics, /healthz, /readyz (with http.listen: 0.0.0.0:9477 in the config).
EXPOSE 9477
# The health check asks the http.listen of the config the container runs
# with, not a fixed port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
	CMD ["/iot-mns-bridge", "healthcheck", "-config", "/etc/iot-mns-bridge/config.yaml"]
ENTRYPOINT ["/iot-mns-bridge"]
CMD ["run", "-config", "/etc/iot-mns-bridge/config.yaml"]
