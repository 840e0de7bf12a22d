"""Inputs of every action (publish, verify, promote, rollback): read once, validated once, frozen.

`read_raw` is the only reader of `INPUT_*` (through actions-toolkit, which names them as
the runner does: `INPUT_` + the name upper-cased, hyphens kept) and of the command-line
flags that stand in for them locally. `parse_publish` turns that raw mapping into a
`PublishInputs` or one `InputError` naming the input and the fix; it touches nothing but
the file system it is told to look at.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from actions_toolkit import core

from entrypoint.buildkit import cli_reads
from entrypoint.cache import CACHE_MODES, DEFAULT_CACHE_MODE, CacheMode
from entrypoint.config import MERGED_KEYS, ImageEntry, merged, read_config
from entrypoint.errors import InputError
from entrypoint.reference import DIGEST_RE, REGISTRY_RE, REPOSITORY_RE, TAG_RE, ImageUri, parse_image_uri
from entrypoint.smoke import DEFAULT_PORT, HTTP_RE, SMOKE_FORMS, SmokeSpec

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

PUBLISH_INPUTS = (
    "env",
    "region",
    "dockerfile",
    "context",
    "repository",
    "registry",
    "build-args",
    "tags",
    "platform",
    "push",
    "cache",
    "cache-dir",
    "force-build",
    "smoke",
    "smoke-timeout",
    "smoke-memory",
    "invoke-mode",
    "secrets",
    "config",
    "parallel",
)
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
INVOKE_MODES = ("buffered", "response-stream")
# Lambda runs container images on these two architectures only.
PLATFORMS = ("linux/amd64", "linux/arm64")
# Tags the action manages itself; a user tag with these prefixes would be overwritten.
RESERVED_TAG_PREFIXES = ("sha256-", "src-", "buildcache-", "history-")
TRUE_WORDS = ("true", "True", "TRUE")
FALSE_WORDS = ("false", "False", "FALSE")


@dataclass(frozen=True)
class PublishInputs:
    env: str
    region: str
    dockerfile: Path
    context: Path
    repository: str
    registry: str | None
    build_args: tuple[tuple[str, str], ...]
    extra_tags: tuple[str, ...]
    platform: str
    push: bool
    workspace: Path
    cache: CacheMode = "registry-inline"
    cache_dir: Path | None = None
    force_build: bool = False
    smoke: SmokeSpec | None = None
    smoke_timeout: float = 30.0
    smoke_memory: int = 512
    invoke_mode: str | None = None
    # (BuildKit secret id, environment variable of the step that holds its value)
    secrets: tuple[tuple[str, str], ...] = ()

    @property
    def secret_like_build_args(self) -> tuple[str, ...]:
        """Build-arg keys that read like credentials: build args end up in the image's
        history and the source fingerprint, secrets belong in `secrets`."""
        return tuple(key for key, _ in self.build_args if SECRET_WORDS.search(key))


def read_raw(names: tuple[str, ...], flags: Mapping[str, str | None]) -> dict[str, str]:
    """Collect each input from its command-line flag, else from `INPUT_<NAME>`."""
    raw: dict[str, str] = {}
    for name in names:
        flag = flags.get(name)
        raw[name] = flag if flag is not None else core.get_input(name)
    return raw


def _bool(name: str, value: str, default: bool) -> bool:
    if value == "":
        return default
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise InputError(f"input '{name}' is '{value}', not a boolean", f"set '{name}' to true or false")


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def _numbered_lines(value: str) -> list[tuple[int, str]]:
    return [(number, line) for number, line in enumerate(value.splitlines(), 1) if line.strip()]


def _require(raw: Mapping[str, str], name: str, hint: str) -> str:
    value = raw.get(name, "").strip()
    if not value:
        raise InputError(f"input '{name}' is required and was not given", hint)
    return value


def parse_env(raw: Mapping[str, str]) -> str:
    env = _require(raw, "env", "set 'env' to preprod, prod or another environment name")
    if not ENV_RE.fullmatch(env):
        raise InputError(
            f"input 'env' is '{env}', which is not an environment name",
            "use lower-case letters, digits and hyphens, starting with a letter, at most 31 "
            "characters (e.g. preprod, prod)",
        )
    return env


def parse_region(raw: Mapping[str, str]) -> str:
    region = _require(raw, "region", "set 'region' to the AWS region of the registry, e.g. eu-west-2")
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
    return tuple(dict.fromkeys(_tag("tags", t) for t in _lines(raw.get("tags", ""))))


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


def parse_publish(raw: Mapping[str, str], workspace: Path, runner_temp: Path | None = None) -> PublishInputs:
    env = parse_env(raw)
    region = parse_region(raw)

    dockerfile_value = _require(
        raw,
        "dockerfile",
        "set 'dockerfile' to the Dockerfile's path relative to the workspace, or 'config' to a "
        "file listing several images",
    )
    dockerfile = path_in(workspace, "dockerfile", dockerfile_value)
    if not dockerfile.is_file():
        raise InputError(
            f"Dockerfile '{dockerfile_value}' does not exist (looked for {dockerfile})",
            "check the 'dockerfile' input, and that actions/checkout ran before this step",
        )
    context_value = raw.get("context", "").strip()
    context = path_in(workspace, "context", context_value) if context_value else dockerfile.parent
    if not context.is_dir():
        raise InputError(
            f"build context '{context_value}' is not a directory (looked for {context})",
            "set 'context' to an existing folder relative to the workspace, or leave it empty "
            "to use the Dockerfile's folder",
        )

    repository = parse_repository(raw, env)
    build_args = _build_args(raw.get("build-args", ""))

    extra_tags = parse_extra_tags(raw)
    platform = parse_platform(raw) or DEFAULT_PLATFORM
    cache = parse_cache_mode(raw.get("cache", "").strip())
    cache_dir_value = raw.get("cache-dir", "").strip()
    # The runner's temp folder is the runner's own, not the checkout's: cache may live there.
    cache_dir = (
        path_in(workspace, "cache-dir", cache_dir_value, also=runner_temp) if cache_dir_value else None
    )
    if cache == "local" and cache_dir is None:
        raise InputError(
            "cache mode 'local' needs a folder and 'cache-dir' is empty",
            "set 'cache-dir' to a folder that actions/cache restores and saves (e.g. "
            "${{ runner.temp }}/.buildx-cache)",
        )
    timeout_value = raw.get("smoke-timeout", "").strip() or "30"
    try:
        smoke_timeout = float(timeout_value)
    except ValueError:
        smoke_timeout = -1.0
    if not 1 <= smoke_timeout <= 600:
        raise InputError(
            f"input 'smoke-timeout' is '{timeout_value}', not a number of seconds from 1 to 600",
            "give the seconds the image may take to answer its smoke probe, e.g. 30",
        )
    memory_value = raw.get("smoke-memory", "").strip() or "512"
    if not memory_value.isdigit() or not 128 <= int(memory_value) <= 10240:
        raise InputError(
            f"input 'smoke-memory' is '{memory_value}', not a number of MB from 128 to 10240",
            "give the function's memory_size in MB (Lambda's range is 128 to 10240), e.g. 512",
        )
    return PublishInputs(
        env=env,
        region=region,
        dockerfile=dockerfile,
        context=context,
        repository=repository,
        registry=parse_registry(raw),
        build_args=tuple(build_args),
        extra_tags=extra_tags,
        platform=platform,
        push=_bool("push", raw.get("push", "").strip(), default=True),
        workspace=workspace,
        cache=cache,
        cache_dir=cache_dir,
        force_build=_bool("force-build", raw.get("force-build", "").strip(), default=False),
        smoke=parse_smoke(raw.get("smoke", "")),
        smoke_timeout=smoke_timeout,
        smoke_memory=int(memory_value),
        invoke_mode=parse_invoke_mode(raw.get("invoke-mode", "")),
        secrets=_secrets(raw.get("secrets", "")),
    )


def _build_args(value: str) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE lines. Errors name the line number and key, never the value: a value may
    be a secret that someone put in the wrong input."""
    build_args: list[tuple[str, str]] = []
    for number, line in _numbered_lines(value):
        key, sep, _ = line.strip().partition("=")
        key = key.strip()
        if not sep or not BUILD_ARG_RE.fullmatch(key):
            shown = f" (key '{key}')" if BUILD_ARG_RE.fullmatch(key) else ""
            raise InputError(
                f"input 'build-args' line {number}{shown} is not KEY=VALUE",
                "write one KEY=VALUE per line; keys are letters, digits and '_'",
            )
        if cli_reads(key):
            raise InputError(
                f"input 'build-args' line {number} sets {key}, a name the docker CLI, BuildKit "
                "or the loader read as a setting (build args reach the build through the CLI's "
                "environment)",
                f"rename the ARG in the Dockerfile (e.g. APP_{key}); proxies for RUN steps come "
                "from the proxies section of the Docker config, which the build uses",
            )
        build_args.append((key, line.strip().partition("=")[2]))
    return tuple(build_args)


def _secrets(value: str) -> tuple[tuple[str, str], ...]:
    """`id=ENV_NAME` lines: the BuildKit secret id and the step's environment variable."""
    found: dict[str, str] = {}
    for number, line in _numbered_lines(value):
        secret_id, sep, variable = (part.strip() for part in line.strip().partition("="))
        if not sep or not SECRET_ID_RE.fullmatch(secret_id) or not BUILD_ARG_RE.fullmatch(variable):
            raise InputError(
                f"input 'secrets' line {number} is not id=ENV_NAME",
                "write one id=ENV_NAME per line (the RUN --mount=type=secret,id=... id and the "
                "name of an environment variable set on this step from a secret), never the value",
            )
        if cli_reads(variable):
            raise InputError(
                f"input 'secrets' line {number} reads the variable {variable}, which the docker "
                "CLI reads as a setting",
                "put the secret in a variable of another name in the step's env",
            )
        if secret_id in found:
            raise InputError(f"input 'secrets' names the id '{secret_id}' twice", "give each id once")
        found[secret_id] = variable
    return tuple(found.items())


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
    text = _require(
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


# ------------------------------------------------------------------ shared by the actions


def parse_invoke_mode(value: str | None, name: str = "invoke-mode") -> str | None:
    """'buffered' or 'response-stream' (Terraform's BUFFERED / RESPONSE_STREAM too), else None."""
    text = (value or "").strip()
    if not text:
        return None
    mode = text.lower().replace("_", "-")
    if mode not in INVOKE_MODES:
        raise InputError(
            f"input '{name}' is '{text}', not a Lambda invoke mode",
            "use response-stream (function URL invoke_mode RESPONSE_STREAM) or buffered, or leave "
            "it empty to skip the check",
        )
    return mode


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
    match = HTTP_RE.fullmatch(text)
    if match and (match["port"] or match["path"]):
        port = int(match["port"] or DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise InputError(f"input '{name}' has the port {port}, outside 1-65535", SMOKE_FORMS)
        return SmokeSpec(kind="http", port=port, path=match["path"] or "/")
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


# --------------------------------------------------------------------------- verify

VERIFY_INPUTS = ("image-uris", "plan", "region", "registry", "platform", "invoke-mode")


@dataclass(frozen=True)
class VerifyInputs:
    image_uris: tuple[str, ...]
    plan: Path | None
    region: str
    registry: str | None
    platform: str
    invoke_mode: str | None


def parse_verify(raw: Mapping[str, str], workspace: Path) -> VerifyInputs:
    image_uris = tuple(dict.fromkeys(line.strip() for line in raw.get("image-uris", "").splitlines()))
    image_uris = tuple(uri for uri in image_uris if uri)
    plan_value = raw.get("plan", "").strip()
    plan: Path | None = None
    if plan_value:
        plan = path_in(workspace, "plan", plan_value)
        if not plan.is_file():
            raise InputError(
                f"plan file '{plan_value}' does not exist (looked for {plan})",
                "write it before this step with terraform plan -out=tfplan and terraform show "
                "-json tfplan > plan.json, and give its path relative to the workspace (a step's "
                "working-directory does not apply to action inputs)",
            )
    if not image_uris and plan is None:
        raise InputError(
            "neither 'image-uris' nor 'plan' was given, so there is nothing to verify",
            "pass the plan (terraform show -json output) as 'plan', or the images as 'image-uris'",
        )
    platform = raw.get("platform", "").strip() or DEFAULT_PLATFORM
    if platform not in PLATFORMS:
        raise InputError(
            f"input 'platform' is '{platform}', which Lambda cannot run",
            f"use one of {', '.join(PLATFORMS)} (Lambda's x86_64 and arm64)",
        )
    return VerifyInputs(
        image_uris=image_uris,
        plan=plan,
        region=parse_region(raw),
        registry=parse_registry(raw),
        platform=platform,
        invoke_mode=parse_invoke_mode(raw.get("invoke-mode", "")),
    )


# ------------------------------------------------------------- release (several images)

# Builds at once when 'parallel' is empty: one per core, as BuildKit keeps a core busy.
MAX_PARALLEL = 16
RELEASE_REPOSITORY = "{env}-{name}"
_NAMED_INPUT = re.compile(r"^input '([a-z-]+)'")
_SUBJECTS = (("Dockerfile '", "dockerfile"), ("build context '", "context"))


@dataclass(frozen=True)
class ReleaseInputs:
    """What one publish step does: one image (`config` empty; its name is "") or the images
    of a config file, each with inputs parsed by the same rules as a single image's."""

    images: tuple[tuple[str, PublishInputs], ...]
    parallel: int
    config: Path | None = None

    @property
    def single(self) -> bool:
        return self.config is None


def parse_parallel(raw: Mapping[str, str], cores: int | None = None) -> int:
    value = raw.get("parallel", "").strip()
    if not value:
        return max(1, min(cores or os.cpu_count() or 1, MAX_PARALLEL))
    if not value.isdigit() or not 1 <= int(value) <= MAX_PARALLEL:
        raise InputError(
            f"input 'parallel' is '{value[:40]}', not a number of builds from 1 to {MAX_PARALLEL}",
            "give how many images may build at once, or leave it empty for one per CPU core",
        )
    return int(value)


def parse_release(raw: Mapping[str, str], workspace: Path, runner_temp: Path | None = None) -> ReleaseInputs:
    parallel = parse_parallel(raw)
    config_value = raw.get("config", "").strip()
    if not config_value:
        return ReleaseInputs(images=(("", parse_publish(raw, workspace, runner_temp)),), parallel=parallel)
    for key in ("dockerfile", "context"):
        if raw.get(key, "").strip():
            raise InputError(
                f"inputs 'config' and '{key}' are both given",
                f"give each image's {key} in the config file and leave the '{key}' input empty",
            )
    config = path_in(workspace, "config", config_value)
    if not config.is_file():
        raise InputError(
            f"config file '{config_value}' does not exist (looked for {config})",
            "check the 'config' input (relative to the workspace), and that actions/checkout ran",
        )
    repository = raw.get("repository", "").strip() or RELEASE_REPOSITORY
    if "{name}" not in repository:
        raise InputError(
            f"input 'repository' is '{repository}', which would give every image of "
            f"{config_value} the same repository",
            "put {name} in it (e.g. {env}-{name}), give each image its own repository in the "
            "file, or leave it empty for {env}-{name}",
        )
    images: list[tuple[str, PublishInputs]] = []
    owner: dict[str, str] = {}
    for entry in read_config(config, config_value):
        inputs = _image_inputs(
            entry, raw, repository, workspace=workspace, runner_temp=runner_temp, shown=config_value
        )
        if inputs.repository in owner:
            raise InputError(
                f"{config_value} {entry.where('repository')}: repository {inputs.repository} is "
                f"image '{owner[inputs.repository]}''s too",
                "give each image its own repository; two images under one tag would overwrite each other",
            )
        owner[inputs.repository] = entry.name
        images.append((entry.name, inputs))
    return ReleaseInputs(images=tuple(images), parallel=parallel, config=config)


def _image_inputs(
    entry: ImageEntry,
    raw: Mapping[str, str],
    repository: str,
    *,
    workspace: Path,
    runner_temp: Path | None,
    shown: str,
) -> PublishInputs:
    """One image's inputs: the action's, with the image's own keys over them."""
    own = dict(raw)
    own.pop("config", None)
    for key, value in entry.raw.items():
        own[key] = merged(raw.get(key, ""), value) if key in MERGED_KEYS else value
    own["repository"] = entry.raw.get("repository", repository).replace("{name}", entry.name)
    try:
        return parse_publish(own, workspace, runner_temp)
    except InputError as exc:
        named = _NAMED_INPUT.match(exc.cause)
        key = named.group(1) if named else next((k for s, k in _SUBJECTS if exc.cause.startswith(s)), "")
        if key not in entry.raw:
            raise  # an action input's own fault, named as such
        cause = exc.cause.replace(f"input '{key}'", f"'{key}'", 1)
        raise InputError(f"{shown} {entry.where(key)}: {cause}", exc.fix) from exc
