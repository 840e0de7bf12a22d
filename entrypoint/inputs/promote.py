"""The promote and rollback actions' inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from entrypoint.errors import InputError
from entrypoint.inputs.common import (
    parse_env,
    parse_extra_tags,
    parse_platform,
    parse_region,
    parse_registry,
    parse_repository,
    require,
)
from entrypoint.registry.reference import DIGEST_RE, TAG_RE, ImageUri, parse_image_uri

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

PROMOTE_INPUTS = ("source", "env", "region", "repository", "registry", "tags", "platform")
ROLLBACK_INPUTS = ("env", "region", "to", "repository", "registry", "platform")


@dataclass(frozen=True)
class PromoteInputs:
    source: ImageUri  # host "": the target registry
    env: str
    region: str
    repository: str
    registry: str | None
    extra_tags: tuple[str, ...]
    platform: str | None  # None: the source image's own, if Lambda runs it
    workspace: Path


def parse_promote(raw: Mapping[str, str], workspace: Path) -> PromoteInputs:
    text = require(
        raw, "source", "set 'source' to the image to promote, e.g. the publish job's image-uri output"
    )
    # Without a host, the repository is on the target registry: job outputs
    # that hold an account ID are dropped by GitHub when the ID is masked, and `repository`
    # and `digest` never hold it.
    source = parse_image_uri(text, host_optional=True)
    if source is None or not (source.digest or source.tag):
        raise InputError(
            f"input 'source' is '{text[:200]}', not an image reference with a digest or tag",
            "give host/repository@sha256:<digest> (the image-uri output of publish), "
            "repository@sha256:<digest> (on the target registry), or host/repository:tag",
        )
    env = parse_env(raw)
    return PromoteInputs(
        source=source,
        env=env,
        region=parse_region(raw),
        repository=parse_repository(raw, env),
        registry=parse_registry(raw),
        extra_tags=parse_extra_tags(raw),
        platform=parse_platform(raw),
        workspace=workspace,
    )


@dataclass(frozen=True)
class RollbackInputs:
    env: str
    region: str
    repository: str
    registry: str | None
    to: str  # "previous", a digest, or a tag
    platform: str | None


def parse_rollback(raw: Mapping[str, str]) -> RollbackInputs:
    env = parse_env(raw)
    to = raw.get("to", "").strip() or "previous"
    if to != "previous" and not DIGEST_RE.fullmatch(to) and not TAG_RE.fullmatch(to):
        raise InputError(
            f"input 'to' is '{to[:200]}', which is neither 'previous', a digest nor a tag",
            "give previous (where the environment was before its last move), sha256:<64 hex "
            "digits>, or a commit tag",
        )
    return RollbackInputs(
        env=env,
        region=parse_region(raw),
        repository=parse_repository(raw, env),
        registry=parse_registry(raw),
        to=to,
        platform=parse_platform(raw),
    )
