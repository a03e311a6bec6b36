"""scripts/bench.py's arithmetic and tables, on figures given here: no
process is started. What the bench measures end to end is run by
test_bench_quick.py.
"""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

import bench  # noqa: E402
from loopback import parse_set  # noqa: E402

HZ = 100


REQUESTS = 1_000_000


def ticks(us_per_request: tuple[float, float]) -> tuple[int, int]:
    """(user, system) µs per request -> clock ticks over REQUESTS."""
    user, system = (round(us * REQUESTS * HZ / 1e6) for us in us_per_request)
    return user, system


def runs(rps, p99_us, front=None, gcd=None, bad=0):
    """Runs with one entry per run; front/gcd are (user, system) µs per
    request per run, or None for a scenario without that process."""
    r = bench.Runs(None if front is None else bench.Cpu(), None if gcd is None else bench.Cpu())
    for i, (one_rps, one_p99) in enumerate(zip(rps, p99_us)):
        figures = {"requests": REQUESTS, "rps": one_rps, "p50_us": one_p99 / 2, "p99_us": one_p99,
                   "errors": bad if i == 0 else 0, "non2xx": 0}
        r.add(figures, ticks(front[i]) if front else (0, 0), ticks(gcd[i]) if gcd else (0, 0), HZ)
    return r


def test_median_of_odd_and_even_counts():
    assert bench.median([3.0, 1.0, 2.0]) == 2.0
    assert bench.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert bench.median([7.0]) == 7.0
    with pytest.raises(ValueError):
        bench.median([])


def test_sets_take_turns_forwards_then_backwards():
    assert bench.set_order(1, 2) == [0, 1]
    assert bench.set_order(2, 2) == [1, 0]
    assert bench.set_order(3, 3) == [0, 1, 2]
    assert bench.set_order(4, 3) == [2, 1, 0]
    assert bench.set_order(1, 1) == bench.set_order(2, 1) == [0]
    # Over an even number of runs every set goes first as often as any other.
    firsts = [bench.set_order(run, 2)[0] for run in range(1, 7)]
    assert firsts.count(0) == firsts.count(1) == 3


def test_wrk_report_lines_are_parsed_whatever_comes_before():
    output = (
        "Running 3s test @ http://127.0.0.1:4000/gcd/12/18\n"
        "  2 threads and 32 connections\n"
        "  81234 requests in 3.00s, 9.1MB read\n"
        "wrk: requests=81234 seconds=3.001 rps=27069.3 p50_us=731 p90_us=1610 p99_us=3581 max_us=20411 "
        "errors=0 non2xx=2\n"
    )
    figures = bench.report_fields(output)
    assert figures["p99_us"] == 3581
    assert figures["rps"] == 27069.3
    assert figures["requests"] == 81234
    assert figures["non2xx"] == 2


def test_grpc_load_and_startup_probe_lines_are_parsed():
    assert bench.report_fields("x\ngrpc-load: requests=10 errors=1 seconds=1.000 rps=10.0 p50_us=5 p90_us=6 "
                               "p99_us=7 max_us=8\n")["errors"] == 1
    assert bench.report_fields("run 1: ...\nstartup-probe: runs=1 listening_ms=1.20 first_ok_ms=2.42\n")[
        "first_ok_ms"] == 2.42


def test_output_without_figures_is_an_error():
    with pytest.raises(ValueError, match="no figures"):
        bench.report_fields("Running 3s test\nunable to connect to 127.0.0.1:1 Connection refused\n")


def test_cpu_ticks_from_proc_stat_even_with_an_odd_command_name():
    # Fields 14 and 15 (utime, stime); the name holds a space and a ')'.
    stat = "4242 (api (x) y) S 1 4242 4242 0 -1 4194560 1085 0 0 0 1234 567 0 0 20 0 3 0 98 4096 300 0"
    assert bench.stat_ticks(stat) == (1234, 567)


def test_cpu_per_request_from_tick_deltas():
    # 250 ticks at 100 Hz = 2.5 s of CPU over 100,000 requests = 25 µs each.
    assert bench.us_per_request(250, 100_000, 100) == pytest.approx(25.0)
    assert bench.us_per_request(250, 0, 100) == 0.0
    r = runs([1000.0], [2000], front=[(10.0, 20.0)], gcd=[(4.0, 1.0)])
    assert r.front.cell() == "30.0 (10.0 + 20.0)"
    assert r.gcd.cell() == "5.0 (4.0 + 1.0)"


def test_cpu_medians_are_taken_part_by_part():
    cpu = bench.Cpu(user=[10.0, 30.0, 20.0], system=[5.0, 1.0, 3.0])
    # Totals 15, 31, 23: median 23; user median 20, system median 3.
    assert cpu.cell() == "23.0 (20.0 + 3.0)"


def test_throughput_line_keeps_the_table_format():
    row = bench.Row("api -> gcd, 1 replica(s)", "host (glibc)", "wrk",
                    runs([45217.2, 38410.4, 34214.0], [3000, 3580, 4000], front=[(9.3, 11.5)] * 3,
                         gcd=[(5.8, 2.0)] * 3, bad=2))
    assert bench.throughput_line(row) == (
        "| api -> gcd, 1 replica(s) | host (glibc) | wrk | **38410** | 1.79 | 3.58 | 20.8 (9.3 + 11.5) "
        "| 7.8 (5.8 + 2.0) | 45217 38410 34214 | 2 |"
    )
    direct = bench.Row("gRPC direct, 1 gcd", "x", "grpc-load", runs([100.0], [1000], gcd=[(1.0, 1.0)]))
    assert "| - | 2.0 (1.0 + 1.0) |" in bench.throughput_line(direct)


def test_against_table_gives_ratios_of_the_other_build():
    rows = [
        bench.Row("api -> gcd, 1 replica(s)", "ours", "wrk",
                  runs([30000.0], [1500], front=[(10.0, 10.0)], gcd=[(5.0, 3.0)])),
        bench.Row("api -> gcd, 1 replica(s)", "theirs", "wrk",
                  runs([12000.0], [6000], front=[(40.0, 40.0)], gcd=[(16.0, 16.0)])),
        bench.Row("gRPC direct, 1 gcd", "ours", "grpc-load", runs([80000.0], [1000], gcd=[(6.0, 2.0)])),
        bench.Row("gRPC direct, 1 gcd", "theirs", "grpc-load", runs([40000.0], [4000], gcd=[(16.0, 16.0)])),
        # Only ours has a ceiling: no ratio row for it.
        bench.Row("ceiling: HTTP only, no gRPC hop", "ours", "wrk", runs([60000.0], [1000], front=[(3.0, 9.0)])),
    ]
    assert bench.against_lines(rows, "theirs") == [
        "| api -> gcd, 1 replica(s) | ours | 30000 | 12000 | **2.5 x** | 1.50 | 6.00 | **25 %** | 25 % | 25 % |",
        "| gRPC direct, 1 gcd | ours | 80000 | 40000 | **2.0 x** | 1.00 | 4.00 | **25 %** | - | 25 % |",
    ]
    header = bench.against_header("theirs")
    assert header[0].count("|") == header[1].count("|") == 11
    assert "x theirs" in header[0]


def test_against_table_with_a_build_that_answered_nothing():
    rows = [
        bench.Row("s", "ours", "wrk", runs([100.0], [1000], front=[(1.0, 1.0)])),
        bench.Row("s", "theirs", "wrk", runs([0.0], [0], front=[(0.0, 0.0)])),
    ]
    assert bench.against_lines(rows, "theirs") == ["| s | ours | 100 | 0 | - | 1.00 | 0.00 | - | - | - |"]


def test_memory_and_busy_share():
    assert bench.memory_line("s", "b", "api", 1280, (2263, 2263), "≤ 3 / ≤ 8") == \
        "| s | b | api | 1.25 | 2.21 | 2.21 | ≤ 3 / ≤ 8 |"
    # user nice system idle iowait ...: 30 busy of 100.
    assert bench.busy_share([0, 0, 0, 0, 0, 0], [20, 0, 10, 60, 10, 0]) == "30%"


def test_build_sets_are_named_by_their_directory_unless_named():
    assert parse_set("dist/x86_64-unknown-linux-musl:musl")[1] == "musl"
    assert parse_set("/tmp/before")[1] == "before"
    assert str(parse_set("/tmp/before:old build")[0]) == "/tmp/before"


def test_bad_options_are_refused(capsys):
    for argv, said in ((["--runs", "0"], "--runs"), (["--duration", "-1"], "--duration"),
                       (["--worker-threads", "x"], "--worker-threads"), (["--nonsense"], "--nonsense")):
        with pytest.raises(SystemExit) as exit_:
            bench.parse_args(argv)
        assert exit_.value.code == 2
        assert said in capsys.readouterr().err
    quick = bench.parse_args(["--quick", "--runs", "5"])
    assert (quick.runs, quick.duration, quick.warmup) == (1, 3, 1)
