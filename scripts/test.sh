#!/usr/bin/env bash
# Runs every test of the project, as CI does:
#   1. installs what is missing (scripts/install-deps.sh; skip with --no-install),
#   2. cargo fmt --check and cargo clippy -D warnings,
#   3. cargo test: unit, property and integration tests driving the real binaries.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    -h | --help)
      sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
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

log "cargo test"
cargo test --workspace --locked
