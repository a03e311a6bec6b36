"""Hostile clients against the real release binaries, run as the manifests
run them: their env, and the memory limit of their container (given with
--memory-limit, as the cgroup would give it; test_hostile_containers.py
runs a subset in real containers with the cgroup limit).

Every test attacks one port of a fresh process, then asserts that:
- the process is alive;
- its peak resident memory (VmHWM) stayed below the manifest's limit;
- a legitimate client was answered within LEGIT_BOUND_S while the attack
  held (the documented bound: docs/memory-budget.md);
and where the attack holds resources, that the server let go of them.

The binaries are the shipped static x86_64 ones (shipped.py). With PI_GCD_HOSTILE_RECORD set,
each test appends its figures to that JSON-lines file
(scripts/hostile-report.py turns them into results/hostile.md).
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

import hostile as h
from conftest import http_get
from shipped import Target, start

# The documented bound: a legitimate client is answered within this while
# any of these attacks holds (measured figures are far below it).
LEGIT_BOUND_S = 5.0
# Attacks need many sockets at once.
OPEN_FILES = h.raise_open_files(16384)


@pytest.fixture
def gcd():
    target = start("gcd")
    yield target
    target.service.kill()


@pytest.fixture
def echo_gcd():
    """gcd with pb.Echo/Say registered (examples/echo), run as the gcd
    Deployment runs gcd: the attacks on gRPC messages, half-sent calls and
    streams hold for a method added without stating any bound."""
    target = start("gcd", binary_name="echo-gcd")
    yield target
    target.service.kill()


@pytest.fixture
def api(gcd):
    target = start("api", {"GCD_ADDR": f"{gcd.addr[0]}:{gcd.addr[1]}"})
    yield target
    target.service.kill()


@pytest.fixture(scope="module")
def record():
    """Figures of each attack, for results/hostile.md."""
    path = os.environ.get("PI_GCD_HOSTILE_RECORD")
    lines: list[dict] = []
    yield lines.append
    if path:
        with open(path, "a") as out:
            for line in lines:
                out.write(json.dumps(line) + "\n")


# ------------------------------------------------------------------ legitimate clients


def legit_http(target: Target, admin: bool = False) -> float:
    """A curl-like GET, retried while the answer is the immediate 503 that
    sheds load (a flood of requests beyond the in-flight cap); returns how
    long until it was served."""
    started = time.monotonic()
    while True:
        left = max(0.1, LEGIT_BOUND_S - (time.monotonic() - started))
        if admin:
            status, body = http_get(target.admin, "/readyz", timeout=left)
            assert status == 200, (status, body)
            break
        status, body = http_get(target.addr, "/gcd/12/18", timeout=left)
        if status == 503 and time.monotonic() - started < LEGIT_BOUND_S:
            continue
        assert (status, json.loads(body)) == (200, {"result": "6"}), (status, body)
        break
    return time.monotonic() - started


def legit_grpc(target: Target) -> float:
    """A Compute call, retried while the answer is RESOURCE_EXHAUSTED;
    returns how long until it was served."""
    started = time.monotonic()
    while True:
        left = max(0.1, LEGIT_BOUND_S - (time.monotonic() - started))
        status, payload = h.grpc_call(target.addr, timeout=left)
        if status == 8 and time.monotonic() - started < LEGIT_BOUND_S:
            continue
        assert (status, payload) == (0, b"\x08\x06"), (status, payload)
        return time.monotonic() - started


def survived(target: Target, attack: str, record, legit, **figures) -> None:
    """The process is alive, under its memory limit, and served `legit`
    within the bound; records the figures."""
    assert target.service.proc.poll() is None, f"{target.name} died during {attack}:\n{target.service.log()}"
    took = legit()
    assert took <= LEGIT_BOUND_S, f"legitimate client waited {took:.2f} s during {attack}"
    peak = target.peak()
    record(
        {
            "attack": attack,
            "process": target.name,
            "peak_bytes": peak,
            "limit_bytes": target.memory_limit,
            "legit_s": round(took, 4),
            **figures,
        }
    )
    assert peak < target.memory_limit, (
        f"{target.name} peaked at {peak / 2**20:.1f} MiB during {attack}, over its "
        f"{target.memory_limit / 2**20:.0f} MiB limit"
    )


def eventually(what: str, check, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)  # polling interval, not a readiness guess
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ms(target: Target, key: str) -> float:
    return int(target.env.get(key) or DEFAULTS[key]) / 1000


# The binaries' defaults for what the manifests leave unset.
DEFAULTS = {
    "API_HEADER_READ_TIMEOUT_MS": "5000",
    "API_WRITE_TIMEOUT_MS": "5000",
    "GCD_HANDSHAKE_TIMEOUT_MS": "5000",
    "GCD_IDLE_TIMEOUT_MS": "10000",
    "GCD_CALL_TIMEOUT_MS": "5000",
    "GCD_WRITE_TIMEOUT_MS": "5000",
}


# ------------------------------------------------------------------ api: HTTP/1


def test_api_pipelined_flood_that_never_reads(api, record):
    """Clients pipeline requests and never read: each holds a slot only
    until its stalled response hits the write timeout. (The requests are
    404s: a flood of real requests is load, which the in-flight cap sheds.)"""
    cap = api.log_value("max_connections")
    clients = cap + cap // 4
    request = h.http1_request("/nowhere")
    with h.Fleet() as fleet:
        socks = fleet.open(api.addr, clients, receive_buffer=4096)
        fleet.send_all(socks, request * 400, deadline_s=10)
        survived(api, "api: pipelined requests, never read", record, lambda: legit_http(api), connections=clients)
        bound = ms(api, "API_WRITE_TIMEOUT_MS") + int(api.env["API_DEADLINE_MS"]) / 1000 + 5
        eventually(
            "the api to drop every client that does not read",
            lambda: fleet.closed_by_server(socks) >= len(socks) - 1,
            bound,
        )


def test_api_slowloris(api, record):
    """Headers a byte at a time: each connection is dropped at the header
    read timeout, and new clients take the slots of the oldest meanwhile."""
    cap = api.log_value("max_connections")
    clients = 2 * cap
    with h.Fleet() as fleet:
        socks = fleet.open(api.addr, clients)
        fleet.send_all(socks, b"GET /gcd/12/18 HTTP/1.1\r\n", deadline_s=10)
        end = time.monotonic() + ms(api, "API_HEADER_READ_TIMEOUT_MS") + 1
        while time.monotonic() < end:
            fleet.send(socks, b"X")
            time.sleep(0.5)  # the attack's pace
        survived(api, "api: slowloris", record, lambda: legit_http(api), connections=clients)
        eventually(
            "the api to drop every slow client",
            lambda: fleet.closed_by_server(socks) >= len(socks) - 1,
            3,
        )


@pytest.mark.parametrize("port", ["public", "admin"])
def test_api_unfinished_16k_heads(api, record, port):
    """Request heads of 16 KiB that never end, far more than every slot:
    the memory of each slot is bounded, and so is the number of slots."""
    addr = api.addr if port == "public" else api.admin
    clients = 3000
    head = b"GET /gcd/12/18 HTTP/1.1\r\nHost: pi\r\nX-Pad: " + b"a" * (16 * 1024 - 50)
    with h.Fleet() as fleet:
        socks = fleet.open(addr, clients)
        fleet.send_all(socks, head, deadline_s=15)
        survived(
            api,
            f"api: unfinished 16 KiB heads on the {port} port",
            record,
            lambda: legit_http(api, admin=port == "admin"),
            connections=clients,
        )


def test_api_unfinished_heads_on_both_ports_at_once(api, gcd, record):
    """The issue's worst case: 1100 on the public port, 3000 on the admin
    port, and the same on gcd's admin port."""
    head = b"GET /x HTTP/1.1\r\nHost: pi\r\nX-Pad: " + b"a" * (16 * 1024 - 50)
    with h.Fleet() as fleet:
        socks = fleet.open(api.addr, 1100) + fleet.open(api.admin, 3000) + fleet.open(gcd.admin, 3000)
        fleet.send_all(socks, head, deadline_s=20)
        survived(api, "api: 16 KiB heads, public and admin ports", record, lambda: legit_http(api), connections=4100)
        survived(gcd, "gcd: 16 KiB heads on the admin port", record, lambda: legit_http(gcd, admin=True), connections=3000)


def test_api_answers_requests_followed_by_a_half_close(api):
    for path, status in [("/gcd/12/18", 200), ("/gcd/a/b", 400), ("/nowhere", 404)] * 7:
        raw = h.raw_http1(api.addr, h.http1_request(path), half_close=True)
        assert raw, f"no answer to {path} after SHUT_WR"
        answer = h.parse_response(raw)
        assert answer.status == status, raw


REJECTIONS = [
    ("a 20 KiB header", h.http1_request(extra="X-Big: " + "a" * 20_000 + "\r\n"), 431, "Request header fields too large"),
    (
        "more than 100 headers in a small head",
        h.http1_request(extra="".join(f"X-{i}: a\r\n" for i in range(120))),
        431,
        "Request header fields too large",
    ),
    ("a 20 KiB URI", h.http1_request("/gcd/" + "1" * 20_000 + "/2"), 414, "URI too long"),
    ("a 2 KiB URI", h.http1_request("/gcd/" + "1" * 2_000 + "/2"), 414, "URI too long"),
    ("an absolute URI with a 10 KB authority", h.http1_request("http://" + "a" * 10_000 + ".pi/gcd/12/18"), 414, "URI too long"),
    ("no Host", b"GET /gcd/12/18 HTTP/1.1\r\n\r\n", 400, None),
    ("two Host headers", b"GET /gcd/12/18 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, None),
    ("a malformed request line", b"GET /gcd/12/18 HTTP/1.1 extra\r\nHost: a\r\n\r\n", 400, "Bad request"),
    ("a header without a colon", b"GET /gcd/12/18 HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400, "Bad request"),
    ("a wrong method", b"DELETE /gcd/12/18 HTTP/1.1\r\nHost: a\r\n\r\n", 405, "Method not allowed"),
]


@pytest.mark.parametrize("what,request_bytes,status,message", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_api_rejections_are_our_json(api, what, request_bytes, status, message):
    answer = h.parse_response(h.raw_http1(api.addr, request_bytes))
    assert answer.status == status, answer
    assert answer.headers.get("content-type") == "application/json", answer
    error = json.loads(answer.body)["error"]
    if message:
        assert error == message, answer


def test_api_tells_an_http2_client_to_use_http_1_1(api):
    """A client that opens with HTTP/2 (prior knowledge) reads only frames:
    it gets HTTP/2's refusal with the reason, not a bare close."""
    with socket.create_connection(api.addr, timeout=10) as sock:
        sock.sendall(h.H2Frames().preface())
        frames = list(h.read_frames(sock))
    assert [f.type for f in frames] == [h.SETTINGS, h.GOAWAY], frames
    goaway = frames[1]
    assert goaway.error_code == 0xD, goaway  # HTTP_1_1_REQUIRED
    assert goaway.additional_data == b"HTTP/2 is not served on this port: use HTTP/1.1"


def test_api_endless_chunked_body(api, record):
    """A request body that never ends is not read: the answer comes, the
    connection closes, memory stays flat."""
    with socket.create_connection(api.addr, timeout=10) as sock:
        sock.sendall(b"POST /gcd/12/18 HTTP/1.1\r\nHost: pi\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"4000\r\n" + b"a" * 0x4000 + b"\r\n"
        sent = 0
        answer = b""
        sock.settimeout(0.2)
        end = time.monotonic() + 10
        while time.monotonic() < end and sent < 64 * 2**20:
            try:
                sent += sock.send(chunk)
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                break
            try:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                break
    assert h.parse_response(answer).status == 405, answer[:200]
    survived(api, "api: endless chunked body", record, lambda: legit_http(api), sent_bytes=sent)


def test_api_closes_idle_keep_alive_connections(api):
    idle_bound = ms(api, "API_HEADER_READ_TIMEOUT_MS")
    with socket.create_connection(api.addr, timeout=idle_bound + 5) as sock:
        sock.sendall(h.http1_request())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        started = time.monotonic()
        assert sock.recv(65536) == b"", "the idle connection was not closed"
        assert time.monotonic() - started <= idle_bound + 2


# ------------------------------------------------------------------ gcd: gRPC over HTTP/2


@pytest.mark.parametrize("method", h.GRPC_METHODS)
def test_gcd_half_sent_4mib_messages(gcd, record, method):
    """Every method: messages announced as 4 MiB, half sent, on many
    streams of many connections."""
    half_sent_4mib_messages(gcd, record, method, "gcd")


def test_echo_gcd_half_sent_4mib_messages_to_say(echo_gcd, record):
    half_sent_4mib_messages(echo_gcd, record, h.SAY, "echo-gcd")


def half_sent_4mib_messages(gcd: Target, record, method: str, process: str) -> None:
    frames = h.H2Frames()
    message = h.grpc_message(b"\x0a" + b"a" * 2000, declared=4 * 2**20)
    conns, streams = 100, 100
    with h.Fleet() as fleet:
        socks = fleet.open(gcd.addr, conns)
        data = frames.preface() + b"".join(
            frames.headers(2 * i + 1, frames.grpc_header_block(method)) + frames.data(2 * i + 1, message)
            for i in range(streams)
        )
        fleet.send_all(socks, data, deadline_s=15)
        survived(gcd, f"{process}: 4 MiB messages half-sent to {method}", record, lambda: legit_grpc(gcd), calls=conns * streams)


def test_gcd_thousands_of_silent_connections(gcd, record):
    with h.Fleet() as fleet:
        socks = fleet.open(gcd.addr, 5000)
        survived(gcd, "gcd: 5000 silent TCP connections", record, lambda: legit_grpc(gcd), connections=5000)
        # Those that got a slot lose it at the handshake timeout.
        bound = ms(gcd, "GCD_HANDSHAKE_TIMEOUT_MS") + 3
        eventually("silent connections to be dropped", lambda: fleet.closed_by_server(socks) > 0, bound)


def test_gcd_connections_full_of_header_only_streams(gcd, record):
    """100 connections x 256 streams that send headers (as large as allowed)
    and never a body."""
    header_only_streams(gcd, record, h.COMPUTE, "gcd: 100 connections x 256 header-only streams")


def test_echo_gcd_connections_full_of_header_only_streams_to_say(echo_gcd, record):
    header_only_streams(echo_gcd, record, h.SAY, f"echo-gcd: 100 connections x 256 header-only streams to {h.SAY}")


def header_only_streams(gcd: Target, record, method: str, attack: str) -> None:
    frames = h.H2Frames()
    pad = [("x-pad", "a" * 3000), ("x-pad2", "b" * 3000)]
    conns, streams = 100, 256
    with h.Fleet() as fleet:
        socks = fleet.open(gcd.addr, conns)
        data = frames.preface() + b"".join(
            frames.headers(2 * i + 1, frames.grpc_header_block(method, pad)) for i in range(streams)
        )
        fleet.send_all(socks, data, deadline_s=15)
        survived(gcd, attack, record, lambda: legit_grpc(gcd), calls=conns * streams)
        # Stalled calls end at the call timeout, and their connections with them.
        bound = ms(gcd, "GCD_CALL_TIMEOUT_MS") + ms(gcd, "GCD_WRITE_TIMEOUT_MS") + 5
        eventually("stalling connections to be closed", lambda: fleet.closed_by_server(socks) >= len(socks) - 1, bound)


def test_gcd_rapid_reset(gcd, record):
    frames = h.H2Frames()
    with h.Fleet() as fleet:
        socks = fleet.open(gcd.addr, 10)
        block = frames.grpc_header_block(h.COMPUTE)
        data = frames.preface() + b"".join(
            frames.headers(2 * i + 1, block) + frames.rst(2 * i + 1) for i in range(20_000)
        )
        fleet.send_all(socks, data, deadline_s=20)
        survived(gcd, "gcd: rapid reset (20000 streams opened and reset)", record, lambda: legit_grpc(gcd), streams=200_000)


def test_gcd_continuation_flood(gcd, record):
    frames = h.H2Frames()
    with h.Fleet() as fleet:
        socks = fleet.open(gcd.addr, 50)
        block = frames.grpc_header_block(h.COMPUTE)
        filler = frames.encoder.encode([("x-flood", "c" * 16000)])
        data = frames.preface() + frames.headers(1, block, end_headers=False)
        data += b"".join(frames.continuation(1, filler) for _ in range(200))
        fleet.send_all(socks, data, deadline_s=20)
        survived(gcd, "gcd: CONTINUATION flood", record, lambda: legit_grpc(gcd), frames=50 * 200)


@pytest.mark.parametrize("flood", ["PING", "SETTINGS"])
def test_gcd_control_frame_floods(gcd, record, flood):
    """Control frames the server must answer, from clients that never read
    the answers."""
    frames = h.H2Frames()
    frame = frames.ping() if flood == "PING" else frames.settings(initial_window_size=65535)
    with h.Fleet() as fleet:
        socks = fleet.open(gcd.addr, 20, receive_buffer=4096)
        fleet.send_all(socks, frames.preface() + frames.settings_ack(), deadline_s=5)
        sent = 0
        end = time.monotonic() + 5
        burst = frame * 1000
        while time.monotonic() < end:
            sent += fleet.send(socks, burst) * 1000
        survived(gcd, f"gcd: {flood} flood", record, lambda: legit_grpc(gcd), frames=sent)


def test_gcd_client_that_never_reads(gcd, record):
    """Calls sent in full, answers never read: the connection is dropped
    at the write timeout, and its calls' memory with it."""
    never_reads(gcd, record, h.COMPUTE, h.COMPUTE_12_18, "gcd: calls whose answers are never read")


def test_echo_gcd_client_that_never_reads_say(echo_gcd, record):
    never_reads(echo_gcd, record, h.SAY, h.SAY_HELLO, f"echo-gcd: calls to {h.SAY} whose answers are never read")


def never_reads(gcd: Target, record, method: str, message: bytes, attack: str) -> None:
    frames = h.H2Frames()
    with h.Fleet() as fleet:
        socks = fleet.open(gcd.addr, 20, receive_buffer=4096)
        fleet.send_all(socks, frames.preface(initial_window_size=2**31 - 1), deadline_s=5)
        end = time.monotonic() + 3
        stream = 1
        while time.monotonic() < end and stream < 2**20:
            block = frames.grpc_header_block(method)
            batch = b"".join(
                frames.headers(stream + 2 * i, block) + frames.data(stream + 2 * i, h.grpc_message(message), end_stream=True)
                for i in range(100)
            )
            fleet.send(socks, batch)
            stream += 200
        survived(gcd, attack, record, lambda: legit_grpc(gcd))
        bound = ms(gcd, "GCD_WRITE_TIMEOUT_MS") + ms(gcd, "GCD_CALL_TIMEOUT_MS") + 5
        eventually("non-reading clients to be dropped", lambda: fleet.closed_by_server(socks) >= len(socks) - 1, bound)


def test_gcd_closes_idle_connections_that_answer_pings(gcd):
    """A client that made one call and then only answers PINGs (as every
    HTTP/2 client does) is sent GOAWAY and closed after the idle timeout."""
    idle = ms(gcd, "GCD_IDLE_TIMEOUT_MS")
    frames = h.H2Frames()
    with socket.create_connection(gcd.addr, timeout=idle + 10) as sock:
        sock.sendall(
            frames.preface()
            + frames.headers(1, frames.grpc_header_block(h.COMPUTE))
            + frames.data(1, h.grpc_message(h.COMPUTE_12_18), end_stream=True)
        )
        started = time.monotonic()
        goaway = None
        for frame in h.read_frames(sock):
            if frame.type == h.PING and "ACK" not in frame.flags:
                sock.sendall(frames.ping_ack(frame.opaque_data))
            elif frame.type == h.SETTINGS and "ACK" not in frame.flags:
                sock.sendall(frames.settings_ack())
            elif frame.type == h.GOAWAY and goaway is None:
                goaway = time.monotonic() - started
        closed = time.monotonic() - started
    assert goaway is not None, "no GOAWAY before the connection closed"
    assert idle - 1 <= goaway <= idle + 3, f"GOAWAY after {goaway:.1f} s, idle timeout {idle} s"
    assert closed <= goaway + 3, f"closed {closed - goaway:.1f} s after GOAWAY"


def test_gcd_drops_connections_that_never_call(gcd):
    """Preface and SETTINGS, then nothing: dropped at the handshake timeout."""
    bound = ms(gcd, "GCD_HANDSHAKE_TIMEOUT_MS")
    with socket.create_connection(gcd.addr, timeout=bound + 10) as sock:
        sock.sendall(h.H2Frames().preface())
        started = time.monotonic()
        while sock.recv(65536):
            pass
        assert time.monotonic() - started <= bound + 2


def test_gcd_refuses_http1(gcd):
    answer = h.raw_http1(gcd.addr, h.http1_request(), timeout=5)
    assert not answer.startswith(b"HTTP/1.1 200"), answer
