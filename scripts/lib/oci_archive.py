#!/usr/bin/env python3
"""Turn an OCI image layout directory into a reproducible OCI archive.

    oci_archive.py LAYOUT_DIR OUTPUT_TAR IMAGE_NAME SOURCE_DATE_EPOCH [PLATFORM=SBOM ...]

The layout's index.json must point at exactly one image index (the multi-arch
image). Its entry is annotated with the full image name twice:

- io.containerd.image.name: what `ctr images import` and `k3s ctr images
  import` (and `docker load`) name the imported image;
- org.opencontainers.image.ref.name: what podman and skopeo read.

Each PLATFORM=SBOM (`linux/arm/v7=dist/images/gcd.linux-arm-v7.cdx.json`)
attaches a CycloneDX SBOM to that platform's image the way `docker buildx
build --sbom` does: an attestation manifest (an in-toto statement whose
subject is the image manifest) in the image index, with platform
unknown/unknown so runtimes pass over it, and annotations naming the image
it describes (docker scout and `docker buildx imagetools inspect` read it).

The tar is written in a fixed order with fixed owners and timestamps, so the
same images give the same archive, byte for byte.
"""

import hashlib
import io
import json
import os
import sys
import tarfile

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
CYCLONEDX = "https://cyclonedx.org/bom"


def canonical(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def platform_name(descriptor: dict) -> str:
    p = descriptor.get("platform", {})
    return "/".join(part for part in (p.get("os"), p.get("architecture"), p.get("variant")) if part)


def attestation(image: dict, image_name: str, sbom: dict, put) -> dict:
    """The attestation manifest for `image` (a descriptor in the index)
    carrying `sbom`; `put(bytes) -> descriptor` stores a blob."""
    platform = platform_name(image).replace("/", "%2F")
    statement = put(canonical({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": CYCLONEDX,
        "subject": [{
            "name": f"pkg:docker/{image_name}?platform={platform}",
            "digest": {"sha256": image["digest"].removeprefix("sha256:")},
        }],
        "predicate": sbom,
    }))
    config = put(canonical({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [statement["digest"]]},
    }))
    manifest = put(canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, **config},
        "layers": [{"mediaType": IN_TOTO, **statement,
                    "annotations": {"in-toto.io/predicate-type": CYCLONEDX}}],
    }))
    return {
        "mediaType": MANIFEST,
        **manifest,
        "annotations": {
            "vnd.docker.reference.digest": image["digest"],
            "vnd.docker.reference.type": "attestation-manifest",
        },
        "platform": {"architecture": "unknown", "os": "unknown"},
    }


def main(argv: list[str]) -> int:
    if len(argv) < 5 or not all("=" in arg for arg in argv[5:]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    layout, output, name, mtime = argv[1], argv[2], argv[3], int(argv[4])
    sboms = dict(arg.split("=", 1) for arg in argv[5:])

    with open(os.path.join(layout, "index.json"), encoding="utf-8") as f:
        index = json.load(f)
    entries = index.get("manifests", [])
    digests = {entry["digest"] for entry in entries}
    if len(digests) != 1:
        raise SystemExit(f"{layout}/index.json: expected one image, found {len(digests)}")
    entry = dict(entries[0])
    if entry.get("mediaType") != INDEX:
        raise SystemExit(f"{layout}/index.json: {entry.get('mediaType')} is not a multi-arch index")

    def blob_path(digest: str) -> str:
        algorithm, _, hexdigest = digest.partition(":")
        return os.path.join(layout, "blobs", algorithm, hexdigest)

    def put(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(blob_path(digest), "wb") as f:
            f.write(data)
        return {"digest": digest, "size": len(data)}

    if sboms:
        with open(blob_path(entry["digest"]), "rb") as f:
            image_index = json.load(f)
        images = {platform_name(m): m for m in image_index["manifests"]}
        if set(sboms) != set(images):
            raise SystemExit(f"SBOMs for {sorted(sboms)}, images for {sorted(images)}")
        for platform, image in images.items():
            with open(sboms[platform], encoding="utf-8") as f:
                image_index["manifests"].append(attestation(image, name, json.load(f), put))
        # The index with the attestations replaces the one without.
        os.remove(blob_path(entry["digest"]))
        entry.update(put(canonical(image_index)))

    entry["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name,
    }
    index["manifests"] = [entry]
    index_bytes = canonical(index)

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
