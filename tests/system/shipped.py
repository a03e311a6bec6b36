"""The shipped binaries, started the way the manifests start them.

The binaries are the static x86_64 ones scripts/build-arm.sh puts in dist/,
or those in PI_GCD_BIN_DIR (scripts/test.sh --host-only points it at a host
release build). Each runs with its Deployment's env and memory limit, on
ephemeral loopback ports, with no shutdown delay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import k8s_manifests as km
import pytest

import hostile as h
from conftest import DIST, Service

BIN_DIR = Path(os.environ.get("PI_GCD_BIN_DIR", DIST / "x86_64-unknown-linux-musl"))
# The example binaries (examples/echo), never shipped: a host release build
# (scripts/test.sh builds them and sets this).
EXAMPLE_BIN_DIR = Path(os.environ.get("PI_GCD_EXAMPLE_BIN_DIR", BIN_DIR))


@dataclass
class Target:
    """A started binary, configured from its Deployment."""

    name: str
    service: Service
    addr: tuple[str, int]
    admin: tuple[str, int]
    memory_limit: int
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.service.proc.pid

    def peak(self) -> int:
        return h.vm_hwm(self.pid)

    def log_value(self, key: str) -> int:
        """A `key=value` number from the process's start-up log."""
        for line in self.service.lines:
            for token in line.split():
                if token.startswith(f"{key}="):
                    return int(token.split("=", 1)[1])
        raise AssertionError(f"{self.name} logged no {key}; log:\n{self.service.log()}")


def binary(name: str, directory: Path = BIN_DIR) -> Path:
    path = directory / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run scripts/build-arm.sh (or set PI_GCD_BIN_DIR; for the examples, "
            "cargo build --release -p echo and PI_GCD_EXAMPLE_BIN_DIR)",
            pytrace=False,
        )
    return path


def command(
    name: str,
    extra_env: dict[str, str] | None = None,
    open_files: int | None = None,
    binary_name: str | None = None,
) -> tuple[list[str], dict[str, str], int]:
    """The argv and env that run `name` as its Deployment does, and its
    memory limit; with `open_files`, under that open-file limit (soft and
    hard), as a container runtime's nofile limit sets it; with
    `binary_name`, another binary run the same way (examples/echo's
    echo-gcd, run as gcd)."""
    deployment = km.find(km.load(), "Deployment", name)
    container = km.pod_spec(deployment)["containers"][0]
    prefix = name.upper()
    limit = int(km.memory_bytes(container["resources"]["limits"]["memory"]))
    env = km.resolve_env(container)
    env.update(
        {
            f"{prefix}_LISTEN": "127.0.0.1:0",
            f"{prefix}_ADMIN_LISTEN": "127.0.0.1:0",
            f"{prefix}_MEMORY_LIMIT": str(limit),
            f"{prefix}_SHUTDOWN_DELAY_MS": "0",
            "RUST_LOG": "info",
        }
    )
    env.update(extra_env or {})
    argv = [str(binary(binary_name, EXAMPLE_BIN_DIR) if binary_name else binary(name))]
    if open_files is not None:
        argv = ["/bin/sh", "-c", f'ulimit -n {open_files} && exec "$0" "$@"', *argv]
    return argv, env, limit


def start(
    name: str,
    extra_env: dict[str, str] | None = None,
    open_files: int | None = None,
    binary_name: str | None = None,
) -> Target:
    argv, env, limit = command(name, extra_env, open_files, binary_name)
    service = Service(argv, env=env, name=name)
    addr, admin = service.wait_listening()
    return Target(name, service, addr, admin, limit, env)
