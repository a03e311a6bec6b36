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

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
