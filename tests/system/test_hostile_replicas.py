"""Broken and frozen gcd replicas, against the real release binaries run as
the manifests run them (shipped.py): their env and memory limits.

A replica the api cannot get a stream from must not make it queue calls
without end, and a replica that stops reading (a frozen Pi: here a gcd
stopped with SIGSTOP) must not make it hold what it cannot send. Each test
puts the api under load from many clients (wrk, bounded in time) against
such a replica, then asserts that:
- the api is alive;
- its peak resident memory (VmHWM) stayed under HEADROOM of its limit;
- a legitimate client is served within LEGIT_BOUND_S beside the broken
  replica where a healthy one exists, or else once it is gone.

With PI_GCD_HOSTILE_RECORD set, each test appends its figures to that
JSON-lines file, as test_hostile.py does.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
from contextlib import suppress

import pytest

import hostile as h
from conftest import http_get
from shipped import Target, start
from test_hostile import LEGIT_BOUND_S, legit_http, record  # noqa: F401 (a fixture)

# The share of its memory limit the api may reach: what the limit leaves
# beyond it is the margin.
HEADROOM = 0.75
# Clients the load keeps busy: every permit the manifest's in-flight cap
# allows.
CLIENTS = 256


# ------------------------------------------------------------------ peers


class RefusingReplica:
    """An HTTP/2 peer that advertises SETTINGS_MAX_CONCURRENT_STREAMS 0:
    it reads every frame, acknowledges SETTINGS and answers PINGs (so its
    connections look alive), and never answers a stream."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.addr = self.listener.getsockname()[:2]
        self.frames = h.H2Frames()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        # Per connection: bytes not yet parsed, and whether the client's
        # preface has been read.
        pending: dict[socket.socket, list] = {}
        while not self.stopping.is_set():
            for key, _ in selector.select(timeout=0.1):
                if key.fileobj is self.listener:
                    with suppress(BlockingIOError):
                        conn, _ = self.listener.accept()
                        conn.setblocking(False)
                        conn.send(self.frames.settings(max_concurrent_streams=0))
                        pending[conn] = [b"", False]
                        selector.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(conn)
                    conn.close()
                    del pending[conn]
                    continue
                pending[conn][0] += data
                self._answer(conn, pending[conn])
        for conn in pending:
            conn.close()
        self.listener.close()

    def _answer(self, conn: socket.socket, state: list) -> None:
        buffer, preface_read = state
        if not preface_read:
            if len(buffer) < len(h.PREFACE):
                return
            buffer = buffer[len(h.PREFACE) :]
            state[1] = True
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            kind, flags, payload = buffer[3], buffer[4], buffer[9 : 9 + length]
            buffer = buffer[9 + length :]
            with suppress(OSError):
                if kind == h.SETTINGS and not flags & 1:
                    conn.send(self.frames.settings_ack())
                elif kind == h.PING and not flags & 1:
                    conn.send(self.frames.ping_ack(payload))
        state[0] = buffer

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


# ------------------------------------------------------------------ load


def wrk(api: Target, seconds: int, clients: int = CLIENTS) -> dict[str, int]:
    """GET /gcd/12/18 from `clients` connections for `seconds`; returns
    the requests wrk completed and how many were not 200."""
    tool = shutil.which("wrk")
    if tool is None:
        pytest.fail("wrk is missing: run scripts/install-deps.sh", pytrace=False)
    h.check_loopback(api.addr)
    url = f"http://{api.addr[0]}:{api.addr[1]}/gcd/12/18"
    run = subprocess.run(
        [tool, "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "5s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    assert run.returncode == 0, run.stderr
    done = re.search(r"(\d+) requests in", run.stdout)
    not_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", run.stdout)
    assert done, run.stdout
    return {"requests": int(done.group(1)), "not_200": int(not_ok.group(1)) if not_ok else 0}


def held_up(api: Target, attack: str, record, legit, **figures) -> None:  # noqa: F811
    """The api is alive, its peak under HEADROOM of its limit, and `legit`
    was served within the bound; records the figures."""
    assert api.service.proc.poll() is None, f"the api died during {attack}:\n{api.service.log()}"
    took = legit()
    assert took <= LEGIT_BOUND_S, f"legitimate client waited {took:.2f} s after {attack}"
    peak = api.peak()
    record(
        {
            "attack": attack,
            "process": "api",
            "peak_bytes": peak,
            "limit_bytes": api.memory_limit,
            "legit_s": round(took, 4),
            **figures,
        }
    )
    assert peak < HEADROOM * api.memory_limit, (
        f"the api peaked at {peak / 2**20:.1f} MiB during {attack}, over "
        f"{HEADROOM:.0%} of its {api.memory_limit / 2**20:.0f} MiB limit"
    )


def served_within_bound(api: Target) -> float:
    """A GET, repeated while the answer is a 503 or 504 (gcd still working
    through what it missed while frozen, under a short deadline); returns
    how long until it was served."""
    started = time.monotonic()
    while True:
        left = max(0.1, LEGIT_BOUND_S - (time.monotonic() - started))
        status, body = http_get(api.addr, "/gcd/12/18", timeout=left)
        if status in (503, 504) and time.monotonic() - started < LEGIT_BOUND_S:
            continue
        assert (status, body) == (200, b'{"result":"6"}'), (status, body)
        return time.monotonic() - started


def target_of(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


def stopped(gcd: Target):
    """SIGSTOP now, SIGCONT when the returned callable is called."""
    os.kill(gcd.pid, signal.SIGSTOP)
    return lambda: os.kill(gcd.pid, signal.SIGCONT)


@pytest.fixture
def started():
    """Starts shipped binaries and kills them all at the end."""
    targets: list[Target] = []

    def starter(name: str, env: dict[str, str] | None = None) -> Target:
        target = start(name, env)
        targets.append(target)
        return target

    yield starter
    for target in targets:
        with suppress(ProcessLookupError):
            os.kill(target.pid, signal.SIGCONT)
        target.service.kill()


# ------------------------------------------------------------------ tests


def test_api_whose_only_replica_allows_no_stream(started, record):  # noqa: F811
    """The replica advertises MAX_CONCURRENT_STREAMS 0 and answers PINGs:
    calls are answered 503 at once, not queued behind streams that never
    come. (A short deadline makes the most calls.) Then a real gcd takes
    the replica's address."""
    refusing = RefusingReplica()
    try:
        api = started("api", {"GCD_ADDR": target_of(refusing.addr), "API_DEADLINE_MS": "100"})
        load = wrk(api, seconds=20)
    finally:
        refusing.stop()
    assert load["not_200"] == load["requests"], load
    started("gcd", {"GCD_LISTEN": target_of(refusing.addr)})
    held_up(
        api,
        "api: its only replica allows no stream (MAX_CONCURRENT_STREAMS 0)",
        record,
        lambda: legit_http(api),
        clients=CLIENTS,
        **load,
    )


def test_api_whose_only_replica_is_frozen(started, record):  # noqa: F811
    """gcd stopped with SIGSTOP (a frozen Pi): it reads nothing and answers
    no PING, so neither the api's calls nor their resets leave the api.
    Once it runs again, the api serves within the bound."""
    gcd = started("gcd")
    api = started("api", {"GCD_ADDR": target_of(gcd.addr), "API_DEADLINE_MS": "20"})
    served_within_bound(api)
    resume = stopped(gcd)
    load = wrk(api, seconds=35)
    resume()
    held_up(
        api, "api: its only replica frozen (SIGSTOP)", record, lambda: served_within_bound(api), clients=CLIENTS, **load
    )


def test_api_with_one_of_three_replicas_frozen(started, record):  # noqa: F811
    """One of three gcd replicas frozen: requests are served by the others
    (the frozen one is passed over, and probed by the api's own health
    checks), a legitimate client beside the load too."""
    replicas = [started("gcd") for _ in range(3)]
    api = started("api", {"GCD_ADDR": ",".join(target_of(r.addr) for r in replicas)})
    legit_http(api)
    resume = stopped(replicas[0])
    try:
        loads: list[dict[str, int]] = []
        loader = threading.Thread(target=lambda: loads.append(wrk(api, seconds=20, clients=CLIENTS // 2)))
        loader.start()
        try:
            # Beside the load: the healthy replicas serve it.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                took = legit_http(api)
                assert took <= LEGIT_BOUND_S, f"legitimate client waited {took:.2f} s"
        finally:
            loader.join()
        held_up(
            api,
            "api: one of three replicas frozen (SIGSTOP)",
            record,
            lambda: legit_http(api),
            clients=CLIENTS // 2,
            **loads[0],
        )
        assert loads[0]["not_200"] == 0, loads[0]
    finally:
        resume()
