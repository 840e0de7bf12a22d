"""What the Lambda checks know of one image, whoever read it: the engine after a build
(`facts_from_engine`) or a registry before a deploy (`lambda_rules.facts_from_registry`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from entrypoint.engine import Engine


@dataclass(frozen=True)
class Layer:
    """One layer as the engine's history tells it: its uncompressed size and the Dockerfile
    instruction that made it."""

    size: int
    made_by: str


@dataclass(frozen=True)
class ImageFacts:
    reference: str
    # None for an image in the engine: it has no manifest until it is pushed.
    media_type: str | None
    os: str
    architecture: str
    size: int
    # True for a registry image: the sum of its compressed layers, a lower bound of what
    # Lambda counts. False for the engine's figure, which is the uncompressed size.
    size_compressed: bool
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    # None when nobody looked (no invoke mode to check, so the layers were not read).
    has_web_adapter: bool | None = False
    # An index (OCI) or manifest list (Docker) instead of one image manifest; its other
    # facts then describe the image manifest inside it that matches the platform.
    is_index: bool = False
    index_platforms: tuple[str, ...] = ()
    attestation_manifests: int = 0
    # The biggest layers first, where the engine's history tells them; empty otherwise.
    largest_layers: tuple[Layer, ...] = ()


def env_of(entries: Iterable[str]) -> dict[str, str]:
    """An image config's `Env` list (`KEY=value`) as a mapping; the last one wins."""
    env: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        env[key] = value
    return env


def made_by(created_by: str) -> str:
    """A history entry's `CreatedBy` as the Dockerfile line a user would recognise: BuildKit
    writes `RUN |2 A=1 B=2 /bin/sh -c cmd # buildkit`, the classic builder
    `/bin/sh -c #(nop) COPY ...` or `/bin/sh -c cmd` for a RUN."""
    text = created_by.removesuffix("# buildkit").strip()
    text = re.sub(r"^RUN \|\d+(?: \S+=\S*)* ", "RUN ", text)
    if text.startswith("/bin/sh -c #(nop) "):
        return text.removeprefix("/bin/sh -c #(nop) ").strip()
    if text.startswith("/bin/sh -c "):
        return "RUN " + text.removeprefix("/bin/sh -c ")
    return text.replace("RUN /bin/sh -c ", "RUN ", 1)


def facts_from_engine(engine: Engine, reference: str, adapter_path: str) -> ImageFacts:
    """Facts of an image in the engine: its config, its uncompressed size, its largest layers,
    and whether it holds the file at `adapter_path` (the Lambda Web Adapter)."""
    attrs = engine.inspect_image(reference)
    config = attrs.get("Config") or {}
    return ImageFacts(
        reference=reference,
        media_type=None,
        os=attrs.get("Os", ""),
        architecture=attrs.get("Architecture", ""),
        size=int(attrs.get("Size", 0)),
        size_compressed=False,
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        env=env_of(config.get("Env") or ()),
        has_web_adapter=engine.has_file(str(attrs["Id"]), adapter_path),
        largest_layers=_largest_layers(engine.history(reference)),
    )


def _largest_layers(history: list[dict[str, Any]], count: int = 3) -> tuple[Layer, ...]:
    """The biggest layers with the instruction that made each, for a size error to point at."""
    layers = [
        Layer(int(step.get("Size") or 0), made_by(str(step.get("CreatedBy") or "")))
        for step in history
        if int(step.get("Size") or 0) > 0
    ]
    return tuple(sorted(layers, key=lambda layer: layer.size, reverse=True)[:count])
