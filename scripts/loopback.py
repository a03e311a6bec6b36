"""Starts gcd and api builds on 127.0.0.1 and tells when they answer, for
scripts/bench.py and scripts/instructions.py.

A build is driven only through the environment variables of the fixed
interface (GCD_LISTEN, GCD_ADMIN_LISTEN, GCD_ADDR, API_LISTEN,
API_ADMIN_LISTEN), at ports picked here, and it is ready once a connection
opens and a first request succeeds. Nothing is read from its output, so
another build of the same contract (one that prints nothing and has no
admin port) is measured the same way as ours.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

# The answer every build gives to GET /gcd/12/18.
ANSWER = b'{"result":"6"}'


class StartError(Exception):
    """A process that exited or never answered; the message says which."""


# Ports handed out so far: the kernel may pick a port again once the probe
# socket is closed, and two processes told the same port would collide.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and not handed out before: the
    kernel's pick for port 0. Another program may take it before ours binds
    it; that shows as a start that fails with its log, never as figures from
    the wrong process, since readiness checks the answer."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def loopback() -> str:
    return f"127.0.0.1:{free_port()}"


def gcd_env(listen: str, admin: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"GCD_LISTEN": listen, "GCD_ADMIN_LISTEN": admin, **(extra or {})}


def api_env(listen: str, admin: str, gcd_addrs: list[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"API_LISTEN": listen, "API_ADMIN_LISTEN": admin, "GCD_ADDR": ",".join(gcd_addrs), **(extra or {})}


def parse_set(spec: str) -> tuple[Path, str]:
    """DIR[:NAME] -> (DIR, NAME), NAME defaulting to DIR's last part."""
    directory, _, name = spec.partition(":")
    return Path(directory), name or Path(directory).name


def tcp_open(addr: str, timeout: float = 0.2) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """True when GET url answers 200 with the contract's body."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200 and response.read() == ANSWER
    except OSError:
        return False


class Processes:
    """Every process started for a measurement, its output in a log file of
    its own; `stop_all` ends them (SIGKILL: nothing here needs a graceful
    exit, and another build may not have one)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        # Each process with its log and the name errors give it.
        self.running: list[tuple[subprocess.Popen, Path, str]] = []
        self.started = 0

    def start(self, argv: list[str], env: dict[str, str], name: str = "") -> subprocess.Popen:
        """Starts argv with `env` added to this process's environment;
        `name` (argv[0] unless given) is what errors call it."""
        self.started += 1
        log = self.log_dir / f"{Path(argv[0]).name}.{self.started}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
            )
        self.running.append((proc, log, name or argv[0]))
        return proc

    def describe(self, proc: subprocess.Popen, lines: int = 5) -> tuple[str, str]:
        """The process's name and the last lines of its log."""
        for started, log, name in self.running:
            if started is proc:
                return name, "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        return str(proc.args[0]), ""

    def wait_ready(self, proc: subprocess.Popen, addr: str, answers: Callable[[], bool], deadline_s: float) -> None:
        """Polls until `addr` accepts a connection and then `answers()`
        holds; StartError if `proc` exits first or the deadline passes."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if proc.poll() is not None:
                name, tail = self.describe(proc)
                raise StartError(f"{name} exited ({proc.returncode}) before answering at {addr}\n{tail}")
            if tcp_open(addr) and answers():
                return
            time.sleep(0.02)  # poll interval
        name, tail = self.describe(proc)
        raise StartError(f"{name} did not answer at {addr} within {deadline_s:.0f} s\n{tail}")

    def stop_all(self) -> None:
        for proc, _, _ in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc, _, _ in self.running:
            proc.wait()
        self.running.clear()
