#!/usr/bin/env python3
"""Turn an OCI image layout directory into a reproducible OCI archive.

    oci_archive.py LAYOUT_DIR OUTPUT_TAR IMAGE_NAME [SOURCE_DATE_EPOCH]

The layout's index.json must point at exactly one image index (the multi-arch
image). Its entry is annotated with the full image name twice:

- io.containerd.image.name: what `ctr images import` and `k3s ctr images
  import` (and `docker load`) name the imported image;
- org.opencontainers.image.ref.name: what podman and skopeo read.

The tar is written in a fixed order with fixed owners and timestamps, so the
same images give the same archive, byte for byte.
"""

import io
import json
import os
import sys
import tarfile


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    layout, output, name = argv[1], argv[2], argv[3]
    mtime = int(argv[4]) if len(argv) == 5 else 0

    with open(os.path.join(layout, "index.json"), encoding="utf-8") as f:
        index = json.load(f)
    entries = index.get("manifests", [])
    digests = {entry["digest"] for entry in entries}
    if len(digests) != 1:
        raise SystemExit(f"{layout}/index.json: expected one image, found {len(digests)}")
    entry = dict(entries[0])
    if entry.get("mediaType") != "application/vnd.oci.image.index.v1+json":
        raise SystemExit(f"{layout}/index.json: {entry.get('mediaType')} is not a multi-arch index")
    entry["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name,
    }
    index["manifests"] = [entry]
    index_bytes = json.dumps(index, separators=(",", ":"), sort_keys=True).encode()

    def add(tar: tarfile.TarFile, arcname: str, data: bytes | None) -> None:
        info = tarfile.TarInfo(arcname)
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if data is None:
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        else:
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))

    tmp = output + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "blobs", None)
        for algorithm in sorted(os.listdir(os.path.join(layout, "blobs"))):
            add(tar, f"blobs/{algorithm}", None)
            directory = os.path.join(layout, "blobs", algorithm)
            for blob in sorted(os.listdir(directory)):
                with open(os.path.join(directory, blob), "rb") as f:
                    add(tar, f"blobs/{algorithm}/{blob}", f.read())
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", index_bytes)
    os.replace(tmp, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
