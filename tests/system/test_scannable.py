"""Proof that the FROM scratch images can be scanned, although they hold one
static binary and nothing else (README, "Scanning the images"):

- every shipped binary carries its dependency list in a `.dep-v0` section
  (cargo auditable), which trivy, grype, syft and `cargo audit bin` read:
  the crates linked into it are exactly those `cargo tree` names, at the
  same versions, and the build-time crates are those cargo resolves;
- each image's SBOM (dist/images/<service>.<platform>.cdx.json) lists the
  same crates, with their licences, and no path of the build machine, and
  the OCI archive carries it as an attestation of its platform's image;
- Cross.toml gives cross's containers what `cargo auditable build` gives
  the daemonless build: a binary built with its settings has the section.
"""

import functools
import json
import os
import re
import subprocess
import tomllib
import zlib
from pathlib import Path

import elf
import pytest

from conftest import REPO, SERVICES, TARGETS, clone_dir, require_dist, require_file, require_tool
from test_artifacts import archive, is_attestation, platform_of

BINARIES = [(target, service) for target in TARGETS for service in SERVICES]
OFFLINE = {**os.environ, "CARGO_NET_OFFLINE": "true"}
Crate = tuple[str, str]  # (name, version)


def audit_data(binary: Path) -> dict:
    raw = elf.section(require_file(binary), ".dep-v0")
    assert raw is not None, f"{binary} has no .dep-v0 section: it was not built with cargo auditable"
    return json.loads(zlib.decompress(raw))


def crates(packages: list[dict]) -> set[Crate]:
    return {(p["name"], p["version"]) for p in packages}


def cargo_tree(package: str, target: str, edges: str) -> set[Crate]:
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-p", package, "--target", target, "-e", edges,
         "--prefix", "none", "--format", "{p}"],
        cwd=REPO, env=OFFLINE, capture_output=True, text=True, check=True, timeout=120).stdout
    return {(m[1], m[2]) for m in re.finditer(r"^(\S+) v(\S+)", out, re.MULTILINE)}


@functools.cache
def metadata(target: str) -> dict:
    out = subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1", "--filter-platform", target],
        cwd=REPO, env=OFFLINE, capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out)


def proc_macros(target: str) -> set[Crate]:
    return {(p["name"], p["version"]) for p in metadata(target)["packages"]
            if any("proc-macro" in t["kind"] for t in p["targets"])}


def linked(data: dict, macros: set[Crate]) -> set[Crate]:
    """What the audit data says is linked: the root and what it reaches
    through runtime dependencies, not entering build-time crates or proc
    macros (code that runs in the compiler, not in the binary)."""
    packages = data["packages"]
    (root,) = [i for i, p in enumerate(packages) if p.get("root")]
    seen, queue = {root}, [root]
    while queue:
        for child in packages[queue.pop()].get("dependencies", []):
            package = packages[child]
            if child in seen or package.get("kind", "runtime") != "runtime" \
                    or (package["name"], package["version"]) in macros:
                continue
            seen.add(child)
            queue.append(child)
    return crates([packages[i] for i in seen])


def built(service: str, target: str) -> set[Crate]:
    """Every crate compiled for `service` (build-time ones included), as
    cargo resolves them for `target`: the closure over normal and build
    dependencies, not dev ones."""
    meta = metadata(target)
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    (root,) = [p["id"] for p in meta["packages"] if p["name"] == service and p["source"] is None]
    seen, queue = {root}, [root]
    while queue:
        for dep in nodes[queue.pop()]["deps"]:
            if dep["pkg"] not in seen and any(k["kind"] in (None, "build") for k in dep["dep_kinds"]):
                seen.add(dep["pkg"])
                queue.append(dep["pkg"])
    return crates([packages[i] for i in seen])


def differences(found: set[Crate], expected: set[Crate]) -> str:
    return f"only in the binary: {sorted(found - expected)}; missing from it: {sorted(expected - found)}"


@pytest.mark.parametrize("target,service", BINARIES, ids=[f"{t}/{s}" for t, s in BINARIES])
def test_binary_embeds_exactly_the_crates_it_is_built_from(target: str, service: str) -> None:
    data = audit_data(require_dist() / target / service)
    roots = [p["name"] for p in data["packages"] if p.get("root")]
    assert roots == [service], roots
    # The crates whose code is in the binary, against cargo tree's answer.
    in_binary = linked(data, proc_macros(target))
    expected = cargo_tree(service, target, "normal,no-proc-macro")
    assert in_binary == expected, differences(in_binary, expected)
    assert {"tokio", "h2", "hyper"} <= {name for name, _ in in_binary}
    # All crates, the build-time ones included (cargo-auditable takes them
    # from cargo metadata, whose feature resolution also counts features
    # only dev-dependencies enable: a superset of cargo tree's build edges).
    everything = crates(data["packages"])
    assert everything == built(service, target), differences(everything, built(service, target))
    assert cargo_tree(service, target, "normal,build") <= everything
    workspace = {p["name"] for p in data["packages"] if p["source"] == "local"}
    assert workspace <= {"gcd", "api", "runtime", "serving", "telemetry", "gcd-proto", "grpc-wire"}, workspace
    assert {p["source"] for p in data["packages"]} <= {"local", "crates.io"}


def sbom_path(service: str, platform: tuple) -> Path:
    name = "-".join(part for part in platform if part)
    return require_file(require_dist() / "images" / f"{service}.{name}.cdx.json")


@pytest.mark.parametrize("target,service", BINARIES, ids=[f"{t}/{s}" for t, s in BINARIES])
def test_image_sbom_lists_what_its_binary_embeds(target: str, service: str) -> None:
    platform = TARGETS[target][0]
    path = sbom_path(service, platform)
    text = path.read_text()
    sbom = json.loads(text)
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    described = sbom["metadata"]["component"]
    assert (described["name"], described["type"]) == (service, "application")
    properties = {p["name"]: p["value"] for p in sbom["metadata"].get("properties", [])}
    assert properties.get("cdx:rustc:sbom:target:triple") == target, properties
    listed = crates([described, *sbom["components"]])
    embedded = crates(audit_data(require_dist() / target / service)["packages"])
    assert listed == embedded, f"only in the SBOM: {sorted(listed - embedded)}; " \
                               f"only in the binary: {sorted(embedded - listed)}"
    for component in sbom["components"]:
        assert component.get("licenses"), f"{path}: {component['name']} has no licence"
        assert component.get("purl", "").startswith(f"pkg:cargo/{component['name']}@"), component
    # Nothing of the machine it was built on: the same SBOM from any clone.
    assert str(REPO) not in text and "file:///" not in text, f"{path} holds a build path"


@pytest.mark.parametrize("service", SERVICES)
def test_archive_carries_each_platform_sbom_as_an_attestation(service: str) -> None:
    oci = archive(service)
    (entry,) = json.loads(oci.read("index.json"))["manifests"]
    index = oci.json_blob(entry["digest"])
    images = [m for m in index["manifests"] if not is_attestation(m)]
    attestations = [m for m in index["manifests"] if is_attestation(m)]
    assert len(attestations) == len(images) == 3, index["manifests"]
    for image in images:
        (attestation,) = [a for a in attestations
                          if a["annotations"]["vnd.docker.reference.digest"] == image["digest"]]
        # Runtimes choose by platform; unknown/unknown is never chosen.
        assert attestation["platform"] == {"architecture": "unknown", "os": "unknown"}
        manifest = oci.json_blob(attestation["digest"])
        (layer,) = manifest["layers"]
        assert layer["mediaType"] == "application/vnd.in-toto+json"
        assert layer["annotations"]["in-toto.io/predicate-type"] == "https://cyclonedx.org/bom"
        statement = oci.json_blob(layer["digest"])
        (subject,) = statement["subject"]
        assert f"sha256:{subject['digest']['sha256']}" == image["digest"]
        assert statement["predicate"] == json.loads(sbom_path(service, platform_of(image)).read_text())


# --- the cross route ----------------------------------------------------------------


def host_triple() -> str:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return re.search(r"^host: (\S+)$", out, re.MULTILINE)[1]


def pinned_version(tool: str) -> str:
    common = (REPO / "scripts" / "lib" / "common.sh").read_text()
    return re.search(rf"\b{tool}@([0-9.]+)", common)[1]


def test_cross_containers_build_auditable_binaries(tmp_path: Path) -> None:
    """cross cannot run here, so the two halves of Cross.toml are checked
    apart: its pre-build installs the pinned cargo-auditable where its
    environment says the wrapper is; and cargo run with that environment (the
    wrapper path pointed at the same version here) builds a binary whose
    .dep-v0 lists what the daemonless build's does."""
    with open(REPO / "Cross.toml", "rb") as f:
        cross = tomllib.load(f)["build"]
    env = dict(item.split("=", 1) for item in cross["env"]["passthrough"] if "=" in item)
    wrapper = Path(env["RUSTC_WORKSPACE_WRAPPER"])
    version = pinned_version("cargo-auditable")
    install = " ".join(cross["pre-build"])
    assert f"/download/v{version}/cargo-auditable-x86_64-unknown-linux-musl.tar.xz" in install, install
    assert f"-C {wrapper.parent} " in install and f"/{wrapper.name} " in install, install
    assert "sha256sum -c" in install, "the downloaded wrapper is not checked"
    assert json.loads(env["CARGO_AUDITABLE_ORIG_ARGS"])["locked"] is True

    env["RUSTC_WORKSPACE_WRAPPER"] = require_tool("cargo-auditable")
    target_dir = clone_dir(REPO) / "target-cross-env"
    subprocess.run(["cargo", "build", "--locked", "-p", "gcd", "--bin", "gcd"],
                   cwd=REPO, env={**OFFLINE, **env, "CARGO_TARGET_DIR": str(target_dir)},
                   check=True, capture_output=True, timeout=1200)
    data = audit_data(target_dir / "debug" / "gcd")
    shipped = audit_data(require_dist() / "x86_64-unknown-linux-musl" / "gcd")
    assert crates(data["packages"]) == crates(shipped["packages"])
    assert linked(data, proc_macros(host_triple())) == linked(shipped, proc_macros("x86_64-unknown-linux-musl"))
