"""Shared helpers for the artifact tests: dist/ layout, processes, HTTP, qemu.

Every test here checks what scripts/build-arm.sh produced; nothing is
skipped when something is missing: a missing artifact or tool is a failure
that says what to run or install.
"""

import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from build_cache import CACHE, clone_dir  # noqa: F401  (the tests take both from here)

REPO = Path(__file__).resolve().parents[2]
DIST = Path(os.environ.get("PI_GCD_DIST", REPO / "dist"))

# Rust target -> (OCI platform, ELF machine, ELF class, qemu-user binary or None)
TARGETS = {
    "armv7-unknown-linux-musleabihf": (("linux", "arm", "v7"), 40, 1, "qemu-arm-static"),
    "aarch64-unknown-linux-musl": (("linux", "arm64", None), 183, 2, "qemu-aarch64-static"),
    "x86_64-unknown-linux-musl": (("linux", "amd64", None), 62, 2, None),
}
SERVICES = ("gcd", "api")
PLATFORM_TARGET = {platform: target for target, (platform, *_rest) in TARGETS.items()}
# Generous: ARM binaries start under qemu emulation on a busy 2-core machine.
START_DEADLINE = 60.0


def require_dist() -> Path:
    if not DIST.is_dir():
        pytest.fail(f"{DIST} does not exist: run scripts/build-arm.sh first", pytrace=False)
    return DIST


def require_file(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path} is missing: run scripts/build-arm.sh first", pytrace=False)
    return path


def require_tool(name: str) -> str:
    """`name` on PATH, or among the cargo tools install-deps.sh builds."""
    found = shutil.which(name) or shutil.which(name, path=str(CACHE / "tools" / "bin"))
    if not found:
        pytest.fail(f"{name} not found: run scripts/install-deps.sh", pytrace=False)
    return found


class Service:
    """A started gcd or api process (native, under qemu-user, or in podman).

    Its stdout is read on a thread; `wait_listening` waits, with a deadline,
    for the start-up line that carries `addr=` and `admin_addr=`.
    """

    FIELD = re.compile(r"\b(addr|admin_addr)=(\S+)")

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, name: str = ""):
        self.argv = argv
        self.name = name or Path(argv[0]).name
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RUST_LOG": "info", **(env or {})},
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)
        self._queue.put(None)

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_listening(self, deadline: float = START_DEADLINE) -> tuple[tuple[str, int], tuple[str, int]]:
        end = time.monotonic() + deadline
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no 'listening' line within {deadline}s; log:\n{self.log()}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"{self.name} exited ({self.proc.wait()}) before listening; log:\n{self.log()}"
                )
            fields = dict(self.FIELD.findall(line))
            if "addr" in fields and "admin_addr" in fields:
                return parse_addr(fields["addr"]), parse_addr(fields["admin_addr"])

    def send_sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def terminate(self, deadline: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit status (kills on timeout)."""
        if self.proc.poll() is None:
            self.send_sigterm()
        try:
            return self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not exit within {deadline}s of SIGTERM; log:\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def http_get(addr: tuple[str, int], path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    host, port = addr
    assert host in ("127.0.0.1", "::1", "localhost"), f"refusing to send traffic to {host}"
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ready(addr: tuple[str, int], path: str = "/readyz", deadline: float = START_DEADLINE,
               service: Service | None = None) -> None:
    """Polls GET path until it answers 200, failing after deadline seconds."""
    end = time.monotonic() + deadline
    last: object = None
    while time.monotonic() < end:
        if service is not None and service.proc.poll() is not None:
            raise AssertionError(f"{service.name} exited ({service.proc.returncode}); log:\n{service.log()}")
        try:
            status, body = http_get(addr, path, timeout=5.0)
            if status == 200:
                return
            last = (status, body)
        except OSError as err:
            last = err
        time.sleep(0.1)  # poll interval, not a readiness guess
    raise AssertionError(f"{addr}{path} not ready within {deadline}s (last: {last!r})")


def assert_gcd_answers(api_addr: tuple[str, int]) -> None:
    status, body = http_get(api_addr, "/gcd/12/18")
    assert status == 200, (status, body)
    assert json.loads(body) == {"result": "6"}, body
    status, body = http_get(api_addr, "/gcd/abc/18")
    assert status == 400, (status, body)
    assert json.loads(body)["error"] == "Invalid parameter A", body


SERVICE_ARGS = {
    "gcd": ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
    "api": ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
}
# No grace period before draining: these tests stop the services themselves.
QUICK_STOP_ENV = {"GCD_SHUTDOWN_DELAY_MS": "0", "API_SHUTDOWN_DELAY_MS": "0"}


# --- binfmt_misc -------------------------------------------------------------

BINFMT = Path("/proc/sys/fs/binfmt_misc")


def ensure_binfmt() -> str | None:
    """Makes the kernel run ARM binaries through qemu (needed for ARM
    containers). Returns None when it works, else why not.
    PI_GCD_NO_BINFMT=1 pretends it cannot (to exercise the fallback)."""
    if os.environ.get("PI_GCD_NO_BINFMT") == "1":
        return "PI_GCD_NO_BINFMT=1"
    try:
        if not (BINFMT / "register").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                           check=True, capture_output=True, timeout=10)
        for name in ("qemu-arm", "qemu-aarch64"):
            if not (BINFMT / name).exists():
                rule = Path(f"/usr/lib/binfmt.d/{name}.conf").read_text().strip()
                (BINFMT / "register").write_text(rule)
            if (BINFMT / name).read_text().splitlines()[0] != "enabled":
                return f"{BINFMT / name} is disabled"
        return None
    except (OSError, subprocess.SubprocessError) as err:
        return f"cannot register qemu with binfmt_misc: {err}"


@pytest.fixture(scope="session")
def binfmt_problem() -> str | None:
    return ensure_binfmt()
