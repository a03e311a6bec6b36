"""Each clone builds into a target directory of its own in the shared cache.

cargo decides what to rebuild from file times, and the units of a
workspace's own crates hash the same wherever the workspace lies; so with one
target directory for every clone, a build in clone A made after an edit in
clone B stands in for B's edit, and B ships A's code. The cache therefore
keeps $CACHE/clones/<folder>-<crc> per clone, which .ci/run (through
scripts/lib/common.sh), the xtask (target-musl of the daemonless route) and
the tests (build_cache.py) compute alike.

The stale build is shown with two clones of a tiny crate, each carrying the
real .ci/run and scripts/lib/common.sh, whose scripts/test.sh builds and runs
the crate: with a shared target directory B runs A's code, with the one
.ci/run picks B runs its own.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from build_cache import cksum, clone_dir
from conftest import REPO

HELLO_TOML = '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n'
# What .ci/run runs, here: build the crate and run it.
TEST_SH = '#!/usr/bin/env bash\nset -eu\ncargo build --quiet --offline\nexec "$CARGO_TARGET_DIR/debug/hello"\n'


def make_clone(parent: Path, name: str) -> Path:
    clone = parent / name / "pi-gcd"
    (clone / "src").mkdir(parents=True)
    (clone / "scripts" / "lib").mkdir(parents=True)
    (clone / ".ci").mkdir()
    shutil.copy2(REPO / ".ci" / "run", clone / ".ci" / "run")
    shutil.copy2(REPO / "scripts" / "lib" / "common.sh", clone / "scripts" / "lib" / "common.sh")
    (clone / "scripts" / "test.sh").write_text(TEST_SH)
    (clone / "scripts" / "test.sh").chmod(0o755)
    (clone / "Cargo.toml").write_text(HELLO_TOML)
    write_main(clone, "v1", mtime=1_600_000_000)
    return clone


def write_main(clone: Path, version: str, mtime: float | None = None) -> None:
    main = clone / "src" / "main.rs"
    main.write_text(f'fn main() {{ println!("{version}"); }}\n')
    if mtime is not None:
        os.utime(main, (mtime, mtime))


def ci_run(clone: Path, cache: Path, target_dir: Path | None = None) -> str:
    """.ci/run in `clone`: what the crate printed."""
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_TARGET_DIR", "XDG_CACHE_HOME")}
    env["PI_GCD_CACHE"] = str(cache)
    if target_dir is not None:
        env["CARGO_TARGET_DIR"] = str(target_dir)
    done = subprocess.run([str(clone / ".ci" / "run")], cwd="/", env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def shell_clone_cache(root: Path, cache: Path) -> Path:
    done = subprocess.run(["bash", "-c", 'source "$0" && clone_cache "$1"',
                           str(REPO / "scripts" / "lib" / "common.sh"), str(root)],
                          env={**os.environ, "PI_GCD_CACHE": str(cache)}, capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


def edit_b_then_build_a(a: Path, b: Path, cache: Path, target_dir: Path | None) -> str:
    """Both clones built; B edited; A edited and built after B's edit (so
    A's artifacts are newer than B's edit); then B built and run."""
    assert ci_run(a, cache, target_dir) == "v1"
    assert ci_run(b, cache, target_dir) == "v1"
    write_main(b, "v2 from B")
    write_main(a, "v3 from A")
    assert ci_run(a, cache, target_dir) == "v3 from A"
    return ci_run(b, cache, target_dir)


def test_an_edit_in_one_clone_is_never_served_another_clones_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a, b = make_clone(tmp_path, "a"), make_clone(tmp_path, "b")
    # What a target directory shared by both clones does (the cache's
    # former layout): B's own edit is never compiled.
    shared = tmp_path / "shared-target"
    assert edit_b_then_build_a(a, b, cache, shared) == "v3 from A"

    # The same with the target directory .ci/run picks: each clone's own.
    a2, b2 = make_clone(tmp_path / "own", "a"), make_clone(tmp_path / "own", "b")
    assert edit_b_then_build_a(a2, b2, cache, None) == "v2 from B"
    dirs = sorted(p.name for p in (cache / "clones").iterdir())
    assert dirs == sorted(clone_dir(c, cache).name for c in (a2, b2)), dirs
    assert all(name.startswith("pi-gcd-") for name in dirs)
    for clone in (a2, b2):
        assert (clone_dir(clone, cache) / "target-host" / "debug" / "hello").is_file()


def test_the_shell_the_xtask_and_the_tests_pick_the_same_directory(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    spaced = tmp_path / "my code" / "pi-gcd"
    spaced.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(spaced)
    for root in (REPO, spaced, link):
        assert shell_clone_cache(root, cache) == clone_dir(root, cache), root
    # A clone reached through a symlink is the same clone.
    assert clone_dir(link, cache) == clone_dir(spaced, cache)
    assert clone_dir(spaced, cache).parent == cache / "clones"

    # The xtask's target directory of the daemonless route, as
    # scripts/build-arm.sh --dry-run shows it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PI_GCD_")}
    done = subprocess.run([str(REPO / "scripts" / "build-arm.sh"), "--dry-run", "--binaries-only",
                           "--route", "daemonless"], cwd=REPO, env={**env, "PI_GCD_CACHE": str(cache)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    target_dirs = {line.split("=", 1)[1].rstrip(" \\").strip("'") for line in done.stdout.splitlines()
                   if line.startswith("CARGO_TARGET_DIR=")}
    assert target_dirs == {str(clone_dir(REPO, cache) / "target-musl")}, done.stdout


@pytest.mark.parametrize("text", [b"", b"a", b"/src/pi-gcd", "/home/pi/my code/pi-gcd".encode() * 20])
def test_the_key_is_posix_cksum(text: bytes) -> None:
    printed = subprocess.run(["cksum"], input=text, capture_output=True, check=True).stdout.split()
    assert [int(printed[0]), int(printed[1])] == [cksum(text), len(text)]
