# Shared by the scripts in this directory: paths and messages.
# Source it; it defines variables and functions only.

# Slow things (ARM std builds, cargo target dirs, the Python venv) are cached
# here, outside the clone, so repeated runs are fast; nothing depends on the
# cache being present.
CACHE=${PI_GCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pi-gcd}
VENV="$CACHE/venv"
# Cargo tools installed from crates.io at pinned versions, into $TOOLS/bin:
# cargo-deny (the licence and source policy), cargo-auditable (dependency
# lists embedded in the binaries; Cross.toml pins the same version for the
# cross route) and cargo-cyclonedx (the images' SBOMs).
TOOLS="$CACHE/tools"
CARGO_TOOLS="cargo-deny@0.20.2 cargo-auditable@0.7.6 cargo-cyclonedx@0.5.9"

# The cache directory of the clone at $1 (default: this one), for what is
# built from its sources: cargo target directories. One per clone, keyed by
# the clone's canonical path (its folder name, then the POSIX cksum of the
# path, which xtask/src/cache.rs and tests/system/build_cache.py compute
# alike): cargo goes by file times, so a target directory shared by two
# clones hands one clone's build to the other. `cksum` and `pwd -P` are on
# Linux and macOS alike.
clone_cache() {
  local root sum
  root=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/../..}" && pwd -P) || return 1
  sum=$(printf '%s' "$root" | cksum)
  printf '%s/clones/%s-%08x\n' "$CACHE" "$(basename "$root")" "${sum%% *}"
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
