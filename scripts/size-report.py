#!/usr/bin/env python3
"""Writes results/sizes.md: binary and image sizes, and the measured choices.

    scripts/size-report.py                 # sizes of what is in dist/ now
    scripts/size-report.py --experiments   # also rebuild armv7 with each
                                           # alternative below (slow: one
                                           # release build each) and record
                                           # the sizes in
                                           # results/size-experiments.json

The artifacts come from scripts/build-arm.sh. Without --experiments the
recorded experiment results are rendered again as they are, marked with the
commit they were measured at.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "system"))
import elf  # noqa: E402  (the tests' ELF reader: one for the project)
DIST = REPO / "dist"
RESULTS = REPO / "results"
EXPERIMENTS_JSON = RESULTS / "size-experiments.json"
TARGETS = ["armv7-unknown-linux-musleabihf", "aarch64-unknown-linux-musl", "x86_64-unknown-linux-musl"]
SERVICES = ["gcd", "api"]
GOALS = {"gcd": 1_000_000, "api": 1_500_000}  # armv7, stripped, static
# What embedding the dependency lists cost, measured once on the same code:
# the binaries of the last commit before `cargo auditable` and of the commit
# that added it (nothing else changed between them), (without, with).
AUDIT_DATA_COST = {
    "commits": ("671b076cf3b1", "704bf9987e3b"),
    "armv7-unknown-linux-musleabihf": {"gcd": (886_656, 888_448), "api": (915_416, 917_224)},
    "aarch64-unknown-linux-musl": {"gcd": (1_231_576, 1_233_416), "api": (1_250_048, 1_251_864)},
    "x86_64-unknown-linux-musl": {"gcd": (1_302_408, 1_304_248), "api": (1_325_376, 1_327_192)},
}

# name -> environment for scripts/build-arm.sh; the first is the setup in
# use (Cargo.toml's release profile, .cargo/config.toml, build-arm.sh), each
# other changes one thing.
EXPERIMENTS = {
    "chosen: Thumb-2, opt-level=\"s\", std without features": {},
    "opt-level=\"z\"": {"PI_GCD_CARGO_ARGS": "--config profile.release.opt-level=\"z\""},
    "opt-level=3": {"PI_GCD_CARGO_ARGS": "--config profile.release.opt-level=3"},
    "ARM (A32) instead of Thumb-2": {"PI_GCD_RUSTFLAGS": "-C target-feature=-thumb-mode"},
    "std feature backtrace": {"PI_GCD_STD_FEATURES": "backtrace"},
    "-Z location-detail=none": {"PI_GCD_RUSTFLAGS": "-Z location-detail=none"},
}
EXPERIMENT_TARGET = "armv7-unknown-linux-musleabihf"


def mb(n: int) -> str:
    return f"{n / 1_000_000:.3f} MB"


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def image_sizes(path: Path) -> dict:
    """Per platform: bytes a node pulls (manifest + config + compressed
    layers) and the unpacked layer size; under "attestations", the bytes of
    the SBOM attestations, which no node pulls."""
    out = {"attestations": 0}
    with tarfile.open(path) as tar:
        def blob(digest: str) -> bytes:
            algorithm, _, hexdigest = digest.partition(":")
            member = tar.extractfile(f"blobs/{algorithm}/{hexdigest}")
            assert member is not None
            return member.read()

        top = json.loads(tar.extractfile("index.json").read())
        index = json.loads(blob(top["manifests"][0]["digest"]))
        for descriptor in index["manifests"]:
            p = descriptor["platform"]
            platform = "/".join(x for x in (p["os"], p["architecture"], p.get("variant")) if x)
            manifest = json.loads(blob(descriptor["digest"]))
            layers = [blob(layer["digest"]) for layer in manifest["layers"]]
            pulled = descriptor["size"] + manifest["config"]["size"] + sum(len(layer) for layer in layers)
            if platform == "unknown/unknown":
                out["attestations"] += pulled
                continue
            unpacked = sum(len(gzip.decompress(layer)) if layer[:2] == b"\x1f\x8b" else len(layer) for layer in layers)
            out[platform] = {"pulled": pulled, "unpacked": unpacked}
    return out


def run_experiments() -> dict:
    results = {"commit": git("rev-parse", "--short=12", "HEAD"),
               "rustc": subprocess.run(["/usr/bin/rustc", "--version"], capture_output=True, text=True).stdout.strip(),
               "target": EXPERIMENT_TARGET, "runs": {}}
    for name, env in EXPERIMENTS.items():
        with tempfile.TemporaryDirectory() as out:
            print(f"==> experiment: {name}", file=sys.stderr, flush=True)
            start = time.monotonic()
            subprocess.run(
                ["scripts/build-arm.sh", "--binaries-only", "--route", "daemonless"],
                cwd=REPO, check=True,
                env={**os.environ, "PI_GCD_TARGETS": EXPERIMENT_TARGET, "PI_GCD_DIST": out, **env},
            )
            results["runs"][name] = {
                "env": env,
                "sizes": {s: (Path(out) / EXPERIMENT_TARGET / s).stat().st_size for s in SERVICES},
                "build_seconds": round(time.monotonic() - start),
            }
    EXPERIMENTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    EXPERIMENTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    return results


def render(experiments: dict | None) -> str:
    lines = ["# Binary and image sizes", ""]
    lines.append(f"Written by `scripts/size-report.py` from `dist/` (built by `scripts/build-arm.sh`) "
                 f"at commit `{git('rev-parse', '--short=12', 'HEAD')}`; do not edit by hand.")
    lines.append("")
    lines.append("## Binaries (static, stripped)")
    lines.append("")
    lines.append("| target | gcd | api |")
    lines.append("|---|---:|---:|")
    sizes = {}
    for target in TARGETS:
        row = []
        for service in SERVICES:
            path = DIST / target / service
            if not path.is_file():
                raise SystemExit(f"{path} is missing: run scripts/build-arm.sh first")
            sizes[(target, service)] = size = path.stat().st_size
            row.append(f"{size:,} B ({mb(size)})")
        lines.append(f"| `{target}` | {row[0]} | {row[1]} |")
    lines.append("")
    lines.append("Goal on armv7: gcd <= 1.0 MB, api <= 1.5 MB.")
    for service in SERVICES:
        size = sizes[(TARGETS[0], service)]
        verdict = "met" if size <= GOALS[service] else "MISSED"
        lines.append(f"- {service}: {mb(size)} of {mb(GOALS[service])}: {verdict}")
    lines.append("")

    lines.append("## Images (FROM scratch, one gzip layer each)")
    lines.append("")
    lines.append("What a node pulls for its platform (manifest, config and compressed layer), "
                 "the unpacked size, and the size of the whole multi-arch OCI archive.")
    lines.append("")
    lines.append("| image | platform | pulled | unpacked |")
    lines.append("|---|---|---:|---:|")
    archives = []
    for service in SERVICES:
        path = DIST / "images" / f"{service}.oci.tar"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run scripts/build-arm.sh first")
        image = image_sizes(path)
        archives.append((path, path.stat().st_size, image.pop("attestations")))
        for platform, s in image.items():
            lines.append(f"| {service} | {platform} | {s['pulled']:,} B ({mb(s['pulled'])}) | "
                         f"{s['unpacked']:,} B |")
    lines.append("")
    for path, size, attestations in archives:
        lines.append(f"- `dist/images/{path.name}`: {size:,} B ({mb(size)}), "
                     f"of which the three SBOM attestations {attestations:,} B")
    lines.append("")

    lines.append("## The dependency lists and SBOMs")
    lines.append("")
    lines.append("Each binary carries the list of crates it is built from (a `.dep-v0` section, "
                 "zlib-compressed JSON, written by `cargo auditable`) for image scanners. "
                 "Its size in each binary now, and what embedding it cost when it was added "
                 f"(commit `{AUDIT_DATA_COST['commits'][0]}` without, `{AUDIT_DATA_COST['commits'][1]}` "
                 "with, the code otherwise the same):")
    lines.append("")
    lines.append("| binary | `.dep-v0` now | without it | with it | cost |")
    lines.append("|---|---:|---:|---:|---:|")
    for target in TARGETS:
        for service in SERVICES:
            path = DIST / target / service
            section = elf.section(path, ".dep-v0")
            if section is None:
                raise SystemExit(f"{path} has no .dep-v0 section: was it built with cargo auditable?")
            without, with_it = AUDIT_DATA_COST[target][service]
            lines.append(f"| `{target}/{service}` | {len(section):,} B | {without:,} B | {with_it:,} B | "
                         f"+{with_it - without:,} B ({(with_it - without) / without:+.2%}) |")
    lines.append("")
    lines.append("The SBOMs (CycloneDX JSON, `dist/images/*.cdx.json`) are not pulled by nodes: "
                 + ", ".join(f"`{p.name}` {p.stat().st_size:,} B"
                             for p in sorted((DIST / "images").glob("*.cdx.json"))) + ".")
    lines.append("")

    lines.append("## Choices, measured")
    lines.append("")
    if not experiments:
        lines.append("No experiments recorded: run `scripts/size-report.py --experiments`.")
        return "\n".join(lines) + "\n"
    lines.append(f"Each row is a release build of gcd and api for `{experiments['target']}` with one "
                 f"change from the chosen setup (`scripts/size-report.py --experiments`, at commit "
                 f"`{experiments['commit']}`, {experiments['rustc']}).")
    lines.append("")
    lines.append("| build | gcd | api | gcd vs chosen | api vs chosen | build time |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    runs = experiments["runs"]
    base = next(iter(runs.values()))["sizes"]
    for name, run in runs.items():
        s = run["sizes"]
        delta = [f"{(s[x] - base[x]) / base[x] * 100:+.1f}%" for x in SERVICES]
        seconds = run.get("build_seconds")
        took = f"{seconds} s" if seconds is not None else ""
        lines.append(f"| {name} | {s['gcd']:,} B | {s['api']:,} B | {delta[0]} | {delta[1]} | {took} |")
    lines.append("")
    lines.append("Build time: one cargo call for both binaries and std, armv7 only, std rebuilt "
                 "(its flags changed), dependencies already downloaded.")
    lines.append("")
    lines.append(choices_text(runs))
    return "\n".join(lines) + "\n"


def choices_text(runs: dict) -> str:
    """Why the chosen setup, with the measured differences filled in."""
    names = list(runs)
    base = runs[names[0]]["sizes"]

    def delta(name: str) -> str:
        if name not in runs:
            return "(not measured)"
        s = runs[name]["sizes"]
        return ", ".join(f"{x} {(s[x] - base[x]) / base[x] * 100:+.1f}% ({s[x] - base[x]:+,} B)" for x in SERVICES)

    return f"""\
Why this setup:

- **Thumb-2 on armv7** (`-C target-feature=+thumb-mode` in
  `.cargo/config.toml`, applied to std as well by `-Z build-std`): the
  32-bit ARM instruction set instead would cost {delta("ARM (A32) instead of Thumb-2")}.
  Every ARMv7-A core runs Thumb-2 at full speed; Debian builds all of its
  armhf port this way. The goal on armv7 is met only with it.
- **`opt-level = "s"`**: `"z"` would change {delta('opt-level="z"')}, but it
  trades speed for it (less inlining, no loop vectorisation on the HTTP/2,
  HPACK and protobuf paths every request runs through; not measured on a Pi
  here), and `"s"` already meets the goal with room to spare; switch to `"z"`
  in the workspace `Cargo.toml` if bytes matter more. `3` would change {delta("opt-level=3")}.
- **std without features** (`-Z build-std-features=`): the `backtrace`
  feature would change {delta("std feature backtrace")}: a symbolizer that a
  stripped binary with `panic = "abort"` has nothing to show with.
- **Panic locations kept**: `-Z location-detail=none` would change
  {delta("-Z location-detail=none")}; the file and line in a panic message
  are worth that when a pod restarts.
- Also in the release profile: `lto = true`, `codegen-units = 1`,
  `panic = "abort"`, `strip = true`. The x86_64 and aarch64 builds use the
  same profile (no Thumb-2 there).
- **Flags parsed from each binary's one table, not by argh**: argh takes
  a flag's help from a doc comment, a literal that cannot be put together
  from a table, so one declaration per flag (name, variable, default,
  range, help) needs a parser that reads the table. Measured on host
  release builds (x86_64-unknown-linux-gnu, `cargo build --release -p gcd
  -p api`, commit `66b5503` with argh, `33aeff4` with the table): gcd
  1,644,664 B -> 1,650,096 B (+5,432 B, +0.33%), api 1,475,624 B ->
  1,476,656 B (+1,032 B, +0.07%). argh's build is smaller by those few
  bytes, well inside the 2% a change may move a binary, and too few to
  justify declaring every flag twice; the bench tools keep argh.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", action="store_true", help="rebuild armv7 per alternative and record sizes")
    args = parser.parse_args()
    experiments = run_experiments() if args.experiments else (
        json.loads(EXPERIMENTS_JSON.read_text()) if EXPERIMENTS_JSON.is_file() else None)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sizes.md").write_text(render(experiments))
    print(f"wrote {RESULTS / 'sizes.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
