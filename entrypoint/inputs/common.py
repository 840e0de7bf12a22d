"""What every action's inputs share: reading them (`read_raw`, the only reader of
`INPUT_*`), the patterns, and the parsers of inputs that several actions take."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from actions_toolkit import core

from entrypoint.build.cache import CACHE_MODES, DEFAULT_CACHE_MODE, CacheMode
from entrypoint.checks.smoke import (
    DEFAULT_PORT,
    HTTP_RE,
    MEDIA_TYPE_RE,
    SMOKE_FORMS,
    SSE_TYPE,
    STREAM_WORD,
    SmokeSpec,
)
from entrypoint.errors import InputError
from entrypoint.registry.reference import REGISTRY_RE, REPOSITORY_RE, TAG_RE

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

DEFAULT_REPOSITORY = "{env}-sse-streaming-lambda"
DEFAULT_PLATFORM = "linux/amd64"

ENV_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
REGION_RE = re.compile(r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}")
BUILD_ARG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SECRET_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
SHA_RE = re.compile(r"[0-9a-f]{40}")
# Docker's own build check (SecretsUsedInArgOrEnv) flags these words in ARG names.
SECRET_WORDS = re.compile(
    r"(?i)(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|PASS|APIKEY|API_KEY|KEY|CREDENTIALS?|AUTH)(?:_|$)"
)
# A function URL's invoke modes, as the inputs spell them.
# Lambda runs container images on these two architectures only.
PLATFORMS = ("linux/amd64", "linux/arm64")
# Tags the action manages itself; a user tag with these prefixes would be overwritten.
RESERVED_TAG_PREFIXES = ("sha256-", "src-", "buildcache-", "history-")
TRUE_WORDS = ("true", "True", "TRUE")
FALSE_WORDS = ("false", "False", "FALSE")


def read_raw(names: tuple[str, ...], flags: Mapping[str, str | None]) -> dict[str, str]:
    """Collect each input from its command-line flag, else from `INPUT_<NAME>`."""
    raw: dict[str, str] = {}
    for name in names:
        flag = flags.get(name)
        raw[name] = flag if flag is not None else core.get_input(name)
    return raw


def parse_bool(name: str, value: str, default: bool) -> bool:
    if value == "":
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise InputError(f"input '{name}' is '{value}', not a boolean", f"set '{name}' to true or false")


def text_lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def numbered_lines(value: str) -> list[tuple[int, str]]:
    return [(number, line) for number, line in enumerate(value.splitlines(), 1) if line.strip()]


def require(raw: Mapping[str, str], name: str, hint: str) -> str:
    value = raw.get(name, "").strip()
    if not value:
        raise InputError(f"input '{name}' is required and was not given", hint)
    return value


def parse_env(raw: Mapping[str, str]) -> str:
    env = require(raw, "env", "set 'env' to preprod, prod or another environment name")
    if not ENV_RE.fullmatch(env):
        raise InputError(
            f"input 'env' is '{env}', which is not an environment name",
            "use lower-case letters, digits and hyphens, starting with a letter, at most 31 "
            "characters (e.g. preprod, prod)",
        )
    return env


def parse_region(raw: Mapping[str, str]) -> str:
    region = require(raw, "region", "set 'region' to the AWS region of the registry, e.g. eu-west-2")
    if not REGION_RE.fullmatch(region):
        raise InputError(
            f"input 'region' is '{region}', which is not an AWS region",
            "use a region code such as eu-west-2 or us-east-1",
        )
    return region


def parse_registry(raw: Mapping[str, str]) -> str | None:
    registry = raw.get("registry", "").strip().rstrip("/")
    if not registry:
        return None
    if "://" in registry or not REGISTRY_RE.fullmatch(registry):
        raise InputError(
            f"input 'registry' is '{registry}', not a host[:port]",
            "give the registry host without scheme or path, e.g. "
            "123456789012.dkr.ecr.eu-west-2.amazonaws.com or 127.0.0.1:5000",
        )
    return registry


def parse_repository(raw: Mapping[str, str], env: str) -> str:
    repository = (raw.get("repository", "").strip() or DEFAULT_REPOSITORY).replace("{env}", env)
    if not (2 <= len(repository) <= 256 and REPOSITORY_RE.fullmatch(repository)):
        raise InputError(
            f"input 'repository' gives '{repository}', which is not an ECR repository name",
            "use lower-case letters, digits and . _ - / separators (the name Terraform gives "
            "the aws_ecr_repository)",
        )
    return repository


def parse_platform(raw: Mapping[str, str]) -> str | None:
    platform = raw.get("platform", "").strip()
    if platform and platform not in PLATFORMS:
        raise InputError(
            f"input 'platform' is '{platform}', which Lambda cannot run",
            f"use one of {', '.join(PLATFORMS)} (Lambda's x86_64 and arm64)",
        )
    return platform or None


def parse_extra_tags(raw: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_tag("tags", t) for t in text_lines(raw.get("tags", ""))))


def _tag(name: str, tag: str) -> str:
    if not TAG_RE.fullmatch(tag):
        raise InputError(
            f"input '{name}' has '{tag}', which is not a valid image tag",
            "tags are 1-128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'",
        )
    if tag.startswith(RESERVED_TAG_PREFIXES):
        raise InputError(
            f"input '{name}' has '{tag}', which uses a prefix the action reserves",
            f"choose a tag that does not start with {', '.join(RESERVED_TAG_PREFIXES)}",
        )
    return tag


def path_in(workspace: Path, name: str, value: str, *, also: Path | None = None) -> Path:
    """`value` resolved against the workspace, symlinks followed, which must stay inside it
    (or inside `also`): a Dockerfile, context or plan from elsewhere on the runner would
    let a checkout read the runner's home (`COPY . .` of ~ bakes ~/.aws into the image)."""
    root = workspace.resolve()
    resolved = (root / value).resolve()
    allowed = [root] + ([also.resolve()] if also is not None else [])
    if not any(resolved == base or resolved.is_relative_to(base) for base in allowed):
        where = "the workspace" + (f" or {allowed[1]}" if also is not None else "")
        raise InputError(
            f"input '{name}' is '{value}', which resolves to {resolved}, outside {where}",
            f"give '{name}' as a path inside the repository checkout ({root}); symlinks must "
            "point inside it too",
        )
    return resolved


def parse_smoke(value: str, name: str = "smoke") -> SmokeSpec | None:
    text = value.strip()
    if text.lower() in ("", "none"):
        return None
    if text == "auto":
        return SmokeSpec(kind="auto")
    if text == "invoke" or text.startswith("invoke:"):
        event = text.partition(":")[2].strip() or "{}"
        try:
            json.loads(event)
        except ValueError as exc:
            raise InputError(
                f"input '{name}' has the event '{event}', which is not JSON ({exc})",
                'write the event as JSON after "invoke:", e.g. invoke:{"path": "/health"}',
            ) from exc
        return SmokeSpec(kind="invoke", event=event)
    # PORT/PATH stream [TYPE]: the words are split on blanks, which a path never holds.
    target, *words = text.split()
    stream = ""
    if words and words[0].lower() == STREAM_WORD and len(words) <= 2:
        stream = words[1].lower() if len(words) == 2 else SSE_TYPE
        if not MEDIA_TYPE_RE.fullmatch(stream):
            raise InputError(
                f"input '{name}' names the content type '{words[1]}', which is not a media type",
                f"write it as type/subtype after '{STREAM_WORD}', e.g. {target} {STREAM_WORD} "
                f"{SSE_TYPE}, or leave it out for {SSE_TYPE}",
            )
    elif words:
        target = text
    match = HTTP_RE.fullmatch(target)
    if match and (match["port"] or match["path"]):
        port = int(match["port"] or DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise InputError(f"input '{name}' has the port {port}, outside 1-65535", SMOKE_FORMS)
        return SmokeSpec(kind="http", port=port, path=match["path"] or "/", stream=stream)
    raise InputError(f"input '{name}' is '{text}', which is not a smoke test", SMOKE_FORMS)


def parse_cache_mode(value: str) -> CacheMode:
    mode = value.strip() or DEFAULT_CACHE_MODE
    for known in CACHE_MODES:
        if mode == known:
            return known
    raise InputError(
        f"input 'cache' is '{mode}', which is not a cache mode",
        f"use one of {', '.join(CACHE_MODES)} (default {DEFAULT_CACHE_MODE})",
    )
