#!/bin/sh
# Writes a copy of k8s/ for a cluster that pulls the images from a registry:
#   scripts/render-manifests.sh --registry REG [--version V] [--out DIR]
# Images become REG/gcd:VERSION and REG/api:VERSION, pinned by the digest
# scripts/build-arm.sh --registry REG recorded when it pushed them; DIR
# defaults to dist/k8s. `--help` says more.
#
# The logic is in xtask/ (`cargo xtask render-manifests`, Rust, std only),
# so this runs the same on Linux and macOS; this file stays POSIX sh.
set -eu

cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing: install Rust from https://rustup.rs, then run this again" >&2
  exit 1
fi
exec cargo xtask render-manifests "$@"
