#!/usr/bin/env python3
"""Measures the services on loopback and writes every figure to
results/bench.md:

- HTTP through api -> gcd with wrk -t2 -c32, with 1 and with 3 gcd
  replicas (req/s, p50, p99);
- direct gRPC against one gcd with grpc-load (loadgen/, our load client);
- a ceiling: the same wrk against http-ceiling (loadgen/), the api's HTTP
  stack answering a fixed body with no gRPC hop, i.e. this machine's limit;
- CPU time per request of each process, user and system apart (/proc);
- user-space instructions per request under callgrind
  (scripts/instructions.py), the figure that does not move with the
  machine's load;
- idle and after-load memory (VmRSS, and VmHWM = peak) of every process;
- start-up time from exec to the first successful request (startup-probe).

Figures are medians of --runs runs. When several binary sets are measured
they take turns run by run (run 1: A, B; run 2: B, A; ...), so a machine
that slows down part-way weighs on every set alike. Host binaries
($CARGO_TARGET_DIR/release, else target/release; glibc) are measured, and
the static musl binaries that ship (dist/x86_64-unknown-linux-musl, from
scripts/build-arm.sh) too when present, unless --quick. --against adds
another build of gcd and api, measured in the same runs, and a table of our
figures as ratios of its own (docs/bench.md says how to build the original
Go implementation as one). Every build is driven through its environment
(GCD_LISTEN, GCD_ADMIN_LISTEN, GCD_ADDR, API_LISTEN, API_ADMIN_LISTEN) and
is ready once it answers a first request. Traffic goes to 127.0.0.1 only;
every process started is stopped on exit. About 5 minutes with the
defaults. Needs wrk and valgrind (scripts/install-deps.sh).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loopback import Processes, StartError, api_env, gcd_env, http_answers, loopback, parse_set  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# wrk settings from the benchmark's definition; the warm-up is not recorded.
WRK_ARGS = ["-t2", "-c32"]
# grpc-load: as many calls in flight as wrk has connections, over one HTTP/2
# connection (what the api keeps per replica).
GRPC_ARGS = ["--concurrency", "32", "--connections", "1", "--threads", "1"]
# api / gcd worker threads tried by --tuning.
TUNING = [(1, 1), (2, 1), (1, 2), (2, 2), (4, 4)]
# Our memory goals in MiB, idle / peak; another build's rows show none.
GOALS = {"api": ("≤ 3", "≤ 8"), "gcd": ("≤ 2", "≤ 5")}
START_DEADLINE_S = 10.0
# Before the idle memory is read: whatever a process does after its first
# answer (buffers, a resolver's first pass) is part of idle.
SETTLE_S = 0.5
HOST_NAME = "host (glibc)"
MUSL_DIR = REPO / "dist" / "x86_64-unknown-linux-musl"
# Where a change counts as "local changes" to the source measured.
SOURCES = ["api", "gcd", "grpc-wire", "runtime", "serving", "telemetry", "gcd-proto", "Cargo.toml", "Cargo.lock"]


def log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


# --- Figures: pure functions, unit tested (tests/system/test_bench_logic.py)


def median(values: list[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def set_order(run: int, count: int) -> list[int]:
    """The set indices in the order run `run` (from 1) takes them:
    forwards on odd runs, backwards on even ones, so no set always goes
    first."""
    forwards = list(range(count))
    return forwards if run % 2 == 1 else forwards[::-1]


def report_fields(output: str) -> dict[str, float]:
    """The key=value figures of the summary line that wrk (through
    loadgen/wrk-report.lua), grpc-load and startup-probe print."""
    for line in output.splitlines():
        tool, _, rest = line.partition(": ")
        if tool in ("wrk", "grpc-load", "startup-probe") and "=" in rest:
            return {key: float(value) for key, _, value in (pair.partition("=") for pair in rest.split())}
    raise ValueError(f"no figures in: {output[-500:]!r}")


def stat_ticks(stat: str) -> tuple[int, int]:
    """User and system CPU ticks from the text of /proc/<pid>/stat (fields
    14 and 15). The command name in field 2 may hold spaces and
    parentheses, so fields are counted from its closing parenthesis."""
    after_name = stat[stat.rindex(")") + 2 :].split()
    # after_name[0] is field 3 (state).
    return int(after_name[11]), int(after_name[12])


def us_per_request(ticks: int, requests: float, hz: int) -> float:
    """CPU microseconds per request for `ticks` clock ticks (`hz` a second)."""
    return ticks * 1e6 / hz / requests if requests else 0.0


@dataclass
class Cpu:
    """CPU µs per request of a group of processes, run by run."""

    user: list[float] = field(default_factory=list)
    system: list[float] = field(default_factory=list)

    def add(self, ticks: tuple[int, int], requests: float, hz: int) -> None:
        self.user.append(us_per_request(ticks[0], requests, hz))
        self.system.append(us_per_request(ticks[1], requests, hz))

    def total(self) -> float:
        return median([u + s for u, s in zip(self.user, self.system)])

    def cell(self) -> str:
        return f"{self.total():.1f} ({median(self.user):.1f} + {median(self.system):.1f})"


@dataclass
class Runs:
    """The figures of one set's runs of one scenario. `front` and `gcd` are
    None where the scenario has no such process (gRPC direct has no front,
    the ceiling no gcd)."""

    front: Cpu | None
    gcd: Cpu | None
    rps: list[float] = field(default_factory=list)
    p50_us: list[float] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)
    bad: int = 0

    def add(self, figures: dict[str, float], front_ticks: tuple[int, int], gcd_ticks: tuple[int, int], hz: int) -> None:
        requests = figures["requests"]
        self.rps.append(figures["rps"])
        self.p50_us.append(figures["p50_us"])
        self.p99_us.append(figures["p99_us"])
        self.bad += int(figures.get("errors", 0) + figures.get("non2xx", 0))
        if self.front is not None:
            self.front.add(front_ticks, requests, hz)
        if self.gcd is not None:
            self.gcd.add(gcd_ticks, requests, hz)


@dataclass
class Row:
    """One line of the throughput table: a scenario on one set."""

    label: str
    set_name: str
    load: str
    runs: Runs


def cpu_cell(cpu: Cpu | None) -> str:
    return "-" if cpu is None else cpu.cell()


def throughput_line(row: Row) -> str:
    r = row.runs
    per_run = "".join(f"{rps:.0f} " for rps in r.rps)
    return (
        f"| {row.label} | {row.set_name} | {row.load} | **{median(r.rps):.0f}** | {median(r.p50_us) / 1000:.2f} "
        f"| {median(r.p99_us) / 1000:.2f} | {cpu_cell(r.front)} | {cpu_cell(r.gcd)} | {per_run}| {r.bad} |"
    )


def share(ours: Cpu | None, theirs: Cpu | None) -> str:
    """Our CPU per request as a share of theirs, "-" when there is none."""
    if ours is None or theirs is None or theirs.total() <= 0:
        return "-"
    return f"{100 * ours.total() / theirs.total():.0f} %"


def against_header(name: str) -> list[str]:
    return [
        f"| scenario | binaries | req/s | {name}'s req/s | x {name} | p99 ms | {name}'s p99 ms "
        f"| % of {name}'s p99 | api CPU, % of {name}'s | gcd CPU, % of {name}'s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]


def against_lines(rows: list[Row], against: str) -> list[str]:
    """For each row of ours with a row of `against` in the same scenario:
    our req/s as a multiple of its own, our p99 and CPU per request as
    shares of its own."""
    theirs = {row.label: row.runs for row in rows if row.set_name == against}
    lines = []
    for row in rows:
        other = theirs.get(row.label)
        if row.set_name == against or other is None:
            continue
        rps, orps = median(row.runs.rps), median(other.rps)
        p99, op99 = median(row.runs.p99_us), median(other.p99_us)
        times = f"**{rps / orps:.1f} x**" if orps > 0 else "-"
        tail = f"**{100 * p99 / op99:.0f} %**" if op99 > 0 else "-"
        lines.append(
            f"| {row.label} | {row.set_name} | {rps:.0f} | {orps:.0f} | {times} | {p99 / 1000:.2f} | {op99 / 1000:.2f} "
            f"| {tail} | {share(row.runs.front, other.front)} | {share(row.runs.gcd, other.gcd)} |"
        )
    return lines


def mib(kib: int) -> str:
    return f"{kib / 1024:.2f}"


def memory_line(label: str, set_name: str, process: str, idle_rss: int, after: tuple[int, int], goals: str) -> str:
    return f"| {label} | {set_name} | {process} | {mib(idle_rss)} | {mib(after[0])} | {mib(after[1])} | {goals} |"


def busy_share(before: list[int], after: list[int]) -> str:
    """CPU busy share between two samples of /proc/stat's `cpu` line
    (numbers after the label; idle and iowait are the 4th and 5th)."""
    deltas = [b - a for a, b in zip(before, after)]
    total = sum(deltas)
    idle = deltas[3] + deltas[4]
    return f"{100 * (1 - idle / total):.0f}%" if total else "0%"


# --- The machine and its processes


def proc_ticks(pids: list[int]) -> tuple[int, int]:
    user = system = 0
    for pid in pids:
        u, s = stat_ticks(Path(f"/proc/{pid}/stat").read_text())
        user, system = user + u, system + s
    return user, system


def memory_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_line() -> list[int]:
    return [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return "unknown"


@dataclass
class BuildSet:
    directory: Path
    name: str
    ours: bool


@dataclass
class Target:
    """One set's processes in a scenario, and how to load them for a
    number of seconds (returning the load client's output)."""

    build: BuildSet
    front: list[int]
    gcd: list[int]
    load: Callable[[int], str]
    runs: Runs


class Bench:
    """The scenarios of one bench run over the sets measured; every process
    a scenario starts is stopped before the next one begins."""

    def __init__(self, args: argparse.Namespace, sets: list[BuildSet], tools: Path, tmp: Path):
        self.args = args
        self.sets = sets
        self.tools = tools
        self.processes = Processes(tmp)
        self.hz = os.sysconf("SC_CLK_TCK")
        self.threads_env: dict[str, str] = {}
        if args.worker_threads is not None:
            n = str(args.worker_threads)
            self.threads_env = {"GCD_WORKER_THREADS": n, "API_WORKER_THREADS": n}

    # Starting and loading

    def grpc_answers(self, addr: str) -> bool:
        probe = [str(self.tools / "grpc-load"), "--target", addr, "--requests", "1", "--warmup", "0",
                 "--concurrency", "1"]
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0

    def start_gcd(self, build: BuildSet, extra: dict[str, str] | None = None) -> tuple[int, str]:
        listen = loopback()
        proc = self.processes.start([str(build.directory / "gcd")],
                                    gcd_env(listen, loopback(), {**self.threads_env, **(extra or {})}))
        self.processes.wait_ready(proc, listen, lambda: self.grpc_answers(listen), START_DEADLINE_S)
        return proc.pid, listen

    def start_api(self, build: BuildSet, gcds: list[str], extra: dict[str, str] | None = None) -> tuple[int, str]:
        listen = loopback()
        url = f"http://{listen}/gcd/12/18"
        proc = self.processes.start([str(build.directory / "api")],
                                    api_env(listen, loopback(), gcds, {**self.threads_env, **(extra or {})}))
        self.processes.wait_ready(proc, listen, lambda: http_answers(url), START_DEADLINE_S)
        return proc.pid, url

    def wrk(self, url: str, seconds: int) -> str:
        argv = ["wrk", *WRK_ARGS, f"-d{seconds}s", "-s", str(REPO / "loadgen" / "wrk-report.lua"), url]
        return subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    def grpc_load(self, addr: str, seconds: int) -> str:
        argv = [str(self.tools / "grpc-load"), "--target", addr, *GRPC_ARGS, "--duration", str(seconds)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout

    # Measuring

    def measure_once(self, target: Target, label: str, run: int) -> None:
        front0, gcd0 = proc_ticks(target.front), proc_ticks(target.gcd)
        output = target.load(self.args.duration)
        front1, gcd1 = proc_ticks(target.front), proc_ticks(target.gcd)
        figures = report_fields(output)
        target.runs.add(figures, (front1[0] - front0[0], front1[1] - front0[1]),
                        (gcd1[0] - gcd0[0], gcd1[1] - gcd0[1]), self.hz)
        line = " ".join(f"{k}={v:g}" for k, v in figures.items())
        log(f"{label} [{target.build.name}] run {run}: {line}")

    def measure_sets(self, targets: list[Target], label: str, load: str) -> list[Row]:
        """Every set's processes are up and warmed: run 1 takes each set
        once in set_order, then run 2, and so on."""
        for run in range(1, self.args.runs + 1):
            for k in set_order(run, len(targets)):
                self.measure_once(targets[k], label, run)
        return [Row(label, t.build.name, load, t.runs) for t in targets]

    # Scenarios

    def startup(self) -> list[str]:
        """Exec to first answer, gcd alone, then api with a gcd of its own
        set behind it (started once, up through all runs)."""
        gcds = [self.start_gcd(build)[1] for build in self.sets]
        times: list[tuple[list[float], list[float]]] = [([], []) for _ in self.sets]
        for run in range(1, self.args.runs + 1):
            for k in set_order(run, len(self.sets)):
                build = self.sets[k]
                gcd_ms = self.probe("grpc", build.directory / "gcd", lambda listen: gcd_env(listen, loopback()))
                api_ms = self.probe("http", build.directory / "api",
                                    lambda listen, k=k: api_env(listen, loopback(), [gcds[k]]))
                for kept, ms in zip(times[k], (gcd_ms, api_ms)):
                    if ms is not None:
                        kept.append(ms)
                log(f"start-up [{build.name}] run {run}: gcd {gcd_ms} ms, api {api_ms} ms (first success)")
        self.processes.stop_all()
        cell = lambda ms: f"{median(ms):.2f}" if ms else "n/a"  # noqa: E731
        return [f"| {build.name} | {cell(g)} | {cell(a)} |" for build, (g, a) in zip(self.sets, times)]

    def probe(self, protocol: str, binary: Path, env_for: Callable[[str], dict[str, str]]) -> float | None:
        """startup-probe's first success in ms, None (and why, logged) if
        the build never answered."""
        listen = loopback()
        argv = [str(self.tools / "startup-probe"), "--protocol", protocol, "--addr", listen, "--runs", "1",
                "--", str(binary)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **env_for(listen), **self.threads_env})
        if done.returncode != 0:
            log(f"start-up of {binary} not measured: {done.stderr.strip()}")
            return None
        return report_fields(done.stdout)["first_ok_ms"]

    def api_to_gcd(self, replicas: int) -> tuple[list[Row], list[str]]:
        label = f"api -> gcd, {replicas} replica(s)"
        targets = []
        for build in self.sets:
            gcds = [self.start_gcd(build) for _ in range(replicas)]
            api_pid, url = self.start_api(build, [addr for _, addr in gcds])
            targets.append(Target(build, [api_pid], [pid for pid, _ in gcds],
                                  lambda seconds, url=url: self.wrk(url, seconds), Runs(Cpu(), Cpu())))
        time.sleep(SETTLE_S)
        idle = [(memory_kib(t.front[0])[0], memory_kib(t.gcd[0])[0]) for t in targets]
        for t in targets:
            t.load(self.args.warmup)
        rows = self.measure_sets(targets, label, "wrk")
        memory = []
        for t, (api_idle, gcd_idle) in zip(targets, idle):
            memory.append(self.memory(label, t.build, "api", t.front[0], api_idle))
            memory.append(self.memory(label, t.build, "gcd (first)", t.gcd[0], gcd_idle))
        self.processes.stop_all()
        return rows, memory

    def grpc_direct(self) -> tuple[list[Row], list[str]]:
        label = "gRPC direct, 1 gcd"
        targets = []
        for build in self.sets:
            pid, addr = self.start_gcd(build)
            targets.append(Target(build, [], [pid], lambda seconds, addr=addr: self.grpc_load(addr, seconds),
                                  Runs(None, Cpu())))
        time.sleep(SETTLE_S)
        idle = [memory_kib(t.gcd[0])[0] for t in targets]
        for t in targets:
            t.load(self.args.warmup)
        rows = self.measure_sets(targets, label, "grpc-load")
        memory = [self.memory(label, t.build, "gcd", t.gcd[0], gcd_idle) for t, gcd_idle in zip(targets, idle)]
        self.processes.stop_all()
        return rows, memory

    def memory(self, label: str, build: BuildSet, process: str, pid: int, idle_rss: int) -> str:
        goals = " / ".join(GOALS[process.split()[0]]) if build.ours else "- / -"
        return memory_line(label, build.name, process, idle_rss, memory_kib(pid), goals)

    def tuning(self) -> list[Row]:
        """Worker threads per process, 1 replica, on our last set only."""
        build = [b for b in self.sets if b.ours][-1]
        rows = []
        for api_threads, gcd_threads in TUNING:
            gcd_pid, gcd_addr = self.start_gcd(build, {"GCD_WORKER_THREADS": str(gcd_threads)})
            api_pid, url = self.start_api(build, [gcd_addr], {"API_WORKER_THREADS": str(api_threads)})
            self.wrk(url, self.args.warmup)
            rows.extend(self.alone(f"tuning: api {api_threads} / gcd {gcd_threads} worker threads", build,
                                   [api_pid], [gcd_pid], url))
            self.processes.stop_all()
        return rows

    def alone(self, label: str, build: BuildSet, front: list[int], gcd: list[int], url: str) -> list[Row]:
        target = Target(build, front, gcd, lambda seconds: self.wrk(url, seconds),
                        Runs(Cpu() if front else None, Cpu() if gcd else None))
        return self.measure_sets([target], label, "wrk")

    def ceiling(self) -> tuple[list[Row], str]:
        """The api's HTTP stack with no gRPC hop."""
        label = "ceiling: HTTP only, no gRPC hop"
        listen = loopback()
        url = f"http://{listen}/gcd/12/18"
        argv = [str(self.tools / "http-ceiling"), "--listen", listen]
        if self.args.worker_threads is not None:
            argv += ["--worker-threads", str(self.args.worker_threads)]
        proc = self.processes.start(argv, {})
        self.processes.wait_ready(proc, listen, lambda: http_answers(url), START_DEADLINE_S)
        time.sleep(SETTLE_S)
        idle = memory_kib(proc.pid)[0]
        self.wrk(url, self.args.warmup)
        host = BuildSet(self.tools, HOST_NAME, ours=True)
        rows = self.alone(label, host, [proc.pid], [], url)
        memory = memory_line(label, HOST_NAME, "http-ceiling", idle, memory_kib(proc.pid), "- / -")
        self.processes.stop_all()
        return rows, memory

    def instructions(self) -> str:
        """User-space instructions per request under callgrind: unlike
        req/s and CPU time, they do not move with the machine's load."""
        if self.args.quick:
            return "Not measured with --quick."
        if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
            return "Not measured: valgrind is not installed (apt-get install valgrind)."
        log("instructions per request (scripts/instructions.py, callgrind)")
        argv = [sys.executable, str(REPO / "scripts" / "instructions.py"), "--seconds", str(self.args.duration)]
        for build in self.sets:
            argv += ["--bin", f"{build.directory}:{build.name}"]
        return subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True).stdout.strip()


# --- The report


def crate_versions() -> str:
    packages = tomllib.loads((REPO / "Cargo.lock").read_text())["package"]
    version = {}
    for package in packages:
        version.setdefault(package["name"], package["version"])
    names = ["tokio", "tonic", "h2", "hyper", "hyper-util", "axum", "prost"]
    return ", ".join(f"{name} {version.get(name, '?')}" for name in names)


def source_text() -> str:
    commit = command_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "unknown"
    changed = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", *SOURCES],
                             capture_output=True).returncode != 0
    return f"commit {commit}" + (" (with local changes)" if changed else "")


def machine_rows(args: argparse.Namespace, against: BuildSet | None, started: str, load: tuple[str, str],
                 busy: str, elapsed: int) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    os_release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
    wrk = " ".join((command_output(["wrk", "-v"]).splitlines() or ["unknown"])[0].split()[:2])
    mode = "--quick (smoke only)" if args.quick else "full"
    rows = [
        ("date (UTC)", started),
        ("CPU", model),
        ("cores", str(os.cpu_count())),
        ("memory", f"{mem_kib / 1048576:.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("OS", os_release.get("PRETTY_NAME", "?").strip('"')),
        ("load average before / after", f"{load[0]} / {load[1]}"),
        ("CPU busy before starting (1 s sample)", busy),
        ("rustc", command_output(["rustc", "--version"]) or "unknown"),
        ("wrk", wrk),
        ("crates", crate_versions()),
    ]
    if against is not None:
        rows.append(("compared against", f"{against.name}: `{against.directory}`"))
    rows += [
        ("source", args.source or source_text()),
        ("mode", f"{args.runs} run(s) of {args.duration} s per figure after a {args.warmup} s warm-up; "
                 f"{mode}; took {elapsed} s"),
        ("Tokio worker threads", f"{args.worker_threads if args.worker_threads is not None else 'the default of each binary'}"
                                 " (gcd, api, http-ceiling)"),
    ]
    return "\n".join(f"| {what} | {value} |" for what, value in rows)


def against_section(rows: list[Row], against: BuildSet | None) -> str:
    if against is None:
        return ""
    name = against.name
    table = "\n".join(against_header(name) + against_lines(rows, name))
    return f"""

### Against {name}

Our medians above as ratios of {name}'s, measured in the same runs: req/s
as a multiple of its own (above 1 x: more requests answered), p99 and CPU
per request as shares of its own (under 100 %: a shorter tail, less work).
The shares hold still when the machine as a whole runs faster or slower,
which moves every figure in µs. {name} is the build in `{against.directory}`,
driven only through its environment (GCD_LISTEN, GCD_ADDR, API_LISTEN and
the admin addresses where it reads them). A baseline such as the original
Go implementation is built outside this repository, from the tutorial's
public repository with Go 1.19 in GOPATH mode and its vendored packages,
its two `main` functions reading GCD_LISTEN, GCD_ADDR and API_LISTEN
([docs/bench.md](../docs/bench.md) says how).

{table}"""


def render(args: argparse.Namespace, sets: list[BuildSet], against: BuildSet | None, machine: str, rows: list[Row],
           instructions: str, memory: list[str], startup: list[str]) -> str:
    sizes = "\n".join(f"| {b.name} | {(b.directory / 'gcd').stat().st_size} | {(b.directory / 'api').stat().st_size} |"
                      for b in sets)
    throughput = "\n".join(throughput_line(row) for row in rows)
    return f"""# Benchmark results

Written by `scripts/bench.sh`; do not edit by hand. Re-run it to refresh.
Everything runs on this one machine over 127.0.0.1: wrk, api, gcd and the
load client share its cores, so the figures are for the whole system, not
for one process with the machine to itself.

## Machine and software

| what | value |
|---|---|
{machine}

Binary sizes (bytes):

| binaries | gcd | api |
|---|---|---|
{sizes}

## Throughput and latency

wrk `{" ".join(WRK_ARGS)} -d{args.duration}s` on `GET /gcd/12/18`; grpc-load
`{" ".join(GRPC_ARGS)}` (Compute calls). req/s, p50 and p99 are medians over the
runs; "errors" counts socket errors and non-2xx answers over all runs.
"CPU µs/req" is the CPU time the front process (api, or http-ceiling) and
the gcd process(es) spent per answered request, from /proc: the median of
user + system, then the medians of user and system apart. It is less noisy
than req/s when something else shares the machine, and it shows which hop
costs what. The load generator's own CPU is not counted. With several
binary sets, their processes are up together and the sets take turns run by
run (run 1: A, B; run 2: B, A; ...), so a machine that slows down part-way
weighs on every set alike.
Goal: ≥ 30,000 req/s through api -> gcd with one replica, p99 ≤ 3 ms, and
at least 2.2 x the original Go implementation's req/s with at most 40 % of
its p99 (`--against` measures such a build in the same runs).

| scenario | binaries | load | req/s | p50 ms | p99 ms | front CPU µs/req (user + sys) | gcd CPU µs/req (user + sys) | req/s per run | errors |
|---|---|---|---|---|---|---|---|---|---|
{throughput}{against_section(rows, against)}

## Instructions per request

User-space instructions each process executes per request, counted by
valgrind's callgrind (`scripts/instructions.py`): api -> one gcd, counters
zeroed after a warm-up of 200 requests, then wrk `-t1 -c8 -d{args.duration}s`.
The same binaries and load give the same count whatever else the machine
is doing, so this is the figure to decide a CPU change on.

{instructions}

## Memory

MiB. "idle" is VmRSS once the process has answered its first request;
"after load" is VmRSS right after the runs above; "peak" is VmHWM, the most
it ever held. Goals: gcd ≤ 2 MiB idle and ≤ 5 MiB peak, api ≤ 3 MiB idle and
≤ 8 MiB peak.

| scenario | binaries | process | idle | after load | peak (VmHWM) | goal idle / peak |
|---|---|---|---|---|---|---|
{chr(10).join(memory)}

## Start-up

Milliseconds from exec to the first successful request (median of {args.runs}):
a gRPC Compute for gcd, `GET /gcd/12/18` for api (with a gcd already up).

| binaries | gcd | api |
|---|---|---|
{chr(10).join(startup)}

Tuning experiments and the choices they led to: [tuning.md](tuning.md).
"""


# --- Command line


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not 0 or more")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s per figure, host binaries only")
    parser.add_argument("--runs", type=positive, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--duration", type=positive, default=10, help="seconds per wrk or grpc-load run")
    parser.add_argument("--bin", action="append", default=[], metavar="DIR[:NAME]",
                        help="measure gcd and api from DIR (repeatable; replaces the host and musl sets)")
    parser.add_argument("--musl", action="store_true",
                        help="build the static musl binaries first (scripts/build-arm.sh --binaries-only, x86_64)")
    parser.add_argument("--against", metavar="DIR[:NAME]",
                        help="also measure the gcd and api in DIR, in the same runs, and add a table of our "
                             "figures as ratios of its own")
    parser.add_argument("--worker-threads", type=at_least_zero, metavar="N",
                        help="GCD_WORKER_THREADS and API_WORKER_THREADS for every set, and http-ceiling's")
    parser.add_argument("--tuning", action="store_true",
                        help="also measure api / gcd worker-thread combinations on our last set (~3 minutes)")
    parser.add_argument("--no-build", dest="build", action="store_false", help="use the binaries already built")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench.md", help="where to write the results")
    parser.add_argument("--source", help="what was measured, for the results (default: the git commit)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 3
    # Seconds of load before the measured runs, not recorded.
    args.warmup = 1 if args.quick else 2
    return args


def build_sets(args: argparse.Namespace, tools: Path) -> tuple[list[BuildSet], BuildSet | None]:
    specs = args.bin or [f"{tools}:{HOST_NAME}"]
    sets = [BuildSet(*parse_set(spec), ours=True) for spec in specs]
    if not args.bin and not args.quick and (MUSL_DIR / "gcd").is_file() and (MUSL_DIR / "api").is_file():
        sets.append(BuildSet(MUSL_DIR, "static musl (ships)", ours=True))
    against = BuildSet(*parse_set(args.against), ours=False) if args.against else None
    for build in sets + ([against] if against else []):
        if not all(os.access(build.directory / binary, os.X_OK) for binary in ("gcd", "api")):
            raise SystemExit(f"error: no gcd and api in {build.directory}")
    if against and against.name in {b.name for b in sets}:
        raise SystemExit(f"error: --against is named {against.name!r} like another set: give it a NAME")
    return sets, against


def build(args: argparse.Namespace) -> None:
    if args.build:
        log("building release binaries")
        # Separate invocations: the bench tools never change the service binaries.
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "gcd", "-p", "api"], cwd=REPO, check=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "loadgen"], cwd=REPO, check=True)
    if args.musl:
        log("building static musl binaries (scripts/build-arm.sh)")
        subprocess.run([str(REPO / "scripts" / "build-arm.sh"), "--binaries-only"], cwd=REPO, check=True,
                       env={**os.environ, "PI_GCD_TARGETS": "x86_64-unknown-linux-musl"})


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("error: wrk not found: run scripts/install-deps.sh")
    build(args)
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    tools = (target_dir if target_dir.is_absolute() else REPO / target_dir) / "release"
    for tool in ("grpc-load", "http-ceiling", "startup-probe"):
        if not os.access(tools / tool, os.X_OK):
            raise SystemExit(f"error: {tools / tool} is missing: run without --no-build")
    sets, against = build_sets(args, tools)
    everything = sets + ([against] if against else [])

    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    before = cpu_line()
    time.sleep(1)
    busy = busy_share(before, cpu_line())
    log(f"machine load before: {load_before} (CPU busy {busy})")
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    clock = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args, everything, tools, Path(tmp))
        try:
            startup = bench.startup()
            rows, memory = [], []
            for replicas in (1, 3):
                more_rows, more_memory = bench.api_to_gcd(replicas)
                rows += more_rows
                memory += more_memory
            more_rows, more_memory = bench.grpc_direct()
            rows += more_rows
            memory += more_memory
            if args.tuning:
                rows += bench.tuning()
            more_rows, ceiling_memory = bench.ceiling()
            rows += more_rows
            memory.append(ceiling_memory)
            instructions = bench.instructions()
        except (StartError, subprocess.CalledProcessError, ValueError) as err:
            raise SystemExit(f"error: {err}") from err
        finally:
            bench.processes.stop_all()

    load_after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    elapsed = round(time.monotonic() - clock)
    machine = machine_rows(args, against, started, (load_before, load_after), busy, elapsed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args, everything, against, machine, rows, instructions, memory, startup))
    log(f"wrote {args.out} ({elapsed} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
