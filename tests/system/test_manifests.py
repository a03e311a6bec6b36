"""The manifests in k8s/ deploy as-is: strict schemas for Kubernetes 1.27 and
the newest version kubernetes-validate knows, plus the cross-references and
policies no schema sees (k8s_manifests.py). Negative tests break a copy in
memory and prove each kind of mistake is caught."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess

import pytest
import yaml
from kubernetes_validate.utils import latest_version

import k8s_manifests as km

OLDEST_SUPPORTED = "1.27.0"


@pytest.fixture(scope="session")
def objects() -> list[km.Obj]:
    return km.load()


@pytest.fixture(scope="session")
def version() -> str:
    return km.workspace_version()


@pytest.fixture(scope="session")
def binaries() -> dict[str, km.Binary]:
    paths = km.build_binaries()
    missing = {"gcd", "api"} - paths.keys()
    assert not missing, f"cargo build did not report the binaries {missing}"
    return {name: km.Binary(name, km.read_help(paths[name]), paths[name]) for name in ("gcd", "api")}


def assert_none(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the real manifests


def test_directory_holds_only_plain_objects(objects):
    files = sorted(p.name for p in km.K8S_DIR.iterdir())
    assert not [f for f in files if f.lower().startswith("kustomization")], files
    assert all(f.endswith(".yaml") for f in files), files
    for o in objects:
        assert o.body.get("apiVersion") and o.kind and o.name, f"{o}: apiVersion, kind and name are required"
        assert o.kind != "List", f"{o}: plain objects only"
    kinds = sorted((o.kind, o.name) for o in objects)
    assert kinds == sorted([
        ("Namespace", "pi-gcd"),
        ("Deployment", "gcd"), ("Service", "gcd-service"),
        ("PodDisruptionBudget", "gcd"), ("NetworkPolicy", "gcd"),
        ("Deployment", "api"), ("Service", "api"), ("PodDisruptionBudget", "api"),
        ("NetworkPolicy", "api"),
    ])


@pytest.mark.parametrize("kubernetes_version", [OLDEST_SUPPORTED, latest_version()])
def test_schemas_strict(objects, kubernetes_version):
    assert_none(km.schema_problems(objects, kubernetes_version))


def test_created_in_one_pass(objects):
    assert_none(km.check_namespace_order(objects))


def test_selectors_match_pod_labels(objects):
    assert_none(km.check_selectors(objects))


def test_service_and_probe_ports_exist(objects):
    assert_none(km.check_ports(objects))


def test_api_published_on_node_port_30080_http_only(objects):
    assert_none(km.check_api_exposure(objects))


def test_gcd_internal_only(objects):
    assert_none(km.check_gcd_internal(objects))


def test_restricted_pod_security(objects):
    assert_none(km.check_pod_security(objects))


def test_resources_sized_for_a_pi(objects):
    assert_none(km.check_resources(objects))


def test_rollout_never_below_desired_replicas(objects):
    assert_none(km.check_rollout(objects))


def test_labels_and_images_follow_the_version(objects, version):
    assert_none(km.check_labels_and_images(objects, version))


def test_api_points_at_headless_gcd_service(objects):
    assert_none(km.check_gcd_address(objects))


def test_gcd_drains_until_the_api_has_dropped_it(objects):
    assert_none(km.check_discovery_window(objects))


def test_env_and_args_exist_in_the_binaries(objects, binaries):
    assert_none(km.check_env_and_args(objects, binaries))


def test_grace_period_covers_shutdown(objects, binaries):
    assert_none(km.check_grace_period(objects, binaries))


def test_help_parsing_sees_flags_env_and_defaults(binaries):
    """The --help-based checks only mean something if parsing works."""
    api = binaries["api"]
    assert "--gcd" in api.flags and "--listen" in api.flags
    assert api.knows_env("GCD_ADDR") and api.knows_env("RUST_LOG")
    assert not api.knows_env("GCD_ADD") and not api.knows_env("GCD")
    assert binaries["gcd"].env_default("GCD_DRAIN_TIMEOUT_MS").isdigit()


# ---------------------------------------------------------------- the checker catches mistakes


def _get(objects, kind, name):
    found = km.find(objects, kind, name)
    assert found is not None, f"{kind}/{name}"
    return found.body


def _container(objects, name):
    return km.pod_spec(km.find(objects, "Deployment", name))["containers"][0]


def _env(objects, deployment, name, value):
    for entry in _container(objects, deployment)["env"]:
        if entry["name"] == name:
            entry["value"] = value
            return
    raise AssertionError(f"no env {name} in {deployment}")


def _set_env(objects, deployment, name, value):
    env = _container(objects, deployment)["env"]
    env[:] = [entry for entry in env if entry["name"] != name] + [{"name": name, "value": value}]


def _move_namespace_last(objects):
    namespace = next(o for o in objects if o.kind == "Namespace")
    objects.remove(namespace)
    objects.append(namespace)


MUTATIONS = {
    "service selector matches no pods": (
        lambda o: _get(o, "Service", "gcd-service")["spec"]["selector"].update({"app.kubernetes.io/instance": "gdc"}),
        "must select the pods of exactly one workload",
    ),
    "deployment selector misses its template": (
        lambda o: _get(o, "Deployment", "api")["spec"]["template"]["metadata"]["labels"].pop("app.kubernetes.io/instance"),
        "does not match its pod labels",
    ),
    "pdb selector matches no pods": (
        lambda o: _get(o, "PodDisruptionBudget", "gcd")["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "gdc"}),
        "PodDisruptionBudget selector",
    ),
    "named targetPort missing": (
        lambda o: _get(o, "Service", "api")["spec"]["ports"][0].update({"targetPort": "htpp"}),
        "targetPort 'htpp' is not a port",
    ),
    "probe on an undeclared port": (
        lambda o: _container(o, "gcd")["readinessProbe"]["grpc"].update({"port": 3001}),
        "readinessProbe of gcd uses port 3001",
    ),
    "wrong node port": (
        lambda o: _get(o, "Service", "api")["spec"]["ports"][0].update({"nodePort": 30081}),
        "nodePort must be 30080",
    ),
    "admin port published": (
        lambda o: _get(o, "Service", "api")["spec"]["ports"].append(
            {"name": "admin", "port": 9091, "targetPort": "admin", "nodePort": 30091}
        ),
        "must publish exactly one port",
    ),
    "gcd on a node port": (
        lambda o: _get(o, "Service", "gcd-service")["spec"].update({"type": "NodePort", "clusterIP": None}),
        "must be ClusterIP (headless)",
    ),
    "gcd not headless": (
        lambda o: _get(o, "Service", "gcd-service")["spec"].pop("clusterIP"),
        "must be headless",
    ),
    "network policy admits every namespace to gRPC": (
        lambda o: _get(o, "NetworkPolicy", "gcd")["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}}),
        "to the gRPC port; only api pods",
    ),
    "network policy admits everyone on all ports": (
        lambda o: _get(o, "NetworkPolicy", "gcd")["spec"]["ingress"].append({}),
        "admits everyone to the gRPC port",
    ),
    "network policy missing": (
        lambda o: o.remove(km.find(o, "NetworkPolicy", "gcd")),
        "no NetworkPolicy selects the gcd pods",
    ),
    "api network policy missing": (
        lambda o: o.remove(km.find(o, "NetworkPolicy", "api")),
        "no NetworkPolicy selects the api pods",
    ),
    "api admin port open to every pod": (
        lambda o: _get(o, "NetworkPolicy", "api")["spec"]["ingress"].append({"ports": [{"port": 9091}]}),
        "admits everyone to the admin port",
    ),
    "api public port closed": (
        lambda o: _get(o, "NetworkPolicy", "api")["spec"]["ingress"].pop(0),
        "admits everyone to the api's HTTP port",
    ),
    "api caps beyond its memory limit": (
        lambda o: _set_env(o, "api", "API_MAX_CONNECTIONS", "5000"),
        "caps do not fit its 64Mi memory limit",
    ),
    "gcd memory limit below its budget": (
        lambda o: _container(o, "gcd")["resources"]["limits"].update({"memory": "8Mi"}),
        "caps do not fit its 8Mi memory limit",
    ),
    "may run as root": (
        lambda o: _container(o, "api")["securityContext"].update({"runAsNonRoot": False}),
        "runAsNonRoot must be true",
    ),
    "runs as uid 0": (
        lambda o: km.pod_spec(km.find(o, "Deployment", "gcd"))["securityContext"].update({"runAsUser": 0}),
        "runAsUser must be 65532, is 0",
    ),
    "seccomp unconfined": (
        lambda o: km.pod_spec(km.find(o, "Deployment", "api"))["securityContext"].update(
            {"seccompProfile": {"type": "Unconfined"}}
        ),
        "seccompProfile must be RuntimeDefault",
    ),
    "writable root filesystem": (
        lambda o: _container(o, "gcd")["securityContext"].update({"readOnlyRootFilesystem": False}),
        "readOnlyRootFilesystem must be true",
    ),
    "service account token mounted": (
        lambda o: km.pod_spec(km.find(o, "Deployment", "gcd")).pop("automountServiceAccountToken"),
        "automountServiceAccountToken must be false",
    ),
    "no memory limit": (
        lambda o: _container(o, "api")["resources"]["limits"].pop("memory"),
        "limits.memory",
    ),
    "rolling update drops below replicas": (
        lambda o: _get(o, "Deployment", "gcd")["spec"]["strategy"]["rollingUpdate"].update({"maxUnavailable": 1}),
        "maxUnavailable must be 0",
    ),
    "misspelt env variable": (
        lambda o: _container(o, "api")["env"].append({"name": "GCD_ADRR", "value": "gcd-service:3000"}),
        "env GCD_ADRR is not in `api --help`",
    ),
    "unknown argument": (
        lambda o: _container(o, "gcd").update({"args": ["--listen-addr=0.0.0.0:3000"]}),
        "argument --listen-addr is not in `gcd --help`",
    ),
    "grace period shorter than the drain": (
        lambda o: km.pod_spec(km.find(o, "Deployment", "gcd")).update({"terminationGracePeriodSeconds": 10}),
        "terminationGracePeriodSeconds 10",
    ),
    "gcd stops before the api re-resolves": (
        lambda o: _env(o, "api", "API_RESOLVE_INTERVAL_MS", "30000"),
        "shorter than the api's re-resolve interval",
    ),
    "api pointed elsewhere": (
        lambda o: _env(o, "api", "GCD_ADDR", "gcd:3000"),
        "GCD_ADDR must be gcd-service:3000",
    ),
    "image tag behind the workspace version": (
        lambda o: _container(o, "gcd").update({"image": "localhost/pi-gcd/gcd:0.0.9"}),
        "image must be localhost/pi-gcd/gcd:",
    ),
    "image name that means Docker Hub": (
        lambda o: _container(o, "api").update({"image": "pi-gcd/api:0.1.0"}),
        "would be pulled from docker.io, a public registry",
    ),
    "namespace created after its objects": (
        _move_namespace_last,
        "namespace pi-gcd is not created by an earlier",
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS.keys())
def test_checker_catches(objects, binaries, version, mutation):
    mutate, expected = MUTATIONS[mutation]
    broken = copy.deepcopy(objects)
    assert not km.check_all(broken, binaries, version), "the unmodified manifests must pass"
    mutate(broken)
    problems = km.check_all(broken, binaries, version)
    assert any(expected in p for p in problems), f"expected a problem containing {expected!r}, got {problems}"


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (lambda o: _get(o, "Deployment", "gcd")["spec"].update({"replica": 3}), "Additional properties are not allowed"),
        (lambda o: _container(o, "api")["env"][0].update({"value": 8080}), "is not of type"),
        (lambda o: _get(o, "PodDisruptionBudget", "gcd").update({"apiVersion": "policy/v1beta1"}), "Couldn't find schema"),
    ],
    ids=["unknown field", "env value not a string", "removed apiVersion"],
)
def test_schema_check_catches(objects, mutation, expected):
    broken = copy.deepcopy(objects)
    mutation(broken)
    problems = km.schema_problems(broken, OLDEST_SUPPORTED)
    assert any(expected in p for p in problems), problems


# ---------------------------------------------------------------- rendered for a registry


STANDINS = km.ROOT / "tests" / "system" / "standins"


def render(*args: str, bsd: bool = False) -> subprocess.CompletedProcess:
    """scripts/render-manifests.sh as a user runs it; with `bsd`, macOS's
    BSD date, stat, touch, sed and readlink first on PATH (standins/bsd/)."""
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY"}
    if bsd:
        env["PATH"] = os.pathsep.join([str(STANDINS / "bsd"), env.get("PATH", "/usr/bin:/bin")])
    return subprocess.run([str(km.ROOT / "scripts/render-manifests.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("bsd", [False, True], ids=["gnu", "bsd"])
def test_rendered_for_a_registry(tmp_path, binaries, version, bsd):
    """scripts/render-manifests.sh changes the image names (and, when asked,
    the version) and nothing else; the result passes every check; with the
    BSD tools as on a Mac, too."""
    out = tmp_path / "k8s"
    registry = "registry.lan:5000/pi"
    done = render("--registry", registry, "--out", str(out), bsd=bsd)
    assert done.returncode == 0, done.stderr
    original, rendered = km.load(), km.load(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in km.K8S_DIR.iterdir())
    images = sorted(c["image"] for w in km.workloads(rendered) for c in km.containers(w))
    assert images == [f"{registry}/api:{version}", f"{registry}/gcd:{version}"]
    for before, after in zip(original, rendered, strict=True):
        for w in km.workloads([after]):
            for c in km.containers(w):
                c["image"] = f"{km.LOCAL_NAMESPACE}/{km.binary_name(c)}:{version}"
        assert before.body == after.body, f"{after}: more than the image changed"
    assert_none(km.schema_problems(rendered, OLDEST_SUPPORTED))

    other = tmp_path / "k8s-next"
    done = render("--version", "9.8.7", "--out", str(other), bsd=bsd)
    assert done.returncode == 0, done.stderr
    next_version = km.load(other)
    assert_none(km.check_all(next_version, binaries, "9.8.7"))


def test_rendered_images_are_pinned_by_the_recorded_push(tmp_path, version):
    """After `build-arm.sh --registry REG` recorded a push in
    dist/images/<service>.pushed, the rendered image carries its digest;
    a record of another registry or version is not used."""
    workspace = tmp_path / "ws"
    shutil.copytree(km.ROOT, workspace, symlinks=True,
                    ignore=shutil.ignore_patterns("target", "dist", ".git", "__pycache__", ".pytest_cache"))
    (workspace / "dist" / "images").mkdir(parents=True)
    digest = "sha256:" + "5e" * 32
    (workspace / "dist" / "images" / "gcd.pushed").write_text(f"registry.lan:5000/gcd:{version}@{digest}\n")
    (workspace / "dist" / "images" / "api.pushed").write_text(f"other.lan/api:{version}@{digest}\n")
    env = {k: v for k, v in os.environ.items() if k != "REGISTRY"}
    env.setdefault("CARGO_TARGET_DIR", str(km.ROOT / "target"))
    done = subprocess.run([str(workspace / "scripts/render-manifests.sh"), "--registry", "registry.lan:5000"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rendered = km.load(workspace / "dist" / "k8s")
    images = {km.binary_name(c): c["image"] for w in km.workloads(rendered) for c in km.containers(w)}
    assert images == {"gcd": f"registry.lan:5000/gcd:{version}@{digest}", "api": f"registry.lan:5000/api:{version}"}
    assert "by tag only" in done.stderr, done.stderr


def test_no_image_name_resolves_to_a_public_registry():
    """Every image name the project writes (manifests, docs, Dockerfiles,
    scripts) is under localhost/ or a registry the user names: a short name
    like pi-gcd/gcd would mean docker.io/pi-gcd/gcd, a stranger's."""
    names = re.compile(r"(?<![\w./:{}-])((?:[\w.:{}-]+/)*pi-gcd/(?:gcd|api|\{gcd,api\}))(?=[:@])")
    places = [km.ROOT / "README.md", *sorted((km.ROOT / "docs").glob("*.md")), *sorted(km.K8S_DIR.glob("*.yaml")),
              *sorted((km.ROOT / "docker").glob("*")), *sorted((km.ROOT / "xtask" / "src").glob("*.rs"))]
    found = 0
    for path in places:
        # Rust tests spell out wrong names on purpose.
        text = path.read_text().split("#[cfg(test)]")[0]
        for number, line in enumerate(text.splitlines(), 1):
            for match in names.finditer(line):
                found += 1
                host = km.registry_host(match.group(1))
                assert host != "docker.io" or match.group(1).startswith("docker.io/"), \
                    f"{path.relative_to(km.ROOT)}:{number}: {match.group(1)} means Docker Hub"
    assert found >= 4, "the image names were not found at all"
    for image in (c["image"] for w in km.workloads(km.load()) for c in km.containers(w)):
        assert km.registry_host(image) == "localhost", image


@pytest.mark.parametrize("args", [["--registry", "bad registry"], ["--registry", "me"], ["--version", "1.0/x"],
                                  ["--bogus"]])
def test_render_rejects_bad_input(tmp_path, args):
    result = render(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- optional extras (k8s-extras/)

EXTRAS_DIR = km.ROOT / "k8s-extras"
# The Prometheus Operator's PodMonitor (monitoring.coreos.com/v1), the
# fields of its CRD schema that a scrape of this project could use:
# kubernetes-validate has no schema for a custom resource, so these are
# checked here instead.
PODMONITOR_SPEC_FIELDS = {
    "jobLabel", "podTargetLabels", "podMetricsEndpoints", "selector", "selectorMechanism", "namespaceSelector",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "keepDroppedTargets", "attachMetadata", "scrapeClass", "scrapeProtocols", "bodySizeLimit",
}
PODMONITOR_ENDPOINT_FIELDS = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
    "honorTimestamps", "trackTimestampsStaleness", "metricRelabelings", "relabelings", "proxyUrl", "enableHttp2",
    "filterRunning", "followRedirects", "basicAuth", "bearerTokenSecret", "authorization", "oauth2", "tlsConfig",
}
DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", duration))


def podmonitor_problems(monitor: dict, objects: list[km.Obj]) -> list[str]:
    problems = []
    if monitor.get("apiVersion") != "monitoring.coreos.com/v1" or monitor.get("kind") != "PodMonitor":
        problems.append(f"not a monitoring.coreos.com/v1 PodMonitor: {monitor.get('apiVersion')} {monitor.get('kind')}")
    namespace = next(o.name for o in objects if o.kind == "Namespace")
    if monitor.get("metadata", {}).get("namespace") != namespace:
        problems.append(f"must live in namespace {namespace} (it selects pods of its own namespace)")
    spec = monitor.get("spec", {})
    problems += [f"spec.{f} is no PodMonitor field" for f in sorted(set(spec) - PODMONITOR_SPEC_FIELDS)]
    deployments = [o for o in objects if o.kind == "Deployment"]
    selector = spec.get("selector") or {}
    selected = []
    for deployment in deployments:
        labels = km.pod_labels(deployment)
        matches = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
        for expression in selector.get("matchExpressions", []):
            value = labels.get(expression["key"])
            if expression["operator"] == "In":
                matches &= value in expression["values"]
            elif expression["operator"] == "Exists":
                matches &= value is not None
            else:
                problems.append(f"selector operator {expression['operator']} is not checked here")
        if matches:
            selected.append(deployment)
    if not selector:
        problems.append("an empty selector would scrape every pod of the namespace")
    if sorted(d.name for d in selected) != sorted(d.name for d in deployments):
        problems.append(f"selector picks {[d.name for d in selected]}, not every Deployment")
    endpoints = spec.get("podMetricsEndpoints") or []
    if not endpoints:
        problems.append("no podMetricsEndpoints")
    for endpoint in endpoints:
        problems += [f"podMetricsEndpoints: {f} is no field" for f in sorted(set(endpoint) - PODMONITOR_ENDPOINT_FIELDS)]
        for deployment in selected:
            names = {p.get("name") for c in km.containers(deployment) for p in c.get("ports", [])}
            if endpoint.get("port") not in names:
                problems.append(f"port {endpoint.get('port')!r} is not a named port of {deployment.name} ({names})")
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"path {endpoint.get('path')}: the admin ports serve /metrics")
        for key in ("interval", "scrapeTimeout"):
            if key in endpoint and not DURATION.match(str(endpoint[key])):
                problems.append(f"{key} {endpoint[key]!r} is not a Prometheus duration")
        if "interval" in endpoint and "scrapeTimeout" in endpoint and \
                _seconds(endpoint["scrapeTimeout"]) > _seconds(endpoint["interval"]):
            problems.append("scrapeTimeout longer than interval")
    return problems


def extras() -> list[dict]:
    documents = []
    for path in sorted(EXTRAS_DIR.glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def test_podmonitor_scrapes_both_deployments_admin_ports(objects):
    [monitor] = extras()
    assert_none(podmonitor_problems(monitor, objects))
    # The scrape is admitted: each admin port's NetworkPolicy lets the
    # operator's Prometheus pods in.
    for name in ("gcd", "api"):
        policy = km.find(objects, "NetworkPolicy", name)
        text = yaml.safe_dump(policy.body)
        assert "app.kubernetes.io/name: prometheus" in text, name


@pytest.mark.parametrize("mutation, expected", [
    (lambda m: m["spec"]["podMetricsEndpoints"][0].update({"port": "metrics"}), "is not a named port"),
    (lambda m: m["spec"]["podMetricsEndpoints"][0].update({"portt": "admin"}), "portt is no field"),
    (lambda m: m["spec"]["selector"]["matchExpressions"][0].update({"values": ["gcd"]}), "not every Deployment"),
    (lambda m: m.update({"apiVersion": "monitoring.coreos.com/v1alpha1"}), "not a monitoring.coreos.com/v1"),
    (lambda m: m["spec"]["podMetricsEndpoints"][0].update({"interval": "30"}), "not a Prometheus duration"),
    (lambda m: m["spec"]["podMetricsEndpoints"][0].update({"scrapeTimeout": "1m"}), "longer than interval"),
], ids=["unknown port", "misspelt field", "selects gcd only", "old apiVersion", "bad duration", "timeout too long"])
def test_podmonitor_check_catches(objects, mutation, expected):
    [monitor] = extras()
    broken = copy.deepcopy(monitor)
    mutation(broken)
    assert any(expected in p for p in podmonitor_problems(broken, objects)), podmonitor_problems(broken, objects)


def test_k8s_needs_no_custom_resource(objects):
    """`kubectl create -f k8s` works on a bare cluster: only built-in API
    groups there; custom resources (the PodMonitor) stay in k8s-extras/."""
    builtin = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1"}
    assert {o.body["apiVersion"] for o in objects} <= builtin, {o.body["apiVersion"] for o in objects}
