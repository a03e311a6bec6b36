"""scripts/bench.sh, which nothing else runs: a --quick pass (one short run
per figure) of the host build against the static musl build that ships
(dist/x86_64-unknown-linux-musl, from scripts/build-arm.sh), through
--against, the path a user compares any other build by. Both are our own
code, so every ratio must be near 1; the bounds are generous, for a 3 s run
on a busy machine, and catch a ratio taken the wrong way round or of the
wrong figures. Every section must be written and every request answered.
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess

from conftest import DIST, REPO, require_file, require_tool

SECTIONS = ("## Machine and software", "## Throughput and latency", "### Against musl",
            "## Instructions per request", "## Memory", "## Start-up")
SCENARIOS = ("api -> gcd, 1 replica(s)", "api -> gcd, 3 replica(s)", "gRPC direct, 1 gcd")
SETS = ("host (glibc)", "musl")


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def number(cell: str) -> float:
    return float(re.sub(r"[*x% ]", "", cell))


def test_a_quick_bench_against_another_build_writes_every_section(tmp_path):
    require_tool("wrk")
    musl = DIST / "x86_64-unknown-linux-musl"
    for service in ("gcd", "api"):
        require_file(musl / service)
    out = tmp_path / "bench.md"
    run = subprocess.run(
        [str(REPO / "scripts" / "bench.sh"), "--quick", "--against", f"{musl}:musl", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    text = out.read_text()
    for section in SECTIONS:
        assert section in text, section
    lines = text.splitlines()

    throughput = [cells(line) for line in lines if re.match(r"\| .* \| \*\*\d+\*\* \|", line)]
    measured = {(row[0], row[1]) for row in throughput}
    assert measured >= {(scenario, name) for scenario in SCENARIOS for name in SETS}, measured
    for row in throughput:
        assert row[-1] == "0", f"errors in: {row}"

    against = [cells(line) for line in lines if re.match(r"\| .* \| \*\*[\d.]+ x\*\* \|", line)]
    assert [(row[0], row[1]) for row in against] == [(scenario, "host (glibc)") for scenario in SCENARIOS]
    for row in against:
        assert 0.3 <= number(row[4]) <= 3, f"req/s ratio far from 1: {row}"
        # A tail is noisier than a rate in a 3 s run: a wider band.
        assert 10 <= number(row[7]) <= 1000, f"p99 share far from 100 %: {row}"
        for cpu in row[8:]:
            if cpu != "-":
                assert 30 <= number(cpu) <= 300, f"CPU share far from 100 %: {row}"

    memory = {tuple(cells(line)[:3]) for line in lines[lines.index("## Memory"):lines.index("## Start-up")]
              if line.startswith("| ") and cells(line)[0] in SCENARIOS}
    expected = {(scenario, name, process) for scenario in SCENARIOS[:2] for name in SETS
                for process in ("api", "gcd (first)")}
    expected |= {(SCENARIOS[2], name, "gcd") for name in SETS}
    assert memory == expected, memory
    startup = {cells(line)[0]: cells(line)[1:] for line in lines[lines.index("## Start-up"):] if line.startswith("| ")}
    for name in SETS:
        assert all(ms != "n/a" and float(ms) > 0 for ms in startup[name]), f"no start-up figures for {name}: {startup}"
    assert "| compared against | musl: " in text
