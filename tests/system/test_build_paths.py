"""The shipped binaries hold no path of the machine that built them.

rustc embeds the paths of the sources it compiles (panic locations, a
dependency's `file!()`): cargo's registry sources under cargo's home, the std
sources `-Z build-std` compiles, code build scripts generate in the target
directory. scripts/build-arm.sh remaps them (`--remap-path-prefix`, see
xtask/src/plan.rs) to the neutral prefixes a prebuilt std and cross's
containers use, so every builder ships the same bytes
(docs/building-for-pi.md).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import CACHE, REPO, SERVICES, TARGETS, require_dist, require_file


def build_machine_paths() -> dict[str, Path]:
    """What of this machine a binary built here could name."""
    home = Path.home()
    paths = {
        "the home directory": home,
        "cargo's home": Path(os.environ.get("CARGO_HOME") or home / ".cargo"),
        "rustup's home": Path(os.environ.get("RUSTUP_HOME") or home / ".rustup"),
        "the clone": REPO,
        "the build cache": CACHE,
        # Debian's rustc-web keeps the std sources the daemonless route builds
        # here; a prebuilt std names /rustc/<commit> instead.
        "the std sources": Path("/usr/lib/rustlib/src/rust"),
    }
    rustc = shutil.which("rustc")
    if rustc:
        sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
        if sysroot:
            paths["rustc's sysroot"] = Path(sysroot)
    # Each as written and as resolved (a symlinked home, say).
    return {f"{what} ({form})": form for what, path in paths.items() for form in {path, path.resolve()}}


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("target", TARGETS)
def test_no_shipped_binary_names_a_path_of_the_build_machine(target: str, service: str) -> None:
    data = require_file(require_dist() / target / service).read_bytes()
    found = [f"{what}: {os.fsencode(path) + b'/'!r}" for what, path in build_machine_paths().items()
             if os.fsencode(path) + b"/" in data]
    assert not found, f"{target}/{service} names {', '.join(found)}"
    # The paths are there, neutral: the dependencies' under /cargo, std's
    # under /rustc/<commit>.
    assert b"/cargo/registry/src/" in data, f"{target}/{service}: no dependency source path at all"
    assert b"/rustc/" in data, f"{target}/{service}: no std source path at all"
