"""Reads the Kubernetes manifests in k8s/ and checks what schemas cannot see.

Every check returns a list of problems (empty when the manifests are right),
so a test can assert on the list and show every problem at once, and a
negative test can prove that a broken copy is caught.
"""

from __future__ import annotations

import math
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"

GCD_SERVICE = "gcd-service"
GCD_GRPC_PORT = 3000
API_HTTP_PORT = 8080
NODE_PORT = 30080
# A Raspberry Pi with 1 GB also runs the OS and k3s: all pi-gcd pods
# together may claim at most this much memory at their limits.
TOTAL_MEMORY_LIMIT_BUDGET = 512 * 2**20
# Seconds between the process's own shutdown deadline and SIGKILL.
GRACE_MARGIN_S = 5

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod")


@dataclass
class Obj:
    """One Kubernetes object and the file it came from."""

    file: str
    body: dict

    @property
    def kind(self) -> str:
        return self.body.get("kind", "")

    @property
    def name(self) -> str:
        return self.body.get("metadata", {}).get("name", "")

    @property
    def namespace(self) -> str:
        return self.body.get("metadata", {}).get("namespace", "default")

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}/{self.name}"


@dataclass
class Binary:
    """A service binary and its `--help`, which lists every flag and env
    variable (and their ranges and defaults)."""

    name: str
    help: str
    path: Path
    flags: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", self.help))

    def knows_env(self, env: str) -> bool:
        return re.search(rf"(?<![A-Z0-9_]){re.escape(env)}(?![A-Z0-9_])", self.help) is not None

    def env_default(self, env: str) -> str | None:
        match = re.search(rf"env\s+{re.escape(env)},(?:\s+[0-9.=]+,)?\s+default\s+([^\]\s]+)\]", self.help)
        return match.group(1) if match else None


# ---------------------------------------------------------------- loading


def load(directory: Path = K8S_DIR) -> list[Obj]:
    """Every object of every YAML file, in the order `kubectl create -f`
    reads them (file names sorted, documents in file order)."""
    objects = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        with path.open() as stream:
            for body in yaml.safe_load_all(stream):
                if body is not None:
                    objects.append(Obj(path.name, body))
    return objects


def normalized_image(image: str) -> str:
    """The name containerd (and podman) give a short image reference
    (docker.io is the default registry, library/ the default namespace)."""
    first, _, rest = image.partition("/")
    if not rest:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


# Where the archived images are named and what k8s/ runs (xtask's
# LOCAL_NAMESPACE): a registry host no node can pull from by accident.
LOCAL_NAMESPACE = "localhost/pi-gcd"


def registry_host(image: str) -> str:
    """The registry a runtime pulls `image` from: a first component with a
    '.' or ':', or `localhost`, is a host; anything else means Docker Hub."""
    return normalized_image(image).partition("/")[0]


def workspace_version() -> str:
    with (ROOT / "Cargo.toml").open("rb") as stream:
        return tomllib.load(stream)["workspace"]["package"]["version"]


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if o.kind in WORKLOAD_KINDS]


def pod_spec(workload: Obj) -> dict:
    if workload.kind == "Pod":
        return workload.body.get("spec", {})
    return workload.body.get("spec", {}).get("template", {}).get("spec", {})


def pod_labels(workload: Obj) -> dict:
    if workload.kind == "Pod":
        return workload.body.get("metadata", {}).get("labels", {}) or {}
    return workload.body.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def containers(workload: Obj) -> list[dict]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", []) or []) + list(spec.get("containers", []) or [])


def find(objects: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in objects if o.kind == kind and o.name == name), None)


def binary_name(container: dict) -> str:
    """The service a container runs, from its image: localhost/pi-gcd/gcd:0.1.0 -> gcd."""
    image = container.get("image", "")
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def container_env(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", []) or []}


def env_value(container: dict, name: str) -> str | None:
    """A plain `value:` env entry, or None when absent or computed."""
    entry = container_env(container).get(name)
    if entry is None or "value" not in entry:
        return None
    return str(entry["value"])


# ---------------------------------------------------------------- quantities


def cpu_millis(quantity) -> float:
    text = str(quantity)
    if text.endswith("m"):
        return float(text[:-1])
    return float(text) * 1000


_MEMORY_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
}


def memory_bytes(quantity) -> float:
    text = str(quantity)
    for suffix in sorted(_MEMORY_SUFFIX, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _MEMORY_SUFFIX[suffix]
    return float(text)


def resolve_env(container: dict) -> dict[str, str]:
    """The environment the container's process sees, computing
    `resourceFieldRef` entries the way the kubelet does (rounded up)."""
    resolved = {}
    for name, entry in container_env(container).items():
        if "value" in entry:
            resolved[name] = str(entry["value"])
            continue
        ref = entry.get("valueFrom", {}).get("resourceFieldRef")
        if ref is None:
            raise ValueError(f"env {name}: only value and resourceFieldRef are understood")
        section, resource = ref["resource"].split(".", 1)
        quantity = container["resources"][section][resource]
        divisor = ref.get("divisor", "1")
        if resource == "cpu":
            value = cpu_millis(quantity) / cpu_millis(divisor)
        else:
            value = memory_bytes(quantity) / memory_bytes(divisor)
        resolved[name] = str(math.ceil(value))
    return resolved


# ---------------------------------------------------------------- selectors


def selector_labels(selector: dict | None) -> dict | None:
    """matchLabels of a label selector; None for forms we do not resolve."""
    if selector is None:
        return None
    if selector.get("matchExpressions"):
        return None
    return dict(selector.get("matchLabels") or {})


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def selects_some(selector: dict | None, labels: dict) -> bool:
    """Whether a resolved selector matches; {} matches every pod, None
    (matchExpressions, which we do not evaluate) matches none."""
    return selector is not None and selects(selector, labels)


def selected_workloads(objects: list[Obj], selector: dict, namespace: str) -> list[Obj]:
    return [
        w for w in workloads(objects)
        if w.namespace == namespace and selects(selector, pod_labels(w))
    ]


def check_selectors(objects: list[Obj]) -> list[str]:
    problems = []
    for w in workloads(objects):
        if w.kind == "Pod":
            continue
        selector = selector_labels(w.body.get("spec", {}).get("selector"))
        if not selector:
            problems.append(f"{w}: selector must be a non-empty matchLabels")
        elif not selects(selector, pod_labels(w)):
            problems.append(f"{w}: selector {selector} does not match its pod labels {pod_labels(w)}")
    for o in objects:
        if o.kind == "Service":
            selector = o.body.get("spec", {}).get("selector")
            what = "Service selector"
        elif o.kind == "PodDisruptionBudget":
            selector = selector_labels(o.body.get("spec", {}).get("selector"))
            what = "PodDisruptionBudget selector"
        elif o.kind == "NetworkPolicy":
            selector = selector_labels(o.body.get("spec", {}).get("podSelector"))
            what = "NetworkPolicy podSelector"
        else:
            continue
        if not selector:
            problems.append(f"{o}: {what} must be a non-empty matchLabels")
            continue
        matched = selected_workloads(objects, selector, o.namespace)
        if len(matched) != 1:
            names = [str(w) for w in matched]
            problems.append(f"{o}: {what} {selector} must select the pods of exactly one workload, selects {names}")
    return problems


# ---------------------------------------------------------------- ports


def container_port(container: dict, port) -> int | None:
    """The containerPort that `port` (a number or a port name) stands for."""
    for declared in container.get("ports", []) or []:
        if isinstance(port, str) and not port.isdigit():
            if declared.get("name") == port:
                return declared["containerPort"]
        elif int(port) == declared["containerPort"]:
            return declared["containerPort"]
    return None


def service_target_ports(service: Obj, objects: list[Obj]) -> tuple[list[tuple[dict, int | None]], list[str]]:
    """Each Service port with the containerPort it reaches (None if none)."""
    problems = []
    selector = service.body.get("spec", {}).get("selector") or {}
    matched = selected_workloads(objects, selector, service.namespace)
    result = []
    for port in service.body.get("spec", {}).get("ports", []) or []:
        target = port.get("targetPort", port.get("port"))
        reached = set()
        for w in matched:
            found = [container_port(c, target) for c in pod_spec(w).get("containers", [])]
            found = [p for p in found if p is not None]
            if not found:
                problems.append(f"{service}: targetPort {target!r} is not a port of any container of {w}")
            reached.update(found)
        result.append((port, reached.pop() if len(reached) == 1 else None))
    return result, problems


def check_ports(objects: list[Obj]) -> list[str]:
    problems = []
    for service in (o for o in objects if o.kind == "Service"):
        _, found = service_target_ports(service, objects)
        problems += found
    for w in workloads(objects):
        for c in containers(w):
            names = [p.get("name") for p in c.get("ports", []) or [] if p.get("name")]
            if len(names) != len(set(names)):
                problems.append(f"{w}: container {c['name']} has duplicate port names {names}")
            for probe_kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(probe_kind)
                if not probe:
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe and container_port(c, probe[handler].get("port")) is None:
                        problems.append(
                            f"{w}: {probe_kind} of {c['name']} uses port {probe[handler].get('port')!r}, "
                            "which the container does not declare"
                        )
    return problems


# ---------------------------------------------------------------- exposure


def check_api_exposure(objects: list[Obj]) -> list[str]:
    """The api is published on nodePort 30080, with its HTTP port only."""
    problems = []
    api = find(objects, "Deployment", "api")
    if api is None:
        return ["no Deployment api"]
    public = [
        o for o in objects
        if o.kind == "Service"
        and o.body.get("spec", {}).get("type") in ("NodePort", "LoadBalancer")
    ]
    api_public = [
        s for s in public
        if api in selected_workloads(objects, s.body["spec"].get("selector") or {}, s.namespace)
    ]
    if len(api_public) != 1:
        return problems + [f"exactly one NodePort Service must select the api pods, found {[str(s) for s in api_public]}"]
    service = api_public[0]
    if service.body["spec"]["type"] != "NodePort":
        problems.append(f"{service}: must be type NodePort")
    ports, found = service_target_ports(service, objects)
    problems += found
    if len(ports) != 1:
        problems.append(f"{service}: must publish exactly one port (the public HTTP port), publishes {len(ports)}")
    for port, reached in ports:
        if port.get("nodePort") != NODE_PORT:
            problems.append(f"{service}: nodePort must be {NODE_PORT}, is {port.get('nodePort')}")
        if reached != API_HTTP_PORT:
            problems.append(f"{service}: port {port.get('port')} reaches container port {reached}, must be {API_HTTP_PORT} only")
    return problems


def network_policies_of(objects: list[Obj], workload: Obj) -> list[Obj]:
    """The NetworkPolicies that select the workload's pods."""
    return [
        o for o in objects
        if o.kind == "NetworkPolicy"
        and o.namespace == workload.namespace
        and selects_some(selector_labels(o.body["spec"].get("podSelector")), pod_labels(workload))
    ]


def check_api_network_policy(objects: list[Obj]) -> list[str]:
    """A NetworkPolicy selects the api pods: the public HTTP port is open to
    everyone (the NodePort), the admin port only to chosen peers
    (Prometheus), never to every pod of the cluster."""
    api = find(objects, "Deployment", "api")
    if api is None:
        return ["no Deployment api"]
    container = pod_spec(api)["containers"][0]
    admin_port = container_port(container, "admin")
    policies = network_policies_of(objects, api)
    if not policies:
        return ["no NetworkPolicy selects the api pods: any pod could reach its admin port"]
    problems = []
    public_open = False
    for policy in policies:
        spec = policy.body["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            problems.append(f"{policy}: policyTypes must include Ingress")
        for index, rule in enumerate(spec.get("ingress", []) or []):
            ports = {container_port(container, p.get("port")) for p in rule.get("ports", []) or []}
            everyone = not rule.get("from")
            if everyone and (not ports or admin_port in ports):
                problems.append(f"{policy}: ingress[{index}] admits everyone to the admin port {admin_port}")
            if everyone and API_HTTP_PORT in ports:
                public_open = True
    if not public_open:
        problems.append(f"no NetworkPolicy rule admits everyone to the api's HTTP port {API_HTTP_PORT} (the NodePort)")
    return problems


def check_gcd_internal(objects: list[Obj]) -> list[str]:
    """gcd is reachable only through a headless Service and only from api pods."""
    problems = []
    gcd = find(objects, "Deployment", "gcd")
    api = find(objects, "Deployment", "api")
    if gcd is None or api is None:
        return ["Deployments gcd and api must both exist"]
    for service in (o for o in objects if o.kind == "Service"):
        spec = service.body.get("spec", {})
        if gcd not in selected_workloads(objects, spec.get("selector") or {}, service.namespace):
            continue
        if spec.get("type", "ClusterIP") != "ClusterIP":
            problems.append(f"{service}: selects gcd pods, must be ClusterIP (headless), is {spec.get('type')}")
        if spec.get("clusterIP") != "None":
            problems.append(f"{service}: selects gcd pods, must be headless (clusterIP: None)")
        if spec.get("externalIPs") or any("nodePort" in p for p in spec.get("ports", [])):
            problems.append(f"{service}: gcd must not be exposed through externalIPs or node ports")
        if spec.get("publishNotReadyAddresses"):
            problems.append(f"{service}: must not publish not-ready (draining) gcd pods")
    headless = find(objects, "Service", GCD_SERVICE)
    if headless is None:
        problems.append(f"no Service {GCD_SERVICE}")
    else:
        ports, found = service_target_ports(headless, objects)
        problems += found
        if [(p.get("port"), reached) for p, reached in ports] != [(GCD_GRPC_PORT, GCD_GRPC_PORT)]:
            problems.append(f"{headless}: must publish only port {GCD_GRPC_PORT} to the gRPC container port")
        if headless.namespace != gcd.namespace:
            problems.append(f"{headless}: must be in the namespace of the gcd pods")

    gcd_labels, api_labels = pod_labels(gcd), pod_labels(api)
    policies = network_policies_of(objects, gcd)
    if not policies:
        problems.append("no NetworkPolicy selects the gcd pods")
    for policy in policies:
        spec = policy.body["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            problems.append(f"{policy}: policyTypes must include Ingress")
        for index, rule in enumerate(spec.get("ingress", []) or []):
            ports = [p.get("port") for p in rule.get("ports", []) or []]
            gcd_container = pod_spec(gcd)["containers"][0]
            resolved = {container_port(gcd_container, p) if p is not None else None for p in ports}
            admits_grpc = not ports or None in resolved or GCD_GRPC_PORT in resolved
            if None in resolved and ports:
                problems.append(f"{policy}: ingress[{index}] names a port the gcd container does not declare: {ports}")
            if not admits_grpc:
                continue
            peers = rule.get("from")
            if not peers:
                problems.append(f"{policy}: ingress[{index}] admits everyone to the gRPC port")
                continue
            for peer in peers:
                selector = selector_labels(peer.get("podSelector"))
                if "ipBlock" in peer or "namespaceSelector" in peer or not selector:
                    problems.append(f"{policy}: ingress[{index}] admits {peer} to the gRPC port; only api pods of this namespace may")
                elif not selects(selector, api_labels) or selects(selector, gcd_labels):
                    problems.append(f"{policy}: ingress[{index}] admits pods {selector} to the gRPC port, which are not the api pods")
    return problems


# ---------------------------------------------------------------- pods


def check_pod_security(objects: list[Obj]) -> list[str]:
    """The restricted Pod Security Standard, on every container."""
    problems = []
    for w in workloads(objects):
        spec = pod_spec(w)
        pod_sc = spec.get("securityContext", {}) or {}
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{w}: automountServiceAccountToken must be false")
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                problems.append(f"{w}: {host} must not be set")
        for volume in spec.get("volumes", []) or []:
            if "hostPath" in volume:
                problems.append(f"{w}: hostPath volume {volume.get('name')}")
        for c in containers(w):
            sc = c.get("securityContext", {}) or {}

            def effective(key, sc=sc):
                return sc.get(key, pod_sc.get(key))

            where = f"{w}: container {c['name']}"
            if effective("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot must be true")
            if effective("runAsUser") != 65532:
                problems.append(f"{where}: runAsUser must be 65532, is {effective('runAsUser')}")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                problems.append(f"{where}: must not be privileged")
            caps = sc.get("capabilities", {}) or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{where}: capabilities must drop ALL")
            if caps.get("add"):
                problems.append(f"{where}: must not add capabilities {caps['add']}")
            seccomp = (effective("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile must be RuntimeDefault, is {seccomp}")
    return problems


def check_resources(objects: list[Obj]) -> list[str]:
    problems = []
    total_limit = 0.0
    for w in workloads(objects):
        replicas = w.body.get("spec", {}).get("replicas", 1) if w.kind != "Pod" else 1
        for c in containers(w):
            resources = c.get("resources", {}) or {}
            where = f"{w}: container {c['name']}"
            missing = [
                f"{section}.{resource}"
                for section in ("requests", "limits")
                for resource in ("cpu", "memory")
                if resource not in (resources.get(section) or {})
            ]
            if missing:
                problems.append(f"{where}: resources must set {missing}")
                continue
            req, lim = resources["requests"], resources["limits"]
            if cpu_millis(req["cpu"]) > cpu_millis(lim["cpu"]):
                problems.append(f"{where}: cpu request above its limit")
            if memory_bytes(req["memory"]) > memory_bytes(lim["memory"]):
                problems.append(f"{where}: memory request above its limit")
            total_limit += replicas * memory_bytes(lim["memory"])
    if total_limit > TOTAL_MEMORY_LIMIT_BUDGET:
        problems.append(
            f"memory limits of all replicas add up to {total_limit / 2**20:.0f} MiB, "
            f"more than the {TOTAL_MEMORY_LIMIT_BUDGET / 2**20:.0f} MiB a 1 GB Pi can spare"
        )
    return problems


def check_rollout(objects: list[Obj]) -> list[str]:
    """Replica counts, rolling updates that never go below them, PDBs."""
    problems = []
    minimum = {"gcd": 3, "api": 2}
    for name, least in minimum.items():
        deployment = find(objects, "Deployment", name)
        if deployment is None:
            problems.append(f"no Deployment {name}")
            continue
        spec = deployment.body["spec"]
        replicas = spec.get("replicas", 1)
        if (name == "gcd" and replicas != least) or replicas < least:
            problems.append(f"{deployment}: replicas must be {'exactly' if name == 'gcd' else 'at least'} {least}, is {replicas}")
        strategy = spec.get("strategy", {}) or {}
        rolling = strategy.get("rollingUpdate", {}) or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            problems.append(f"{deployment}: strategy must be RollingUpdate")
        if str(rolling.get("maxUnavailable", "25%")) not in ("0", "0%"):
            problems.append(f"{deployment}: rollingUpdate.maxUnavailable must be 0, is {rolling.get('maxUnavailable', '25%')!r}")
        surge = str(rolling.get("maxSurge", "25%"))
        if surge in ("0", "0%"):
            problems.append(f"{deployment}: rollingUpdate.maxSurge must be at least 1")
    gcd = find(objects, "Deployment", "gcd")
    if gcd is not None:
        pdbs = [
            o for o in objects
            if o.kind == "PodDisruptionBudget"
            and o.namespace == gcd.namespace
            and selects_some(selector_labels(o.body["spec"].get("selector")), pod_labels(gcd))
        ]
        if not pdbs:
            problems.append("no PodDisruptionBudget selects the gcd pods")
        for pdb in pdbs:
            spec = pdb.body["spec"]
            replicas = gcd.body["spec"].get("replicas", 1)
            if "minAvailable" in spec and int(str(spec["minAvailable"]).rstrip("%")) >= (100 if str(spec["minAvailable"]).endswith("%") else replicas):
                problems.append(f"{pdb}: minAvailable leaves no room for a node drain")
            if "maxUnavailable" in spec and str(spec["maxUnavailable"]) in ("0", "0%"):
                problems.append(f"{pdb}: maxUnavailable 0 blocks every node drain")
    return problems


def check_labels_and_images(objects: list[Obj], version: str) -> list[str]:
    problems = []
    for o in objects:
        labels = o.body.get("metadata", {}).get("labels", {}) or {}
        if labels.get("app.kubernetes.io/part-of") != "pi-gcd":
            problems.append(f"{o}: label app.kubernetes.io/part-of must be pi-gcd")
    for w in workloads(objects):
        labels = pod_labels(w)
        missing = [key for key in RECOMMENDED_LABELS if not labels.get(key)]
        if missing:
            problems.append(f"{w}: pod labels lack {missing}")
        if labels.get("app.kubernetes.io/version") != version:
            problems.append(f"{w}: pod label app.kubernetes.io/version must be {version}, is {labels.get('app.kubernetes.io/version')}")
        for c in containers(w):
            expected = f"{LOCAL_NAMESPACE}/{binary_name(c)}:{version}"
            if registry_host(c.get("image", "")) != "localhost":
                problems.append(f"{w}: container {c['name']} image {c.get('image')} would be pulled from "
                                f"{registry_host(c.get('image', ''))}, a public registry")
            if c.get("image") != expected:
                problems.append(f"{w}: container {c['name']} image must be {expected}, is {c.get('image')}")
            if c.get("imagePullPolicy") != "IfNotPresent":
                problems.append(f"{w}: container {c['name']} imagePullPolicy must be IfNotPresent (imported images)")
    return problems


def check_namespace_order(objects: list[Obj]) -> list[str]:
    """`kubectl create -f k8s` in one pass: a namespace exists before use."""
    problems = []
    created = set()
    for o in objects:
        if o.kind == "Namespace":
            created.add(o.name)
            continue
        namespace = o.body.get("metadata", {}).get("namespace")
        if namespace and namespace not in ("default",) and namespace not in created:
            problems.append(f"{o}: namespace {namespace} is not created by an earlier file or document")
    return problems


# ---------------------------------------------------------------- binaries


def check_env_and_args(objects: list[Obj], binaries: dict[str, Binary]) -> list[str]:
    """Every env variable and flag a manifest passes exists in `--help`, and
    values the binaries would reject are caught here rather than in a
    crash-looping pod."""
    problems = []
    for w in workloads(objects):
        for c in containers(w):
            name = binary_name(c)
            binary = binaries.get(name)
            where = f"{w}: container {c['name']}"
            if binary is None:
                problems.append(f"{where}: runs {name}, which is not a binary of this project")
                continue
            if c.get("command"):
                problems.append(f"{where}: must not override the image's entrypoint")
            for env in container_env(c):
                if not binary.knows_env(env):
                    problems.append(f"{where}: env {env} is not in `{name} --help`")
            for arg in c.get("args", []) or []:
                flag = str(arg).split("=", 1)[0]
                if flag.startswith("-") and flag not in binary.flags:
                    problems.append(f"{where}: argument {flag} is not in `{name} --help`")
            try:
                env = resolve_env(c)
            except (KeyError, ValueError) as err:
                problems.append(f"{where}: cannot resolve env: {err}")
                continue
            for key, value in env.items():
                if key.endswith(("_MS", "_THREADS", "_STREAMS", "_IN_FLIGHT", "_CONNECTIONS")) and not value.isdigit():
                    problems.append(f"{where}: env {key}={value!r} must be a non-negative integer")
    return problems


def check_grace_period(objects: list[Obj], binaries: dict[str, Binary]) -> list[str]:
    """The kubelet waits terminationGracePeriodSeconds before SIGKILL; the
    process must be done by then: shutdown delay + drain timeout + margin."""
    problems = []
    for w in workloads(objects):
        grace = pod_spec(w).get("terminationGracePeriodSeconds", 30)
        for c in pod_spec(w).get("containers", []):
            binary = binaries.get(binary_name(c))
            if binary is None:
                continue
            prefix = binary.name.upper()
            try:
                env = resolve_env(c)
            except (KeyError, ValueError):
                continue  # reported by check_env_and_args
            total_ms = 0
            for setting in ("SHUTDOWN_DELAY_MS", "DRAIN_TIMEOUT_MS"):
                key = f"{prefix}_{setting}"
                value = env.get(key, binary.env_default(key))
                if value is None or not value.isdigit():
                    problems.append(f"{w}: cannot tell {key} (not set, no default in --help)")
                    continue
                total_ms += int(value)
            if total_ms / 1000 + GRACE_MARGIN_S > grace:
                problems.append(
                    f"{w}: terminationGracePeriodSeconds {grace} leaves less than {GRACE_MARGIN_S} s "
                    f"after the {total_ms / 1000:g} s shutdown delay + drain timeout"
                )
            for probe_kind in ("livenessProbe",):
                probe = c.get(probe_kind) or {}
                if "grpc" in probe or probe.get("httpGet", {}).get("path") == "/readyz":
                    # Health turns NOT_SERVING while draining: liveness on it
                    # must not be able to fail within the shutdown.
                    window = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
                    if window * 1000 <= total_ms:
                        problems.append(
                            f"{w}: livenessProbe on draining-aware health fails after {window} s, "
                            f"within the {total_ms / 1000:g} s shutdown: a draining pod would be restarted"
                        )
    return problems


def check_gcd_address(objects: list[Obj]) -> list[str]:
    """GCD_ADDR names the headless Service on its port."""
    api = find(objects, "Deployment", "api")
    headless = find(objects, "Service", GCD_SERVICE)
    if api is None or headless is None:
        return ["Deployment api and Service gcd-service must both exist"]
    container = pod_spec(api)["containers"][0]
    addr = env_value(container, "GCD_ADDR")
    ports = [p["port"] for p in headless.body["spec"].get("ports", [])]
    expected = f"{GCD_SERVICE}:{GCD_GRPC_PORT}"
    problems = []
    if addr != expected:
        problems.append(f"{api}: GCD_ADDR must be {expected}, is {addr!r}")
    if GCD_GRPC_PORT not in ports:
        problems.append(f"{headless}: does not publish port {GCD_GRPC_PORT}")
    if api.namespace != headless.namespace:
        problems.append(f"{api}: the short name {GCD_SERVICE} resolves only in its own namespace")
    return problems


# CoreDNS's default TTL for Service records (k3s); answers may be cached
# that long after a pod leaves the endpoints.
COREDNS_TTL_MS = 5000


def check_discovery_window(objects: list[Obj]) -> list[str]:
    """A terminating gcd pod keeps serving until every api pod has
    re-resolved gcd-service and dropped it: the gcd shutdown delay must cover
    the api's re-resolve interval plus the DNS cache TTL."""
    gcd = find(objects, "Deployment", "gcd")
    api = find(objects, "Deployment", "api")
    if gcd is None or api is None:
        return ["Deployments gcd and api must both exist"]
    delay = env_value(pod_spec(gcd)["containers"][0], "GCD_SHUTDOWN_DELAY_MS")
    interval = env_value(pod_spec(api)["containers"][0], "API_RESOLVE_INTERVAL_MS")
    if delay is None or interval is None or not (delay.isdigit() and interval.isdigit()):
        return [f"{gcd} and {api}: GCD_SHUTDOWN_DELAY_MS and API_RESOLVE_INTERVAL_MS must be set explicitly"]
    if int(delay) < int(interval) + COREDNS_TTL_MS:
        return [
            f"{gcd}: GCD_SHUTDOWN_DELAY_MS {delay} is shorter than the api's re-resolve interval "
            f"{interval} ms + the {COREDNS_TTL_MS} ms DNS TTL: api pods may still call a stopped gcd"
        ]
    return []


ALL_CHECKS = (
    check_discovery_window,
    check_namespace_order,
    check_selectors,
    check_ports,
    check_api_exposure,
    check_api_network_policy,
    check_gcd_internal,
    check_pod_security,
    check_resources,
    check_rollout,
    check_gcd_address,
)


def check_memory_budget(objects: list[Obj], binaries: dict[str, Binary]) -> list[str]:
    """Each binary, given its container's env and memory limit, finds that
    the caps (set there, or derived from the limit) fit the limit: it runs
    `--check-config`, the same arithmetic it does at start-up."""
    problems = []
    for w in workloads(objects):
        for c in containers(w):
            binary = binaries.get(binary_name(c))
            limit = (c.get("resources", {}).get("limits") or {}).get("memory")
            if binary is None or limit is None:
                continue
            try:
                env = resolve_env(c)
            except (KeyError, ValueError):
                continue  # reported by check_env_and_args
            env[f"{binary.name.upper()}_MEMORY_LIMIT"] = str(int(memory_bytes(limit)))
            result = subprocess.run(
                [str(binary.path), "--check-config"],
                env={"PATH": "/usr/bin:/bin", **env},
                capture_output=True,
                text=True,
                timeout=30,
            )
            if result.returncode != 0:
                why = (result.stderr + result.stdout).strip()
                problems.append(f"{w}: its caps do not fit its {limit} memory limit: {why}")
    return problems


def check_all(objects: list[Obj], binaries: dict[str, Binary], version: str) -> list[str]:
    problems = []
    for check in ALL_CHECKS:
        problems += check(objects)
    problems += check_labels_and_images(objects, version)
    problems += check_env_and_args(objects, binaries)
    problems += check_grace_period(objects, binaries)
    problems += check_memory_budget(objects, binaries)
    return problems


# ---------------------------------------------------------------- build


def build_binaries() -> dict[str, Path]:
    """Builds the host gcd and api (a no-op when they are up to date) and
    returns their paths, wherever CARGO_TARGET_DIR puts them."""
    import json

    result = subprocess.run(
        ["cargo", "build", "--locked", "-p", "gcd", "-p", "api", "--bins", "--message-format=json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cargo build failed:\n{result.stderr[-4000:]}")
    paths = {}
    for line in result.stdout.splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            paths[message["target"]["name"]] = Path(message["executable"])
    return paths


def read_help(path: Path) -> str:
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{path} --help exited {result.returncode}: {result.stderr}")
    return result.stdout


# ---------------------------------------------------------------- schemas


def schema_problems(objects: list[Obj], kubernetes_version: str) -> list[str]:
    """Strict validation against the OpenAPI schemas of one Kubernetes
    version: unknown fields, wrong types, and an apiVersion/kind that
    version does not serve are all problems (the CLI only warns on the last)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, major_minor

    problems = []
    for o in objects:
        try:
            used = kubernetes_validate.validate(o.body, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(item) for item in err.path)
            problems.append(f"{o}: {path}: {err.message}")
            continue
        except SchemaNotFoundError as err:
            problems.append(f"{o}: {err.message}")
            continue
        if used != major_minor(kubernetes_version):
            problems.append(f"{o}: validated against {used}, not {kubernetes_version}")
    return problems
