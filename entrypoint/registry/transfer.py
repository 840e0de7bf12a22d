"""An image copied registry to registry through the HTTP API, never through the Docker engine.

Each blob the manifest names (config and layers) is skipped when the target has it, mounted
when it is on the same registry in another repository and the registry links it, and
streamed from the source otherwise: GET from one, PATCH into the other, with no copy on
disk. The target checks every blob against its digest when the upload closes. The manifest
itself is written by the caller with its exact bytes, so its digest does not change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from entrypoint import github
from entrypoint.errors import RegistryError
from entrypoint.registry.reference import DIGEST_RE
from entrypoint.registry.transport import RETRY_BUDGET_S

if TYPE_CHECKING:
    from entrypoint.registry.client import Manifest, RegistryClient

# A blob whose upload fails on the network is sent again from the start this many times.
UPLOAD_TRIES = 3


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    what: str  # "config" or "layer 2/5"


@dataclass
class Copied:
    present: list[Blob] = field(default_factory=list)
    mounted: list[Blob] = field(default_factory=list)
    streamed: list[Blob] = field(default_factory=list)

    def line(self) -> str:
        mb = sum(b.size for b in self.streamed) / 1e6
        return (
            f"{len(self.present)} blob(s) already there, {len(self.mounted)} mounted, "
            f"{len(self.streamed)} copied ({mb:.1f} MB)"
        )


def blobs_of(manifest: Manifest) -> list[Blob]:
    """The config and layers an image manifest names, each checked to be a digest."""
    body: dict[str, Any] = manifest.json()
    config = body.get("config") or {}
    layers = [layer for layer in body.get("layers") or [] if isinstance(layer, dict)]
    found = [Blob(str(config.get("digest", "")), int(config.get("size") or 0), "config")]
    found += [
        Blob(str(layer.get("digest", "")), int(layer.get("size") or 0), f"layer {n}/{len(layers)}")
        for n, layer in enumerate(layers, 1)
    ]
    for blob in found:
        if not DIGEST_RE.fullmatch(blob.digest):
            raise RegistryError(
                f"the manifest {manifest.digest} names a {blob.what} without a valid sha256 digest",
                "promote an image built by a standard builder (docker, BuildKit)",
            )
    return found


@dataclass(frozen=True)
class Route:
    source: RegistryClient
    source_repository: str
    target: RegistryClient
    target_repository: str

    @property
    def same_registry(self) -> bool:
        return self.source.host.lower() == self.target.host.lower()

    def describe(self) -> str:
        return f"{self.source.host}/{self.source_repository} to {self.target.host}/{self.target_repository}"


def copy_blobs(route: Route, blobs: list[Blob]) -> Copied:
    copied = Copied()
    for blob in blobs:
        if route.same_registry and route.source_repository == route.target_repository:
            copied.present.append(blob)
            continue
        if route.target.has_blob(route.target_repository, blob.digest):
            copied.present.append(blob)
            continue
        opened = None
        if route.same_registry:
            opened = route.target.mount_blob(route.target_repository, blob.digest, route.source_repository)
            if opened is None:
                copied.mounted.append(blob)
                continue
        _stream(route, blob, opened)
        copied.streamed.append(blob)
    return copied


def _stream(route: Route, blob: Blob, opened: str | None) -> None:
    """Send the blob, into the upload a refused mount `opened` if any; a failed upload is not
    reused: each new try opens its own."""
    for attempt in range(1, UPLOAD_TRIES + 1):
        started = time.monotonic()
        try:
            upload = opened or route.target.start_upload(route.target_repository)
            opened = None
            with route.source.stream_blob(route.source_repository, blob.digest) as body:
                route.target.upload_blob(upload, blob.digest, blob.size, body)
        except RegistryError as exc:
            if not exc.temporary or attempt == UPLOAD_TRIES:
                raise RegistryError(
                    f"copying {blob.what} ({blob.digest[:19]}, {blob.size / 1e6:.1f} MB) from "
                    f"{route.describe()} failed after {attempt} tries: {exc.cause}",
                    exc.fix,
                ) from exc
            github.warning(
                f"copying {blob.what} failed ({exc.cause}); sending it again ({attempt + 1}/{UPLOAD_TRIES})"
            )
            if exc.retry_after:
                # Bounded: a registry's wish is honoured up to the transport's own budget.
                time.sleep(min(exc.retry_after, RETRY_BUDGET_S))
            continue
        took = time.monotonic() - started
        github.info(f"  copied {blob.what} {blob.digest[:19]} ({blob.size / 1e6:.1f} MB, {took:.1f} s)")
        return
