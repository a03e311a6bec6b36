#!/usr/bin/env bash
# The ARM stage of CI: builds every artifact the way a user does, then proves
# it (tests/system/test_artifacts.py) and records the sizes.
#
#   1. scripts/build-arm.sh (no registry): dist/<target>/{gcd,api} and
#      dist/images/{gcd,api}.oci.tar;
#   2. pytest tests/system/test_artifacts.py: static binaries of the right
#      architecture, the ARM pairs answering under qemu-user, the OCI
#      indexes, and the images run with podman answering api -> gcd;
#   3. scripts/size-report.py: results/sizes.md.
#
# Expects scripts/install-deps.sh to have run. --no-build reuses dist/.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h | --help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done

if [ "$build" = 1 ]; then
  start=$(date +%s)
  scripts/build-arm.sh
  log "build-arm.sh took $(($(date +%s) - start))s"
fi

[ -x "$VENV/bin/python" ] || die "$VENV has no Python: run scripts/install-deps.sh"
log "pytest tests/system/test_artifacts.py"
"$VENV/bin/python" -m pytest -p no:cacheprovider -q tests/system/test_artifacts.py

log "size report"
"$VENV/bin/python" scripts/size-report.py
