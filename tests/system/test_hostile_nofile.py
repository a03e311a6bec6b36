"""File descriptors as part of the budget, against the shipped binaries run
as their Deployments run them (shipped.py), under a container runtime's
nofile limit.

A limit too low for a few client connections is a start-up error: exit 2
with a message naming the limit and what it allows, and --check-config
says the same. Never a process that logs max_connections=0, answers
/readyz 200 and accepts nobody. Just above that floor the connection cap
fits the limit: a client opening far more connections than there are
descriptors neither stops the process nor keeps a legitimate client out,
the port never runs out of descriptors, and memory stays under the limit.
"""

from __future__ import annotations

import subprocess

import pytest

import hostile as h
from conftest import http_get
from shipped import command, start
from test_hostile import eventually, legit_grpc, legit_http, record, survived  # noqa: F401 (record: a fixture)

# What each binary keeps for its admin port and itself, plus its smallest
# useful connection cap: gcd 16 + 64 + 8, the api 16 + 64 + 64 + 16.
FLOOR = {"gcd": 88, "api": 160}
FLOOD = 1000
OPEN_FILES = h.raise_open_files(FLOOD + 256)


@pytest.mark.parametrize("check_config", [False, True], ids=["start", "check-config"])
@pytest.mark.parametrize("name", ["gcd", "api"])
def test_too_few_descriptors_is_a_start_up_error(name, check_config):
    argv, env, _ = command(name, open_files=64)
    if check_config:
        argv.append("--check-config")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "the open-file limit is invalid: 64 file descriptors leave room for 0 client connections" in text
    assert f"raise it to at least {FLOOR[name]}" in text
    assert "listening" not in text


@pytest.mark.parametrize("name", ["gcd", "api"])
def test_a_connection_flood_just_above_the_floor(name, record):  # noqa: F811
    open_files = FLOOR[name] + 32
    backend = start("gcd") if name == "api" else None
    extra = {"GCD_ADDR": f"{backend.addr[0]}:{backend.addr[1]}"} if backend else None
    target = start(name, extra, open_files=open_files)
    try:
        cap = target.log_value("max_connections")
        assert 0 < cap <= 32 + (16 if name == "api" else 8), target.service.log()
        assert http_get(target.admin, "/readyz")[0] == 200
        legit = (lambda: legit_http(target)) if name == "api" else (lambda: legit_grpc(target))
        with h.Fleet() as fleet:
            socks = fleet.open(target.addr, FLOOD)
            # Each is accepted in its turn, then evicted for the next while
            # it has sent nothing: all but the cap's worth end closed.
            eventually(
                "the flood to pass through the port",
                lambda: fleet.closed_by_server(socks) >= FLOOD - cap,
                timeout=30,
            )
            survived(
                target,
                f"{name}: {FLOOD} connections with {open_files} descriptors",
                record,
                legit,
                connections=FLOOD,
            )
        assert "accept failed" not in target.service.log(), target.service.log()
        assert http_get(target.admin, "/readyz")[0] == 200
    finally:
        target.service.kill()
        if backend:
            backend.service.kill()
