"""gcd and api with the implementations users run next to them, and the
HTTP contract checked by a tool we did not write:

- grpc-go (Debian's Go 1.19 and grpc-go 1.33, GOPATH mode, no module
  downloads): a client calling gcd as grpc-go services and the kubelet's
  `grpc:` probe do, and a gcd replica written with grpc-go, as the
  original's was, that our api balances over next to ours. Both are tiny
  test peers in tests/system/interop/, built here.
- grpcio (Python): Compute, health and reflection, both versions.
- schemathesis: api/openapi.yaml against the real api, positive and
  negative cases, with gcd answering, down, and failing.

The binaries are the shipped static x86_64 ones (shipped.py). All traffic
stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import hostile as h
from conftest import CACHE, REPO, http_get, require_tool
from shipped import start

U64_MAX = 2**64 - 1
# (a, b, gcd) at the edges of u64
BOUNDARIES = [
    (0, 0, 0),
    (0, U64_MAX, U64_MAX),
    (U64_MAX, U64_MAX, U64_MAX),
    (U64_MAX, U64_MAX - 1, 1),
    (2**63, 2**40, 2**40),
    (18446744073709551557, 3, 1),  # the largest u64 prime
    (12, 18, 6),
]
SERVICES = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "pb.GCDService",
]


@pytest.fixture
def gcd():
    target = start("gcd")
    yield target
    target.service.kill()


def target_of(addr: tuple[str, int]) -> str:
    return f"{addr[0]}:{addr[1]}"


# ------------------------------------------------------------------ grpcio


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def gcd_request(a: int, b: int) -> bytes:
    """pb.GCDRequest, written out: the peers use no generated code."""
    return (b"\x08" + varint(a) if a else b"") + (b"\x10" + varint(b) if b else b"")


def gcd_result(message: bytes) -> int:
    """pb.GCDResponse's field 1 (absent when 0)."""
    if not message:
        return 0
    assert message[0] == 0x08, message
    value, shift = 0, 0
    for byte in message[1:]:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value
    raise AssertionError(f"truncated varint in {message!r}")


def compute(channel: grpc.Channel, request: bytes, timeout: float = 5.0) -> bytes:
    call = channel.unary_unary("/pb.GCDService/Compute", request_serializer=None, response_deserializer=None)
    return call(request, timeout=timeout)


def test_grpcio_computes_at_the_u64_boundaries(gcd):
    with grpc.insecure_channel(target_of(gcd.addr)) as channel:
        for a, b, expected in BOUNDARIES:
            assert gcd_result(compute(channel, gcd_request(a, b))) == expected, (a, b)


def test_grpcio_health_as_the_kubelet_probes_and_reflection_in_both_versions(gcd):
    options = [("grpc.primary_user_agent", "kube-probe/1.27")]
    with grpc.insecure_channel(target_of(gcd.addr), options=options) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reply = health.Check(health_pb2.HealthCheckRequest(service="pb.GCDService"), timeout=1)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # v1alpha, as grpcio's reflection client speaks it.
        database = ProtoReflectionDescriptorDatabase(channel)
        assert sorted(database.get_services()) == SERVICES
        assert "Compute" in [m.name for m in database.FindFileContainingSymbol("pb.GCDService").service[0].method]

        # v1: the same messages under the newer name.
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        replies = info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = sorted(s.name for s in next(replies).list_services_response.service)
        assert names == SERVICES


def test_grpcio_sees_the_error_statuses(gcd):
    with grpc.insecure_channel(target_of(gcd.addr)) as channel:
        oversize = gcd_request(12, 18) + b"\x1a\x80\x10" + bytes(2048)  # field 3: 2 KiB
        with pytest.raises(grpc.RpcError) as error:
            compute(channel, oversize)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value

        unknown = channel.unary_unary("/pb.GCDService/Nope", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as error:
            unknown(gcd_request(1, 2), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, error.value

        # A deadline already past (a microsecond can still be met on loopback).
        with pytest.raises(grpc.RpcError) as error:
            compute(channel, gcd_request(1, 2), timeout=-1)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.value

        # The connection still serves.
        assert gcd_result(compute(channel, gcd_request(12, 18))) == 6


def test_other_content_types_are_answered_415(gcd):
    """What the gRPC over HTTP/2 spec says, so that a plain HTTP/2 client
    does not take a gRPC error (HTTP 200) for a success."""
    import h2.config
    import h2.connection
    import h2.events
    import socket

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    with socket.create_connection(gcd.addr, timeout=10) as sock:
        conn.initiate_connection()
        headers = [(k, "text/plain" if k == "content-type" else v) for k, v in h.grpc_request_headers(h.COMPUTE)]
        conn.send_headers(1, headers)
        conn.send_data(1, h.grpc_message(h.COMPUTE_12_18), end_stream=True)
        sock.sendall(conn.data_to_send())
        status = None
        while status is None:
            data = sock.recv(65536)
            assert data, "connection closed before an answer"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = dict(event.headers)[":status"]
            sock.sendall(conn.data_to_send())
    assert status == "415"


# ------------------------------------------------------------------ grpc-go


@pytest.fixture(scope="session")
def go_peers(tmp_path_factory) -> dict[str, str]:
    """The Go test peers, built in GOPATH mode from Debian's packages."""
    go = require_tool("go")
    gopath = tmp_path_factory.mktemp("gopath")
    (gopath / "src" / "pigcd").mkdir(parents=True)
    (gopath / "src" / "pigcd" / "interop").symlink_to(REPO / "tests" / "system" / "interop")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(gopath),
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}:/usr/share/gocode",
        "GOCACHE": str(CACHE / "go-build"),
    }
    peers = {}
    for name in ("gcdclient", "gcdserver"):
        out = gopath / "bin" / name
        built = subprocess.run(
            [go, "build", "-o", str(out), f"pigcd/interop/{name}"],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert built.returncode == 0, (
            f"go build {name} failed (scripts/install-deps.sh installs golang-go and "
            f"golang-google-grpc-dev):\n{built.stderr}"
        )
        peers[name] = str(out)
    return peers


def go_call(go_peers, addr: tuple[str, int], call: str, *args: str) -> dict:
    done = subprocess.run(
        [go_peers["gcdclient"], "-addr", target_of(addr), "-call", call, *args],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_grpc_go_client(gcd, go_peers):
    for a, b, expected in BOUNDARIES:
        assert go_call(go_peers, gcd.addr, "compute", "-a", str(a), "-b", str(b)) == {
            "code": "OK", "result": str(expected)
        }, (a, b)
    # The kubelet's probe: service "", a kube-probe user agent, 1 s.
    assert go_call(go_peers, gcd.addr, "health") == {"code": "OK", "result": "SERVING"}
    # grpc-go 1.33 speaks reflection v1alpha only.
    assert go_call(go_peers, gcd.addr, "list") == {"code": "OK", "result": ",".join(SERVICES)}
    assert go_call(go_peers, gcd.addr, "oversize")["code"] == "ResourceExhausted"
    assert go_call(go_peers, gcd.addr, "unknown")["code"] == "Unimplemented"
    assert go_call(go_peers, gcd.addr, "deadline")["code"] == "DeadlineExceeded"


class GoReplica:
    """The grpc-go gcd replica, on a given or a free port."""

    def __init__(self, go_peers, listen: str = "127.0.0.1:0", *flags: str):
        args = [go_peers["gcdserver"], "-listen", listen, "-admin", "127.0.0.1:0", *flags]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        assert "addr" in fields, f"gcdserver did not start: {line}{self.proc.stdout.read()}"
        host, port = fields["addr"].rsplit(":", 1)
        self.addr = (host, int(port))
        admin_host, admin_port = fields["admin_addr"].rsplit(":", 1)
        self.admin = (admin_host, int(admin_port))

    def served(self) -> int:
        return int(http_get(self.admin, "/count")[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def eventually(what: str, check, timeout: float = 10):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)  # polling interval, not a readiness guess
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_api_through_a_grpc_go_replica(go_peers):
    """The api in front of a grpc-go gcd alone: the same answers at the u64
    boundaries, and its errors and slowness mapped to 502 and 504."""
    replica = GoReplica(go_peers)
    api = start("api", {"GCD_ADDR": target_of(replica.addr)})
    try:
        for a, b, expected in BOUNDARIES:
            status, body = http_get(api.addr, f"/gcd/{a}/{b}")
            assert (status, json.loads(body)) == (200, {"result": str(expected)}), (a, b, body)
        assert replica.served() == len(BOUNDARIES)
    finally:
        api.service.kill()
        replica.kill()
    for flags, status in ((["-fail"], 502), (["-delay", "3s"], 504)):
        replica = GoReplica(go_peers, "127.0.0.1:0", *flags)
        api = start("api", {"GCD_ADDR": target_of(replica.addr)})
        try:
            answer, body = http_get(api.addr, "/gcd/12/18")
            assert answer == status, (flags, answer, body)
            assert "error" in json.loads(body)
        finally:
            api.service.kill()
            replica.kill()


def test_api_balances_over_a_grpc_go_replica_that_joins_and_leaves(gcd, go_peers):
    """Our gcd and a grpc-go one behind the api: the Go replica gets its
    share from when it starts listening, and its loss loses no request."""
    probe = GoReplica(go_peers)  # learn a free port, then give it back
    go_addr = probe.addr
    probe.kill()
    api = start("api", {"GCD_ADDR": f"{target_of(gcd.addr)},{target_of(go_addr)}", "API_RESOLVE_INTERVAL_MS": "100"})
    failures: list[str] = []
    stop = threading.Event()
    sent = [0]

    def load():
        while not stop.is_set():
            try:
                status, body = http_get(api.addr, "/gcd/12/18", timeout=5)
                if (status, json.loads(body)) != (200, {"result": "6"}):
                    failures.append(f"{status} {body!r}")
            except OSError as err:
                failures.append(repr(err))
            sent[0] += 1

    thread = threading.Thread(target=load, daemon=True)
    try:
        thread.start()
        eventually("traffic", lambda: sent[0] >= 50)
        replica = GoReplica(go_peers, listen=target_of(go_addr))  # joins
        eventually("the grpc-go replica to get traffic", lambda: replica.served() >= 20)
        before = sent[0]
        replica.kill()  # leaves without a goodbye, as a lost node does
        eventually("traffic after it left", lambda: sent[0] >= before + 200)
    finally:
        stop.set()
        thread.join(timeout=30)
        api.service.kill()
    assert not failures, f"{len(failures)} of {sent[0]} requests failed: {failures[:5]}"


# ------------------------------------------------------------------ schemathesis


def schemathesis(api_addr: tuple[str, int], *args: str, seconds: int) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
        "run", str(REPO / "api" / "openapi.yaml"),
        "--url", f"http://{target_of(api_addr)}", "--max-time", str(seconds), "--workers", "2", *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, cwd=REPO)
    assert done.returncode == 0, f"schemathesis found problems:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"


def test_the_api_conforms_to_its_openapi_document(gcd):
    """Every check, positive and negative cases: statuses, content types
    and bodies as documented, invalid input rejected, valid input served,
    undocumented methods 405, and no server error."""
    api = start("api", {"GCD_ADDR": target_of(gcd.addr)})
    try:
        schemathesis(api.addr, "--checks", "all", seconds=30)
    finally:
        api.service.kill()


def closed_port() -> tuple[str, int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()


# How gcd is made to fail, and what the api answers a valid request then.
GCD_FAILURES = {"down": (None, 503), "failing": (["-fail"], 502), "slow": (["-delay", "3s"], 504)}


@pytest.mark.parametrize("gcd_state", list(GCD_FAILURES))
def test_the_only_server_errors_are_the_documented_ones(go_peers, gcd_state):
    """With gcd unreachable (503), answering errors (502) or too slow (504),
    every response still conforms to the document: no other 5xx."""
    flags, expected = GCD_FAILURES[gcd_state]
    replica = GoReplica(go_peers, "127.0.0.1:0", *flags) if flags else None
    upstream = replica.addr if replica else closed_port()
    api = start("api", {"GCD_ADDR": target_of(upstream)})
    try:
        schemathesis(
            api.addr, "--checks", "all", "--exclude-checks", "not_a_server_error,positive_data_acceptance",
            seconds=15,
        )
        status, _ = http_get(api.addr, "/gcd/12/18")
        assert status == expected
    finally:
        api.service.kill()
        if replica:
            replica.kill()
