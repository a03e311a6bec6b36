#!/usr/bin/env bash
# Builds gcd and api for the Raspberry Pi and packs them into images.
#
# Usage: scripts/build-arm.sh [options]
#
#   1. static, stripped musl binaries for the three targets, into
#        dist/armv7-unknown-linux-musleabihf/{gcd,api}   (32-bit Pi OS: Pi 2/3/4)
#        dist/aarch64-unknown-linux-musl/{gcd,api}       (64-bit Pi OS: Pi 3/4/5)
#        dist/x86_64-unknown-linux-musl/{gcd,api}        (PCs, CI)
#   2. one multi-arch FROM scratch image per service (linux/arm/v7,
#      linux/arm64, linux/amd64) from docker/gcd.Dockerfile and
#      docker/api.Dockerfile:
#        with a registry: pushed as REGISTRY/gcd:VERSION and
#          REGISTRY/gcd:VERSION-REV (likewise api);
#        without one: written to dist/images/gcd.oci.tar and
#          dist/images/api.oci.tar, named docker.io/pi-gcd/gcd:VERSION and
#          docker.io/pi-gcd/api:VERSION (what `image: pi-gcd/gcd:VERSION` in
#          a manifest means), ready for `k3s ctr images import FILE`.
#
# Options:
#   --registry REG   push to REG (e.g. registry.lan:5000 or docker.io/me);
#                    env REGISTRY
#   --insecure       the registry speaks plain HTTP (a LAN registry without
#                    TLS; buildah only, docker needs it in its daemon config)
#   --route ROUTE    auto (default), cross (cross + docker buildx) or
#                    daemonless (Debian rustc-web + zig + buildah); env
#                    PI_GCD_ROUTE
#   --binaries-only  stop after step 1
#   --images-only    skip step 1, use the binaries already in dist/
#   -h, --help       this text
#
# Routes, picked from what the machine has unless --route says:
#   cross       `cross build` for each target, then `docker buildx build`.
#   daemonless  no container engine needed: Debian's rustc-web, cargo-web
#               and rust-web-src build std for each target (-Z build-std),
#               zig (PyPI ziglang) links against its bundled musl; buildah
#               builds each platform from the same Dockerfiles and joins them.
#               scripts/install-deps.sh installs all of it on Debian 12.
# The images are built with docker buildx wherever it works (a running
# daemon), otherwise with buildah.
#
# Image tags come from the workspace version and the git revision; file
# times and image dates come from SOURCE_DATE_EPOCH (default: the time of
# the last commit), so a rebuild of the same commit gives the same images.
# Slow things are cached in ${PI_GCD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pi-gcd}.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

TARGETS=(armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl x86_64-unknown-linux-musl)
# For size experiments (scripts/size-report.py): a subset of targets, extra
# cargo arguments, and another output directory; binaries only.
if [ -n "${PI_GCD_TARGETS:-}" ]; then read -r -a TARGETS <<<"$PI_GCD_TARGETS"; fi
read -r -a EXTRA_CARGO_ARGS <<<"${PI_GCD_CARGO_ARGS:-}"
DIST=${PI_GCD_DIST:-dist}
PLATFORMS=(linux/arm/v7 linux/arm64 linux/amd64)
SERVICES=(gcd api)
IMAGE_NAMESPACE=${IMAGE_NAMESPACE:-docker.io/pi-gcd}

registry=${REGISTRY:-}
tls_verify=true
route=${PI_GCD_ROUTE:-auto}
do_binaries=1
do_images=1
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) [ $# -ge 2 ] || die "--registry needs a value"; registry=$2; shift ;;
    --registry=*) registry=${1#*=} ;;
    --insecure) tls_verify=false ;;
    --route) [ $# -ge 2 ] || die "--route needs a value"; route=$2; shift ;;
    --route=*) route=${1#*=} ;;
    --binaries-only) do_images=0 ;;
    --images-only) do_binaries=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done
registry=${registry%/}

# --- version, revision, timestamps -------------------------------------------

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || die "no version in [workspace.package] of Cargo.toml"
if REVISION=$(git rev-parse --short=12 HEAD 2>/dev/null); then
  if ! git diff --quiet HEAD -- 2>/dev/null; then REVISION="$REVISION-dirty"; fi
  : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
else
  REVISION=unknown
  : "${SOURCE_DATE_EPOCH:=0}"
fi
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
SOURCE_URL=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository *= *"\(.*\)"/\1/p' Cargo.toml)

# --- route -------------------------------------------------------------------

have() { command -v "$1" >/dev/null 2>&1; }

DEBIAN_RUSTC=${DEBIAN_RUSTC:-/usr/bin/rustc}
DEBIAN_CARGO=${DEBIAN_CARGO:-/usr/bin/cargo}
RUST_SRC=/usr/lib/rustlib/src/rust/library

# Prints the zig binary to use, or nothing: PATH first, then the project venv.
find_zig() {
  if have zig; then command -v zig; return; fi
  if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" - <<'EOF' 2>/dev/null || true
import os, ziglang
print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))
EOF
  fi
}

buildx_missing() {
  if ! have docker; then
    echo "docker with buildx"
  elif ! docker buildx version >/dev/null 2>&1; then
    echo "docker buildx plugin"
  elif ! docker info >/dev/null 2>&1; then
    echo "a running docker daemon"
  fi
}

cross_missing() {
  have cross || echo "cross (cargo install cross)"
  buildx_missing
}

daemonless_missing() {
  local missing=()
  if [ "$do_binaries" = 1 ]; then
    [ -x "$DEBIAN_RUSTC" ] || missing+=("rustc-web (apt) providing $DEBIAN_RUSTC")
    [ -d "$RUST_SRC/std" ] || missing+=("rust-web-src (apt) providing $RUST_SRC")
    have cargo || [ -x "$DEBIAN_CARGO" ] || missing+=("cargo-web (apt)")
    [ -n "$(find_zig)" ] || missing+=("zig (pip install ziglang into $VENV, or zig on PATH)")
    have python3 || missing+=("python3")
  fi
  if [ "$do_images" = 1 ] && [ -n "$(buildx_missing)" ]; then
    have buildah || missing+=("buildah (apt) or docker buildx")
    [ -n "$registry" ] || have python3 || missing+=("python3")
  fi
  printf '%s\n' "${missing[@]}"
}

case "$route" in
  auto)
    if [ -z "$(cross_missing)" ]; then
      route=cross
    elif [ -z "$(daemonless_missing)" ]; then
      route=daemonless
    else
      {
        echo "error: no build route fits this machine."
        echo "  route 'cross' needs:"
        cross_missing | sed 's/^/    - /'
        echo "  route 'daemonless' needs:"
        daemonless_missing | sed 's/^/    - /'
        echo "  On Debian 12 as root, scripts/install-deps.sh installs the daemonless route."
      } >&2
      exit 1
    fi
    ;;
  cross)
    [ -z "$(cross_missing)" ] || die "route cross needs: $(cross_missing | paste -sd ';' -)"
    ;;
  daemonless)
    [ -z "$(daemonless_missing)" ] || die "route daemonless needs: $(daemonless_missing | paste -sd ';' -) (scripts/install-deps.sh installs them on Debian 12)"
    ;;
  *) die "unknown route '$route': auto, cross or daemonless" ;;
esac
# Images: docker buildx where it works, else buildah.
image_tool=buildah
[ -z "$(buildx_missing)" ] && image_tool=buildx
log "route: $route (images with $image_tool); version $VERSION, revision $REVISION, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH"

# --- step 1: binaries ----------------------------------------------------------

rust_target_of() {
  case "$1" in
    linux/arm/v7) echo armv7-unknown-linux-musleabihf ;;
    linux/arm64) echo aarch64-unknown-linux-musl ;;
    linux/amd64) echo x86_64-unknown-linux-musl ;;
    *) die "no Rust target for platform $1" ;;
  esac
}

# zig's -target for each Rust target, with the CPU rustc's armv7 target
# assumes (ARMv7-A, VFPv3-D32, Thumb-2, NEON).
zig_target_of() {
  case "$1" in
    armv7-unknown-linux-musleabihf) echo "arm-linux-musleabihf -mcpu=generic+v7a+vfp3-d32+thumb2-neon" ;;
    aarch64-unknown-linux-musl) echo "aarch64-linux-musl" ;;
    x86_64-unknown-linux-musl) echo "x86_64-linux-musl" ;;
  esac
}

build_daemonless() {
  local zig wrappers target var upper cargo_bin
  zig=$(find_zig)
  wrappers="$CACHE/zig-cc"
  mkdir -p "$wrappers" "$CACHE/zig"
  export ZIG_GLOBAL_CACHE_DIR="$CACHE/zig" ZIG_LOCAL_CACHE_DIR="$CACHE/zig"
  for target in "${TARGETS[@]}"; do
    # zig cc as C compiler and linker; cc-rs adds a --target=<rust triple>
    # that zig would reject, so the wrapper drops it.
    cat >"$wrappers/$target.tmp" <<EOF
#!/bin/sh
for a do
  shift
  case "\$a" in --target=*) continue ;; esac
  set -- "\$@" "\$a"
done
exec "$zig" cc -target $(zig_target_of "$target") "\$@"
EOF
    chmod +x "$wrappers/$target.tmp"
    mv "$wrappers/$target.tmp" "$wrappers/$target"
    upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
    var=${target//-/_}
    export "CARGO_TARGET_${upper}_LINKER=$wrappers/$target"
    export "CC_${var}=$wrappers/$target"
    export "AR_${var}=$wrappers/$target-ar"
    printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" >"$wrappers/$target-ar"
    chmod +x "$wrappers/$target-ar"
    # build-std makes no self-contained crt objects; zig brings its own.
    export "CARGO_TARGET_${upper}_RUSTFLAGS=-C link-self-contained=no ${PI_GCD_RUSTFLAGS:-}"
  done
  cargo_bin=cargo
  [ -x "$DEBIAN_CARGO" ] && cargo_bin=$DEBIAN_CARGO
  local target_args=()
  for target in "${TARGETS[@]}"; do target_args+=(--target "$target"); done
  # std is built from Debian's rust-web-src with the workspace's release
  # profile; no std features (no backtrace symbolizer: panic=abort anyway).
  log "cargo build (build-std, $(${DEBIAN_RUSTC} --version)) into $CARGO_TARGET_DIR"
  RUSTC=$DEBIAN_RUSTC RUSTC_BOOTSTRAP=1 "$cargo_bin" build --release --locked \
    -p gcd -p api "${target_args[@]}" "${EXTRA_CARGO_ARGS[@]}" \
    -Z build-std=std,panic_abort -Z "build-std-features=${PI_GCD_STD_FEATURES:-}"
}

build_cross() {
  local target
  for target in "${TARGETS[@]}"; do
    log "cross build --target $target"
    cross build --release --locked -p gcd -p api --target "$target" "${EXTRA_CARGO_ARGS[@]}"
  done
}

if [ "$do_binaries" = 1 ]; then
  start=$(date +%s)
  if [ "$route" = daemonless ]; then
    export CARGO_TARGET_DIR=${PI_GCD_TARGET_DIR:-$CACHE/target-musl}
    build_daemonless
  else
    # cross mounts the workspace into its containers; keep its target dir there.
    export CARGO_TARGET_DIR=${PI_GCD_TARGET_DIR:-$PWD/target}
    build_cross
  fi
  for target in "${TARGETS[@]}"; do
    mkdir -p "$DIST/$target"
    for service in "${SERVICES[@]}"; do
      cp -f "$CARGO_TARGET_DIR/$target/release/$service" "$DIST/$target/$service.tmp"
      touch -d "@$SOURCE_DATE_EPOCH" "$DIST/$target/$service.tmp"
      mv -f "$DIST/$target/$service.tmp" "$DIST/$target/$service"
    done
  done
  log "binaries in $DIST/ after $(($(date +%s) - start))s:"
  for target in "${TARGETS[@]}"; do
    for service in "${SERVICES[@]}"; do
      printf '    %-45s %9d bytes\n' "$DIST/$target/$service" "$(stat -c %s "$DIST/$target/$service")" >&2
    done
  done
fi

[ "$do_images" = 1 ] || exit 0
if [ "$DIST" != dist ] || [ ${#TARGETS[@]} != 3 ]; then die "images are built from dist/ with all three targets"; fi

# --- step 2: images ------------------------------------------------------------

for target in "${TARGETS[@]}"; do
  for service in "${SERVICES[@]}"; do
    [ -x "dist/$target/$service" ] || die "dist/$target/$service is missing: build the binaries first (scripts/build-arm.sh without --images-only)"
  done
done

build_args=(
  --build-arg "VERSION=$VERSION"
  --build-arg "REVISION=$REVISION"
  --build-arg "SOURCE=$SOURCE_URL"
  --build-arg "CREATED=$CREATED"
)
platform_list=$(IFS=,; echo "${PLATFORMS[*]}")
start=$(date +%s)

images_buildx() {
  local service=$1 out=()
  if [ -n "$registry" ]; then
    out=(--tag "$registry/$service:$VERSION" --tag "$registry/$service:$VERSION-$REVISION" --push)
  else
    mkdir -p dist/images
    out=(--output "type=oci,dest=dist/images/$service.oci.tar,name=$IMAGE_NAMESPACE/$service:$VERSION")
  fi
  # No attestations: they would add "unknown/unknown" entries to the index.
  docker buildx build --platform "$platform_list" -f "docker/$service.Dockerfile" \
    "${build_args[@]}" --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
    --provenance=false --sbom=false "${out[@]}" . ||
    die "docker buildx build failed for $service (an OCI archive of several platforms needs a builder with the docker-container driver: docker buildx create --use)"
}

images_buildah() {
  local service=$1 list platform image tag layout _os arch variant
  # Storage of our own (vfs: works in containers and without fuse), so the
  # build neither needs nor touches the machine's image store.
  local storage=(--root "$CACHE/containers/storage" --runroot "$CACHE/containers/run" --storage-driver vfs)
  export BUILDAH_ISOLATION=chroot
  list="localhost/pi-gcd-build/$service:$VERSION"
  buildah "${storage[@]}" manifest rm "$list" >/dev/null 2>&1 || true
  buildah "${storage[@]}" manifest create "$list" >/dev/null
  for platform in "${PLATFORMS[@]}"; do
    image="localhost/pi-gcd-build/$service:$VERSION-${platform//\//-}"
    log "buildah bud $service for $platform"
    # buildah sets TARGETARCH/TARGETVARIANT from --platform but warns when
    # a platform has no variant; spelled out, the warning goes away.
    IFS=/ read -r _os arch variant <<<"$platform"
    buildah "${storage[@]}" bud --quiet --platform "$platform" -f "docker/$service.Dockerfile" \
      --build-arg "TARGETARCH=$arch" --build-arg "TARGETVARIANT=${variant:-}" \
      "${build_args[@]}" --timestamp "$SOURCE_DATE_EPOCH" --squash \
      -t "$image" . >/dev/null
    buildah "${storage[@]}" manifest add "$list" "containers-storage:$image" >/dev/null
  done
  if [ -n "$registry" ]; then
    for tag in "$VERSION" "$VERSION-$REVISION"; do
      log "pushing $registry/$service:$tag"
      buildah "${storage[@]}" manifest push --quiet --all --format oci --tls-verify="$tls_verify" \
        "$list" "docker://$registry/$service:$tag"
    done
  else
    layout=$(mktemp -d)
    buildah "${storage[@]}" manifest push --quiet --all --format oci "$list" "oci:$layout/layout" >/dev/null
    mkdir -p dist/images
    python3 scripts/lib/oci_archive.py "$layout/layout" "dist/images/$service.oci.tar" \
      "$IMAGE_NAMESPACE/$service:$VERSION" "$SOURCE_DATE_EPOCH"
    rm -rf "$layout"
  fi
  # The per-platform images stay in the cache storage; drop the list only.
  buildah "${storage[@]}" manifest rm "$list" >/dev/null 2>&1 || true
}

for service in "${SERVICES[@]}"; do
  if [ "$image_tool" = buildx ]; then images_buildx "$service"; else images_buildah "$service"; fi
done

if [ -n "$registry" ]; then
  log "pushed after $(($(date +%s) - start))s: $(printf "$registry/%s:$VERSION " "${SERVICES[@]}")(and :$VERSION-$REVISION)"
else
  log "images after $(($(date +%s) - start))s:"
  for service in "${SERVICES[@]}"; do
    printf '    %-28s %9d bytes  %s\n' "dist/images/$service.oci.tar" \
      "$(stat -c %s "dist/images/$service.oci.tar")" "$IMAGE_NAMESPACE/$service:$VERSION" >&2
  done
  log "on each node: sudo k3s ctr images import dist/images/gcd.oci.tar (and api.oci.tar)"
fi
