"""Every command README.md and docs/ show a user is right: each one is run
here, or its recorded command line is checked against what it names.

The commands are taken from the documents themselves: every line of every
`sh` block, and the inline commands of the prose that start with a program
of this project or one it tells users to run (kubectl, api, gcd, the
scripts, docker buildx, rustup, cargo install). A command no check knows
fails the test, so a new one in the docs needs a check here.

- project scripts run: `build-arm.sh` as `--dry-run` (and its recorded
  `docker buildx create` line compared with the documented one),
  `render-manifests.sh` into a scratch directory, `install-deps.sh` as
  `--dry-run`;
- `api`/`gcd --check-config` runs as documented and must print what the
  manifest's own environment gives;
- kubectl lines name the namespace, Deployments, Services, labels and ports
  the manifests define, and the throw-away grpcurl pod passes the
  NetworkPolicy and the restricted Pod Security Standard;
- containerd (`k3s ctr`), scp, podman and scanner lines name the archives
  and image names the build writes;
- curl and grpcurl lines ask for routes and methods the services serve;
- setup commands for other tools (cross, cargo-cyclonedx, rustup) match
  the hints the build itself prints, or are listed with why they are right.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

import k8s_manifests as km

ROOT = km.ROOT
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)
# Inline commands worth checking: those of programs the checks below know.
INLINE_PROGRAMS = ("kubectl ", "api --", "gcd --", "scripts/", "rustup ", "cargo install ", "docker buildx create",
                   "API_", "GCD_")


# Commands of other tools the docs tell users to run, each with why it is
# right; the build's own hints must say the same where it gives one.
SETUP = {
    "cargo install cross": "xtask/src/route.rs",
    "cargo install --locked cargo-cyclonedx": "xtask/src/route.rs",
    # cross runs the x86_64 toolchain inside its images; rustup installs it
    # on an arm64 Mac only when told to (cross's own instructions).
    "rustup toolchain install stable-x86_64-unknown-linux-gnu --force-non-host": None,
    # The memory cgroup on Raspberry Pi OS: the two kernel parameters k3s
    # asks for, appended to cmdline.txt's single line, read at boot.
    "sed -i 1 s/$/ cgroup_memory=1 cgroup_enable=memory/ /boot/firmware/cmdline.txt": None,
    "reboot": None,
}


@dataclass
class Command:
    doc: Path
    line: int
    text: str
    words: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # The comment lines right after it in its block: the output it shows.
    shown: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}: {self.text}"


def _simple_commands(text: str) -> list[tuple[list[str], dict[str, str]]]:
    """A line of shell as simple commands (words, leading assignments):
    split at `&&`, `|`, `;`, `&`; redirections, `for ... do` headers,
    `do`/`done` and `$(...)` wrappers dropped, `$(...)` bodies added as
    commands of their own."""
    out = []
    for inner in re.findall(r"\$\(([^()]*)\)", text):
        out += _simple_commands(inner)
    text = re.sub(r"\$\([^()]*\)", "SUBST", text)
    text = re.sub(r"<(\w[\w-]*)>", r"\1", text)  # placeholders: <node>
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    segments, current = [], []
    tokens = list(lexer)
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
            continue
        if token in (">", ">>", "<", "2>", "&>"):
            skip_next = True
            continue
        if token and set(token) <= set(";&|"):
            segments.append(current)
            current = []
            continue
        current.append(token)
    segments.append(current)
    for words in segments:
        # `2>/dev/null` lexes as 2 > /dev/null: drop the stray fd.
        while words and words[-1] == "2":
            words = words[:-1]
        if not words or words[0] == "for":
            continue
        if words[0] == "do":
            words = words[1:]
        if words in (["done"], []):
            continue
        env = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            key, _, value = words[0].partition("=")
            env[key] = value
            words = words[1:]
        if words:
            out.append((words, env))
    return out


def documented_commands() -> list[Command]:
    commands = []
    for doc in DOCS:
        text = doc.read_text()
        for block in FENCE.finditer(text):
            indent, lang, body = block.group(1), block.group(2), block.group(3)
            if lang not in ("sh", "bash"):
                continue
            first_line = text[: block.start()].count("\n") + 2
            lines = [line[len(indent):] for line in body.splitlines()]
            number = 0
            while number < len(lines):
                start, line = number, lines[number]
                while line.endswith("\\") and number + 1 < len(lines):
                    number += 1
                    line = line[:-1] + " " + lines[number].strip()
                number += 1
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                shown = []
                while number + len(shown) < len(lines) and lines[number + len(shown)].startswith("# "):
                    shown.append(lines[number + len(shown)][2:])
                for words, env in _simple_commands(line):
                    commands.append(Command(doc, first_line + start, line.strip(), words, env, shown))
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for match in re.finditer(r"`([^`]+)`", prose):
            span = " ".join(match.group(1).split())
            # A command, not a mention of one: it has an argument.
            has_argument = any(w.startswith("-") or "/" in w or "=" in w for w in span.split()[1:])
            if span.startswith(INLINE_PROGRAMS) and (has_argument or span in SETUP):
                line = prose[: match.start()].count("\n") + 1
                for words, env in _simple_commands(span):
                    commands.append(Command(doc, line, span, words, env))
    return commands


COMMANDS = documented_commands()


def test_the_documents_show_commands():
    programs = {c.words[0] for c in COMMANDS}
    assert {"kubectl", "scripts/build-arm.sh", "scripts/render-manifests.sh", "api", "curl", "ssh"} <= programs, \
        programs


# ------------------------------------------------------------------ what the build names

VERSION = km.workspace_version()
ARCHIVE_NAMES = {f"{km.LOCAL_NAMESPACE}/{s}:{VERSION}" for s in ("gcd", "api")}
TARGETS = ("armv7-unknown-linux-musleabihf", "aarch64-unknown-linux-musl", "x86_64-unknown-linux-musl")
SBOM_PLATFORMS = ("linux-arm-v7", "linux-arm64", "linux-amd64")


def check_build_outputs(command: Command) -> None:
    """Archives, binaries, SBOMs and image names, wherever a command names
    them, are ones the build writes."""
    for word in command.words:
        for archive in re.findall(r"([\w.-]+)\.oci\.tar", word):
            assert archive in ("gcd", "api"), f"{command}: no archive {archive}.oci.tar is built"
        for image in re.findall(r"localhost/pi-gcd/[\w.:-]+", word):
            assert image in ARCHIVE_NAMES, f"{command}: {image} is not what the archives are named"
        for target, binary in re.findall(r"dist/([\w-]+)/(\w+)$", word):
            if target != "images":
                assert target in TARGETS and binary in ("gcd", "api"), f"{command}: {word} is not built"
        for service, platform in re.findall(r"(\w+)\.([\w-]+)\.cdx\.json", word):
            assert service in ("gcd", "api") and platform in SBOM_PLATFORMS, f"{command}: {word} is not written"


# ------------------------------------------------------------------ kubectl

MANIFESTS = km.load()
DEPLOYMENTS = {o.name: o for o in MANIFESTS if o.kind == "Deployment"}
SERVICE_NAMES = {o.name for o in MANIFESTS if o.kind == "Service"}
NAMESPACE = next(o.name for o in MANIFESTS if o.kind == "Namespace")
KUBECTL_FILES = {"k8s", "dist/k8s", "k8s-extras/podmonitor.yaml"}
NAMESPACED = {"get", "rollout", "scale", "port-forward", "run", "logs", "describe", "set", "exec"}


def _selector_matches(selector: str, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (pair.split("=", 1) for pair in selector.split(",")))


def _deployment(ref: str, command: Command) -> km.Obj:
    kind, _, name = ref.partition("/")
    assert kind in ("deploy", "deployment", "deployments"), f"{command}: {ref} is not a Deployment"
    assert name in DEPLOYMENTS, f"{command}: no Deployment {name} in k8s/ ({sorted(DEPLOYMENTS)})"
    return DEPLOYMENTS[name]


def _ports(deployment: km.Obj) -> set[int]:
    return {p["containerPort"] for c in km.containers(deployment) for p in c.get("ports", [])}


def _flag(words: list[str], *names: str) -> str | None:
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                return words[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def check_kubectl(command: Command) -> None:
    words = command.words[1:]
    namespace = _flag(words, "-n", "--namespace")
    rest = []
    skip = False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word in ("-n", "--namespace"):
            skip = True
            continue
        rest.append(word)
    verb = rest[0]
    if verb in ("create", "apply"):
        path = _flag(rest, "-f")
        assert path in KUBECTL_FILES, f"{command}: -f {path} is not a manifest directory or file"
        assert namespace is None, f"{command}: the manifests carry their namespace"
        if path != "dist/k8s":
            assert (ROOT / path).exists(), f"{command}: {path} does not exist"
        return
    if verb == "delete":
        assert rest[1:] == ["namespace", NAMESPACE], f"{command}: delete the namespace {NAMESPACE}"
        return
    if verb == "config":
        assert rest[1] == "set-cluster" and rest[2] == "default", f"{command}: k3s.yaml names its cluster default"
        server = urlparse(_flag(rest, "--server") or "")
        assert server.scheme == "https" and server.port == 6443, f"{command}: k3s's API server is https on 6443"
        return
    if verb == "get" and rest[1] == "nodes":
        assert namespace is None and rest[2:] == ["-L", "kubernetes.io/arch"], f"{command}: unexpected"
        return
    assert verb in NAMESPACED, f"{command}: no check knows kubectl {verb}"
    assert namespace == NAMESPACE, f"{command}: every object lives in namespace {NAMESPACE}, give -n {NAMESPACE}"
    selector = _flag(rest, "-l", "--selector")
    if verb == "get":
        kind = rest[1]
        if kind == "pods":
            if selector:
                assert any(_selector_matches(selector, km.pod_labels(d)) for d in DEPLOYMENTS.values()), \
                    f"{command}: {selector} selects no pod"
        elif kind == "endpoints":
            assert rest[2] in SERVICE_NAMES, f"{command}: no Service {rest[2]}"
        else:
            assert kind == "events", f"{command}: no check knows kubectl get {kind}"
    elif verb == "rollout":
        action = rest[1]
        assert action in ("status", "undo", "restart"), f"{command}: kubectl rollout {action}"
        if selector:
            assert rest[2] == "deployment", f"{command}"
            chosen = [d for d in DEPLOYMENTS.values() if _selector_matches(selector, d.body["metadata"]["labels"])]
            assert sorted(d.name for d in chosen) == sorted(DEPLOYMENTS), f"{command}: {selector} must pick both"
        else:
            refs = [w for w in rest[2:] if not w.startswith("-")]
            assert len(refs) == 1, f"{command}: one Deployment per line"
            _deployment(refs[0], command)
    elif verb == "scale":
        _deployment(rest[1], command)
        assert re.fullmatch(r"--replicas=\d+", rest[2]), f"{command}"
    elif verb in ("logs", "describe"):
        target = next(w for w in rest[1:] if not w.startswith("-"))
        if "/" in target:
            _deployment(target, command)
        else:
            assert target in ("pod", "POD"), f"{command}: {target}"
    elif verb == "set":
        assert rest[1] == "env", f"{command}"
        deployment = _deployment(rest[2], command)
        for assignment in rest[3:]:
            name, _, value = assignment.partition("=")
            assert name in km.container_env(km.containers(deployment)[0]), \
                f"{command}: {name} is not in {deployment.name}'s env, which the next apply would restore"
            assert value in ("debug", "info", "trace", "warn", "error"), f"{command}: {value}"
    elif verb == "port-forward":
        target, ports = rest[1], rest[2]
        remote = int(ports.split(":")[1])
        if target.startswith(("deploy/", "deployment/")):
            assert remote in _ports(_deployment(target, command)), f"{command}: {target} has no port {remote}"
        else:  # a pod of the loop above it: gcd's pods
            assert remote in _ports(DEPLOYMENTS["gcd"]), f"{command}: gcd pods have no port {remote}"
    elif verb == "run":
        check_grpcurl_pod(command, rest)
    else:
        raise AssertionError(f"{command}: no check knows kubectl {verb}")


def check_grpcurl_pod(command: Command, rest: list[str]) -> None:
    """The throw-away grpcurl pod: the gcd NetworkPolicy admits it, the
    namespace's restricted standard accepts it, and it asks gcd-service."""
    labels = dict(pair.split("=", 1) for pair in (_flag(rest, "--labels") or "").split(","))
    policy = next(o for o in MANIFESTS if o.kind == "NetworkPolicy" and o.name == "gcd")
    admitted = False
    for rule in policy.body["spec"]["ingress"]:
        ports = {p.get("port") for p in rule.get("ports", [])}
        if 3000 in ports or "grpc" in ports:
            for peer in rule.get("from", []):
                wanted = (peer.get("podSelector") or {}).get("matchLabels", {})
                admitted |= "namespaceSelector" not in peer and all(labels.get(k) == v for k, v in wanted.items())
    assert admitted, f"{command}: labels {labels} are not admitted to gcd's port 3000"
    api_selector = DEPLOYMENTS["api"].body["spec"]["selector"]["matchLabels"]
    assert not all(labels.get(k) == v for k, v in api_selector.items()), f"{command}: it would receive api traffic"
    overrides = json.loads(_flag(rest, "--overrides"))
    spec = overrides["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = spec["containers"]
    assert container["name"] == rest[1], f"{command}: the override must name the container {rest[1]}"
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert spec["nodeSelector"]["kubernetes.io/arch"] in ("arm64", "amd64", "arm"), f"{command}"
    args = rest[rest.index("--") + 1:]
    assert "gcd-service:3000" in args, f"{command}: gcd's headless Service is gcd-service:3000"
    check_grpc_call(command, args)


# ------------------------------------------------------------------ curl, grpcurl

PORTS = {8080, 30080, 9090, 9091, 9300, 19090}


def check_curl(command: Command) -> None:
    url = next(w for w in command.words[1:] if "://" in w or re.match(r"[\w.]+:\d+/", w))
    if "get.k3s.io" in url:  # k3s's installer, as its documentation gives it
        assert command.words[:2] == ["curl", "-sfL"] and url == "https://get.k3s.io", f"{command}"
        return
    parsed = urlparse(url if "://" in url else "http://" + url)
    assert parsed.port in PORTS, f"{command}: port {parsed.port} is none of the services'"
    path = parsed.path
    if parsed.port in (8080, 30080):
        match = re.fullmatch(r"/gcd/(\d+|\$i)/(\d+)", path)
        assert match, f"{command}: {path} is not /gcd/A/B"
        if match.group(1) == "12" and match.group(2) == "18":
            assert '{"result":"6"}' in command.text, f"{command}: gcd(12, 18) is 6"
    else:
        assert path in ("/readyz", "/healthz", "/metrics"), f"{command}: the admin ports serve no {path}"


PROTO = (ROOT / "gcd-proto" / "gcd.proto").read_text()


def check_grpc_call(command: Command, args: list[str]) -> None:
    """grpcurl's arguments: a method gcd serves, a request it accepts."""
    words = [w for w in args if not w.startswith("-")]
    data = _flag(args, "-d")
    words = [w for w in words if w != data]
    address, *call = words
    assert re.fullmatch(r"[\w.-]+:(3000|3001)", address), f"{command}: {address} is no gRPC port"
    if call == ["list"] or call == ["describe", "pb.GCDService"]:
        return
    [method] = call
    assert method in ("pb.GCDService/Compute", "grpc.health.v1.Health/Check"), f"{command}: {method}"
    if method == "pb.GCDService/Compute":
        assert "service GCDService" in PROTO and "rpc Compute" in PROTO
        assert set(json.loads(data)) == {"a", "b"}, f"{command}: GCDRequest has a and b"


def check_grpcurl(command: Command) -> None:
    check_grpc_call(command, command.words[1:])


# ------------------------------------------------------------------ containerd, files

def check_ctr(command: Command) -> None:
    words = command.words
    if words[:2] == ["k3s", "ctr"]:
        words = words[2:]
    else:
        assert words[:3] == ["ctr", "-n", "k8s.io"], f"{command}: the kubelet's containerd namespace is k8s.io"
        words = words[3:]
    if words[0] == "images":
        action, args = words[1], words[2:]
        if action == "import":
            assert len(args) == 1 and args[0].endswith(".oci.tar"), f"{command}"
        elif action in ("ls", "check"):
            assert not args, f"{command}"
        elif action == "label":
            assert args[0] in ARCHIVE_NAMES and args[1:] == ["io.cri-containerd.pinned=pinned"], f"{command}"
        elif action == "rm":
            assert set(args) == ARCHIVE_NAMES, f"{command}: remove both images"
        else:
            raise AssertionError(f"{command}: no check knows ctr images {action}")
    elif words[0] == "run":
        image, name = [w for w in words[1:] if not w.startswith("-") and "=" not in w][-2:]
        assert image in ARCHIVE_NAMES, f"{command}"
        service = image.rsplit("/", 1)[1].split(":")[0]
        limit = km.containers(DEPLOYMENTS[service])[0]["resources"]["limits"]["memory"]
        assert int(_flag(words, "--memory-limit")) == km.memory_bytes(limit), f"{command}: the pod's limit is {limit}"
        env = [words[i + 1].split("=")[0] for i, w in enumerate(words) if w == "--env"]
        help_text = km.read_help(binaries()[service])
        assert all(name in help_text for name in env), f"{command}: {env} not all in {service} --help"
        assert name == "gcd-try", f"{command}"
    elif words[0] == "task":
        assert words[1:] == ["kill", "-s", "SIGTERM", "gcd-try"], f"{command}"
    else:
        raise AssertionError(f"{command}: no check knows ctr {words[0]}")


AGENT_IMAGES = "/var/lib/rancher/k3s/agent/images"


def check_files(command: Command) -> None:
    """Shell file commands: only on the archives, the k3s directories and
    the kubeconfig the docs name."""
    program, args = command.words[0], command.words[1:]
    paths = [a for a in args if not a.startswith("-") and not a.isdigit()]
    allowed = ("/tmp/", "dist/images/", AGENT_IMAGES, "/etc/rancher/k3s/k3s.yaml", "/var/lib/rancher",
               "~/.kube", "/sys/fs/cgroup/", "/var/lib/rancher/k3s/server/node-token")
    if program == "scp":
        *sources, destination = paths
        assert all(s.endswith(".oci.tar") for s in sources) and destination.endswith(":/tmp/"), f"{command}"
        return
    if program not in ("cp", "rm", "mkdir", "chmod", "cat", "df"):
        return
    for path in paths:
        assert path.startswith(allowed), f"{command}: {path}"


# ------------------------------------------------------------------ the project's scripts

def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("REGISTRY",)}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})})


def _build_arm_dry_run(args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY", "PI_GCD_CACHE", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    env.setdefault("CARGO_TARGET_DIR", str(ROOT / "target"))
    env.setdefault("CARGO_HOME", str(Path(os.environ.get("HOME", "/root")) / ".cargo"))
    env.setdefault("RUSTUP_HOME", str(Path(os.environ.get("HOME", "/root")) / ".rustup"))
    return subprocess.run([str(ROOT / "scripts/build-arm.sh"), "--dry-run", "--route", "cross", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)


def check_build_arm(command: Command, tmp_path: Path) -> None:
    args = [a for a in command.words[1:] if a != "--dry-run"]
    done = _build_arm_dry_run(args, tmp_path)
    assert done.returncode == 0, f"{command}: {done.stderr}"


def check_documented_buildx_create(command: Command, tmp_path: Path) -> None:
    """A documented `docker buildx create`: the http builder is exactly the
    line build-arm.sh --insecure records; the user's own builder has the
    driver that writes multi-platform archives."""
    words = command.words
    if "pi-gcd-http" in words:
        done = _build_arm_dry_run(["--registry", "registry.lan:5000", "--insecure", "--images-only"], tmp_path)
        assert done.returncode == 0, done.stderr
        recorded = next(line for line in done.stdout.splitlines() if line.startswith("docker buildx create"))
        documented = " ".join(w.replace("~/", f"{tmp_path}/") for w in words)
        assert recorded == documented, f"{command}: build-arm.sh runs\n{recorded}"
    else:
        assert _flag(words, "--driver") == "docker-container" and "--use" in words, f"{command}"
        hint = (ROOT / "xtask/src/plan.rs").read_text()
        assert "docker buildx create" in hint


def check_render(command: Command, tmp_path: Path) -> None:
    out = tmp_path / "render"
    done = _run([str(ROOT / "scripts/render-manifests.sh"), *command.words[1:], "--out", str(out)])
    assert done.returncode == 0, f"{command}: {done.stderr}"
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in km.K8S_DIR.glob("*.yaml"))


def check_install_deps(command: Command, tmp_path: Path) -> None:
    done = _run([str(ROOT / "scripts/install-deps.sh"), *command.words[1:], "--dry-run"])
    assert done.returncode == 0, f"{command}: {done.stderr}"


def check_script(command: Command, tmp_path: Path) -> None:
    path = ROOT / command.words[0]
    assert path.is_file() and os.access(path, os.X_OK), f"{command}: {path} is not an executable script"


def check_pytest(command: Command, tmp_path: Path) -> None:
    assert command.words[1:3] == ["-m", "pytest"], f"{command}"
    for test in command.words[3:]:
        assert (ROOT / test).is_file(), f"{command}: no {test}"


# ------------------------------------------------------------------ api, gcd --check-config

_BINARIES: dict[str, Path] = {}


def binaries() -> dict[str, Path]:
    if not _BINARIES:
        _BINARIES.update(km.build_binaries())
    return _BINARIES


def _check_config(service: str, args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([str(binaries()[service]), *args], env={"PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def check_service_binary(command: Command, tmp_path: Path) -> None:
    """`api --check-config --memory-limit 64Mi` as documented prints what the
    manifest's environment and limit give, and what the document shows."""
    service, args = command.words[0], command.words[1:]
    if args == ["--help"]:
        assert "--check-config" in _check_config(service, args, {}), f"{command}"
        return
    assert args[0] == "--check-config", f"{command}: no check knows {service} {args[0]}"
    limit = _flag(args, "--memory-limit")
    container = km.containers(DEPLOYMENTS[service])[0]
    assert limit == container["resources"]["limits"]["memory"], f"{command}: the manifest's limit is not {limit}"
    manifest_env = km.resolve_env(container)
    manifest_env[f"{service.upper()}_MEMORY_LIMIT"] = str(int(km.memory_bytes(limit)))
    documented = _check_config(service, args, command.env)
    deployed = _check_config(service, ["--check-config"], manifest_env)
    assert documented == deployed, f"{command}: prints\n{documented}\nwhile the pod gets\n{deployed}"
    for line in command.shown:
        assert line.strip() in documented, f"{command}: shows {line!r}, prints\n{documented}"


# ------------------------------------------------------------------ other tools' setup

def check_setup(command: Command, tmp_path: Path) -> None:
    text = " ".join(command.words)
    assert text in SETUP, f"{command}: no check knows this command"
    source = SETUP[text]
    if source:
        assert text in (ROOT / source).read_text(), f"{command}: {source} tells users otherwise"


# Tools whose lines only move files, wait, print or filter.
SHELL = {"kill", "wait", "sleep", "echo", "export", "chmod", "mkdir", "cp", "rm", "df", "grep", "scp", "cat",
         "journalctl", "seq", "SUBST"}


def dispatch(command: Command, tmp_path: Path) -> None:
    words = command.words
    while words[0] in ("sudo",):
        words = command.words = words[1:]
    if words[0] == "ssh":
        inner = " ".join(words[2:]) if len(words) > 3 else words[2]
        for sub_words, env in _simple_commands(inner):
            dispatch(Command(command.doc, command.line, command.text, sub_words, env), tmp_path)
        return
    check_build_outputs(command)
    program = words[0]
    if program == "kubectl":
        check_kubectl(command)
    elif program == "curl":
        check_curl(command)
    elif program == "grpcurl":
        check_grpcurl(command)
    elif program in ("k3s", "ctr") and "ctr" in words[:3]:
        check_ctr(command)
    elif program == "k3s":
        assert words[1:3] in (["kubectl"], ["crictl", "pull"]), f"{command}"
    elif program == "scripts/build-arm.sh":
        check_build_arm(command, tmp_path)
    elif program == "scripts/render-manifests.sh":
        check_render(command, tmp_path)
    elif program == "scripts/install-deps.sh":
        check_install_deps(command, tmp_path)
    elif program.startswith("scripts/"):
        check_script(command, tmp_path)
    elif program.endswith("/venv/bin/python"):
        check_pytest(command, tmp_path)
    elif program in ("api", "gcd"):
        check_service_binary(command, tmp_path)
    elif words[:3] == ["docker", "buildx", "create"]:
        check_documented_buildx_create(command, tmp_path)
    elif program in ("podman", "docker") and words[1] == "load":
        assert words[-1].endswith(".oci.tar") or words[-1] == "load", f"{command}"
    elif program in ("trivy", "grype", "cargo") and words[1] in ("image", "sbom", "audit") or \
            program == "grype":
        pass  # scanners over build outputs, checked above; tests/system/test_scannable.py runs them
    elif program in SHELL or program == "sh":
        check_files(command)
    else:
        check_setup(command, tmp_path)


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.doc.name}:{c.line}:{' '.join(c.words)[:60]}" for c in COMMANDS])
def test_documented_command(command: Command, tmp_path: Path) -> None:
    dispatch(command, tmp_path)


def test_registries_yaml_speaks_plain_http_to_the_registry():
    """The registries.yaml docs/deploying.md gives: a mirror for the
    registry whose endpoint is the same host over http://."""
    text = (ROOT / "docs" / "deploying.md").read_text()
    blocks = [m.group(3) for m in FENCE.finditer(text) if m.group(2) == "yaml"]
    assert len(blocks) == 1, blocks
    config = yaml.safe_load(blocks[0])
    [(host, mirror)] = config["mirrors"].items()
    assert mirror["endpoint"] == [f"http://{host}"], mirror


def test_an_unknown_command_fails(tmp_path: Path) -> None:
    """The check is no rubber stamp: wrong lines of the kinds the docs once
    carried are refused."""
    doc = ROOT / "docs" / "deploying.md"
    wrong = [
        "kubectl -n default set image deployment/gcd gcd=registry.lan:5000/gcd:0.1.0",
        "kubectl -n pi-gcd rollout status deploy/gcd-service",
        "sudo k3s ctr images rm docker.io/pi-gcd/gcd:0.1.0 docker.io/pi-gcd/api:0.1.0",
        "api --check-config --memory-limit 64Mi",
        "curl http://127.0.0.1:9091/gcd/12/18",
        "frobnicate --all",
        "scripts/build-arm.sh --registry me",
        "docker buildx create --name pi-gcd-http --driver docker-container --buildkitd-config x.toml",
        "kubectl -n pi-gcd set env deploy/api RUST_LOGG=debug",
        "sudo k3s ctr images import /tmp/gcdd.oci.tar",
        "kubectl -n pi-gcd run grpcurl --labels=app.kubernetes.io/name=api --overrides={} -- -plaintext "
        "gcd-service:3000 list",
    ]
    for line in wrong:
        [(words, env)] = _simple_commands(line)
        with pytest.raises(AssertionError):
            dispatch(Command(doc, 1, line, words, env, ["256 requests in flight"]), tmp_path)


def test_help_says_what_a_full_port_does():
    """`--help` for `--max-connections` says what README.md and
    docs/memory-budget.md say: at the cap a new connection evicts the least
    useful one; nothing waits in the listen queue."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    budget = " ".join((ROOT / "docs" / "memory-budget.md").read_text().split())
    assert "the least useful connection" in readme and "takes the place of the least useful one" in budget
    for service, path in binaries().items():
        if service not in ("api", "gcd"):
            continue
        text = " ".join(km.read_help(path).split())
        entry = text[text.index("--max-connections most open"):]
        entry = entry[: entry.index("]") + 1]
        assert "takes the place of the least useful" in entry, f"{service}: {entry}"
        assert "listen queue" not in entry, f"{service}: {entry}"


# ------------------------------------------------------------------ README's configuration table

def help_flags(help_text: str) -> dict[str, dict]:
    """Each flag of a `--help` (as the binary's flag table renders it): its
    variable, its range and its default (a value, or how it is derived);
    a switch has none of them."""
    entries, current = [], None
    for line in help_text.split("Options:", 1)[1].splitlines():
        if line.startswith("  --"):
            current = [line.strip()]
            entries.append(current)
        elif current is not None and line.strip():
            current.append(line.strip())
    flags = {}
    for entry in entries:
        name, _, text = " ".join(entry).partition(" ")
        if name.startswith("--help"):
            continue
        match = re.search(r"\[env (\w+)(?:, (\d+)\.\.=(\d+))?, default(?: (\S+)|: (.*))\]$", text)
        flags[name] = {
            "env": match.group(1) if match else "",
            "range": (int(match.group(2)), int(match.group(3))) if match and match.group(2) else None,
            "default": match.group(4) if match else None,
            "derived": match.group(5) if match else None,
        }
    return flags


def readme_configuration() -> dict[tuple[str, str], dict]:
    """The rows of README.md's configuration table by binary and flag; a
    row for `both` stands for one of each, its variable `GCD_`/`API_X`
    for GCD_X and API_X."""
    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] not in ("gcd", "api", "both"):
            continue
        binary, flag, env, default = cells
        flag, env = flag.strip("`"), env.strip("`")
        for name in (("gcd", "api") if binary == "both" else (binary,)):
            var = env.replace("GCD_`/`API_", f"{name.upper()}_")
            key = (name, flag)
            assert key not in rows, f"README.md: {name} {flag} twice"
            rows[key] = {"env": var, "default": default}
    return rows


def configuration_problems(helps: dict[str, str], rows: dict[tuple[str, str], dict]) -> list[str]:
    """Where README.md's configuration table and the binaries' `--help`
    disagree: a flag only in one, another variable, default or range."""
    problems = []
    flags = {(name, flag): entry for name, text in helps.items() for flag, entry in help_flags(text).items()}
    for key in sorted(flags.keys() - rows.keys()):
        problems.append(f"{key[0]} {key[1]}: in --help, not in README.md")
    for key in sorted(rows.keys() - flags.keys()):
        problems.append(f"{key[0]} {key[1]}: in README.md, not in --help")
    for key in sorted(flags.keys() & rows.keys()):
        entry, row, where = flags[key], rows[key], f"{key[0]} {key[1]}"
        if row["env"] != entry["env"]:
            problems.append(f"{where}: README.md says env {row['env']!r}, --help {entry['env']!r}")
        said = row["default"].replace("`", "")
        if entry["default"] is not None:
            first = re.match(r"`([^`]+)`", row["default"])
            if not first or first.group(1) != entry["default"]:
                problems.append(f"{where}: README.md's default is not `{entry['default']}`: {row['default']}")
        if entry["derived"] is not None and entry["derived"] not in said:
            problems.append(f"{where}: README.md's default does not say {entry['derived']!r}: {said}")
        if entry["range"] is not None:
            low, high = entry["range"]
            if f"({low:,} to {high:,}" not in said:
                problems.append(f"{where}: README.md's range is not ({low:,} to {high:,}): {said}")
        if not entry["env"] and not said:
            problems.append(f"{where}: README.md says nothing of it")
    return problems


def test_readme_configuration_table_is_what_help_says():
    """Every flag, variable, default and range in `gcd --help` and `api
    --help` (both rendered from each binary's one flag table) is in
    README.md's configuration table, and the table has nothing else."""
    helps = {name: km.read_help(binaries()[name]) for name in ("gcd", "api")}
    rows = readme_configuration()
    assert len(rows) > 20
    assert configuration_problems(helps, rows) == []


def test_a_wrong_readme_row_is_found():
    helps = {name: km.read_help(binaries()[name]) for name in ("gcd", "api")}
    rows = readme_configuration()
    wrong = dict(rows)
    wrong[("gcd", "--idle-timeout-ms")] = {"env": "GCD_IDLE_TIMEOUT_MS", "default": "`10000` (1,000 to 60,000)"}
    wrong[("api", "--deadline-ms")] = {"env": "API_DEADLINE", "default": "`1000` (1 to 600,000)"}
    wrong[("api", "--max-connections")] = {"env": "API_MAX_CONNECTIONS", "default": "`4096` (1 to 65,536)"}
    del wrong[("gcd", "--worker-threads")]
    wrong[("gcd", "--threads")] = rows[("gcd", "--worker-threads")]
    assert configuration_problems(helps, wrong) == [
        "gcd --worker-threads: in --help, not in README.md",
        "gcd --threads: in README.md, not in --help",
        "api --deadline-ms: README.md says env 'API_DEADLINE', --help 'API_DEADLINE_MS'",
        "api --max-connections: README.md's default does not say "
        "'what the memory limit allows, at most 4096': 4096 (1 to 65,536)",
        "gcd --idle-timeout-ms: README.md's range is not (1,000 to 3,600,000): 10000 (1,000 to 60,000)",
    ]
