"""Where the build cache is, and each clone's own directory in it, as
scripts/lib/common.sh (`CACHE`, `clone_cache`) and xtask/src/cache.rs have
them: the tests and scripts/*.py take the paths from here.

Slow things are kept outside the clone, in
${PI_GCD_CACHE:-${XDG_CACHE_HOME:-~/.cache}/pi-gcd}. What is built from a
clone's sources (cargo target directories) goes to
$CACHE/clones/<folder>-<crc>, keyed by the clone's canonical path with POSIX
cksum's CRC, because cargo goes by file times and a target directory shared
by two clones hands one clone's build to the other. Standard library only.
"""

import os
from pathlib import Path

CACHE = Path(os.environ.get("PI_GCD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pi-gcd")


def cksum(data: bytes) -> int:
    """The checksum POSIX `cksum` prints: CRC-32 (polynomial 0x04C11DB7,
    most significant bit first) over the data and then its length in as few
    bytes as it takes, least significant first; inverted."""
    crc = 0

    def feed(crc: int, byte: int) -> int:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        return crc & 0xFFFFFFFF

    for byte in data:
        crc = feed(crc, byte)
    length = len(data)
    while length:
        crc = feed(crc, length & 0xFF)
        length >>= 8
    return crc ^ 0xFFFFFFFF


def clone_dir(root: Path, cache: Path = CACHE) -> Path:
    """The cache directory of the clone at `root`."""
    root = Path(root).resolve()
    return cache / "clones" / f"{root.name}-{cksum(os.fsencode(root)):08x}"
