"""The publish action's inputs: one image (`parse_publish`), or the images of a `config`
file (`parse_release`), each parsed by the same rules."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from entrypoint.build.cli_env import cli_reads
from entrypoint.checks.lambda_rules import parse_invoke_mode
from entrypoint.checks.scan import ScanRule, parse_scan_rule
from entrypoint.checks.sizes import SizeBudget, parse_growth, parse_size
from entrypoint.errors import InputError
from entrypoint.inputs.common import (
    BUILD_ARG_RE,
    DEFAULT_PLATFORM,
    SECRET_ID_RE,
    SECRET_WORDS,
    numbered_lines,
    parse_bool,
    parse_cache_mode,
    parse_env,
    parse_extra_tags,
    parse_platform,
    parse_region,
    parse_registry,
    parse_repository,
    parse_smoke,
    path_in,
    require,
    text_lines,
)
from entrypoint.inputs.config import MERGED_KEYS, ImageEntry, merged, read_config

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from entrypoint.build.cache import CacheMode
    from entrypoint.checks.smoke import SmokeSpec

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
    "config-repositories",
    "config-tags",
    "parallel",
    "builder",
    "size-limit",
    "size-warn",
    "size-growth-limit",
    "size-growth-warn",
    "scan",
    "scan-fail-on",
    "scan-ignore",
    "scan-timeout",
)


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
    # An existing buildx builder, used as it is (remote BuildKit, cloud builders).
    builder: str | None = None
    # Checked once the commit tag holds the image, before any moving tag moves.
    budget: SizeBudget = field(default_factory=SizeBudget)
    scan: ScanRule | None = None

    @property
    def secret_like_build_args(self) -> tuple[str, ...]:
        """Build-arg keys that read like credentials: build args end up in the image's
        history and the source fingerprint, secrets belong in `secrets`."""
        return tuple(key for key, _ in self.build_args if SECRET_WORDS.search(key))


def parse_publish(raw: Mapping[str, str], workspace: Path, runner_temp: Path | None = None) -> PublishInputs:
    env = parse_env(raw)
    region = parse_region(raw)

    dockerfile_value = require(
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
        push=parse_bool("push", raw.get("push", "").strip(), default=True),
        workspace=workspace,
        cache=cache,
        cache_dir=cache_dir,
        force_build=parse_bool("force-build", raw.get("force-build", "").strip(), default=False),
        smoke=parse_smoke(raw.get("smoke", "")),
        smoke_timeout=smoke_timeout,
        smoke_memory=int(memory_value),
        invoke_mode=parse_invoke_mode(raw.get("invoke-mode", "")),
        secrets=_secrets(raw.get("secrets", "")),
        builder=parse_builder(raw),
        budget=SizeBudget(
            limit=parse_size(raw.get("size-limit", ""), "size-limit"),
            warn=parse_size(raw.get("size-warn", ""), "size-warn"),
            growth_limit=parse_growth(raw.get("size-growth-limit", ""), "size-growth-limit"),
            growth_warn=parse_growth(raw.get("size-growth-warn", ""), "size-growth-warn"),
        ),
        scan=parse_scan_rule(
            raw.get("scan", ""),
            raw.get("scan-fail-on", ""),
            raw.get("scan-ignore", ""),
            raw.get("scan-timeout", ""),
        ),
    )


BUILDER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def parse_builder(raw: Mapping[str, str]) -> str | None:
    name = raw.get("builder", "").strip()
    if name and not BUILDER_RE.fullmatch(name):
        raise InputError(
            f"input 'builder' is '{name[:80]}', not a buildx builder name",
            "give the name `docker buildx ls` lists (letters, digits, '_', '.', '-'), or leave it "
            "empty for the current builder",
        )
    return name or None


def _build_args(value: str) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE lines. Errors name the line number and key, never the value: a value may
    be a secret that someone put in the wrong input."""
    build_args: list[tuple[str, str]] = []
    for number, line in numbered_lines(value):
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
    for number, line in numbered_lines(value):
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
    trust = _ConfigTrust.from_inputs(raw)
    for entry in read_config(config, config_value):
        inputs = _image_inputs(
            entry, raw, repository, workspace=workspace, runner_temp=runner_temp, shown=config_value
        )
        trust.check(entry, config_value)  # after the parse, so a malformed value is named as such
        if inputs.repository in owner:
            raise InputError(
                f"{config_value} {entry.where('repository')}: repository {inputs.repository} is "
                f"image '{owner[inputs.repository]}''s too",
                "give each image its own repository; two images under one tag would overwrite each other",
            )
        owner[inputs.repository] = entry.name
        images.append((entry.name, inputs))
    return ReleaseInputs(images=tuple(images), parallel=parallel, config=config)


@dataclass(frozen=True)
class _ConfigTrust:
    """What a `config` file may ask for beyond the workflow's own inputs. The file is in the
    checkout, which a pull request can change; the workflow is what a reviewer of the deploy
    job approved. So a file may pick among the secrets the workflow passes (never another
    variable of the job, such as the deploy role's AWS keys), may name repositories of this
    run's environment only (with {env}) and may add no tag, unless the workflow allows
    more: 'config-repositories' and 'config-tags' (patterns, one a line)."""

    variables: frozenset[str]
    repositories: tuple[str, ...]
    tags: tuple[str, ...]

    @classmethod
    def from_inputs(cls, raw: Mapping[str, str]) -> _ConfigTrust:
        return cls(
            variables=frozenset(variable for _, variable in _secrets(raw.get("secrets", ""))),
            repositories=tuple(text_lines(raw.get("config-repositories", ""))),
            tags=tuple(text_lines(raw.get("config-tags", ""))),
        )

    def check(self, entry: ImageEntry, shown: str) -> None:
        for line in text_lines(entry.raw.get("secrets", "")):
            secret_id, sep, variable = (part.strip() for part in line.partition("="))
            if sep and variable not in self.variables:  # a line without '=' is refused when parsed
                raise InputError(
                    f"{shown} {entry.where('secrets')}: 'secrets' gives id '{secret_id}' the variable "
                    f"{variable}, which the workflow's 'secrets' input does not pass",
                    "a config file may only use the variables the workflow's 'secrets' input names: "
                    f"add a line id={variable} there (and {variable} to the step's env) if this build "
                    "may read it; the workflow, not the checkout, decides which secrets a build sees",
                )
        repository = entry.raw.get("repository")
        if (
            repository is not None
            and "{env}" not in repository
            and not any(fnmatchcase(repository.replace("{name}", entry.name), p) for p in self.repositories)
        ):
            raise InputError(
                f"{shown} {entry.where('repository')}: repository '{repository}' has no {{env}}, so "
                "the file could push into another environment's repository",
                "write it with {env} (e.g. {env}-orders), or allow it in the workflow's "
                "'config-repositories' input (one name or pattern a line)",
            )
        for tag in text_lines(entry.raw.get("tags", "")):
            if not any(fnmatchcase(tag, pattern) for pattern in self.tags):
                raise InputError(
                    f"{shown} {entry.where('tags')}: tag '{tag}' is not allowed by the workflow's "
                    "'config-tags' input",
                    "tags move with the environment tag, and one from the file could move another "
                    "environment's (prod): list the tags or patterns (e.g. v*) a file may add in "
                    "'config-tags', or give them in the workflow's 'tags' input",
                )


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
