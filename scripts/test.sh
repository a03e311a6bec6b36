#!/usr/bin/env bash
# Runs every test of the project, as CI does:
#   1. installs what is missing (scripts/install-deps.sh; skip with --no-install),
#   2. cargo fmt --check, cargo clippy -D warnings, and cargo deny (the
#      licence and source policy in deny.toml; known vulnerabilities too
#      when the advisory database can be fetched),
#   3. cargo test: unit, property and integration tests driving the real binaries,
#   4. scripts/build-arm.sh: the static binaries for armv7, aarch64 and x86_64
#      and the multi-arch OCI image archives in dist/,
#   5. pytest tests/system: the manifests (strict schemas and our own
#      checks, the memory budget of each Deployment), the binaries under
#      qemu, the images under podman and containerd (imported as k3s does),
#      the manifests' topology run with the real images, hostile clients
#      against the shipped binaries and images (docs/memory-budget.md), RSS
#      that levels off under sustained load with several workers, and
#      the gRPC peers users run (grpc-go, grpcio), schemathesis against
#      api/openapi.yaml, rollouts, scaling, an api replaced and a gcd killed
#      under load (tests/system/cluster.py plays the control plane), and
#      build-arm.sh on a laptop's cross + buildx route (stand-ins) with GNU
#      and BSD tools.
# --host-only stops after step 3, checks the manifests and runs the
# hostile-client, sustained-load and interop tests against a host release
# build: a few minutes.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

install=1
host_only=0
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    --host-only) host_only=1 ;;
    -h | --help)
      sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

[ "$install" = 1 ] && scripts/install-deps.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo deny: licences, bans, sources (deny.toml)"
export PATH="$TOOLS/bin:$PATH"
command -v cargo-deny >/dev/null || die "cargo-deny not found: run scripts/install-deps.sh"
cargo deny --locked check licenses bans sources
# Known vulnerabilities need the RustSec advisory database, fetched from
# GitHub: checked whenever it can be fetched, skipped (and said so) offline.
if cargo deny fetch db >/dev/null 2>&1; then
  log "cargo deny: advisories (RustSec)"
  cargo deny --locked check advisories
else
  log "cargo deny: advisories skipped: the RustSec advisory database cannot be fetched from here"
fi

log "cargo test"
cargo test --workspace --locked

[ -x "$VENV/bin/python" ] || die "$VENV has no Python: run scripts/install-deps.sh"
pytest=("$VENV/bin/python" -m pytest -p no:cacheprovider -q)
if [ "$host_only" = 1 ]; then
  log "pytest tests/system/test_manifests.py"
  "${pytest[@]}" tests/system/test_manifests.py
  log "cargo build --release (host), then the hostile-client, sustained-load and interop tests"
  cargo build --release --locked -p gcd -p api -p echo
  PI_GCD_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release" "${pytest[@]}" \
    tests/system/test_hostile.py tests/system/test_hostile_unsent.py \
    tests/system/test_hostile_replicas.py tests/system/test_hostile_nofile.py \
    tests/system/test_sustained_load.py tests/system/test_interop.py
  exit 0
fi

log "scripts/build-arm.sh"
started=$(date +%s)
scripts/build-arm.sh
log "build-arm.sh took $(($(date +%s) - started)) s"

log "cargo build --release -p echo (the example, for the hostile tests of its method)"
cargo build --release --locked -p echo
log "pytest tests/system"
PI_GCD_EXAMPLE_BIN_DIR="${CARGO_TARGET_DIR:-$PWD/target}/release" "${pytest[@]}" tests/system
