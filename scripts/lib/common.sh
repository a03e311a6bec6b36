# Shared by the scripts in this directory: paths and messages.
# Source it; it defines variables and functions only.

# Slow things (ARM std builds, cargo target dirs, the Python venv) are cached
# here, outside the clone, so repeated runs are fast; nothing depends on the
# cache being present.
CACHE=${PI_GCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pi-gcd}
VENV="$CACHE/venv"
# Cargo tools installed from crates.io at a pinned version (cargo-deny).
TOOLS="$CACHE/tools"
CARGO_DENY_VERSION=0.20.2

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
