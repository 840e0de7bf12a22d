"""Where BuildKit keeps its layer cache between runs: the `cache` input.

| mode            | cache lives in                                  | builder it needs                    |
|-----------------|-------------------------------------------------|-------------------------------------|
| registry-inline | the published image itself (`<repo>:<env>`)     | any BuildKit build                  |
| registry        | a cache manifest `<repo>:buildcache-<env>`      | buildx, docker-container, >= 0.12   |
| gha             | GitHub's Actions cache service (v2)             | buildx >= 0.21, docker-container    |
| local           | a directory the workflow keeps with actions/cache | buildx, docker-container          |
| none            | nowhere outside this runner's engine            | any                                 |

"docker-container" means a builder that exports cache: buildx's docker-container (or remote)
driver, or its docker driver on an engine with the containerd image store.

`cache_arguments` is a pure function of the mode and the builder, pinned by a table test
like `build_command`; `check_supported` says before the build whether the builder can do
it, needs a buildx `docker-container` builder first, or cannot at all (`EngineError`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from entrypoint.errors import EngineError

if TYPE_CHECKING:
    from pathlib import Path

    from entrypoint.build.buildkit import Builder

CacheMode = Literal["registry-inline", "registry", "gha", "local", "none"]
CACHE_MODES: tuple[CacheMode, ...] = get_args(CacheMode)
DEFAULT_CACHE_MODE: CacheMode = "registry-inline"

# image-manifest=true (a cache stored as an image manifest, not an index) arrived in
# BuildKit and buildx 0.12; ECR rejects the index form with a 400.
REGISTRY_MIN_BUILDX = (0, 12)
# GitHub shut the v1 cache service down on 2025-04-15; buildx 0.21 with BuildKit 0.20
# speak v2. https://gh.io/gha-cache-sunset
GHA_MIN_BUILDX = (0, 21)
GHA_MIN_BUILDKIT = "0.20"

_CONTAINER_BUILDER_FIX = (
    "create a docker-container builder before the build "
    "(`docker buildx create --use --driver docker-container`, or docker/setup-buildx-action)"
)
_REQUIRED: dict[CacheMode, str] = {
    "registry-inline": "any BuildKit builder: docker buildx (any driver) or DOCKER_BUILDKIT=1 docker build",
    "registry": (
        "docker buildx >= 0.12 with a docker-container builder (BuildKit >= 0.12 writes the "
        "image-manifest cache that ECR accepts)"
    ),
    "gha": (
        f"docker buildx >= 0.21 with a docker-container builder running BuildKit >= {GHA_MIN_BUILDKIT} "
        "(GitHub's cache service v2)"
    ),
    "local": "docker buildx with a docker-container builder",
    "none": "any builder",
}


@dataclass(frozen=True)
class CacheSupport:
    mode: CacheMode
    # True: the current builder cannot export this cache, but a buildx docker-container
    # builder made by the action can. False: the current builder can use it as it is.
    needs_container_builder: bool
    note: str = ""  # what the action should tell the user, if anything


def uses_registry(mode: CacheMode) -> bool:
    """Whether BuildKit reads or writes this mode's cache in our registry, and so needs the
    ECR login in the build: registry-inline imports the published images' inline cache (on
    a first publish too, so that a Dockerfile works the same on every run), registry exports
    and imports `buildcache-<env>`. gha, local and none never touch the registry, and a login
    handed to their builds anyway would let a Dockerfile `FROM` any repository the role may
    read; the image itself is pushed by the engine, with the login given to that push alone."""
    return mode in ("registry-inline", "registry")


def required_builder(mode: CacheMode) -> str:
    return _REQUIRED[mode]


def buildx_version(builder: Builder) -> tuple[int, int] | None:
    """(major, minor) of buildx from `docker buildx version` text, e.g.
    `github.com/docker/buildx 0.13.1 7884339...` or `github.com/docker/buildx v0.10.4 c513d34`."""
    if builder.kind != "buildx":
        return None
    match = re.search(r"(?:^|\s)v?(\d+)\.(\d+)(?:\.\d+)?\b", builder.version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_supported(mode: CacheMode, builder: Builder) -> CacheSupport:
    """Whether `builder` can use `mode`; raises EngineError when no builder this CLI can
    make would do, so the run stops before building, not after."""
    if mode in ("registry-inline", "none"):
        return CacheSupport(mode, needs_container_builder=False)
    if builder.kind != "buildx":
        raise EngineError(
            f"cache mode '{mode}' needs {required_builder(mode)}, and this runner has only "
            f"`docker build` ({builder.version or 'unknown version'}) without buildx, which "
            "can only read and write the inline cache",
            "install buildx (docker/setup-buildx-action, or the docker-buildx package), or set "
            "'cache' to registry-inline or none",
        )
    # The version gate first: a new builder made by the same old buildx would not help.
    note = _version_gate(mode, builder)
    if builder.driver == "docker" and builder.containerd_store:
        return CacheSupport(mode, needs_container_builder=False, note=note)
    if builder.driver == "docker" and builder.chosen:
        raise EngineError(
            f"cache mode '{mode}' needs a builder that exports cache, and the builder "
            f"'{builder.name}' (input 'builder') has the docker driver, which exports only the "
            "inline cache; the action does not change or replace a builder it was given",
            "name a docker-container, remote or cloud builder in 'builder', or set 'cache' to "
            "registry-inline",
        )
    if builder.driver == "docker":
        # The classic image store: the docker driver exports only the inline cache.
        needs = (
            f"cache mode '{mode}' needs a docker-container builder (the docker driver exports "
            "only the inline cache)"
        )
        return CacheSupport(mode, needs_container_builder=True, note="; ".join(filter(None, (needs, note))))
    return CacheSupport(mode, needs_container_builder=False, note=note)


def _version_gate(mode: CacheMode, builder: Builder) -> str:
    minimum = {"registry": REGISTRY_MIN_BUILDX, "gha": GHA_MIN_BUILDX}.get(mode)
    if minimum is None:
        return ""
    found = buildx_version(builder)
    if found is None:
        # Unknown text: let BuildKit speak for itself rather than refuse a working setup.
        return (
            f"cannot read the buildx version from '{builder.version}'; "
            f"cache mode '{mode}' needs {required_builder(mode)}"
        )
    if found < minimum:
        raise EngineError(
            f"cache mode '{mode}' needs {required_builder(mode)}, and this runner's buildx is "
            f"{found[0]}.{found[1]} ({builder.version})",
            f"install buildx {minimum[0]}.{minimum[1]} or later (docker/setup-buildx-action "
            "installs the latest), or choose registry-inline for 'cache'",
        )
    return ""


def cache_arguments(
    mode: CacheMode,
    builder: Builder,
    *,
    cache_source: str | None,
    cache_ref: str | None,
    more_cache_sources: tuple[str, ...] = (),
    local_dir: Path | None,
    scope: str,
) -> tuple[str, ...]:
    """The extra `docker buildx build` / `docker build` arguments for one cache mode.

    cache_source: registry-inline: the image this environment last published
        (`<registry>/<repo>:<env>`), or None on a first publish (nothing to read yet).
    more_cache_sources: registry-inline: further images to read inline cache from (the
        anchor of `inline_cache_anchor_tag`).
    cache_ref: registry: the cache manifest's reference (`<registry>/<repo>:buildcache-<env>`).
    local_dir: local: the directory actions/cache restores and saves. BuildKit writes the
        new cache to `<local_dir>-new`, because exporting into the directory it imports from
        only ever adds blobs; after the build the caller replaces `<local_dir>` with
        `<local_dir>-new` (the pattern docker/build-push-action documents), so the cache
        holds this build's layers only and does not grow run after run.
    scope: gha: the cache scope, one per image and environment so they don't evict each other.

    Raises EngineError when this builder cannot use the mode (see `check_supported`).
    """
    support = check_supported(mode, builder)
    if support.needs_container_builder:
        raise EngineError(
            f"cache mode '{mode}' needs {required_builder(mode)}; the current builder uses the "
            f"'{builder.driver}' driver, which exports only the inline cache",
            f"{_CONTAINER_BUILDER_FIX}, or set 'cache' to registry-inline",
        )
    if mode == "none":
        # No external cache; the engine's own build cache on this runner still applies.
        return ()
    if mode == "registry-inline":
        sources = tuple(dict.fromkeys(filter(None, (cache_source, *more_cache_sources))))
        source = tuple(arg for ref in sources for arg in ("--cache-from", ref))
        if builder.kind == "buildx":
            return ("--cache-to", "type=inline", *source)
        # Plain `docker build` has no --cache-to; this build arg embeds the cache metadata
        # in the image config, which `docker push` then carries to the registry.
        return ("--build-arg", "BUILDKIT_INLINE_CACHE=1", *source)
    if mode == "registry":
        ref = _required(cache_ref, "cache_ref", mode)
        return (
            "--cache-to",
            _attributes(
                type="registry",
                ref=ref,
                mode="max",
                # ECR rejects BuildKit's default cache index; an image manifest it stores.
                **{"image-manifest": "true", "oci-mediatypes": "true"},
            ),
            "--cache-from",
            _attributes(type="registry", ref=ref),
        )
    if mode == "gha":
        scope = _required(scope, "scope", mode)
        return (
            "--cache-to",
            _attributes(type="gha", mode="max", scope=scope),
            "--cache-from",
            _attributes(type="gha", scope=scope),
        )
    directory = str(_required(local_dir, "local_dir", mode))
    return (
        "--cache-to",
        _attributes(type="local", dest=f"{directory}-new", mode="max"),
        "--cache-from",
        _attributes(type="local", src=directory),
    )


# The inline cache breaks after one step on BuildKit: an image built with layers taken from
# another image's inline cache records only the layers it built itself (seen with dockerd
# 20.10's BuildKit: after a code-only change, the config's moby.buildkit.cache.v0 names the
# code layer alone), so the image after it finds no dependency layer and reinstalls. The
# action keeps a second tag, the anchor, on the newest image whose inline cache covers its
# layers at least as well as the anchor's did, and reads cache from both.
def inline_cache_anchor_tag(env: str) -> str:
    return f"buildcache-inline-{env}"


def inline_cache_coverage(config: bytes) -> int:
    """How many of the image's layers its inline cache metadata describes (0 if none)."""
    try:
        parsed = json.loads(config)
        records = json.loads(base64.b64decode(parsed.get("moby.buildkit.cache.v0") or b"W10="))
    except (ValueError, TypeError, binascii.Error):
        return 0
    if isinstance(records, dict):  # the other form: {"layers": [...], "records": [...]}
        records = records.get("records") or []
    layers = {
        layer.get("layer")
        for record in records
        if isinstance(record, dict)
        for layer in record.get("layers") or []
        if isinstance(layer, dict)
    }
    return len(layers - {None})


def _required(value: str | Path | None, name: str, mode: CacheMode) -> str:
    # A caller bug, not a user error: the action derives these values itself.
    if value is None or not str(value):
        raise ValueError(f"cache mode '{mode}' needs {name}")
    return str(value)


def _attributes(**fields: str) -> str:
    """buildx's `key=value,...` form; buildx reads it as CSV, so quote a field holding a
    comma or a quote (a local path or a scope may)."""
    out = []
    for key, value in fields.items():
        field = f"{key}={value}"
        if any(c in field for c in ',"\n'):
            field = '"' + field.replace('"', '""') + '"'
        out.append(field)
    return ",".join(out)


def rotate_local_cache(folder: Path) -> None:
    """Replace the local cache with the one this build exported to `<folder>-new`.

    BuildKit's local exporter only adds, so exporting over the old folder would grow it
    forever; swapping keeps what this build used and nothing else.
    """
    exported = folder.with_name(folder.name + "-new")
    if not exported.is_dir():
        return
    if folder.exists():
        shutil.rmtree(folder)
    exported.rename(folder)
