#!/bin/sh
# Builds gcd and api for the Raspberry Pi and packs them into images:
# static musl binaries for armv7, aarch64 and x86_64 in dist/, and one
# multi-arch FROM scratch image per service, pushed (--registry REG) or
# written to dist/images/*.oci.tar. `scripts/build-arm.sh --help` says more;
# `--dry-run` prints the route it would take and every command.
#
# The logic is in xtask/ (`cargo xtask build-arm`, Rust, std only), so this
# runs the same on Linux and macOS; this file stays POSIX sh.
set -eu

cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing: install Rust from https://rustup.rs, then run this again" >&2
  exit 1
fi
exec cargo xtask build-arm "$@"
