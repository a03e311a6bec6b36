#!/bin/sh
# Measures the services on loopback and writes every figure to
# results/bench.md; `scripts/bench.sh --help` lists what and how, with every
# option (--quick, --runs, --duration, --bin, --musl, --against,
# --worker-threads, --tuning, --no-build, --out, --source).
#
# The logic is in scripts/bench.py (Python, standard library only; its
# arithmetic is unit tested by tests/system/test_bench_logic.py).
set -eu

cd "$(dirname "$0")/.."
python="${PI_GCD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pi-gcd}/venv/bin/python"
[ -x "$python" ] || python=python3
exec "$python" scripts/bench.py "$@"
