#!/usr/bin/env python3
"""Runs the hostile-client tests (tests/system/test_hostile*.py, but for the
images under podman) against the shipped static x86_64 binaries and writes
what each attack did to results/hostile.md: the peak resident memory (VmHWM)
of each process against its manifest's memory limit, and how long a
legitimate client took to be served while the attack held.

Usage: scripts/hostile-report.py [--bin-dir DIR] [--out FILE]
(the example's echo-gcd comes from PI_GCD_EXAMPLE_BIN_DIR, else from a host
release build of examples/echo made first)
  --bin-dir  gcd and api to attack (default dist/x86_64-unknown-linux-musl,
             from scripts/build-arm.sh)
  --out      where to write (default results/hostile.md)
Needs the Python venv of scripts/install-deps.sh, and wrk. About four
minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "system"))
from build_cache import CACHE  # noqa: E402  (where install-deps.sh made the venv)
# The hostile-client tests against the shipped binaries (not the container
# ones, which need podman).
HOSTILE_TESTS = (
    "tests/system/test_hostile.py",
    "tests/system/test_hostile_unsent.py",
    "tests/system/test_hostile_replicas.py",
    "tests/system/test_hostile_nofile.py",
)


def mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", type=Path, default=ROOT / "dist" / "x86_64-unknown-linux-musl")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "hostile.md")
    args = parser.parse_args()
    python = CACHE / "venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} not found: run scripts/install-deps.sh")
    for name in ("gcd", "api"):
        if not (args.bin_dir / name).is_file():
            raise SystemExit(f"{args.bin_dir / name} not found: run scripts/build-arm.sh")

    # The example's gcd (examples/echo), whose added method the gRPC
    # attacks hit too, is never shipped: a host release build serves.
    example_dir = os.environ.get("PI_GCD_EXAMPLE_BIN_DIR")
    if example_dir is None:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "echo"], cwd=ROOT, check=True)
        example_dir = str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release")

    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "record.jsonl"
        env = {
            **os.environ,
            "PI_GCD_BIN_DIR": str(args.bin_dir.resolve()),
            "PI_GCD_EXAMPLE_BIN_DIR": example_dir,
            "PI_GCD_HOSTILE_RECORD": str(record),
        }
        done = subprocess.run(
            [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *HOSTILE_TESTS],
            cwd=ROOT,
            env=env,
        )
        if done.returncode != 0:
            raise SystemExit("the hostile-client tests failed; no results written")
        rows = [json.loads(line) for line in record.read_text().splitlines()]

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [
        "# Hostile clients: what each attack did",
        "",
        "Written by `scripts/hostile-report.py`; do not edit by hand. Each row is",
        f"one test of {' or '.join(f'`{test}`' for test in HOSTILE_TESTS)} against a fresh process",
        "started with its manifest's env and memory limit (see",
        "[docs/memory-budget.md](../docs/memory-budget.md)). \"Peak\" is the",
        "process's VmHWM over its whole life, attack included; \"legitimate",
        "client\" is how long a well-behaved request (GET /gcd/12/18 through the",
        "api, or a Compute call to gcd) took to be answered while the attack held",
        "(retrying the immediate 503 that sheds a flood of requests).",
        "",
        f"- date (UTC): {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}",
        f"- commit: {commit}",
        f"- binaries: {args.bin_dir.relative_to(ROOT) if args.bin_dir.is_relative_to(ROOT) else args.bin_dir}",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
        "",
        "| attack | process | peak MiB | limit MiB | peak / limit | legitimate client (ms) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        share = row["peak_bytes"] / row["limit_bytes"]
        lines.append(
            f"| {row['attack']} | {row['process']} | {mib(row['peak_bytes'])} | {mib(row['limit_bytes'])} "
            f"| {share:.0%} | {row['legit_s'] * 1000:.1f} |"
        )
    worst = max(rows, key=lambda r: r["peak_bytes"] / r["limit_bytes"])
    slowest = max(rows, key=lambda r: r["legit_s"])
    lines += [
        "",
        f"Highest peak relative to its limit: {worst['attack']} "
        f"({mib(worst['peak_bytes'])} of {mib(worst['limit_bytes'])} MiB). "
        f"Longest wait of a legitimate client: {slowest['legit_s'] * 1000:.0f} ms ({slowest['attack']}).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
