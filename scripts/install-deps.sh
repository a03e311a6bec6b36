#!/usr/bin/env bash
# Installs what scripts/test.sh needs on Debian 12 (run as
# root, or with sudo available). Idempotent: it installs only what is
# missing, so running it again is quick.
#
#   scripts/install-deps.sh [--build-only] [--dry-run]
#
# --build-only installs only what scripts/build-arm.sh's daemonless route
# needs (Debian 12 only); --dry-run prints what would be installed.
# Cargo, rustfmt and clippy are expected from rustup (https://rustup.rs).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

# Debian packages the tests and the ARM image build use.
APT_PACKAGES=(
  ca-certificates curl git python3 python3-venv
  wrk # scripts/bench.sh
  podman runc netavark aardvark-dns iptables # tests/system/test_topology.py
  # grpc-go test peers, built in GOPATH mode (tests/system/test_interop.py)
  golang-go golang-google-grpc-dev golang-goprotobuf-dev golang-google-protobuf-dev
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The ARM build and its proof (scripts/build-arm.sh, tests/system/): Debian's
# Rust with its std source (rustc-web 1.96 builds std for the ARM targets),
# qemu to run ARM binaries, buildah/skopeo/podman/runc for the images.
# PI_GCD_SKIP_ARM=1 leaves them out.
ARM_APT_PACKAGES=(
  rustc-web cargo-web rust-web-src
  qemu-user-static
  buildah skopeo podman runc uidmap netavark aardvark-dns
  docker-registry # a throw-away local registry for the push test
)
if [ "${PI_GCD_SKIP_ARM:-0}" != 1 ]; then
  APT_PACKAGES+=("${ARM_APT_PACKAGES[@]}")
  # containerd imports and runs the images as k3s does
  # (tests/system/test_containerd.py starts a private one). A containerd
  # that is already there (Docker's containerd.io, for one) serves as it is
  # and is never replaced.
  command -v containerd >/dev/null || APT_PACKAGES+=(containerd)
fi

# --- build-only mode, the supported distribution, dry runs -----------------
# The daemonless ARM build uses Debian 12 (bookworm)'s rustc-web, cargo-web
# and rust-web-src, which no other distribution ships; elsewhere the cross
# route (docker buildx + cross) builds instead (docs/building-for-pi.md).
build_only=0 dry_run=0
for arg in "$@"; do
  case "$arg" in
    --build-only) build_only=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) printf 'error: unknown argument: %s (see --help)\n' "$arg" >&2; exit 2 ;;
  esac
done
RUST_TOOLS=(cargo rustfmt cargo-clippy)
PYTHON_PACKAGES=() # empty: all of scripts/requirements.txt
if [ "$build_only" = 1 ]; then
  APT_PACKAGES=(ca-certificates git python3 python3-venv rustc-web cargo-web rust-web-src buildah uidmap)
  RUST_TOOLS=(cargo)
  CARGO_TOOLS=$(printf '%s\n' $CARGO_TOOLS | grep -v '^cargo-deny@' | tr '\n' ' ')
  # zig, at the version the tests pin
  PYTHON_PACKAGES=("$(grep -E '^ziglang==' scripts/requirements.txt)")
fi
if [ "$build_only" = 1 ] || [ "${PI_GCD_SKIP_ARM:-0}" != 1 ]; then
  os=$(. "${PI_GCD_OS_RELEASE:-/etc/os-release}" && echo "${ID:-unknown} ${VERSION_ID:-}")
  if [ "$os" != "debian 12" ]; then
    die "this is ${os% }; the daemonless ARM build (rustc-web) runs on Debian 12 (bookworm) only.
  Build on this machine with the cross route instead: Docker with buildx, Rust from rustup,
  cargo install cross (docs/building-for-pi.md, 'Other Linux laptops').$([ "$build_only" = 1 ] ||
      printf '\n  For the tests without the ARM build: PI_GCD_SKIP_ARM=1 %s' "$0")"
  fi
fi
if [ "$dry_run" = 1 ]; then
  echo "Debian packages: ${APT_PACKAGES[*]}"
  echo "Rust tools expected from rustup or Debian: ${RUST_TOOLS[*]}"
  echo "cargo tools into $TOOLS: $CARGO_TOOLS"
  if [ ${#PYTHON_PACKAGES[@]} -gt 0 ]; then
    echo "Python packages into $VENV: ${PYTHON_PACKAGES[*]}"
  else
    echo "Python packages into $VENV: $(grep -Ev '^(#|$)' scripts/requirements.txt | tr '\n' ' ')"
  fi
  exit 0
fi
# ---------------------------------------------------------------------------

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The tests start their own registry and containerd when they need
  # them; the system services the packages install stay off.
  for service in docker-registry containerd; do
    if [[ " ${missing[*]} " == *" $service "* ]] && [ -d /run/systemd/system ]; then
      as_root systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
  done
fi

for tool in "${RUST_TOOLS[@]}"; do
  command -v "$tool" >/dev/null || die "$tool not found: install Rust with rustup (https://rustup.rs), then 'rustup component add rustfmt clippy'"
done

# The cargo tools (scripts/lib/common.sh), each at its pinned version in the
# cache, built once (about 8 minutes for all three on 2 cores).
installed=$(cargo install --list --root "$TOOLS" 2>/dev/null || true)
for pinned in $CARGO_TOOLS; do
  tool=${pinned%@*} version=${pinned#*@}
  case "$installed" in
    *"$tool v$version:"*) continue ;;
  esac
  log "installing $tool $version into $TOOLS"
  cargo install --quiet --locked --force --version "$version" --root "$TOOLS" "$tool"
done

# Python tools (pytest, manifest validation, zig) live in a venv in the cache.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating Python venv in $VENV"
  python3 -m venv "$VENV"
fi
if [ ${#PYTHON_PACKAGES[@]} -gt 0 ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PYTHON_PACKAGES[@]}"
elif ! cmp -s scripts/requirements.txt "$VENV/requirements.installed"; then
  log "installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt "$VENV/requirements.installed"
fi
