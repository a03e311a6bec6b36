"""Clients that never open their receive window, against the shipped gcd run
as its manifest runs it (the same setting and checks as test_hostile.py).

Such a client sets SETTINGS_INITIAL_WINDOW_SIZE to 0, reads every frame and
answers PINGs, so its connection looks alive; it makes calls and half-closes
them. gcd may send the heads of the answers (HEADERS are not flow-controlled)
but none of their data, which waits in gcd for window that never comes. An
answer waiting so keeps its call's permit, a connection has only so many,
and a connection whose answers do not leave is stalled, not idle: it is
closed within the call and write timeouts, not kept for its idle timeout.
"""

from __future__ import annotations

import socket
import time

from hyperframe.frame import Frame, HeadersFrame

import hostile as h
from test_hostile import eventually, gcd, legit_grpc, ms, record, survived  # noqa: F401 (fixtures)

# Streams per connection (gcd allows 256), and requests on each reflection
# stream: one answer each, several answers per stream.
STREAMS = 250
REFLECTION_REQUESTS = 3
# ServerReflectionRequest{file_containing_symbol: ...}: the largest answer
# reflection gives (the reflection service's own file).
REFLECTION_SYMBOL = b"grpc.reflection.v1.ServerReflection"
FILE_CONTAINING_SYMBOL = b"\x22" + bytes([len(REFLECTION_SYMBOL)]) + REFLECTION_SYMBOL


class ZeroWindowPeer:
    """One connection of the attack, driven without blocking: it writes what
    it has queued, reads what came, and answers PINGs and SETTINGS."""

    def __init__(self, addr: tuple[str, int]) -> None:
        h.check_loopback(addr)
        self.frames = h.H2Frames()
        self.sock = socket.create_connection(addr, timeout=5)
        self.sock.setblocking(False)
        self.outbox = bytearray(self.frames.preface(initial_window_size=0))
        self.inbox = b""
        self.closed = False
        self.heads = 0

    def call(self, stream_id: int, method: str, messages: bytes) -> None:
        """A call sent in full and half-closed."""
        block = self.frames.grpc_header_block(method)
        self.outbox += self.frames.headers(stream_id, block) + self.frames.data(stream_id, messages, end_stream=True)

    def pump(self) -> None:
        if self.closed:
            return
        try:
            while self.outbox:
                del self.outbox[: self.sock.send(self.outbox)]
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True
            return
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.inbox += chunk
        self.read_frames()

    def read_frames(self) -> None:
        while len(self.inbox) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.inbox[:9]))
            if len(self.inbox) < 9 + length:
                return
            frame.parse_body(memoryview(self.inbox[9 : 9 + length]))
            self.inbox = self.inbox[9 + length :]
            if frame.type == h.PING and "ACK" not in frame.flags:
                self.outbox += self.frames.ping_ack(frame.opaque_data)
            elif frame.type == h.SETTINGS and "ACK" not in frame.flags:
                self.outbox += self.frames.settings_ack()
            elif frame.type == HeadersFrame.type:
                self.heads += 1

    def close(self) -> None:
        self.sock.close()


def zero_window_attack(gcd, record, attack: str, method: str, messages: bytes) -> None:
    """As many connections as gcd takes, opened one after another, each
    with STREAMS calls whose answers cannot leave; then the checks."""
    connections = gcd.log_value("max_connections")
    peers: list[ZeroWindowPeer] = []
    try:
        for _ in range(connections):
            peer = ZeroWindowPeer(gcd.addr)
            for i in range(STREAMS):
                peer.call(2 * i + 1, method, messages)
            peers.append(peer)
            # Until every call is sent and gcd has started answering (it
            # reads the rest once the first answers leave, which they never
            # do).
            end = time.monotonic() + 5
            while time.monotonic() < end and (peer.outbox or peer.heads == 0) and not peer.closed:
                for each in peers:
                    each.pump()
                time.sleep(0.01)  # the attacker's pace
        sent = time.monotonic()

        def all_closed() -> bool:
            for peer in peers:
                peer.pump()
            return all(peer.closed for peer in peers)

        # Stalled connections go within the call and write timeouts and 1 s
        # (sooner when a new connection needs their slots), well before
        # the idle timeout and the close that follows.
        stall_s = max(ms(gcd, "GCD_CALL_TIMEOUT_MS"), ms(gcd, "GCD_WRITE_TIMEOUT_MS")) + 1
        eventually("gcd to close every connection whose answers cannot leave", all_closed, stall_s + 5)
        closed_after = time.monotonic() - sent
    finally:
        for peer in peers:
            peer.close()
    survived(
        gcd,
        attack,
        record,
        lambda: legit_grpc(gcd),
        connections=connections,
        calls=connections * STREAMS,
        closed_after_s=round(closed_after, 2),
    )


def test_gcd_reflection_answers_a_client_never_takes(gcd, record):
    """Several reflection answers per stream, none of which can leave."""
    request = h.grpc_message(FILE_CONTAINING_SYMBOL)
    zero_window_attack(
        gcd,
        record,
        f"gcd: zero receive window, {STREAMS} reflection streams x {REFLECTION_REQUESTS} answers per connection",
        h.REFLECTION,
        request * REFLECTION_REQUESTS,
    )


def test_gcd_compute_answers_a_client_never_takes(gcd, record):
    zero_window_attack(
        gcd,
        record,
        f"gcd: zero receive window, {STREAMS} Compute calls per connection",
        h.COMPUTE,
        h.grpc_message(h.COMPUTE_12_18),
    )
