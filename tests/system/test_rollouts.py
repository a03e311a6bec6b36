"""The operations users run most, rehearsed under load from the manifests'
own numbers (tests/system/cluster.py plays the control plane): a rolling
update of gcd, scaling 3 -> 6 -> 1 -> 3, replacing the api, and a gcd
container killed without a drain. Each must lose no request."""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import threading
import time

import pytest

from cluster import DNS_TTL_S, Cluster, Pod
from test_topology import images, manifests, metric, podman, wait_for  # noqa: F401 (fixtures)

GCD_REPLICAS = 3


class Load:
    """Keep-alive clients of a Service of api pods, as browsers and curl
    behave: a new connection goes to one of the Service's current endpoints;
    a response with `Connection: close` ends its connection; a request that
    finds its reused connection closed before any answer is sent again on a
    new one. Anything else that is not the right answer is a failure."""

    def __init__(self, endpoints: list[int], clients: int = 4, max_seconds: float = 240):
        self.endpoints = list(endpoints)
        self.clients = clients
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.epoch = time.monotonic()
        self.sent = 0
        self.retried = 0
        self.failures: list[str] = []
        self.picks = 0
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def set_endpoints(self, ports: list[int]) -> None:
        with self.lock:
            self.endpoints = list(ports)

    def _pick(self) -> int:
        with self.lock:
            self.picks += 1
            return self.endpoints[self.picks % len(self.endpoints)]

    def _client(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        k = index
        while not self.stop.is_set() and time.monotonic() < deadline:
            k += self.clients
            a, b = 10 * (k + 1), 15 * (k + 1)
            started = time.monotonic()
            failure = None
            for attempt in (0, 1):
                reused = conn is not None
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self._pick(), timeout=5)
                try:
                    conn.request("GET", f"/gcd/{a}/{b}")
                    response = conn.getresponse()
                    body = response.read().decode()
                except (ConnectionResetError, BrokenPipeError) as err:
                    conn.close()
                    conn = None
                    if reused and attempt == 0:
                        with self.lock:
                            self.retried += 1
                        continue
                    failure = f"{type(err).__name__}: {err}"
                    break
                except (OSError, http.client.HTTPException) as err:
                    conn.close()
                    conn = None
                    failure = f"{type(err).__name__}: {err}"
                    break
                if response.status != 200 or json.loads(body) != {"result": str(math.gcd(a, b))}:
                    failure = f"{response.status} {body}"
                if response.will_close:
                    conn.close()
                    conn = None
                break
            took = time.monotonic() - started
            with self.lock:
                self.sent += 1
                if failure:
                    self.failures.append(f"/gcd/{a}/{b}: {failure} (at {started - self.epoch:.3f} s, took {took:.3f} s)")
        if conn is not None:
            conn.close()

    def wait_sent(self, more: int, timeout: float = 30) -> None:
        target = self.sent + more
        wait_for(f"{more} more requests", lambda: self.sent >= target, timeout)

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a client thread did not stop"

    def assert_no_failures(self, what: str) -> None:
        assert not self.failures, f"{what}: {len(self.failures)} of {self.sent} requests failed: {self.failures[:10]}"


@pytest.fixture(scope="module")
def cluster(podman, images, manifests):  # noqa: F811 (fixtures)
    cluster = Cluster(podman, images, manifests)
    try:
        gcds = [cluster.start("gcd") for _ in range(GCD_REPLICAS)]
        for pod in gcds:
            cluster.wait_ready(pod)
        api = cluster.start("api")
        cluster.wait_ready(api)
        wait_replicas(cluster, api, GCD_REPLICAS)
        yield cluster
    finally:
        for pod in cluster.pods:
            logs = subprocess_logs(cluster, pod)
            print(f"---- logs of {pod.name}\n{logs}")
        cluster.close()


def subprocess_logs(cluster: Cluster, pod: Pod) -> str:
    out = subprocess.run([*cluster.podman.prefix, "logs", pod.name], capture_output=True, text=True,
                         timeout=60, env=cluster.podman.env)
    return out.stdout + out.stderr


def the_api(cluster: Cluster) -> Pod:
    return next(p for p in cluster.pods if p.kind == "api" and not p.terminating)


def wait_replicas(cluster: Cluster, api: Pod, count: int) -> None:
    """The api's view of gcd-service reaches `count` replicas, within the
    documented pick-up time: the DNS cache's TTL plus a re-resolve."""
    wait_for(f"the api to see {count} gcd replicas",
             lambda: metric(api.ports["admin"], "api_gcd_replicas") == count,
             DNS_TTL_S + cluster.resolve_interval_s + 10)


def pickup_bound(cluster: Cluster) -> float:
    # Documented: a replica is picked up at the api's next re-resolve after
    # the DNS answer changes, which a cache may hold for its TTL. Generous
    # margin for a busy 2-core machine.
    return DNS_TTL_S + cluster.resolve_interval_s + 5


def test_rolling_update_of_gcd_under_load_loses_no_request(cluster):
    api = the_api(cluster)
    old = cluster.ready_gcds()
    with Load([api.ports["http"]]) as load:
        load.wait_sent(200)
        new = cluster.rolling_update_gcd()
        for pod in old:
            assert cluster.wait_exited(pod) == 0, f"{pod.name} did not exit cleanly on SIGTERM"
        wait_replicas(cluster, api, GCD_REPLICAS)
        load.wait_sent(200)
    load.assert_no_failures("rolling update of gcd")
    assert {p.ip for p in new}.isdisjoint({p.ip for p in old}), "new pods must come on new addresses"
    for pod in new:
        assert cluster.served(pod) > 0, f"{pod.name} took no traffic after the update"


def test_scaling_gcd_3_6_1_3_under_load_loses_no_request(cluster):
    api = the_api(cluster)
    pickups: dict[str, float] = {}

    def scale_up(count: int) -> list[Pod]:
        pods = [cluster.start("gcd") for _ in range(count)]  # the ReplicaSet starts them together
        for pod in pods:
            cluster.wait_ready(pod)
        published = time.monotonic()
        for pod in pods:
            wait_for(f"{pod.name} to take traffic", lambda pod=pod: cluster.served(pod) > 0, pickup_bound(cluster))
            pickups[pod.name] = time.monotonic() - published
        return pods

    with Load([api.ports["http"]]) as load:
        load.wait_sent(200)
        scale_up(3)
        wait_replicas(cluster, api, 6)
        load.wait_sent(200)
        leaving = cluster.ready_gcds()[:-1]
        for pod in leaving:
            cluster.terminate(pod)
        wait_replicas(cluster, api, 1)
        load.wait_sent(200)
        for pod in leaving:
            assert cluster.wait_exited(pod) == 0, f"{pod.name} did not exit cleanly on SIGTERM"
        scale_up(2)
        wait_replicas(cluster, api, GCD_REPLICAS)
        load.wait_sent(200)
    load.assert_no_failures("scaling 3 -> 6 -> 1 -> 3")
    print(f"pick-up times (s): { {k: round(v, 2) for k, v in pickups.items()} }")
    assert len(pickups) == 5


def test_replacing_the_api_loses_no_request(cluster):
    old = the_api(cluster)
    with Load([old.ports["http"]], clients=6) as load:
        load.wait_sent(200)
        new = cluster.start("api")
        cluster.wait_ready(new)
        wait_replicas(cluster, new, GCD_REPLICAS)
        load.set_endpoints([old.ports["http"], new.ports["http"]])
        load.wait_sent(200)
        # The Deployment terminates the old pod: out of the Service's
        # endpoints and SIGTERM at once; clients keep their connections.
        load.set_endpoints([new.ports["http"]])
        cluster.terminate(old)
        exit_code = cluster.wait_exited(old)
        load.wait_sent(200)
    load.assert_no_failures("replacing the api")
    assert exit_code == 0, f"{old.name} exited {exit_code} on SIGTERM"
    assert metric(new.ports["admin"], "api_http_requests_total") > 0


def test_killing_a_gcd_container_loses_no_request(cluster):
    """Node loss: SIGKILL, no drain; the dead address stays in DNS until the
    control plane notices (here: the cache's TTL), as it does for a lost node."""
    api = the_api(cluster)
    victim = cluster.ready_gcds()[0]
    with Load([api.ports["http"]]) as load:
        load.wait_sent(200)
        cluster.podman("kill", "--signal", "KILL", victim.name)
        load.wait_sent(200)
        victim.terminating = True
        cluster.publish()
        wait_replicas(cluster, api, GCD_REPLICAS - 1)
        cluster.wait_ready(cluster.start("gcd"))  # the ReplicaSet replaces it
        wait_replicas(cluster, api, GCD_REPLICAS)
        load.wait_sent(200)
    load.assert_no_failures("a gcd container killed")
