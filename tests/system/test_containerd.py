"""The registry-less k3s path: containerd (k3s embeds it; Debian's package
here) imports the OCI archives of dist/images exactly as `k3s ctr images
import` does, then runs the images the way the pods run them.

A private containerd runs with its own root, state and socket in a
temporary directory, so the machine's own container runtime, if any, is
neither needed nor touched. The commands are those of docs/deploying.md,
plus `--address` for the private socket.

The containers use the host's network (`--net-host`), so the api reaches
gcd on a loopback port instead of through the gcd-service DNS name; every
other pod setting comes from the manifests: the image's numeric user, a
read-only root filesystem, no capabilities, no new privileges, the default
seccomp profile, the memory and CPU limits, the cgroup mount and the env.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import k8s_manifests as km
import pytest

from conftest import http_get, require_tool

IMAGES_DIR = Path(os.environ.get("PI_GCD_DIST", km.ROOT / "dist")) / "images"
NAMESPACE = "k8s.io"  # where k3s and the kubelet's CRI keep images
PLATFORMS = {"linux/amd64", "linux/arm/v7", "linux/arm64"}
# The capabilities ctr's default spec grants; the pods drop them all.
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)


class Containerd:
    """A containerd of our own, and `ctr` pointed at it."""

    def __init__(self, base: Path):
        self.base = base
        self.socket = base / "containerd.sock"
        config = base / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{base / "root"}"\n'
            f'state = "{base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
        )
        self.log = open(base / "containerd.log", "w")
        self.proc = subprocess.Popen(
            [require_tool("containerd"), "--config", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False, timeout=10).returncode != 0:
            assert self.proc.poll() is None, f"containerd exited: {(base / 'containerd.log').read_text()}"
            assert time.monotonic() < deadline, "containerd did not answer within 30 s"
            time.sleep(0.1)  # polling interval, not a readiness guess

    def command(self, *args: str) -> list[str]:
        return [require_tool("ctr"), "--address", str(self.socket), "-n", NAMESPACE, *args]

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"ctr {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        return done

    def stop(self) -> None:
        for line in self.ctr("task", "ls", "-q", check=False).stdout.split():
            self.ctr("task", "kill", "-s", "SIGKILL", line, check=False)
            self.ctr("task", "delete", "--force", line, check=False)
        for line in self.ctr("container", "ls", "-q", check=False).stdout.split():
            self.ctr("container", "delete", line, check=False)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        # Snapshot mounts left behind would keep the directory busy.
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            target = line.split()[1]
            if target.startswith(str(self.base)):
                subprocess.run(["umount", "-l", target], capture_output=True)


@pytest.fixture(scope="module")
def containerd(tmp_path_factory):
    # A short path: unix socket paths are limited to about 100 bytes.
    base = Path(tmp_path_factory.mktemp("ctrd"))
    daemon = Containerd(base)
    yield daemon
    daemon.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def manifests():
    objects = km.load()
    return {name: km.find(objects, "Deployment", name) for name in ("gcd", "api")}


@pytest.fixture(scope="module")
def imported(containerd, manifests):
    """Both archives imported the way docs/deploying.md says; the image
    name each manifest uses."""
    names = {}
    for service, deployment in manifests.items():
        archive = IMAGES_DIR / f"{service}.oci.tar"
        assert archive.is_file(), f"{archive} is missing: run scripts/build-arm.sh"
        containerd.ctr("images", "import", str(archive), timeout=300)
        names[service] = km.normalized_image(km.pod_spec(deployment)["containers"][0]["image"])
    return names


def image_rows(containerd: Containerd) -> dict[str, list[str]]:
    """`ctr images ls` as {ref: columns}."""
    lines = containerd.ctr("images", "ls").stdout.splitlines()[1:]
    return {line.split()[0]: line.split() for line in lines if line.strip()}


def test_archives_import_under_the_manifests_image_names(containerd, imported):
    rows = image_rows(containerd)
    for service, name in imported.items():
        assert name in rows, f"{service}: {name} not among the imported images {sorted(rows)}"
        platforms = next((c for c in rows[name] if "linux/" in c), "")
        # unknown/unknown: the SBOM attestations, which no node runs.
        assert set(platforms.split(",")) == PLATFORMS | {"unknown/unknown"}, f"{name}: platforms {platforms}"
    check = containerd.ctr("images", "check").stdout
    for name in imported.values():
        line = next((l for l in check.splitlines() if l.startswith(name + " ")), "")
        assert "complete" in line, f"{name} is not complete after the import:\n{check}"
    # Pinned as docs/deploying.md says, so the kubelet's image GC keeps them.
    for name in imported.values():
        assert name.startswith("localhost/"), f"{name}: a name a public registry could serve"
        containerd.ctr("images", "label", name, "io.cri-containerd.pinned=pinned")
        assert "io.cri-containerd.pinned=pinned" in image_rows(containerd)[name][-1], image_rows(containerd)[name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Task:
    """A container started with `ctr run`, in the foreground: the `ctr`
    process exits with the task's exit code."""

    def __init__(self, containerd: Containerd, image: str, name: str, deployment, env: dict[str, str]):
        spec = km.pod_spec(deployment)
        container = spec["containers"][0]
        limits = container["resources"]["limits"]
        security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
        assert security.get("readOnlyRootFilesystem") and security.get("allowPrivilegeEscalation") is False
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        cpu_quota = int(km.cpu_millis(limits["cpu"]) * 100)  # per 100 ms period
        args = [
            "run", "--rm", "--net-host", "--read-only", "--seccomp",
            "--memory-limit", str(int(km.memory_bytes(limits["memory"]))),
            "--cpu-period", "100000", "--cpu-quota", str(cpu_quota),
            # The kubelet's runtime mounts the container's cgroup read-only.
            "--mount", "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:noexec:nodev",
            *[arg for cap in DEFAULT_CAPABILITIES for arg in ("--cap-drop", f"CAP_{cap}")],
            *[arg for key, value in sorted(env.items()) for arg in ("--env", f"{key}={value}")],
            image, name,
        ]
        self.containerd = containerd
        self.name = name
        self.output = open(containerd.base / f"{name}.log", "w+")
        self.proc = subprocess.Popen(
            containerd.command(*args), stdin=subprocess.DEVNULL, stdout=self.output, stderr=subprocess.STDOUT
        )
        self.expected_user = security["runAsUser"]

    def log(self) -> str:
        self.output.flush()
        return (self.containerd.base / f"{self.name}.log").read_text()

    def pid(self) -> int:
        for line in self.containerd.ctr("task", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == self.name:
                return int(fields[1])
        raise AssertionError(f"no task {self.name}; log:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.containerd.ctr("task", "kill", "-s", "SIGKILL", self.name, check=False)
            self.proc.wait(timeout=30)
        self.output.close()


def wait_ready(port: int, task: Task, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert task.proc.poll() is None, f"{task.name} exited {task.proc.returncode}:\n{task.log()}"
        try:
            if http_get(("127.0.0.1", port), "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)  # polling interval, not a readiness guess
    raise AssertionError(f"{task.name} not ready within {timeout} s:\n{task.log()}")


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def cgroup_memory_limit(pid: int) -> int:
    """The memory limit of the task's cgroup, as the host sees it."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            limit = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.max"
        elif "memory" in controllers.split(","):
            limit = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.limit_in_bytes"
        else:
            continue
        if limit.exists():
            return int(limit.read_text())
    raise AssertionError(f"no memory cgroup for pid {pid}")


def test_images_run_as_the_pods_do_and_drain_on_sigterm(containerd, imported, manifests):
    ports = {name: free_port() for name in ("grpc", "gcd_admin", "http", "api_admin")}
    envs = {service: km.resolve_env(km.pod_spec(d)["containers"][0]) for service, d in manifests.items()}
    envs["gcd"].update({"GCD_LISTEN": f"127.0.0.1:{ports['grpc']}", "GCD_ADMIN_LISTEN": f"127.0.0.1:{ports['gcd_admin']}"})
    envs["api"].update(
        {
            "API_LISTEN": f"127.0.0.1:{ports['http']}",
            "API_ADMIN_LISTEN": f"127.0.0.1:{ports['api_admin']}",
            "GCD_ADDR": f"127.0.0.1:{ports['grpc']}",
        }
    )
    tasks = {}
    try:
        for service, admin in (("gcd", "gcd_admin"), ("api", "api_admin")):
            tasks[service] = Task(containerd, imported[service], f"pi-gcd-{service}", manifests[service], envs[service])
            wait_ready(ports[admin], tasks[service])

        for service, task in tasks.items():
            status = proc_status(task.pid())
            container = km.pod_spec(manifests[service])["containers"][0]
            limit = int(km.memory_bytes(container["resources"]["limits"]["memory"]))
            assert status["Uid"].split()[:2] == [str(task.expected_user)] * 2, status["Uid"]
            for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(status[caps], 16) == 0, f"{service}: {caps} {status[caps]}"
            assert status["NoNewPrivs"] == "1", status["NoNewPrivs"]
            assert status["Seccomp"] == "2", f"{service}: no seccomp filter"
            assert cgroup_memory_limit(task.pid()) == limit
            assert f"memory_limit={limit / 2**20:.1f} MiB" in task.log(), task.log()

        status, body = http_get(("127.0.0.1", ports["http"]), "/gcd/12/18")
        assert (status, json.loads(body)) == (200, {"result": "6"}), (status, body)

        # SIGTERM, as the kubelet sends it, to both at once: each drains and
        # exits 0 within its terminationGracePeriodSeconds.
        started = time.monotonic()
        for task in tasks.values():
            containerd.ctr("task", "kill", "-s", "SIGTERM", task.name)
        for service, task in tasks.items():
            grace = km.pod_spec(manifests[service]).get("terminationGracePeriodSeconds", 30)
            left = max(1.0, grace - (time.monotonic() - started))
            try:
                code = task.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{service} still running {grace} s after SIGTERM:\n{task.log()}")
            assert code == 0, f"{service} exited {code} on SIGTERM:\n{task.log()}"
            assert "stopped" in task.log(), task.log()
    finally:
        for task in tasks.values():
            task.stop()
