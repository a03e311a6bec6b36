"""Hostile clients: the bytes an attacker sends, raw, over HTTP/1 and HTTP/2,
and the one legitimate client whose service they must not stop.

Everything here talks only to loopback addresses of processes or containers
the tests started. Every loop is bounded by a count or a deadline, and every
socket is closed when its `Fleet` is.
"""

from __future__ import annotations

import resource
import socket
import struct
import time
from contextlib import suppress
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Linux TCP states (include/net/tcp_states.h): anything else is closing.
TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# The gRPC methods gcd serves, and a small valid request for each.
COMPUTE = "/pb.GCDService/Compute"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
REFLECTION_V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
GRPC_METHODS = (COMPUTE, HEALTH_CHECK, HEALTH_WATCH, REFLECTION, REFLECTION_V1ALPHA)
COMPUTE_12_18 = b"\x08\x0c\x10\x12"  # GCDRequest{a: 12, b: 18}
# The method examples/echo adds (echo-gcd), and a request to it.
SAY = "/pb.Echo/Say"
SAY_HELLO = b"\x0a\x05hello"  # SayRequest{text: "hello"}


def check_loopback(addr: tuple[str, int]) -> None:
    assert addr[0] in LOOPBACK, f"refusing to send traffic to {addr[0]}"


def raise_open_files(wanted: int) -> int:
    """Raises this process's soft open-file limit towards `wanted` (never
    past the hard limit); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def vm_hwm(pid: int) -> int:
    """Peak resident memory of a process (VmHWM), in bytes."""
    return memory_status(pid, "VmHWM")


def memory_status(pid: int, field: str) -> int:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM, ...), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


# ------------------------------------------------------------------ sockets


class Fleet:
    """Many client sockets, opened without waiting for the server to accept
    them (connections beyond its cap wait in its listen queue, or beyond
    that for the kernel to take their SYN), closed together."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def open(self, addr: tuple[str, int], count: int, receive_buffer: int | None = None) -> list[socket.socket]:
        check_loopback(addr)
        opened = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if receive_buffer is not None:
                # A client that reads nothing: keep what it could buffer small.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            sock.connect_ex(addr)
            self.sockets.append(sock)
            opened.append(sock)
        return opened

    def send(self, sockets: list[socket.socket], data: bytes) -> int:
        """Sends what each socket takes without blocking; returns how many
        took something."""
        took = 0
        for sock in sockets:
            with suppress(OSError):
                if sock.send(data) > 0:
                    took += 1
        return took

    def send_all(self, sockets: list[socket.socket], data: bytes, deadline_s: float) -> int:
        """Sends all of `data` on each socket, waiting (up to the deadline)
        for sockets still in the listen queue; returns how many sent it all."""
        pending = {sock: memoryview(data) for sock in sockets}
        end = time.monotonic() + deadline_s
        done = 0
        while pending and time.monotonic() < end:
            progressed = False
            for sock, rest in list(pending.items()):
                try:
                    sent = sock.send(rest)
                except BlockingIOError:
                    continue
                except OSError:
                    del pending[sock]
                    continue
                progressed = True
                if sent == len(rest):
                    del pending[sock]
                    done += 1
                else:
                    pending[sock] = rest[sent:]
            if not progressed:
                time.sleep(0.02)  # waiting for the server, not for readiness
        return done

    def closed_by_server(self, sockets: list[socket.socket]) -> int:
        """How many of `sockets` the server has closed (sent FIN or reset),
        whatever they still hold unread: the kernel's TCP state says."""
        closed = 0
        for sock in sockets:
            try:
                state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            except OSError:
                closed += 1
                continue
            if state not in (TCP_ESTABLISHED, TCP_SYN_SENT):
                closed += 1
        return closed

    def close(self) -> None:
        for sock in self.sockets:
            with suppress(OSError):
                sock.close()
        self.sockets.clear()

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------ HTTP/1


def http1_request(path: str = "/gcd/12/18", host: str = "pi", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def raw_http1(addr: tuple[str, int], data: bytes, timeout: float = 10.0, half_close: bool = False) -> bytes:
    """Sends `data` on a new connection and returns everything the server
    sent back until it closed (or `timeout` passed)."""
    check_loopback(addr)
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, socket.timeout):
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def parse_response(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body.decode("latin-1"))


# ------------------------------------------------------------------ HTTP/2


class H2Frames:
    """Raw HTTP/2 frames, built without the checks a client library makes:
    what an attacker writes is not what a client library allows."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def preface(self, **settings: int) -> bytes:
        frame = SettingsFrame(0)
        frame.settings = {getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()}
        return PREFACE + frame.serialize()

    def settings_ack(self) -> bytes:
        return SettingsFrame(0, flags=["ACK"]).serialize()

    def settings(self, **settings: int) -> bytes:
        frame = SettingsFrame(0)
        frame.settings = {getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()}
        return frame.serialize()

    def grpc_header_block(self, path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
        return self.encoder.encode(grpc_request_headers(path) + (extra or []))

    def headers(self, stream_id: int, block: bytes, end_stream: bool = False, end_headers: bool = True) -> bytes:
        flags = (["END_HEADERS"] if end_headers else []) + (["END_STREAM"] if end_stream else [])
        frame = HeadersFrame(stream_id, flags=flags)
        frame.data = block
        return frame.serialize()

    def continuation(self, stream_id: int, block: bytes, end_headers: bool = False) -> bytes:
        frame = ContinuationFrame(stream_id, flags=["END_HEADERS"] if end_headers else [])
        frame.data = block
        return frame.serialize()

    def data(self, stream_id: int, payload: bytes, end_stream: bool = False) -> bytes:
        frame = DataFrame(stream_id, flags=["END_STREAM"] if end_stream else [])
        frame.data = payload
        return frame.serialize()

    def rst(self, stream_id: int, code: int = 8) -> bytes:
        return RstStreamFrame(stream_id, error_code=code).serialize()

    def ping(self, payload: bytes = b"\0" * 8) -> bytes:
        frame = PingFrame(0)
        frame.opaque_data = payload
        return frame.serialize()

    def ping_ack(self, payload: bytes) -> bytes:
        frame = PingFrame(0, flags=["ACK"])
        frame.opaque_data = payload
        return frame.serialize()

    def window_update(self, stream_id: int, increment: int) -> bytes:
        return WindowUpdateFrame(stream_id, window_increment=increment).serialize()


PING = PingFrame.type
GOAWAY = GoAwayFrame.type
SETTINGS = SettingsFrame.type


def read_frames(sock: socket.socket):
    """The frames a server sends on `sock`, until it closes the connection
    (or the socket's timeout passes)."""
    buffer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, socket.timeout, ConnectionResetError):
            return
        if not chunk:
            return
        buffer += chunk
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            yield frame


def grpc_request_headers(path: str) -> list[tuple[str, str]]:
    """The headers of a gRPC call to `path`, as grpc-go sends them."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "gcd-service:3000"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


def grpc_message(payload: bytes, declared: int | None = None) -> bytes:
    """A gRPC length-prefixed message; `declared` lies about its length."""
    return b"\0" + struct.pack(">I", len(payload) if declared is None else declared) + payload


# ------------------------------------------------------------------ the legitimate client


def grpc_call(
    addr: tuple[str, int], path: str = COMPUTE, message: bytes = COMPUTE_12_18, timeout: float = 30.0
) -> tuple[int, bytes]:
    """One unary gRPC call by a well-behaved client (h2's state machine,
    flow control honoured). Returns (grpc-status, response message)."""
    check_loopback(addr)
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    end = time.monotonic() + timeout
    with socket.create_connection(addr, timeout=timeout) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, grpc_request_headers(path))
        conn.send_data(stream, grpc_message(message), end_stream=True)
        sock.sendall(conn.data_to_send())
        body = b""
        status = None
        while status is None:
            sock.settimeout(max(0.01, end - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{addr} closed the connection before the call ended")
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields = dict(event.headers)
                    if "grpc-status" in fields:
                        status = int(fields["grpc-status"])
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"{addr} reset the call: {event.error_code}")
                elif isinstance(event, h2.events.ConnectionTerminated) and status is None:
                    raise ConnectionError(f"{addr} sent GOAWAY: {event.error_code}")
            sock.sendall(conn.data_to_send())
        return status, body[5:]


def compute_result(addr: tuple[str, int], timeout: float = 30.0) -> int:
    """gcd(12, 18) by Compute: the protobuf GCDResponse{result: 6} is 08 06."""
    status, payload = grpc_call(addr, timeout=timeout)
    assert status == 0, f"Compute answered grpc-status {status}"
    assert payload[:1] == b"\x08", payload
    return payload[1]
