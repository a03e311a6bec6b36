"""The build entry point as a user on a laptop runs it: scripts/build-arm.sh
on the cross + docker buildx route (docs/building-for-pi.md).

Neither cross nor a docker daemon runs here, so recording stand-ins take
their place on PATH (standins/laptop/): `cross` puts the binaries the
daemonless build made where `cross build` would, `docker` answers as one
with buildx and a daemon and writes the OCI archive its `--output` names.
The tests assert the exact commands and that the files land where the next
steps (the image build, `k3s ctr images import`) expect them; the images'
SBOMs are written for real (cargo-cyclonedx), the same as the daemonless
route's from the real workspace. The same run
passes with macOS's BSD date, stat, touch, sed and readlink
(standins/bsd/), which refuse GNU-only options.

Each test builds in a scratch copy of the workspace, so dist/ is untouched.
"""

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, SERVICES, TARGETS, require_dist, require_file
from k8s_manifests import LOCAL_NAMESPACE, workspace_version

STANDINS = Path(__file__).resolve().parent / "standins"
EPOCH = "1700000000"
CREATED = "2023-11-14T22:13:20Z"
PLATFORMS = "linux/arm/v7,linux/arm64,linux/amd64"
DIGEST = "sha256:" + "d1" * 32


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the workspace (with its git history, so the revision is the
    real one), without build outputs."""
    copy = tmp_path_factory.mktemp("laptop") / "pi-gcd"
    shutil.copytree(REPO, copy, symlinks=True,
                    ignore=shutil.ignore_patterns("target", "dist", "__pycache__", ".pytest_cache"))
    return copy


@pytest.fixture(scope="module")
def xtask_target_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cargo's target directory for building the copy's xtask: its own, so
    nothing built from the real workspace is taken for it."""
    return tmp_path_factory.mktemp("xtask-target")


def revision_of(workspace: Path) -> str:
    rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=workspace,
                         capture_output=True, text=True, check=True).stdout.strip()
    clean = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=workspace).returncode == 0
    return rev if clean else f"{rev}-dirty"


class Laptop:
    """scripts/build-arm.sh in the scratch workspace with the stand-ins first
    on PATH; what they were asked to do is in `calls`."""

    def __init__(self, workspace: Path, target_dir: Path, tmp_path: Path, bsd: bool = False):
        self.workspace = workspace
        self.record = tmp_path / "record.jsonl"
        shutil.rmtree(workspace / "dist", ignore_errors=True)
        shutil.rmtree(workspace / "target", ignore_errors=True)
        dist = require_dist()
        for service in SERVICES:
            require_file(dist / "images" / f"{service}.oci.tar")
        path = [str(STANDINS / "laptop"), os.environ.get("PATH", "/usr/bin:/bin")]
        if bsd:
            path.insert(0, str(STANDINS / "bsd"))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PI_GCD_") and k != "REGISTRY"},
            "PATH": os.pathsep.join(path),
            "CARGO_TARGET_DIR": str(target_dir),
            "SOURCE_DATE_EPOCH": EPOCH,
            "STANDIN_RECORD": str(self.record),
            "STANDIN_DIST": str(dist),
            "STANDIN_DIGEST": DIGEST,
        }
        if "PI_GCD_CACHE" in os.environ:  # where the xtask looks for zig; not used on this route
            self.env["PI_GCD_CACHE"] = os.environ["PI_GCD_CACHE"]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.workspace / "scripts" / "build-arm.sh"), *args], cwd=self.workspace,
                              env=self.env, capture_output=True, text=True, timeout=600)

    def calls(self, tool: str) -> list[dict]:
        if not self.record.exists():
            return []
        return [c for c in map(json.loads, self.record.read_text().splitlines()) if c["tool"] == tool]


def expected_cross_argv(workspace: Path) -> list[list[str]]:
    """cross build for each target, rustc told to write the clone's path as
    /build (cross mounts the workspace at its own path)."""
    return [["build", "--release", "--locked", "-p", "gcd", "-p", "api", "--target", target,
             "--config", f'target.{target}.rustflags=["--remap-path-prefix={workspace.resolve()}=/build"]']
            for target in TARGETS]


def expected_buildx_argv(service: str, revision: str, output: list[str], builder: list[str] = []) -> list[str]:
    version = workspace_version()
    return [
        "buildx", "build", *builder, "--platform", PLATFORMS, "-f", f"docker/{service}.Dockerfile",
        "--build-arg", f"VERSION={version}", "--build-arg", f"REVISION={revision}",
        "--build-arg", "SOURCE=https://github.com/pi-gcd/pi-gcd", "--build-arg", f"CREATED={CREATED}",
        "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}", "--provenance=false", "--sbom=false",
        *output, ".",
    ]


def assert_cross_built_into_dist(laptop: Laptop) -> None:
    cross = laptop.calls("cross")
    assert [c["argv"] for c in cross] == expected_cross_argv(laptop.workspace)
    for call in cross:
        assert Path(call["cwd"]) == laptop.workspace
        assert call["CARGO_TARGET_DIR"] == str(laptop.workspace / "target")
    dist = require_dist()
    for target in TARGETS:
        for service in SERVICES:
            shipped = laptop.workspace / "dist" / target / service
            assert shipped.read_bytes() == (dist / target / service).read_bytes(), shipped
            assert os.access(shipped, os.X_OK), shipped
            assert int(shipped.stat().st_mtime) == int(EPOCH), shipped


def check_archive_route(laptop: Laptop) -> None:
    done = laptop.run()
    assert done.returncode == 0, done.stderr
    assert "route: cross (images with docker buildx)" in done.stderr, done.stderr
    assert_cross_built_into_dist(laptop)
    revision = revision_of(laptop.workspace)
    version = workspace_version()
    docker = laptop.calls("docker")
    assert [c["argv"] for c in docker] == [
        expected_buildx_argv(service, revision, [
            "--output", f"type=oci,dest=dist/images/{service}.oci.tar,name={LOCAL_NAMESPACE}/{service}:{version}"])
        for service in SERVICES
    ]
    assert all(c["SOURCE_DATE_EPOCH"] == EPOCH and Path(c["cwd"]) == laptop.workspace for c in docker)
    # Where docs/building-for-pi.md tells users to pick them up for
    # `k3s ctr images import`.
    for service in SERVICES:
        assert (laptop.workspace / "dist" / "images" / f"{service}.oci.tar").is_file()
    assert "k3s ctr images import dist/images/gcd.oci.tar" in done.stderr
    assert_sboms_match_the_daemonless_ones(laptop)


def sbom_names() -> list[str]:
    return sorted(f"{service}.{'-'.join(p for p in platform if p)}.cdx.json"
                  for service in SERVICES for platform, *_ in TARGETS.values())


def assert_sboms_match_the_daemonless_ones(laptop: Laptop) -> None:
    """The cross route writes the same SBOMs, from another clone in another
    directory: only the time (SOURCE_DATE_EPOCH) differs."""
    for name in sbom_names():
        cross = json.loads((laptop.workspace / "dist" / "images" / name).read_text())
        daemonless = json.loads(require_file(require_dist() / "images" / name).read_text())
        assert cross["metadata"].pop("timestamp") == CREATED.replace("Z", ".000000000Z")
        daemonless["metadata"].pop("timestamp")
        assert cross == daemonless, f"{name} differs between the routes"


def test_cross_route_writes_binaries_and_oci_archives(workspace: Path, xtask_target_dir: Path, tmp_path: Path) -> None:
    check_archive_route(Laptop(workspace, xtask_target_dir, tmp_path))


def test_cross_route_pushes_both_tags_of_each_image(workspace: Path, xtask_target_dir: Path, tmp_path: Path) -> None:
    laptop = Laptop(workspace, xtask_target_dir, tmp_path)
    done = laptop.run("--registry", "registry.lan:5000/")
    assert done.returncode == 0, done.stderr
    assert_cross_built_into_dist(laptop)
    revision, version = revision_of(workspace), workspace_version()
    assert [c["argv"] for c in laptop.calls("docker")] == [
        expected_buildx_argv(service, revision, [
            "--tag", f"registry.lan:5000/{service}:{version}",
            "--tag", f"registry.lan:5000/{service}:{version}-{revision}", "--push",
            "--metadata-file", f"dist/images/{service}.push.json"])
        for service in SERVICES
    ]
    # Nothing archived; the SBOMs are written all the same, and what was
    # pushed, for render-manifests.sh to pin.
    images = workspace / "dist" / "images"
    assert sorted(p.name for p in images.iterdir()) == sorted(
        sbom_names() + [f"{service}.pushed" for service in SERVICES])
    for service in SERVICES:
        assert (images / f"{service}.pushed").read_text() == f"registry.lan:5000/{service}:{version}@{DIGEST}\n"
    assert "scripts/render-manifests.sh --registry registry.lan:5000" in done.stderr, done.stderr
    assert_sboms_match_the_daemonless_ones(laptop)


def test_cross_route_pushes_to_a_plain_http_registry(workspace: Path, xtask_target_dir: Path, tmp_path: Path) -> None:
    """--insecure on the buildx route: BuildKit ignores the docker daemon's
    insecure-registries, so a builder of its own is made with a buildkitd
    config saying `http = true` for the registry (docs/building-for-pi.md)."""
    from conftest import CACHE

    laptop = Laptop(workspace, xtask_target_dir, tmp_path)
    done = laptop.run("--registry", "registry.lan:5000/pi", "--insecure")
    assert done.returncode == 0, done.stderr
    revision, version = revision_of(workspace), workspace_version()
    config = CACHE / "buildkitd-http.toml"
    assert [c["argv"] for c in laptop.calls("docker")] == [
        ["buildx", "rm", "pi-gcd-http"],
        ["buildx", "create", "--name", "pi-gcd-http", "--driver", "docker-container", "--driver-opt", "network=host",
         "--buildkitd-config", str(config)],
        *[expected_buildx_argv(service, revision, [
            "--tag", f"registry.lan:5000/pi/{service}:{version}",
            "--tag", f"registry.lan:5000/pi/{service}:{version}-{revision}", "--push",
            "--metadata-file", f"dist/images/{service}.push.json"], builder=["--builder", "pi-gcd-http"])
          for service in SERVICES],
    ]
    import tomllib
    [written] = laptop.calls("buildkitd.toml")
    assert tomllib.loads(written["text"]) == {"registry": {"registry.lan:5000": {"http": True, "insecure": True}}}


def test_bsd_userland_builds_the_same(workspace: Path, xtask_target_dir: Path, tmp_path: Path) -> None:
    refused = subprocess.run([str(STANDINS / "bsd" / "date"), "-u", "-d", "@0"], capture_output=True, text=True)
    assert refused.returncode != 0 and "illegal option" in refused.stderr, "the BSD date stand-in must refuse -d"
    refused = subprocess.run([str(STANDINS / "bsd" / "stat"), "-c", "%s", "/"], capture_output=True, text=True)
    assert refused.returncode != 0, "the BSD stat stand-in must refuse -c"
    check_archive_route(Laptop(workspace, xtask_target_dir, tmp_path, bsd=True))


def test_dry_run_prints_the_route_and_every_command_and_runs_none(workspace: Path, xtask_target_dir: Path, tmp_path: Path) -> None:
    laptop = Laptop(workspace, xtask_target_dir, tmp_path)
    done = laptop.run("--dry-run")
    assert done.returncode == 0, done.stderr
    assert "route: cross (images with docker buildx): cross and docker buildx with a running daemon are here" \
        in done.stderr
    assert laptop.calls("cross") == [] and laptop.calls("docker") == []
    assert not (workspace / "dist").exists()
    lines = done.stdout.splitlines()
    for argv in expected_cross_argv(workspace):
        assert f"CARGO_TARGET_DIR={workspace / 'target'} \\\ncross {shlex.join(argv)}\n" in done.stdout, done.stdout
    for service in SERVICES:
        assert any(line.startswith(f"docker buildx build --platform {PLATFORMS} -f docker/{service}.Dockerfile")
                   and line.endswith(f"dest=dist/images/{service}.oci.tar,name={LOCAL_NAMESPACE}/{service}:"
                                     f"{workspace_version()} .") for line in lines), done.stdout


def test_a_missing_tool_is_named(workspace: Path, xtask_target_dir: Path, tmp_path: Path) -> None:
    laptop = Laptop(workspace, xtask_target_dir, tmp_path)
    laptop.env["PATH"] = laptop.env["PATH"].split(os.pathsep, 1)[1]  # no stand-ins
    done = laptop.run("--route", "cross")
    assert done.returncode == 1
    assert "route cross needs: cross (cargo install cross)" in done.stderr, done.stderr
    done = laptop.run("--route", "podman")
    assert done.returncode == 2 and "unknown route 'podman'" in done.stderr, done.stderr
