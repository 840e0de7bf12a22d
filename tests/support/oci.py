"""OCI content made by hand and pushed through the registry API: what `docker buildx build
--push` produces by default (an index with a provenance attestation), for the tests of the
paths that must turn it away or reduce it to one image manifest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.support.stack import MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tests.support.stack import Registry


@dataclass(frozen=True)
class PushedIndex:
    index_digest: str
    image_digest: str
    attestation_digest: str


def tar_of(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar holding `files`."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def oci_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = tar_of(files)
    return gzip.compress(raw, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def push_index_with_attestation(registry: Registry, repo: str, tag: str = "latest") -> PushedIndex:
    """A linux/amd64 image and its provenance attestation, in an OCI index tagged `tag`."""
    manifest = _image_manifest(registry, repo, {"app/main.sh": b"#!/bin/sh\necho hi\n"})
    image_digest = registry.put_manifest(repo, "image", manifest, MEDIA_OCI_MANIFEST)
    statement = b'{"_type": "https://in-toto.io/Statement/v0.1"}'
    empty_config = b"{}"
    attestation = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": registry.put_blob(repo, empty_config),
                "size": len(empty_config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.in-toto+json",
                    "digest": registry.put_blob(repo, statement),
                    "size": len(statement),
                    "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"},
                }
            ],
        }
    ).encode()
    attestation_digest = registry.put_manifest(repo, "attestation", attestation, MEDIA_OCI_MANIFEST)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_OCI_MANIFEST,
                    "digest": image_digest,
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
                {
                    "mediaType": MEDIA_OCI_MANIFEST,
                    "digest": attestation_digest,
                    "size": len(attestation),
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {
                        "vnd.docker.reference.type": "attestation-manifest",
                        "vnd.docker.reference.digest": image_digest,
                    },
                },
            ],
        }
    ).encode()
    index_digest = registry.put_manifest(repo, tag, index, MEDIA_OCI_INDEX)
    return PushedIndex(index_digest, image_digest, attestation_digest)


def push_image(registry: Registry, repo: str, tag: str, files: dict[str, bytes] | None = None) -> str:
    """A small linux/amd64 image pushed through the API (no engine): one layer holding
    `files` (by default a script; vary it for a new digest) and a CMD, as one OCI image
    manifest tagged `tag`. Returns the manifest's digest."""
    manifest = _image_manifest(registry, repo, files or {"app/main.sh": b"#!/bin/sh\necho hi\n"})
    return registry.put_manifest(repo, tag, manifest, MEDIA_OCI_MANIFEST)


def _image_manifest(registry: Registry, repo: str, files: dict[str, bytes]) -> bytes:
    """A linux/amd64 OCI image manifest of one layer holding `files`, its blobs pushed."""
    layer, diff_id = oci_layer(files)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/app/main.sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    return image_manifest(registry, repo, config, [("application/vnd.oci.image.layer.v1.tar+gzip", layer)])


def image_manifest(
    registry: Registry, repo: str, config: Mapping[str, object], layers: list[tuple[str, bytes]]
) -> bytes:
    """An OCI image manifest of `config` and `layers` (media type, blob), its blobs pushed."""
    raw_config = json.dumps(config).encode()
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": registry.put_blob(repo, raw_config),
                "size": len(raw_config),
            },
            "layers": [
                {"mediaType": media_type, "digest": registry.put_blob(repo, blob), "size": len(blob)}
                for media_type, blob in layers
            ],
        }
    ).encode()
