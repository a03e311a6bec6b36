"""Memory under sustained legitimate load levels off, whatever the runtime.

What the kernel counts against a container's memory limit is RSS, and RSS
is the live heap plus whatever free memory the allocator keeps. The live
heap is bounded by the caps (docs/memory-budget.md) and proven flat by
api/tests/departed_replicas.rs; this file proves the allocator does not
add a slope of its own. With several worker threads, musl's own malloc let
the api's RSS climb by about 1.5 MiB every 10 s of full load, with no end
in sight after 5 minutes (34 MiB, half the api's limit: results/ledger.md),
so a user who chose one worker per core on a Pi would have had the pod
OOM-killed by ordinary traffic.

The shipped binaries run as the manifests run them, with two worker
threads each (what `--worker-threads 0` gives a 2-core machine), under
`wrk` at full rate in short rounds. After a warm-up, RSS may not grow by
more than GROWTH_ALLOWANCE over the remaining rounds: a level, not a
slope.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import hostile as h
from conftest import http_get
from shipped import start

ROUNDS = 6
WARM_UP_ROUNDS = 2
ROUND_S = 5
# The allocator's slope before this was 0.7 MiB per round of this length.
GROWTH_ALLOWANCE = 768 * 1024


@pytest.fixture
def services():
    threads = {"GCD_WORKER_THREADS": "2", "API_WORKER_THREADS": "2"}
    gcd = start("gcd", threads)
    api = start("api", {**threads, "GCD_ADDR": f"{gcd.addr[0]}:{gcd.addr[1]}"})
    yield gcd, api
    api.service.kill()
    gcd.service.kill()


def test_rss_levels_off_under_full_load_with_several_workers(services):
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.fail("wrk is missing: run scripts/install-deps.sh", pytrace=False)
    gcd, api = services
    h.check_loopback(api.addr)
    url = f"http://{api.addr[0]}:{api.addr[1]}/gcd/12/18"
    status, body = http_get(api.addr, "/gcd/12/18")
    assert (status, json.loads(body)) == (200, {"result": "6"}), (status, body)

    readings: dict[str, list[int]] = {"api": [], "gcd": []}
    for _ in range(ROUNDS):
        run = subprocess.run(
            [wrk, "-t2", "-c32", f"-d{ROUND_S}s", url],
            capture_output=True,
            text=True,
            timeout=ROUND_S + 30,
        )
        assert run.returncode == 0, run.stderr
        assert "Non-2xx" not in run.stdout and "Socket errors" not in run.stdout, run.stdout
        for target in (api, gcd):
            assert target.service.proc.poll() is None, f"{target.name} died:\n{target.service.log()}"
            readings[target.name].append(h.memory_status(target.pid, "VmRSS"))

    for name, values in readings.items():
        settled = values[WARM_UP_ROUNDS - 1]
        growth = max(values[WARM_UP_ROUNDS:]) - settled
        shown = ", ".join(f"{v / 2**20:.2f}" for v in values)
        assert growth <= GROWTH_ALLOWANCE, (
            f"{name}'s RSS kept growing under steady load: {shown} MiB after each "
            f"{ROUND_S} s round (+{growth / 2**20:.2f} MiB after the warm-up)"
        )
