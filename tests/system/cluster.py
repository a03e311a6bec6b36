"""A Kubernetes rehearsal in podman: the manifests' Deployments as
containers, with the control plane's part played in Python, in Kubernetes'
order and with the manifests' own numbers.

- **Endpoints and DNS.** The headless Service is a DNS server of ours on the
  network's gateway (the network has podman's own DNS turned off): it
  answers `gcd-service` with the addresses of the *ready, not terminating*
  gcd containers, and like CoreDNS's cache it keeps an answer for its TTL
  (5 s, k3s's), so a change reaches the api only when the cached answer
  expires and the api re-resolves.
- **Probes.** A container becomes ready as the kubelet decides it: the
  startup probe (gRPC health for gcd, /readyz for the api) every
  startup period, then the readiness probe.
- **Termination.** SIGTERM and the removal from endpoints happen at the
  same moment; the container then has its grace period.
- **Deployment controller.** A rolling update with maxSurge 1 and
  maxUnavailable 0 starts one new pod, waits until it is ready and has been
  for minReadySeconds, then terminates one old pod, and so on.

Used by tests/system/test_rollouts.py (bounded rehearsals) and
scripts/soak.py (a long churn run, by hand). All traffic goes to ports
published on 127.0.0.1 and to the podman network this creates.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field

import k8s_manifests as km
from test_topology import Podman, http_get, metric, port_of, run_args

DNS_TTL_S = 5  # CoreDNS's answers for a headless Service on k3s


class ServiceDns:
    """UDP DNS for one headless Service name, answering A queries with the
    current endpoints through a TTL cache; every other name is NXDOMAIN."""

    def __init__(self, bind_ip: str, service: str, ttl_s: float):
        self.service = service.encode()
        self.ttl_s = ttl_s
        self.lock = threading.Lock()
        self.endpoints: list[str] = []
        self.cached: list[str] = []
        self.expires = 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind_ip, 53))
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def set(self, addresses: list[str]) -> None:
        with self.lock:
            self.endpoints = list(addresses)

    def answer(self) -> list[str]:
        with self.lock:
            now = time.monotonic()
            if now >= self.expires:
                self.cached, self.expires = list(self.endpoints), now + self.ttl_s
            return self.cached

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._reply(query)
            if reply:
                self.sock.sendto(reply, peer)

    def _reply(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        ident, _flags, qdcount = struct.unpack(">HHH", query[:6])
        if qdcount != 1:
            return None
        labels, at = [], 12
        while at < len(query) and query[at] != 0:
            length = query[at]
            labels.append(query[at + 1:at + 1 + length])
            at += 1 + length
        question = query[12:at + 5]
        if len(question) < at - 12 + 5:
            return None
        qtype = struct.unpack(">H", query[at + 1:at + 3])[0]
        if not labels or labels[0].lower() != self.service:
            return struct.pack(">HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question
        addresses = self.answer() if qtype == 1 else []
        answers = b"".join(
            struct.pack(">HHHIH", 0xC00C, 1, 1, int(self.ttl_s), 4) + socket.inet_aton(a) for a in addresses
        )
        return struct.pack(">HHHHHH", ident, 0x8180, 1, len(addresses), 0, 0) + question + answers

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()
        self.thread.join(timeout=5)


def probe_spec(deployment: km.Obj, kind: str) -> dict:
    return km.pod_spec(deployment)["containers"][0][kind]


def grpc_serving(port: int, timeout: float) -> bool:
    """The kubelet's `grpc:` probe: grpc.health.v1 Check with service ""."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


@dataclass
class Pod:
    name: str
    kind: str  # "gcd" or "api"
    ip: str
    ports: dict[str, int]  # container port name -> published host port
    terminating: bool = False
    exit_code: list[int] = field(default_factory=list)
    waiter: threading.Thread | None = None


class Cluster:
    """The gcd Deployment's pods and the api's, on one podman network whose
    DNS is a [`ServiceDns`]."""

    def __init__(self, podman: Podman, images: dict[str, str], manifests: dict[str, km.Obj]):
        self.podman = podman
        self.images = images
        self.manifests = manifests
        self.tag = uuid.uuid4().hex[:8]
        self.network = f"pi-gcd-rollout-{self.tag}"
        self.pods: list[Pod] = []
        self.serial = 0
        self.dns: ServiceDns | None = None
        self.gateway = ""
        gcd = manifests["gcd"]
        self.grace_s = {name: km.pod_spec(d).get("terminationGracePeriodSeconds", 30) for name, d in manifests.items()}
        self.min_ready_s = gcd.body["spec"].get("minReadySeconds", 0)
        api_env = km.resolve_env(km.pod_spec(manifests["api"])["containers"][0])
        self.resolve_interval_s = int(api_env["API_RESOLVE_INTERVAL_MS"]) / 1000
        podman("network", "create", "--disable-dns", self.network)

    # --- pods ----------------------------------------------------------

    def start(self, kind: str) -> Pod:
        self.serial += 1
        name = f"pi-gcd-{self.tag}-{kind}-{self.serial}"
        deployment = self.manifests[kind]
        names = ["grpc", "admin"] if kind == "gcd" else ["http", "admin"]
        ports = [port_of(deployment, n) for n in names]
        extra = ["--dns", self.gateway] if kind == "api" else []
        publish = [a for p in ports for a in ("--publish", f"127.0.0.1::{p}")]
        self.podman("run", "--detach", "--name", name, "--network", self.network, *publish, *extra,
                    *run_args(deployment), self.images[kind])
        ip = self.podman("inspect", "--format", f"{{{{(index .NetworkSettings.Networks \"{self.network}\").IPAddress}}}}", name)
        pod = Pod(name, kind, ip, {n: self.podman.host_port(name, p) for n, p in zip(names, ports)})
        self.pods.append(pod)
        if self.dns is None:
            # The bridge (and so the gateway address) exists once a container runs.
            self.gateway = self.podman("network", "inspect", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}", self.network)
            self.dns = ServiceDns(self.gateway, km.GCD_SERVICE, DNS_TTL_S)
        return pod

    def probe(self, pod: Pod, timeout: float) -> bool:
        if pod.kind == "gcd":
            return grpc_serving(pod.ports["grpc"], timeout)
        try:
            return http_get(pod.ports["admin"], "/readyz", timeout=timeout)[0] == 200
        except OSError:
            return False

    def wait_ready(self, pod: Pod) -> None:
        """The kubelet: startup probe every startup period until it passes
        (or its failureThreshold is used up), then the first readiness probe."""
        startup = probe_spec(self.manifests[pod.kind], "startupProbe")
        readiness = probe_spec(self.manifests[pod.kind], "readinessProbe")
        for _ in range(startup["failureThreshold"]):
            tick = time.monotonic()
            if self.probe(pod, startup.get("timeoutSeconds", 1)):
                break
            time.sleep(max(0.0, startup["periodSeconds"] - (time.monotonic() - tick)))
        else:
            raise AssertionError(f"{pod.name}: startup probe failed {startup['failureThreshold']} times")
        assert self.probe(pod, readiness.get("timeoutSeconds", 1)), f"{pod.name}: readiness probe failed after startup"
        if pod.kind == "gcd":
            self.publish()

    def ready_gcds(self) -> list[Pod]:
        return [p for p in self.pods if p.kind == "gcd" and not p.terminating and p.ip]

    def publish(self) -> None:
        assert self.dns is not None
        self.dns.set([p.ip for p in self.ready_gcds()])

    def scale_up_gcd(self) -> Pod:
        pod = self.start("gcd")
        self.wait_ready(pod)
        return pod

    def terminate(self, pod: Pod, signal: str | None = "TERM") -> None:
        """Kubernetes' order: out of the endpoints and signalled at once
        (`signal=None` for a pod already dead, as after a node loss)."""
        pod.terminating = True
        if pod.kind == "gcd":
            self.publish()
        if signal:
            self.podman("kill", "--signal", signal, pod.name)

        def wait() -> None:
            out = subprocess.run([*self.podman.prefix, "wait", pod.name], capture_output=True, text=True,
                                 timeout=self.grace_s[pod.kind] + 60, env=self.podman.env)
            pod.exit_code.append(int(out.stdout.strip() or -1))

        pod.waiter = threading.Thread(target=wait, daemon=True)
        pod.waiter.start()

    def wait_exited(self, pod: Pod) -> int:
        assert pod.waiter is not None, f"{pod.name} was not terminated"
        pod.waiter.join(timeout=self.grace_s[pod.kind] + 90)
        assert pod.exit_code, f"{pod.name} did not exit within its grace period"
        return pod.exit_code[0]

    def rolling_update_gcd(self) -> list[Pod]:
        """maxSurge 1, maxUnavailable 0, minReadySeconds: one new pod ready
        and available, then one old pod terminated, until none is left."""
        old = list(self.ready_gcds())
        new = []
        for pod in old:
            fresh = self.scale_up_gcd()
            new.append(fresh)
            time.sleep(self.min_ready_s)  # the controller's minReadySeconds timer
            self.terminate(pod)
        return new

    def rss_kib(self, pod: Pod) -> int | None:
        """The pod's process's resident memory; None once it has exited."""
        pid = self.podman("inspect", "--format", "{{.State.Pid}}", pod.name, check=False)
        try:
            with open(f"/proc/{int(pid)}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:") and int(pid) > 0:
                        return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return None

    def served(self, pod: Pod) -> float:
        return metric(pod.ports["admin"], "gcd_compute_requests_total")

    def close(self) -> None:
        try:
            if self.dns:
                self.dns.close()
            names = [p.name for p in self.pods]
            if names:
                self.podman("rm", "--force", "--time", "0", *names, timeout=180)
        finally:
            self.podman("network", "rm", "--force", self.network, timeout=60)

