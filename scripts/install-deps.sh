#!/usr/bin/env bash
# Installs what scripts/test.sh needs on a Debian or Ubuntu machine (run as
# root, or with sudo available). Idempotent: it installs only what is
# missing, so running it again is quick.
#
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

for tool in cargo rustfmt cargo-clippy; do
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
if ! cmp -s scripts/requirements.txt "$VENV/requirements.installed"; then
  log "installing Python packages into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt "$VENV/requirements.installed"
fi
