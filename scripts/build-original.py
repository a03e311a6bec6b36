#!/usr/bin/env python3
"""Builds the original Go implementation (bench/original: the tutorial's gcd
and api, grpc-go and gin) into OUTDIR/gcd and OUTDIR/api, for
scripts/bench.sh --original.

It builds in GOPATH mode from Debian's Go packages only, so it needs no
network and no Go module download: a temporary GOPATH holds
src/pigcd/original (a link to bench/original) in front of /usr/share/gocode.
CGO is off, as in the original's cross-compiled ARM build, so the binaries
are static like ours. Running it again rebuilds from Go's build cache
(under ${PI_GCD_CACHE:-~/.cache/pi-gcd}/go-build), in seconds.

OUTDIR/VERSIONS gets one line naming the Go toolchain and packages used.

Usage: scripts/build-original.py OUTDIR
Needs the Debian packages golang-go, golang-google-grpc-dev,
golang-goprotobuf-dev, golang-google-protobuf-dev and
golang-github-gin-gonic-gin-dev (scripts/install-deps.sh installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "bench" / "original"
GOCODE = Path("/usr/share/gocode/src")
CACHE = Path(
    os.environ.get("PI_GCD_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pi-gcd")
)

# Import path the sources need -> the Debian package that provides it.
PACKAGES = {
    "google.golang.org/grpc": "golang-google-grpc-dev",
    "github.com/golang/protobuf/proto": "golang-goprotobuf-dev",
    "google.golang.org/protobuf/proto": "golang-google-protobuf-dev",
    "github.com/gin-gonic/gin": "golang-github-gin-gonic-gin-dev",
}
# What the results name, Debian package -> what it is.
VERSIONED = {
    "golang-google-grpc-dev": "grpc-go",
    "golang-github-gin-gonic-gin-dev": "gin",
    "golang-github-golang-protobuf-1-3-dev": "golang/protobuf",
}


def fail(message: str) -> None:
    print(f"build-original.py: {message}", file=sys.stderr)
    sys.exit(1)


def debian_version(package: str) -> str:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, timeout=30
        )
    except OSError:
        return "unknown"
    if done.returncode != 0 or not done.stdout:
        return "unknown"
    # "1:0.7.0+dfsg-1" -> "0.7.0+dfsg": the upstream version.
    return done.stdout.strip().split(":")[-1].rsplit("-", 1)[0]


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1]).resolve()

    go = shutil.which("go")
    if go is None:
        fail("go not found: install the Debian package golang-go (scripts/install-deps.sh)")
    missing = sorted({package for path, package in PACKAGES.items() if not (GOCODE / path).is_dir()})
    if missing:
        fail(f"missing Go sources in {GOCODE}: install the Debian package(s) {' '.join(missing)} "
             "(scripts/install-deps.sh)")

    out.mkdir(parents=True, exist_ok=True)
    cache = CACHE / "go-build"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gopath-") as tmp:
        gopath = Path(tmp)
        (gopath / "src" / "pigcd").mkdir(parents=True)
        (gopath / "src" / "pigcd" / "original").symlink_to(SOURCE)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(gopath),
            "GO111MODULE": "off",
            "GOPATH": f"{gopath}:{GOCODE.parent}",
            "GOCACHE": str(cache),
            "GOFLAGS": "",
            "CGO_ENABLED": "0",
        }
        for name in ("gcd", "api"):
            built = subprocess.run(
                [go, "build", "-o", str(out / name), f"pigcd/original/{name}"],
                env=env, capture_output=True, text=True, timeout=900,
            )
            if built.returncode != 0:
                fail(f"go build {name} failed:\n{built.stderr.strip()}")
            print(f"built {out / name}")

    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout.strip()
    parts = [version or "go unknown"]
    parts += [f"{what} {debian_version(package)}" for package, what in VERSIONED.items()]
    (out / "VERSIONS").write_text(", ".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
