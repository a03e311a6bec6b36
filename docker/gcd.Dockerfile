# The gcd service in an image that holds its static binary and nothing else:
# no shell, no libc, no package manager.
#
# The binaries are built first, outside this file, into dist/<rust-target>/
# (scripts/build-arm.sh does it, or cross build). Build from the repository
# root, for one or all platforms:
#
#   docker buildx build -f docker/gcd.Dockerfile \
#     --platform linux/arm/v7,linux/arm64,linux/amd64 -t localhost/pi-gcd/gcd:0.1.0 .
#   buildah bud -f docker/gcd.Dockerfile --platform linux/arm/v7 .
#
# A scratch image has no shell to pick the binary with, so one stage per
# platform copies its own, and the final stage starts from the stage named
# after TARGETARCH and TARGETVARIANT (set by buildx and buildah per platform).
#   linux/arm/v7 -> armv7-unknown-linux-musleabihf  (32-bit Raspberry Pi OS)
#   linux/arm64  -> aarch64-unknown-linux-musl      (64-bit Raspberry Pi OS)
#   linux/amd64  -> x86_64-unknown-linux-musl

ARG TARGETARCH
ARG TARGETVARIANT

FROM scratch AS bin-armv7
COPY dist/armv7-unknown-linux-musleabihf/gcd /gcd

FROM scratch AS bin-arm64
COPY dist/aarch64-unknown-linux-musl/gcd /gcd

# Some tools spell 64-bit ARM as linux/arm64/v8.
FROM bin-arm64 AS bin-arm64v8

FROM scratch AS bin-amd64
COPY dist/x86_64-unknown-linux-musl/gcd /gcd

FROM bin-${TARGETARCH}${TARGETVARIANT}

ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/pi-gcd/pi-gcd
ARG CREATED=1970-01-01T00:00:00Z

LABEL org.opencontainers.image.title="gcd" \
      org.opencontainers.image.description="gRPC service computing greatest common divisors (Compute, health, reflection; metrics on 9090)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

# Numeric, so the kubelet can check runAsNonRoot without an /etc/passwd.
USER 65532:65532
# 3000 gRPC (Compute, grpc.health.v1, reflection), 9090 admin HTTP (/metrics, /healthz)
EXPOSE 3000/tcp 9090/tcp
ENTRYPOINT ["/gcd"]
