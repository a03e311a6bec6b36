"""The licence and source policy (deny.toml) rejects what it should.

scripts/test.sh runs `cargo deny check licenses bans sources` on the tree
itself; here a scratch copy of the workspace gains one crate the policy
forbids, and the same check must fail and name it. The crate is a path
crate, so the test needs no network.
"""

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO, require_tool

CHECKS = ["licenses", "bans", "sources"]


def scratch_workspace(tmp_path: Path) -> Path:
    """The tracked files of the workspace, without build outputs."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    root = tmp_path / "workspace"
    for name in filter(None, files.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    return root


def deny(workspace: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CARGO_NET_OFFLINE": "true", "CARGO_TARGET_DIR": str(workspace / "target")}
    return subprocess.run([require_tool("cargo-deny"), *extra, "check", *CHECKS], cwd=workspace, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def add_crate(workspace: Path, name: str, licence: str, dependent: str = "runtime") -> None:
    """A path crate `name` under `licence`, made a dependency of `dependent`."""
    crate = workspace / name
    (crate / "src").mkdir(parents=True)
    (crate / "src" / "lib.rs").write_text("//! A stand-in crate for the policy test.\n")
    (crate / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "1.0.0"\nedition = "2021"\nlicense = "{licence}"\npublish = false\n')
    manifest = workspace / dependent / "Cargo.toml"
    text = manifest.read_text()
    assert "\n[dependencies]\n" in text
    manifest.write_text(text.replace("\n[dependencies]\n", f'\n[dependencies]\n{name} = {{ path = "../{name}" }}\n', 1))


def test_the_unchanged_copy_meets_the_policy(tmp_path):
    result = deny(scratch_workspace(tmp_path), "--locked")
    assert result.returncode == 0, result.stdout[-3000:]


def test_a_gpl_crate_in_the_tree_fails_the_licence_check(tmp_path):
    workspace = scratch_workspace(tmp_path)
    add_crate(workspace, "copyleft-example", "GPL-3.0-only")
    result = deny(workspace)
    assert result.returncode != 0, "the policy let a GPL-3.0 crate in"
    assert "licenses FAILED" in result.stdout, result.stdout[-3000:]
    rejected = result.stdout.split("error[rejected]", 1)[-1]
    assert "copyleft-example" in rejected and "GPL-3.0-only" in rejected, result.stdout[-3000:]


def test_a_permissive_crate_in_the_tree_passes(tmp_path):
    """The same addition under an allowed licence passes: the failure above
    is the licence, not the way the crate was added."""
    workspace = scratch_workspace(tmp_path)
    add_crate(workspace, "permissive-example", "MIT OR Apache-2.0")
    result = deny(workspace)
    assert result.returncode == 0, result.stdout[-3000:]
