#!/usr/bin/env python3
"""Churn soak: load through the api at the bench's full rate while gcd
replicas are rolled, scaled and killed, then a results file.

    scripts/soak.py [--minutes 10] [--out results/soak.md] [--no-churn]

Runs the manifests' topology under podman as tests/system/test_rollouts.py
does (tests/system/cluster.py plays the control plane: endpoints in DNS
with a 5 s cache, probes, SIGTERM, the Deployment's rolling update). While
`wrk -t2 -c32` (the bench's settings, loadgen/wrk-report.lua) runs one
minute after another against the api, a schedule repeats: a rolling update
of all gcd replicas, twice a scale from 3 to 9 and back, and a replica
killed with SIGKILL and replaced. So the api sees hundreds of replica addresses
come and go. Per minute it records requests served and failed (wrk errors
and non-2xx answers; the goal is 0), p99, and the RSS of the api and of
the gcd replicas; the api's last minute should be within 10 % of its first
(nothing is kept per departed replica). RSS also counts the free memory
the allocator keeps; the live heap per departed replica is asserted
exactly by api/tests/departed_replicas.rs.

Needs what scripts/test.sh installs (podman, runc, wrk, the venv) and the
images in dist/images (scripts/build-arm.sh). Run it with the venv's
Python: ~/.cache/pi-gcd/venv/bin/python scripts/soak.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "system"))

import k8s_manifests as km  # noqa: E402
from cluster import DNS_TTL_S, Cluster  # noqa: E402
from test_topology import Podman, http_get, load_images, metric  # noqa: E402

GCD_REPLICAS = 3
SCALE_TO = 9


def field(line: str, name: str) -> float:
    for part in line.split():
        if part.startswith(name + "="):
            return float(part.split("=", 1)[1])
    raise ValueError(f"no {name} in {line!r}")


class Churn(threading.Thread):
    """The schedule of operations, repeated until stopped; every pod that
    has exited is removed so the run stays bounded."""

    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.addresses: set[str] = set()
        self.operations = {"rolling updates": 0, f"scale {GCD_REPLICAS} -> {SCALE_TO} -> {GCD_REPLICAS}": 0, "kills": 0}
        self.error: str | None = None

    def note(self) -> None:
        self.addresses.update(p.ip for p in self.cluster.pods if p.kind == "gcd")

    def reap(self) -> None:
        for pod in list(self.cluster.pods):
            if pod.terminating and pod.exit_code:
                self.cluster.podman("rm", "--force", pod.name, check=False)
                self.cluster.pods.remove(pod)

    def run(self) -> None:
        c = self.cluster
        try:
            while not self.stop.is_set():
                c.rolling_update_gcd()
                self.operations["rolling updates"] += 1
                self.note()
                if self.stop.is_set():
                    break
                for _ in range(2):
                    for _ in range(SCALE_TO - GCD_REPLICAS):
                        c.scale_up_gcd()
                    self.note()
                    time.sleep(DNS_TTL_S + c.resolve_interval_s)  # until the api has them all
                    for pod in c.ready_gcds()[:SCALE_TO - GCD_REPLICAS]:
                        c.terminate(pod)
                    self.operations[f"scale {GCD_REPLICAS} -> {SCALE_TO} -> {GCD_REPLICAS}"] += 1
                if self.stop.is_set():
                    break
                victim = c.ready_gcds()[0]
                c.podman("kill", "--signal", "KILL", victim.name)
                time.sleep(DNS_TTL_S)  # until the control plane notices
                c.terminate(victim, signal=None)
                c.scale_up_gcd()
                self.operations["kills"] += 1
                self.note()
                self.reap()
        except Exception as err:  # noqa: BLE001 (reported in the results)
            self.error = f"{type(err).__name__}: {err}"


def api_errors(admin_port: int) -> str:
    """The api's answers other than 200 so far, by status, from its metrics."""
    _, body = http_get(admin_port, "/metrics")
    counts: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("api_http_requests_total{") and 'status="200"' not in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + float(line.split()[-1])
    return ", ".join(f"{s}: {n:.0f}" for s, n in sorted(counts.items()) if n) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "soak.md")
    parser.add_argument("--no-churn", action="store_true",
                        help="the same load with three steady replicas: a baseline for the memory figures")
    args = parser.parse_args()
    if not 1 <= args.minutes <= 120:
        parser.error("--minutes must be within 1..=120")

    objects = km.load()
    manifests = {name: km.find(objects, "Deployment", name) for name in ("gcd", "api")}
    with tempfile.TemporaryDirectory(prefix="pi-gcd-soak-") as base:
        podman = Podman(Path(base))
        images = load_images(podman, manifests)
        cluster = Cluster(podman, images, manifests)
        rows = []
        churn = Churn(cluster)
        try:
            for _ in range(GCD_REPLICAS):
                cluster.scale_up_gcd()
            api = cluster.start("api")
            cluster.wait_ready(api)
            churn.note()
            if not args.no_churn:
                churn.start()
            url = f"http://127.0.0.1:{api.ports['http']}/gcd/12/18"
            for minute in range(1, args.minutes + 1):
                out = subprocess.run(["wrk", "-t2", "-c32", "-d60s", "-s", str(REPO / "loadgen" / "wrk-report.lua"), url],
                                     capture_output=True, text=True, timeout=180)
                line = next((ln for ln in out.stdout.splitlines() if ln.startswith("wrk: ")), "")
                if not line:
                    raise SystemExit(f"wrk printed no figures:\n{out.stdout}\n{out.stderr}")
                gcd_rss = [rss for p in cluster.ready_gcds() if (rss := cluster.rss_kib(p))]
                rows.append({
                    "minute": minute,
                    "requests": int(field(line, "requests")),
                    "failed": int(field(line, "errors") + field(line, "non2xx")),
                    "rps": field(line, "rps"),
                    "p99_ms": field(line, "p99_us") / 1000,
                    "api_rss": cluster.rss_kib(api) or 0,
                    "gcd_rss": max(gcd_rss) if gcd_rss else 0,
                    "addresses": len(churn.addresses),
                    "replicas": metric(api.ports["admin"], "api_gcd_replicas"),
                    "errors": api_errors(api.ports["admin"]),
                })
                print(f"==> minute {minute}: {rows[-1]}", file=sys.stderr, flush=True)
                if churn.error:
                    break
        finally:
            churn.stop.set()
            if churn.is_alive():
                churn.join(timeout=180)
            cluster.close()

    write(args.out, rows, churn, args.minutes, churning=not args.no_churn)
    print(f"==> wrote {args.out}", file=sys.stderr)
    failed = sum(r["failed"] for r in rows)
    return 1 if failed or churn.error or len(rows) < args.minutes else 0


def write(path: Path, rows: list[dict], churn: Churn, minutes: int, churning: bool) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    served, failed = sum(r["requests"] for r in rows), sum(r["failed"] for r in rows)
    first, last = rows[0]["api_rss"], rows[-1]["api_rss"]
    growth = (last - first) / first * 100 if first else 0.0
    half = rows[len(rows) // 2]
    later_growth = (last - half["api_rss"]) / half["api_rss"] * 100 if half["api_rss"] else 0.0
    lines = [
        "# Churn soak",
        "",
        f"Written by `scripts/soak.py` at commit `{commit}` ({minutes} minutes asked); do not edit by hand.",
        "",
        "Load: `wrk -t2 -c32` (the bench's settings), one minute after another, through the api to gcd",
        "replicas under podman with the manifests' env, uid and memory limits, while a schedule repeats a",
        f"rolling update of all gcd replicas, twice a scale 3 -> 9 -> 3 and a SIGKILL with replacement (DNS cache {DNS_TTL_S} s,",
        "the api re-resolving at the manifests' interval). Failed = wrk's socket errors + non-2xx answers.",
        *([] if churning else ["", "**Baseline run (`--no-churn`): three steady replicas, no schedule.**"]),
        "",
        f"- requests served: {served:,}; failed: {failed} (goal 0)",
        f"- operations: " + ", ".join(f"{k} {v}" for k, v in churn.operations.items()),
        f"- distinct gcd replica addresses the api was given: {len(churn.addresses)}",
        f"- api RSS: first minute {first} KiB, last minute {last} KiB ({growth:+.1f} %; goal within 10 %)",
        f"- api RSS over the second half: minute {half['minute']} {half['api_rss']} KiB, last minute {last} KiB "
        f"({later_growth:+.1f} %)",
        "- RSS counts the free memory the allocator (dlmalloc) keeps as well as the live heap; the live heap does",
        "  not grow with departed replicas, asserted by `api/tests/departed_replicas.rs` (100 replicas rolled",
        "  through, within 40 bytes each)",
        f"- gcd RSS (largest replica): median {statistics.median(r['gcd_rss'] for r in rows)} KiB",
    ]
    if churn.error:
        lines.append(f"- the schedule stopped early: {churn.error}")
    lines += [
        "",
        "| minute | requests | failed | req/s | p99 ms | api RSS KiB | largest gcd RSS KiB | addresses so far | replicas seen | api non-200 so far |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['minute']} | {r['requests']:,} | {r['failed']} | {r['rps']:,.0f} | {r['p99_ms']:.2f} | "
                     f"{r['api_rss']} | {r['gcd_rss']} | {r['addresses']} | {r['replicas']:.0f} | {r['errors']} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
