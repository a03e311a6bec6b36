"""The original Go implementation that `scripts/bench.sh --original`
measures ours against (bench/original): it builds from Debian's packages
on a fresh machine, takes the flags the bench passes, announces its ports
as ours do, and answers the contract ours keeps. All traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, Service, http_get, require_tool

BENCH_FLAGS = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
               "--shutdown-delay-ms", "0", "--drain-timeout-ms", "1000", "--worker-threads", "1"]


def test_the_original_builds_and_answers_as_the_bench_drives_it(tmp_path):
    require_tool("go")
    built = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build-original.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stderr
    assert "gin" in (tmp_path / "VERSIONS").read_text()

    gcd = Service([str(tmp_path / "gcd"), *BENCH_FLAGS], name="original gcd")
    api = None
    try:
        gcd_addr, _ = gcd.wait_listening()
        api = Service([str(tmp_path / "api"), *BENCH_FLAGS, "--gcd", f"{gcd_addr[0]}:{gcd_addr[1]}"],
                      name="original api")
        api_addr, api_admin = api.wait_listening()
        assert http_get(api_addr, "/gcd/12/18") == (200, b'{"result":"6"}')
        assert http_get(api_admin, "/readyz")[0] == 200
    finally:
        for service in (api, gcd):
            if service is not None:
                service.kill()
