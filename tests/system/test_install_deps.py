"""scripts/install-deps.sh: `--build-only` asks for what the daemonless
ARM build needs and nothing the tests alone need, and the script says
plainly that the daemonless route is Debian 12's, stopping anywhere else
before it installs anything. `--dry-run` prints the plan and installs
nothing, so these tests change nothing on the machine."""

import subprocess
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "install-deps.sh"
BUILD = {"rustc-web", "cargo-web", "rust-web-src", "buildah", "python3", "cargo-auditable", "cargo-cyclonedx",
         "ziglang"}
TEST_ONLY = {"wrk", "podman", "golang-go", "qemu-user-static", "docker-registry", "cargo-deny", "pytest", "grpcio",
             "schemathesis"}


def plan(tmp_path: Path, os_release: str, *args: str) -> subprocess.CompletedProcess:
    release = tmp_path / "os-release"
    release.write_text(os_release)
    return subprocess.run([str(SCRIPT), *args, "--dry-run"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PI_GCD_OS_RELEASE": str(release)})


def words(output: str) -> set[str]:
    return {w.split("==")[0].split("@")[0] for line in output.splitlines() for w in line.split(":", 1)[-1].split()}


DEBIAN_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def test_build_only_asks_for_the_build_and_nothing_else(tmp_path: Path) -> None:
    done = plan(tmp_path, DEBIAN_12, "--build-only")
    assert done.returncode == 0, done.stderr
    asked = words(done.stdout)
    assert BUILD <= asked, BUILD - asked
    assert not asked & TEST_ONLY, asked & TEST_ONLY
    full = plan(tmp_path, DEBIAN_12)
    assert full.returncode == 0, full.stderr
    assert BUILD | TEST_ONLY <= words(full.stdout), (BUILD | TEST_ONLY) - words(full.stdout)


@pytest.mark.parametrize("os_release", [
    'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n',
    'ID=debian\nVERSION_ID="11"\n',
    'ID=fedora\nVERSION_ID=41\n',
], ids=["ubuntu-24.04", "debian-11", "fedora-41"])
def test_other_distributions_are_told_to_use_the_cross_route(tmp_path: Path, os_release: str) -> None:
    for args in (["--build-only"], []):
        done = plan(tmp_path, os_release, *args)
        assert done.returncode == 1, done.stdout
        assert "Debian 12 (bookworm) only" in done.stderr and "cross" in done.stderr, done.stderr
        assert done.stdout == "", "nothing is planned on an unsupported distribution"
    # The host-only tests need no Debian 12.
    release = tmp_path / "os-release"
    done = subprocess.run([str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PI_GCD_OS_RELEASE": str(release),
                               "PI_GCD_SKIP_ARM": "1"})
    assert done.returncode == 0, done.stderr
    assert "rustc-web" not in done.stdout


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    done = plan(tmp_path, DEBIAN_12, "--build-onyl")
    assert done.returncode == 2 and "unknown argument: --build-onyl" in done.stderr, done.stderr
