#!/usr/bin/env python3
"""Counts the user-space instructions api and gcd execute per request, with
valgrind's callgrind: the same binaries, inputs and load give the same
count, whatever else the machine is doing, so before/after comparisons hold
where req/s and CPU time swing with the machine's load.

For each binary set: gcd and api run under callgrind on 127.0.0.1, a warm-up
passes, counters are zeroed, wrk -t1 -c8 sends GET /gcd/12/18 for
--seconds, counters are dumped, and each process's instruction total is
divided by the requests wrk completed.

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
import time
import urllib.request
from pathlib import Path


def start(argv: list[str], out: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """Starts a binary under callgrind and waits for its listening line."""
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # GODEBUG: the Go runtime's preemption signals abort callgrind, so the
        # original Go implementation (bench.sh --original) runs without them.
        env={"RUST_LOG": "info", "PATH": "/usr/bin:/bin", "GODEBUG": "asyncpreemptoff=1"},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        fields = dict(re.findall(r"\b(addr|admin_addr)=(\S+)", line))
        if "addr" in fields and "admin_addr" in fields:
            return proc, fields
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"{argv[0]} did not start under valgrind")


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
        gcd, gcd_addrs = start(
            [str(directory / "gcd"), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
            tmp_path / "gcd.out",
        )
        api, api_addrs = start(
            [
                str(directory / "api"),
                "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0",
                "--gcd", gcd_addrs["addr"],
                # Slow under valgrind: more time for the first connection.
                "--connect-timeout-ms", "5000",
                "--deadline-ms", "10000",
            ],
            tmp_path / "api.out",
        )
        url = f"http://{api_addrs['addr']}/gcd/12/18"
        try:
            for _ in range(200):  # warm-up: connections, buffers, caches
                urllib.request.urlopen(url, timeout=30).read()
            for proc in (gcd, api):
                callgrind(proc.pid, "--zero")
            result = subprocess.run(
                ["wrk", "-t1", "-c8", f"-d{seconds}s", url], capture_output=True, text=True, timeout=seconds + 60
            )
            match = re.search(r"(\d+) requests in", result.stdout)
            assert match, result.stdout + result.stderr
            requests = int(match.group(1))
            for proc in (gcd, api):
                callgrind(proc.pid, "--dump")
            return (
                total_instructions(tmp_path / "api.out") / requests,
                total_instructions(tmp_path / "gcd.out") / requests,
                requests,
            )
        finally:
            for proc in (api, gcd):
                proc.kill()
                proc.wait()


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
        directory, _, name = spec.partition(":")
        api, gcd, requests = measure(Path(directory), args.seconds)
        rows.append(f"| {name or directory} | {api:,.0f} | {gcd:,.0f} | {requests} |")
        print(rows[-1], file=sys.stderr)
    table = "\n".join(rows) + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
