"""Proof that scripts/build-arm.sh made what a Raspberry Pi cluster needs.

- every binary in dist/<target>/ is a static, stripped ELF of the right
  architecture (and the hard-float EABI on armv7);
- the ARM gcd + api pairs, run under qemu-user, answer GET /gcd/12/18;
- each OCI archive in dist/images/ is one multi-arch index of exactly
  linux/arm/v7, linux/arm64 and linux/amd64, named for containerd's import,
  each image a non-root numeric user, the entrypoint, and one layer holding
  exactly the binary from dist/ for its platform;
- the images run (podman with runc; ARM through qemu binfmt_misc, or the
  binary taken from the image layer under qemu-user when binfmt_misc cannot
  be used) and answer a real request through api -> gcd.
"""

import contextlib
import gzip
import hashlib
import http.client
import io
import json
import os
import socket
import subprocess
import tarfile
import uuid
from pathlib import Path

import elf
import k8s_manifests as km
import pytest

from conftest import (
    PLATFORM_TARGET,
    QUICK_STOP_ENV,
    SERVICE_ARGS,
    SERVICES,
    TARGETS,
    Service,
    assert_gcd_answers,
    require_dist,
    require_file,
    require_tool,
    wait_ready,
)

IMAGE_NAME = km.LOCAL_NAMESPACE + "/{service}:{version}"
EXPECTED_PLATFORMS = {platform for platform, *_ in TARGETS.values()}
EXPOSED = {"gcd": {"3000/tcp", "9090/tcp"}, "api": {"8080/tcp", "9091/tcp"}}


def workspace_version() -> str:
    import tomllib

    from conftest import REPO

    with open(REPO / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


BINARIES = [(target, service) for target in TARGETS for service in SERVICES]


@pytest.mark.parametrize("target,service", BINARIES, ids=[f"{t}/{s}" for t, s in BINARIES])
def test_binary_is_static_and_of_its_architecture(target: str, service: str) -> None:
    path = require_file(require_dist() / target / service)
    assert os.access(path, os.X_OK), f"{path} is not executable"
    _platform, machine, elf_class, _qemu = TARGETS[target]
    facts = elf.facts(path)
    assert facts["machine"] == machine, f"{path}: e_machine {facts['machine']}, expected {machine}"
    assert facts["class"] == elf_class, f"{path}: ELF class {facts['class']}, expected {elf_class}"
    assert facts["type"] in (2, 3), f"{path}: not an executable (e_type {facts['type']})"
    assert elf.PT_INTERP not in facts["segments"], f"{path} asks for a dynamic loader (PT_INTERP)"
    assert elf.PT_DYNAMIC not in facts["segments"], f"{path} has a dynamic section: not fully static"
    assert not facts["has_symtab"], f"{path} is not stripped (has .symtab)"
    if machine == 40:
        assert facts["flags"] & 0xFF000000 == elf.EF_ARM_EABI_VER5, f"{path}: not EABI5 ({facts['flags']:#x})"
        assert facts["flags"] & elf.EF_ARM_ABI_FLOAT_HARD, f"{path}: not hard-float ({facts['flags']:#x})"


# --- ARM binaries under qemu-user -----------------------------------------------------


@contextlib.contextmanager
def running_pair(start):
    """Starts gcd, then api pointed at it; yields api's (public, admin) addrs.
    `start(service, extra_args)` returns a started Service."""
    started: list[Service] = []
    try:
        gcd = start("gcd", [])
        started.append(gcd)
        gcd_addr, _ = gcd.wait_listening()
        api = start("api", ["--gcd", f"127.0.0.1:{gcd_addr[1]}"])
        started.append(api)
        api_addr, api_admin = api.wait_listening()
        wait_ready(api_admin, service=api)
        yield api_addr, api_admin
        for service in reversed(started):
            status = service.terminate()
            assert status == 0, f"{service.name} exited {status} after SIGTERM; log:\n{service.log()}"
    finally:
        for service in started:
            service.kill()


@pytest.mark.parametrize("target", ["armv7-unknown-linux-musleabihf", "aarch64-unknown-linux-musl"])
def test_arm_pair_answers_under_qemu(target: str) -> None:
    qemu = require_tool(TARGETS[target][3])
    dist = require_dist()

    def start(service: str, extra: list[str]) -> Service:
        binary = require_file(dist / target / service)
        return Service([qemu, str(binary), *SERVICE_ARGS[service], *extra], env=QUICK_STOP_ENV,
                       name=f"{service} ({target})")

    with running_pair(start) as (api_addr, _):
        assert_gcd_answers(api_addr)


# A static aarch64 program that prints the page size the kernel (here,
# qemu-user) reports to it, as musl's and Rust's std read it.
PAGE_SIZE_PROBE = """#include <stdio.h>
#include <sys/auxv.h>
int main(void) { printf("%lu\\n", getauxval(AT_PAGESZ)); return 0; }
"""
PI5_PAGES = {"QEMU_PAGESIZE": "16384"}


def test_arm64_pair_serves_and_stops_with_the_pi5_page_size(tmp_path: Path) -> None:
    """A Raspberry Pi 5's 64-bit kernel uses 16 KiB pages: under qemu-user
    with 16 KiB pages the arm64 gcd + api answer, carry a short load with
    every answer right, and stop cleanly on SIGTERM (exit 0). A probe
    first proves qemu does give the programs 16 KiB pages."""
    import math
    from concurrent.futures import ThreadPoolExecutor

    import ziglang

    from conftest import CACHE, http_get

    qemu = require_tool("qemu-aarch64-static")
    dist = require_dist()
    source, probe = tmp_path / "pagesize.c", tmp_path / "pagesize"
    source.write_text(PAGE_SIZE_PROBE)
    zig_cache = str(CACHE / "zig")
    subprocess.run([str(Path(ziglang.__file__).parent / "zig"), "cc", "-target", "aarch64-linux-musl", "-static",
                    "-o", str(probe), str(source)], check=True, timeout=600,
                   env={**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache})
    seen = subprocess.run([qemu, str(probe)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **PI5_PAGES})
    assert seen.stdout.strip() == "16384", f"qemu gives {seen.stdout.strip()!r}-byte pages, not 16 KiB: {seen.stderr}"

    target = "aarch64-unknown-linux-musl"

    def start(service: str, extra: list[str]) -> Service:
        binary = require_file(dist / target / service)
        return Service([qemu, str(binary), *SERVICE_ARGS[service], *extra], env={**QUICK_STOP_ENV, **PI5_PAGES},
                       name=f"{service} ({target}, 16 KiB pages)")

    with running_pair(start) as (api_addr, _):
        assert_gcd_answers(api_addr)
        # A short load: 4 clients, 240 requests, each answer checked.
        pairs = [(a * 6 + 12, a * 4 + 18) for a in range(240)]

        def ask(pair: tuple[int, int]) -> tuple[tuple[int, int], int, bytes]:
            status, body = http_get(api_addr, f"/gcd/{pair[0]}/{pair[1]}", timeout=20)
            return pair, status, body

        with ThreadPoolExecutor(4) as clients:
            for (a, b), status, body in clients.map(ask, pairs, timeout=300):
                assert status == 200 and json.loads(body) == {"result": str(math.gcd(a, b))}, (a, b, status, body)


# --- OCI archives ------------------------------------------------------------------------


class OciArchive:
    def __init__(self, path: Path):
        self.path = path
        self.tar = tarfile.open(path)

    def read(self, name: str) -> bytes:
        member = self.tar.extractfile(name)
        assert member is not None, f"{self.path}: {name} missing"
        return member.read()

    def blob(self, digest: str) -> bytes:
        algorithm, _, hexdigest = digest.partition(":")
        data = self.read(f"blobs/{algorithm}/{hexdigest}")
        assert hashlib.new(algorithm, data).hexdigest() == hexdigest, f"{self.path}: blob {digest} corrupt"
        return data

    def json_blob(self, digest: str) -> dict:
        return json.loads(self.blob(digest))


def archive(service: str) -> OciArchive:
    return OciArchive(require_file(require_dist() / "images" / f"{service}.oci.tar"))


def platform_of(descriptor: dict) -> tuple:
    p = descriptor.get("platform", {})
    return (p.get("os"), p.get("architecture"), p.get("variant"))


def is_attestation(descriptor: dict) -> bool:
    """An SBOM attestation manifest in an image index (see test_scannable.py)."""
    return descriptor.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest"


def layer_files(layer: bytes) -> dict[str, tarfile.TarInfo | bytes]:
    if layer[:2] == b"\x1f\x8b":
        layer = gzip.decompress(layer)
    files = {}
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for member in tar.getmembers():
            name = member.name.lstrip("./")
            if member.isdir() and name == "":
                continue
            files[name] = (member, tar.extractfile(member).read() if member.isfile() else b"")
    return files


@pytest.mark.parametrize("service", SERVICES)
def test_oci_archive_is_one_multi_arch_index(service: str) -> None:
    oci = archive(service)
    assert json.loads(oci.read("oci-layout"))["imageLayoutVersion"] == "1.0.0"
    top = json.loads(oci.read("index.json"))
    assert len(top["manifests"]) == 1, f"{oci.path}: {len(top['manifests'])} entries in index.json, expected 1"
    entry = top["manifests"][0]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    name = IMAGE_NAME.format(service=service, version=workspace_version())
    assert entry["annotations"]["io.containerd.image.name"] == name
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == name

    index = oci.json_blob(entry["digest"])
    images = [m for m in index["manifests"] if not is_attestation(m)]
    platforms = [platform_of(m) for m in images]
    assert len(platforms) == 3 and set(platforms) == EXPECTED_PLATFORMS, platforms

    for descriptor in images:
        platform = platform_of(descriptor)
        target = PLATFORM_TARGET[platform]
        manifest = oci.json_blob(descriptor["digest"])
        config = oci.json_blob(manifest["config"]["digest"])
        assert (config["os"], config["architecture"], config.get("variant")) == platform
        cfg = config["config"]
        user = cfg.get("User", "")
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{service} {platform}: user {user!r} is not numeric non-root"
        assert cfg.get("Entrypoint") == [f"/{service}"], cfg.get("Entrypoint")
        assert not cfg.get("Cmd"), f"{service} {platform}: unexpected Cmd {cfg.get('Cmd')}"
        assert set(cfg.get("ExposedPorts", {})) == EXPOSED[service]
        labels = cfg.get("Labels", {})
        assert labels.get("org.opencontainers.image.version") == workspace_version()
        for label in ("source", "revision", "created"):
            assert labels.get(f"org.opencontainers.image.{label}"), f"label {label} missing: {labels}"

        assert len(manifest["layers"]) == 1, f"{service} {platform}: {len(manifest['layers'])} layers"
        files = layer_files(oci.blob(manifest["layers"][0]["digest"]))
        assert set(files) == {service}, f"{service} {platform}: layer holds {sorted(files)}"
        member, content = files[service]
        assert member.mode & 0o111, f"{service} {platform}: /{service} is not executable"
        dist_binary = require_dist() / target / service
        assert content == dist_binary.read_bytes(), f"{service} {platform}: layer binary differs from {dist_binary}"


@pytest.mark.parametrize("service", SERVICES)
def test_skopeo_sees_the_same_index(service: str) -> None:
    skopeo = require_tool("skopeo")
    oci = archive(service)
    raw = subprocess.run([skopeo, "inspect", "--raw", f"oci-archive:{oci.path}"], check=True,
                         capture_output=True, timeout=120).stdout
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert {platform_of(m) for m in index["manifests"] if not is_attestation(m)} == EXPECTED_PLATFORMS
    (entry,) = json.loads(oci.read("index.json"))["manifests"]
    assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == entry["digest"], "skopeo read another index"


# --- the images, run --------------------------------------------------------------------


class Podman:
    """podman with runc and a throw-away vfs store, so the tests neither need
    nor touch the machine's image store."""

    def __init__(self, root: Path):
        self.base = [
            require_tool("podman"),
            "--root", str(root / "storage"), "--runroot", str(root / "run"),
            "--storage-driver", "vfs", "--runtime", require_tool("runc"),
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
        ]

    def run(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"podman {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout.strip()


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    root = tmp_path_factory.mktemp("podman")
    podman = Podman(root)
    yield podman
    # Containers are started with --rm; make sure none is left, then drop
    # the store (images only, no mounts left behind).
    subprocess.run([*podman.base, "rm", "--force", "--all", "--time", "5"], capture_output=True, timeout=120)
    subprocess.run([*podman.base, "system", "reset", "--force"], capture_output=True, timeout=120)


class ContainerService(Service):
    """A service started by `podman run`. SIGTERM reaches the container by
    `podman kill`, as a kubelet's does, rather than through the `podman run`
    client: its forwarding of signals races (containers/podman#8086), and
    a SIGTERM that reached the client at the wrong moment killed it (exit
    -15) instead of reaching the container."""

    def __init__(self, argv: list[str], name: str, kill: list[str]):
        super().__init__(argv, name=name)
        self.kill_command = kill

    def send_sigterm(self) -> None:
        subprocess.run(self.kill_command, capture_output=True, timeout=60)


def pull(podman: Podman, service: str, platform: tuple) -> str:
    os_, arch, variant = platform
    spec = "/".join(p for p in platform if p)
    image_id = podman.run("pull", "-q", "--platform", spec, f"oci-archive:{archive(service).path}")
    inspect = json.loads(podman.run("image", "inspect", image_id))[0]
    assert (inspect["Os"], inspect["Architecture"]) == (os_, arch), inspect["Architecture"]
    return image_id


@pytest.mark.parametrize("target", list(TARGETS))
def test_images_run_and_answer(target: str, podman: Podman, binfmt_problem: str | None) -> None:
    platform, _machine, _class, qemu = TARGETS[target]
    images = {service: pull(podman, service, platform) for service in SERVICES}

    if qemu and binfmt_problem:
        # No binfmt_misc: run the binary taken out of each image's layer
        # under qemu-user, with the image's own entrypoint.
        print(f"binfmt_misc unusable ({binfmt_problem}); running the layer binaries under {qemu}")
        qemu_path = require_tool(qemu)
        extracted = {}
        for service in SERVICES:
            oci = archive(service)
            index = oci.json_blob(json.loads(oci.read("index.json"))["manifests"][0]["digest"])
            (descriptor,) = [m for m in index["manifests"] if platform_of(m) == platform]
            manifest = oci.json_blob(descriptor["digest"])
            _member, content = layer_files(oci.blob(manifest["layers"][0]["digest"]))[service]
            path = Path(podman.base[2]).parent / f"{target}-{service}"
            path.write_bytes(content)
            path.chmod(0o755)
            extracted[service] = path

        def start(service: str, extra: list[str]) -> Service:
            return Service([qemu_path, str(extracted[service]), *SERVICE_ARGS[service], *extra],
                           env=QUICK_STOP_ENV, name=f"{service} (layer, {target})")
    else:
        limits = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]

        def start(service: str, extra: list[str]) -> Service:
            name = f"pi-gcd-test-{service}-{uuid.uuid4().hex[:8]}"
            names.append(name)
            env = [f"--env={k}={v}" for k, v in QUICK_STOP_ENV.items()]
            # Loopback of the host only; restricted as the Kubernetes
            # manifests run them: read-only root, no capabilities.
            argv = [*podman.base, "run", "--rm", "--name", name, "--network", "host", "--ipc", "none",
                    "--read-only", "--cap-drop", "all", "--security-opt", "no-new-privileges",
                    *limits, *env, images[service], *SERVICE_ARGS[service], *extra]
            kill = [*podman.base, "kill", "--signal", "TERM", name]
            return ContainerService(argv, name=f"{service} (image, {target})", kill=kill)

    names: list[str] = []
    try:
        with running_pair(start) as (api_addr, _):
            assert_gcd_answers(api_addr)
    finally:
        # --rm cleans up in the background; wait for it (and for a container
        # whose podman client was killed) before the store goes away.
        if names:
            subprocess.run([*podman.base, "rm", "--force", "--ignore", "--time", "5", *names],
                           capture_output=True, timeout=120)


# --- reproducibility ------------------------------------------------------------------


def test_images_are_reproducible() -> None:
    """Building the images again from the same dist/ and commit gives the same
    archives and SBOMs, byte for byte (fixed timestamps, fixed tar order)."""
    from conftest import REPO

    paths = [require_file(require_dist() / "images" / f"{service}.oci.tar") for service in SERVICES]
    paths += sorted((require_dist() / "images").glob("*.cdx.json"))
    assert len(paths) == 2 + 6, paths
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    done = subprocess.run([str(REPO / "scripts" / "build-arm.sh"), "--images-only", "--route", "daemonless"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "REGISTRY"})
    assert done.returncode == 0, f"build-arm.sh --images-only failed:\n{done.stdout}\n{done.stderr}"
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert after == before, (
        "rebuilt images differ from dist/images (was the work tree changed since the build? "
        f"the revision label says -dirty then):\n{done.stderr}"
    )


# --- pushing to a registry ------------------------------------------------------------


def free_loopback_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_get(port: int, path: str, accept: str, with_headers: bool = False):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": accept})
        response = conn.getresponse()
        if with_headers:
            return response.status, response.read(), dict(response.getheaders())
        return response.status, response.read()
    finally:
        conn.close()


def test_push_to_registry(tmp_path: Path, podman: Podman) -> None:
    """build-arm.sh --registry pushes one multi-arch tag per service (plus the
    revision tag), which a runtime pulls for its platform and runs."""
    from conftest import REPO

    registry = require_tool("docker-registry")
    port = free_loopback_port()
    (tmp_path / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    server = subprocess.Popen([registry, "serve", str(tmp_path / "config.yml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(("127.0.0.1", port), "/v2/", deadline=30)
        done = subprocess.run(
            [str(REPO / "scripts" / "build-arm.sh"), "--images-only", "--route", "daemonless",
             "--registry", f"127.0.0.1:{port}/pi-gcd", "--insecure"],
            cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"build-arm.sh --registry failed:\n{done.stdout}\n{done.stderr}"
        version = workspace_version()
        for service in SERVICES:
            status, body = registry_get(port, f"/v2/pi-gcd/{service}/tags/list", "application/json")
            assert status == 200, (status, body)
            tags = set(json.loads(body)["tags"])
            assert version in tags and any(t.startswith(f"{version}-") for t in tags), tags
            status, body, headers = registry_get(port, f"/v2/pi-gcd/{service}/manifests/{version}",
                                                 "application/vnd.oci.image.index.v1+json", with_headers=True)
            assert status == 200, (status, body)
            # What render-manifests.sh pins: the digest the registry serves.
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            assert headers.get("Docker-Content-Digest") == digest, headers
            pushed = require_dist() / "images" / f"{service}.pushed"
            assert pushed.read_text() == f"127.0.0.1:{port}/pi-gcd/{service}:{version}@{digest}\n"
            index = json.loads(body)
            assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
            platforms = [platform_of(m) for m in index["manifests"]]
            assert len(platforms) == 3 and set(platforms) == EXPECTED_PLATFORMS, platforms
        # A Pi with a 64-bit OS pulls its own image from the index.
        image = podman.run("pull", "-q", "--tls-verify=false", "--platform", "linux/arm64",
                           f"127.0.0.1:{port}/pi-gcd/gcd:{version}")
        inspect = json.loads(podman.run("image", "inspect", image))[0]
        assert inspect["Architecture"] == "arm64"
        assert inspect["Config"]["Entrypoint"] == ["/gcd"]
        # The manifests rendered for this registry name exactly that image.
        out = tmp_path / "k8s"
        done = subprocess.run([str(REPO / "scripts" / "render-manifests.sh"), "--registry",
                               f"127.0.0.1:{port}/pi-gcd", "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        images = {c["image"] for w in km.workloads(km.load(out)) for c in km.containers(w)}
        assert images == {(require_dist() / "images" / f"{s}.pushed").read_text().strip() for s in SERVICES}
        pulled = podman.run("pull", "-q", "--tls-verify=false", "--platform", "linux/arm/v7",
                            next(i for i in images if "/api:" in i))
        assert json.loads(podman.run("image", "inspect", pulled))[0]["Architecture"] == "arm"
    finally:
        server.terminate()
        server.wait(timeout=30)
        for service in SERVICES:  # a record of a registry that is gone
            (require_dist() / "images" / f"{service}.pushed").unlink(missing_ok=True)


# --- the manifests name these images ------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_manifests_use_the_archived_image_name(service: str) -> None:
    """`k3s ctr images import` then `kubectl create -f k8s` must need no pull:
    the name in the archive is what the manifests' image normalizes to."""
    from conftest import REPO

    top = json.loads(archive(service).read("index.json"))
    archived = top["manifests"][0]["annotations"]["io.containerd.image.name"]
    images = set()
    for path in sorted((REPO / "k8s").glob("*.y*ml")):
        for line in path.read_text().splitlines():
            key, _, value = line.strip().partition(":")
            if key in ("image", "- image") and value.strip().strip("\"'").split("@")[0].rsplit(":", 1)[0].endswith(f"/{service}"):
                images.add(value.strip().strip("\"'"))
    assert images, f"no image for {service} in k8s/"
    assert {km.normalized_image(i) for i in images} == {archived}, (images, archived)
