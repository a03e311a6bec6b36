#!/usr/bin/env python3
"""Counts the user-space instructions api and gcd execute per request, with
valgrind's callgrind: the same binaries, inputs and load give the same
count, whatever else the machine is doing, so before/after comparisons hold
where req/s and CPU time swing with the machine's load.

For each binary set: gcd and api run under callgrind on 127.0.0.1, driven
through their environment as scripts/bench.py drives them (so another
build of the same contract is counted too), a warm-up passes, counters are
zeroed, wrk -t1 -c8 sends GET /gcd/12/18 for --seconds, counters are
dumped, and each process's instruction total is divided by the requests
wrk completed. A set that does not run under callgrind gets a row saying
why. The environment is passed on: a runtime that needs a setting to run
under valgrind takes it from there.

Usage: scripts/instructions.py --bin DIR[:NAME] [--bin DIR[:NAME] ...]
                               [--seconds S] [--out FILE]
Prints a Markdown table (and writes it to --out if given). Needs valgrind
and wrk (Debian packages).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from loopback import Processes, StartError, api_env, gcd_env, http_answers, loopback, parse_set

# Under valgrind a process starts and answers its first requests slowly.
START_DEADLINE_S = 120.0
# Slow under valgrind: more time for our api's first connection and calls
# (another build ignores these).
SLOW_START_ENV = {"API_CONNECT_TIMEOUT_MS": "5000", "API_DEADLINE_MS": "10000"}


def under_callgrind(binary: Path, out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(binary)]


def callgrind(pid: int, command: str) -> None:
    subprocess.run(["callgrind_control", command, str(pid)], check=True, capture_output=True, timeout=60)


def total_instructions(dump_prefix: Path) -> int:
    """Sum of the `summary:` / `totals:` lines of every dump written after
    the counters were zeroed (callgrind numbers them .1, .2, ...)."""
    dumps = sorted(dump_prefix.parent.glob(dump_prefix.name + ".*"))
    assert dumps, f"no callgrind dump for {dump_prefix}"
    text = dumps[-1].read_text()
    match = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    assert match, f"no totals in {dumps[-1]}"
    return int(match.group(1))


def measure(directory: Path, seconds: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        processes = Processes(tmp_path)
        try:
            gcd_addr = loopback()
            gcd = processes.start(under_callgrind(directory / "gcd", tmp_path / "gcd.out"),
                                  gcd_env(gcd_addr, loopback()), name=str(directory / "gcd"))
            # gcd's first answer is proven by the api's below.
            processes.wait_ready(gcd, gcd_addr, lambda: True, START_DEADLINE_S)
            api_addr = loopback()
            url = f"http://{api_addr}/gcd/12/18"
            api = processes.start(under_callgrind(directory / "api", tmp_path / "api.out"),
                                  api_env(api_addr, loopback(), [gcd_addr], SLOW_START_ENV),
                                  name=str(directory / "api"))
            processes.wait_ready(api, api_addr, lambda: http_answers(url, timeout=30), START_DEADLINE_S)
            for _ in range(200):  # warm-up: connections, buffers, caches
                urllib.request.urlopen(url, timeout=30).read()
            for proc in (gcd, api):
                callgrind(proc.pid, "--zero")
            result = subprocess.run(
                ["wrk", "-t1", "-c8", f"-d{seconds}s", url], capture_output=True, text=True, timeout=seconds + 60
            )
            match = re.search(r"(\d+) requests in", result.stdout)
            if not match:
                raise StartError(f"no request count from wrk: {result.stdout + result.stderr}")
            requests = int(match.group(1))
            for proc in (gcd, api):
                callgrind(proc.pid, "--dump")
            return (
                total_instructions(tmp_path / "api.out") / requests,
                total_instructions(tmp_path / "gcd.out") / requests,
                requests,
            )
        finally:
            processes.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", action="append", required=True, help="DIR[:NAME] holding gcd and api")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install valgrind wrk")

    rows = ["| binaries | api instructions/request | gcd instructions/request | requests measured |", "|---|---:|---:|---:|"]
    for spec in args.bin:
        directory, name = parse_set(spec)
        try:
            api, gcd, requests = measure(directory, args.seconds)
            rows.append(f"| {name} | {api:,.0f} | {gcd:,.0f} | {requests} |")
        except (StartError, OSError, subprocess.SubprocessError, AssertionError) as err:
            reason = str(err).splitlines()[0].replace("|", "/")
            rows.append(f"| {name} | n/a | n/a | not measured: {reason} |")
        print(rows[-1], file=sys.stderr)
    table = "\n".join(rows) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
