"""scripts/bench.sh, which nothing else runs: a --quick pass (one short run
per figure, host binaries) with the original Go implementation beside ours
must complete and write every section, and every request it sent must
have been answered. The figures themselves are not asserted: they are
measurements, not outcomes. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess

from conftest import REPO, require_tool


def test_a_quick_bench_with_the_original_writes_every_section(tmp_path):
    for tool in ("wrk", "curl", "go"):
        require_tool(tool)
    out = tmp_path / "bench.md"
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "bench.sh"), "--quick", "--original", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    text = out.read_text()
    for section in ("## Throughput and latency", "### Against the original", "## Memory", "## Start-up"):
        assert section in text, section
    rows = [line for line in text.splitlines() if line.startswith("| api -> gcd") or line.startswith("| gRPC direct")]
    sets = {row.split("|")[2].strip() for row in rows}
    assert {"host (glibc)", "original (Go)"} <= sets, sets
    throughput = [row for row in rows if re.search(r"\*\*\d+\*\*", row)]
    assert len(throughput) == 6, throughput
    for row in throughput:
        assert row.rstrip(" |").endswith("| 0"), f"errors in: {row}"
