"""A subset of the hostile clients of test_hostile.py, against the images
running under podman the way the pods run them: the manifests' env, uid,
read-only root filesystem, no capabilities, and the manifests' memory
limits enforced by the kernel (the binaries read them from their cgroup,
which this checks too). After each attack the container must still be
running, never OOM-killed, and a legitimate request must be answered within
the bound.

gcd's gRPC port is published here only so the attacks can reach it; in the
cluster it is internal.
"""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

import hostile as h
from test_hostile import LEGIT_BOUND_S
from test_topology import (  # noqa: F401 (images, manifests and podman are fixtures)
    Podman,
    http_get,
    images,
    manifests,
    podman,
    port_of,
    run_args,
    wait_for,
)


@pytest.fixture(scope="module")
def pods(podman: Podman, images, manifests):  # noqa: F811 (fixtures)
    """One gcd container behind the alias gcd-service and one api container,
    every port published on 127.0.0.1."""
    tag = uuid.uuid4().hex[:8]
    network = f"pi-gcd-hostile-{tag}"
    names = {"gcd": f"pi-gcd-{tag}-hostile-gcd", "api": f"pi-gcd-{tag}-hostile-api"}
    started = []
    try:
        podman("network", "create", network)
        ports, limits = {}, {}
        for name in ("gcd", "api"):
            deployment = manifests[name]
            published = [port_of(deployment, "grpc" if name == "gcd" else "http"), port_of(deployment, "admin")]
            # The manifests also pass the limit through the downward API;
            # left empty here, the binaries must find it in their cgroup.
            args = run_args(deployment, {f"{name.upper()}_MEMORY_LIMIT": ""})
            limit = args[args.index("--memory") + 1]
            limits[name] = int(limit)
            podman(
                "run", "--detach", "--name", names[name], "--network", network,
                *(["--network-alias", "gcd-service"] if name == "gcd" else []),
                *[arg for port in published for arg in ("--publish", f"127.0.0.1::{port}")],
                # No swap to hide in: past the limit is an OOM kill.
                "--memory-swap", limit,
                *args,
                images[name],
            )
            started.append(names[name])
            ports[name] = [podman.host_port(names[name], port) for port in published]
            wait_for(f"{name} /readyz", lambda port=ports[name][1]: http_get(port, "/readyz")[0] == 200, 30)
        yield {"podman": podman, "names": names, "ports": ports, "limits": limits}
    finally:
        for name in started:
            print(f"---- logs of {name}\n" + podman("logs", name, check=False))
        if started:
            podman("rm", "--force", "--time", "0", *started, timeout=120)
        podman("network", "rm", "--force", network, timeout=60)


def state(pods, service: str) -> dict:
    inspect = json.loads(pods["podman"]("inspect", pods["names"][service]))[0]
    return inspect["State"]


def peak(pods, service: str) -> int:
    return h.vm_hwm(state(pods, service)["Pid"])


def legit(pods) -> float:
    started = time.monotonic()
    port = pods["ports"]["api"][0]
    while True:
        status, body = http_get(port, "/gcd/12/18", timeout=LEGIT_BOUND_S)
        if status == 503 and time.monotonic() - started < LEGIT_BOUND_S:
            continue
        assert (status, json.loads(body)) == (200, {"result": "6"}), (status, body)
        return time.monotonic() - started


def assert_survived(pods, attack: str) -> None:
    took = legit(pods)
    assert took <= LEGIT_BOUND_S, f"a legitimate request waited {took:.2f} s during {attack}"
    for service in ("gcd", "api"):
        current = state(pods, service)
        assert current["Running"] and not current["OOMKilled"], f"{service} after {attack}: {current}"
        used = peak(pods, service)
        assert used < pods["limits"][service], f"{service} peaked at {used} bytes during {attack}"


def test_the_binaries_read_their_limit_from_the_cgroup(pods, manifests):  # noqa: F811
    import k8s_manifests as km

    for service in ("gcd", "api"):
        container = km.pod_spec(manifests[service])["containers"][0]
        limit_mib = km.memory_bytes(container["resources"]["limits"]["memory"]) / 2**20
        log = pods["podman"]("logs", pods["names"][service])
        line = next((l for l in log.splitlines() if "memory budget" in l), "")
        match = re.search(r"memory_limit=([0-9.]+) MiB \(from (/sys/fs/cgroup/\S+)\)", line)
        assert match, f"{service} did not find its cgroup limit: {line or log}"
        assert float(match.group(1)) == limit_mib, line


def test_unfinished_heads_on_every_api_port(pods):
    public, admin = pods["ports"]["api"]
    head = b"GET /x HTTP/1.1\r\nHost: pi\r\nX-Pad: " + b"a" * (16 * 1024 - 50)
    with h.Fleet() as fleet:
        socks = fleet.open(("127.0.0.1", public), 1100) + fleet.open(("127.0.0.1", admin), 3000)
        fleet.send_all(socks, head, deadline_s=20)
        assert_survived(pods, "unfinished 16 KiB heads")


def test_half_sent_4mib_messages_to_health(pods):
    frames = h.H2Frames()
    message = h.grpc_message(b"\x0a" + b"a" * 2000, declared=4 * 2**20)
    data = frames.preface() + b"".join(
        frames.headers(2 * i + 1, frames.grpc_header_block(h.HEALTH_CHECK)) + frames.data(2 * i + 1, message)
        for i in range(100)
    )
    with h.Fleet() as fleet:
        socks = fleet.open(("127.0.0.1", pods["ports"]["gcd"][0]), 100)
        fleet.send_all(socks, data, deadline_s=20)
        assert_survived(pods, "4 MiB messages half-sent to Health/Check")


def test_silent_connections_and_header_only_streams_to_gcd(pods):
    frames = h.H2Frames()
    pad = [("x-pad", "a" * 3000), ("x-pad2", "b" * 3000)]
    data = frames.preface() + b"".join(
        frames.headers(2 * i + 1, frames.grpc_header_block(h.COMPUTE, pad)) for i in range(256)
    )
    grpc = ("127.0.0.1", pods["ports"]["gcd"][0])
    with h.Fleet() as fleet:
        fleet.open(grpc, 3000)
        socks = fleet.open(grpc, 100)
        fleet.send_all(socks, data, deadline_s=20)
        assert_survived(pods, "silent connections and header-only streams")
