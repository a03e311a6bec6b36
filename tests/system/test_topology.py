"""The topology k8s/ describes, run with the real images under podman.

Three gcd containers share the network alias gcd-service on one podman
network (aardvark-dns answers the alias with every address, as DNS answers a
headless Service), and the api container runs with the env the api
Deployment sets. The containers run the way the pods do: the manifests' uid,
read-only root filesystem, no capabilities, no privilege escalation and the
memory limits. All traffic goes to 127.0.0.1 ports published by containers
this test creates; every loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

import k8s_manifests as km

# Where scripts/build-arm.sh writes the OCI archives (PI_GCD_DIST moves
# dist/, as for the artifact tests).
IMAGES_DIR = Path(os.environ.get("PI_GCD_DIST", km.ROOT / "dist")) / "images"
GCD_REPLICAS = 3
# The image platform matching this machine, as OCI names it.
PLATFORM_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(platform.machine(), platform.machine())


# ---------------------------------------------------------------- helpers


def wait_for(what: str, predicate, timeout: float, interval: float = 0.1):
    """Polls `predicate` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError) as err:
            last_error = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def metric(port: int, name: str) -> float:
    status, body = http_get(port, "/metrics")
    assert status == 200, f"/metrics on 127.0.0.1:{port} answered {status}"
    values = [
        float(line.split()[-1])
        for line in body.splitlines()
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{")
    ]
    assert values, f"no metric {name} on 127.0.0.1:{port}"
    return sum(values)


def memory_limit(container: dict) -> str:
    """The manifest's memory limit in podman's notation (bytes)."""
    return str(int(km.memory_bytes(container["resources"]["limits"]["memory"])))


class Podman:
    """podman with storage of its own, so the test touches no other images."""

    def __init__(self, base: Path):
        self.base = base
        self.prefix = [
            "podman",
            "--root", str(base / "storage"),
            "--runroot", str(base / "run"),
            "--tmpdir", str(base / "tmp"),
            "--storage-driver", "vfs",
            "--runtime", "runc",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
        ]

        # File locks under the private tmpdir instead of the machine-wide
        # shared-memory lock table, which another podman store (another
        # test, a build) may reset under our containers.
        self.conf = base / "containers.conf"
        self.conf.write_text(
            '[containers]\ndefault_sysctls = ["net.ipv4.ping_group_range=0 0"]\n'
            '[engine]\nlock_type = "file"\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run(
            [*self.prefix, *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result.stdout.strip()

    def host_port(self, container: str, port: int) -> int:
        out = self("port", container, f"{port}/tcp")
        match = re.search(r"127\.0\.0\.1:(\d+)", out)
        assert match, f"{container}: port {port} is not published on 127.0.0.1 ({out!r})"
        return int(match.group(1))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def manifests():
    objects = km.load()
    return {name: km.find(objects, "Deployment", name) for name in ("gcd", "api")}


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    for tool in ("podman", "runc"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/install-deps.sh"
    base = tmp_path_factory.mktemp("podman")
    podman = Podman(base)
    yield podman
    left = podman("ps", "--all", "--quiet", check=False)
    # Storage of containers that still exist must stay, or they can no
    # longer be removed.
    assert not left, f"containers left in {base}: {left}"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def images(podman, manifests):
    return load_images(podman, manifests)


def load_images(podman: Podman, manifests: dict[str, km.Obj]) -> dict[str, str]:
    """Loads this machine's image of each service from dist/images into
    podman, under the name the manifests use (normalized as containerd
    does)."""
    loaded = {}
    for name, deployment in manifests.items():
        archive = IMAGES_DIR / f"{name}.oci.tar"
        assert archive.is_file(), (
            f"{archive} is missing: run scripts/build-arm.sh first "
            "(it writes the multi-arch OCI archives to dist/images)"
        )
        image = km.normalized_image(km.pod_spec(deployment)["containers"][0]["image"])
        output = podman("pull", "--quiet", "--platform", f"linux/{PLATFORM_ARCH}", f"oci-archive:{archive}", timeout=300)
        image_id = output.splitlines()[-1].strip()
        podman("tag", image_id, image)
        arch = podman("image", "inspect", "--format", "{{.Architecture}}", image)
        assert arch == PLATFORM_ARCH, f"{archive}: loaded {arch}, wanted {PLATFORM_ARCH}"
        loaded[name] = image
    return loaded


def port_of(deployment: km.Obj, name: str) -> int:
    """A named container port of the deployment's (only) container."""
    port = km.container_port(km.pod_spec(deployment)["containers"][0], name)
    assert port is not None, f"{deployment}: no container port named {name}"
    return port


def run_args(deployment: km.Obj, overrides: dict[str, str] | None = None) -> list[str]:
    """podman run options that give a container what the pod spec gives."""
    spec = km.pod_spec(deployment)
    container = spec["containers"][0]
    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    env = km.resolve_env(container)
    env.update(overrides or {})
    args = [
        "--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}",
        "--cap-drop", "ALL",
        # podman's default nofile (1048576) may exceed what this machine
        # grants; 4096 covers the connection caps the memory limits allow.
        "--ulimit", "nofile=4096:4096",
        "--ulimit", "nproc=4096:4096",
        "--security-opt", "no-new-privileges",
        "--memory", memory_limit(container),
    ]
    if security.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    for key, value in sorted(env.items()):
        args += ["--env", f"{key}={value}"]
    return args


@pytest.fixture(scope="module")
def topology(podman, images, manifests):
    """Three gcd containers behind the alias gcd-service and the api, with
    every admin port and the api's public port published on 127.0.0.1."""
    tag = uuid.uuid4().hex[:8]
    network = f"pi-gcd-topology-{tag}"
    names = []
    try:
        podman("network", "create", network)
        gcd_admin_port = port_of(manifests["gcd"], "admin")
        gcd_admin = {}
        for index in range(GCD_REPLICAS):
            name = f"pi-gcd-{tag}-gcd-{index}"
            podman(
                "run", "--detach", "--name", name,
                "--network", network, "--network-alias", km.GCD_SERVICE,
                "--publish", f"127.0.0.1::{gcd_admin_port}",
                *run_args(manifests["gcd"]),
                images["gcd"],
            )
            names.append(name)
            gcd_admin[name] = podman.host_port(name, gcd_admin_port)
        for name, port in gcd_admin.items():
            wait_for(f"{name} /readyz", lambda port=port: http_get(port, "/readyz")[0] == 200, 30)

        api_env = km.resolve_env(km.pod_spec(manifests["api"])["containers"][0])
        overrides = {}
        if "API_RESOLVE_INTERVAL_MS" not in api_env:
            overrides["API_RESOLVE_INTERVAL_MS"] = "1000"
        api = f"pi-gcd-{tag}-api"
        api_http, api_admin = port_of(manifests["api"], "http"), port_of(manifests["api"], "admin")
        podman(
            "run", "--detach", "--name", api, "--network", network,
            "--publish", f"127.0.0.1::{api_http}", "--publish", f"127.0.0.1::{api_admin}",
            *run_args(manifests["api"], overrides),
            images["api"],
        )
        names.append(api)
        topo = {
            "podman": podman,
            "gcd_admin": gcd_admin,
            "api": api,
            "api_port": podman.host_port(api, api_http),
            "api_admin": podman.host_port(api, api_admin),
            "gcd_grace_s": km.pod_spec(manifests["gcd"]).get("terminationGracePeriodSeconds", 30),
            "resolve_interval_s": int(api_env.get("API_RESOLVE_INTERVAL_MS", overrides.get("API_RESOLVE_INTERVAL_MS"))) / 1000,
        }
        wait_for("api /readyz", lambda: http_get(topo["api_admin"], "/readyz")[0] == 200, 30)
        wait_for(
            f"the api to resolve {GCD_REPLICAS} gcd replicas",
            lambda: metric(topo["api_admin"], "api_gcd_replicas") == GCD_REPLICAS,
            topo["resolve_interval_s"] + 20,
        )
        yield topo
    finally:
        for name in names:
            logs = subprocess.run(
                [*podman.prefix, "logs", name], capture_output=True, text=True, timeout=60, env=podman.env
            )
            print(f"---- logs of {name}\n{logs.stdout}{logs.stderr}")
        try:
            if names:
                podman("rm", "--force", "--time", "0", *names, timeout=120)
        finally:
            podman("network", "rm", "--force", network, timeout=60)


# ---------------------------------------------------------------- tests


def expect_gcd(port: int, a: int, b: int, conn: http.client.HTTPConnection | None = None) -> str | None:
    """One request; None when it was answered right, else what went wrong."""
    import math

    path = f"/gcd/{a}/{b}"
    try:
        if conn is None:
            status, body = http_get(port, path)
        else:
            conn.request("GET", path)
            response = conn.getresponse()
            status, body = response.status, response.read().decode()
    except (OSError, http.client.HTTPException) as err:
        return f"{path}: {type(err).__name__}: {err}"
    if status != 200 or json.loads(body) != {"result": str(math.gcd(a, b))}:
        return f"{path}: {status} {body}"
    return None


def test_request_through_the_api(topology):
    status, body = http_get(topology["api_port"], "/gcd/12/18")
    assert (status, json.loads(body)) == (200, {"result": "6"})


def test_every_gcd_replica_gets_traffic(topology):
    before = {name: metric(port, "gcd_compute_requests_total") for name, port in topology["gcd_admin"].items()}
    requests = 300
    conn = http.client.HTTPConnection("127.0.0.1", topology["api_port"], timeout=5)
    try:
        failures = [f for k in range(1, requests + 1) if (f := expect_gcd(0, 6 * k, 4 * k, conn))]
    finally:
        conn.close()
    assert not failures, failures[:10]
    served = {
        name: metric(port, "gcd_compute_requests_total") - before[name]
        for name, port in topology["gcd_admin"].items()
    }
    assert sum(served.values()) >= requests, served
    # Round-robin per request: each replica gets its share, not just "some".
    assert all(count >= requests / GCD_REPLICAS / 2 for count in served.values()), served


class RequestStream:
    """A bounded stream of requests from a few client threads, each on its
    own keep-alive connection, recording every wrong answer or error."""

    def __init__(self, port: int, clients: int = 4, max_requests: int = 200_000, max_seconds: float = 90):
        self.port = port
        self.clients = clients
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.epoch = time.monotonic()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        k = index
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                with self.lock:
                    if self.sent >= self.max_requests:
                        return
                    self.sent += 1
                k += self.clients
                started = time.monotonic()
                failure = expect_gcd(self.port, 10 * (k + 1), 15 * (k + 1), conn)
                if failure:
                    with self.lock:
                        self.failures.append(
                            f"{failure} (sent at {started - self.epoch:.3f} s, took {time.monotonic() - started:.3f} s)"
                        )
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        finally:
            conn.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not stop"


def test_stopping_a_gcd_replica_under_load_loses_no_request(topology):
    podman = topology["podman"]
    victim, *survivors = list(topology["gcd_admin"])
    survivors_before = {n: metric(topology["gcd_admin"][n], "gcd_compute_requests_total") for n in survivors}

    with RequestStream(topology["api_port"]) as stream:
        wait_for("traffic to flow", lambda: stream.sent >= 200, 30)
        victim_before = metric(topology["gcd_admin"][victim], "gcd_compute_requests_total")
        sent_at_stop = stream.sent
        stop_at = time.monotonic() - stream.epoch
        # SIGTERM, as the kubelet sends it; the grace time mirrors the pod's.
        grace = topology["gcd_grace_s"]
        podman("stop", "--time", str(grace), victim, timeout=grace + 30)
        stopped_at = time.monotonic() - stream.epoch
        sent_while_stopping = stream.sent - sent_at_stop
        wait_for(
            f"the api to drop the stopped replica ({GCD_REPLICAS - 1} left)",
            lambda: metric(topology["api_admin"], "api_gcd_replicas") == GCD_REPLICAS - 1,
            topology["resolve_interval_s"] + 20,
        )
        # And a little more traffic with the replica gone.
        settled = stream.sent
        wait_for("traffic after the stop", lambda: stream.sent >= settled + 200, 30)

    if stream.failures:
        _, upstream = http_get(topology["api_admin"], "/metrics")
        upstream = [line for line in upstream.splitlines() if line.startswith("api_upstream")]
        raise AssertionError(
            f"{len(stream.failures)} of {stream.sent} requests failed (podman stop from {stop_at:.3f} s to {stopped_at:.3f} s): "
            f"{stream.failures[:10]}\napi metrics: {upstream}"
        )
    assert sent_while_stopping >= 100, f"only {sent_while_stopping} requests while the replica stopped"
    assert victim_before > 0, "the stopped replica never had traffic"
    exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", victim)
    assert exit_code == "0", f"{victim} exited {exit_code} on SIGTERM, not a clean shutdown"
    for name in survivors:
        served = metric(topology["gcd_admin"][name], "gcd_compute_requests_total") - survivors_before[name]
        assert served > 0, f"{name} served nothing while another replica stopped"
