"""The cache input: one numbered table pins the whole build argv for every mode and builder,
then one real `DOCKER_BUILDKIT=1 docker build` proves the plain-docker inline-cache argv works."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from entrypoint.build.buildkit import Builder, BuildRequest, build_command
from entrypoint.build.cache import (
    CACHE_MODES,
    CacheMode,
    buildx_version,
    cache_arguments,
    check_supported,
    required_builder,
)
from entrypoint.errors import EngineError, InputError
from entrypoint.inputs import parse_cache_mode
from tests.support.stack import Registry, docker_cli

if TYPE_CHECKING:
    from docker import DockerClient

BUILDX_VERSION = "github.com/docker/buildx 0.13.1 788433953af10f2a698f5c07611dcf2f31ca6e1c"
BUILDX_DOCKER = Builder("buildx", "/usr/bin/docker", BUILDX_VERSION, "docker")
BUILDX_CONTAINER = Builder("buildx", "/usr/bin/docker", BUILDX_VERSION, "docker-container")
DOCKER_BUILD = Builder("docker-build", "/usr/bin/docker", "20.10.24+dfsg1", "docker")
BUILDX_0_10 = Builder(
    "buildx", "/usr/bin/docker", "github.com/docker/buildx v0.10.4 c513d34", "docker-container"
)
BUILDX_0_20 = Builder(
    "buildx", "/usr/bin/docker", "github.com/docker/buildx v0.20.1 abc1234", "docker-container"
)
BUILDX_0_21 = Builder(
    "buildx", "/usr/bin/docker", "github.com/docker/buildx v0.21.0 def5678", "docker-container"
)
BUILDX_0_21_DOCKER = Builder(
    "buildx", "/usr/bin/docker", "github.com/docker/buildx v0.21.0 def5678", "docker"
)

REGISTRY = "123456789012.dkr.ecr.eu-west-2.amazonaws.com"
SOURCE = f"{REGISTRY}/prod-sse-streaming-lambda:prod"
CACHE_REF = f"{REGISTRY}/prod-sse-streaming-lambda:buildcache-prod"
LOCAL_DIR = Path("/tmp/.buildx-cache")
SCOPE = "prod-sse-streaming-lambda-prod"

REQUEST = BuildRequest(
    dockerfile=Path("/ws/app/Dockerfile"),
    context=Path("/ws/app"),
    platform="linux/amd64",
    tags=("prod-sse-streaming-lambda:abc123",),
    build_arg_keys=("APP_VERSION",),
    iidfile=Path("/tmp/iid"),
)
BUILDX_HEAD = [
    "/usr/bin/docker",
    "buildx",
    "build",
    "--provenance=false",
    "--sbom=false",
    "--load",
]
DOCKER_HEAD = ["/usr/bin/docker", "build"]
COMMON = [
    "--progress=plain",
    "--file",
    "/ws/app/Dockerfile",
    "--platform",
    "linux/amd64",
    "--iidfile",
    "/tmp/iid",
    "--tag",
    "prod-sse-streaming-lambda:abc123",
    "--build-arg",
    "APP_VERSION",
]
TAIL = ["/ws/app"]

REGISTRY_ARGS = [
    "--cache-to",
    f"type=registry,ref={CACHE_REF},mode=max,image-manifest=true,oci-mediatypes=true",
    "--cache-from",
    f"type=registry,ref={CACHE_REF}",
]
GHA_ARGS = [
    "--cache-to",
    f"type=gha,mode=max,scope={SCOPE}",
    "--cache-from",
    f"type=gha,scope={SCOPE}",
]
LOCAL_ARGS = [
    "--cache-to",
    "type=local,dest=/tmp/.buildx-cache-new,mode=max",
    "--cache-from",
    "type=local,src=/tmp/.buildx-cache",
]

NEEDS_CONTAINER = (
    "cache mode '{mode}' needs {required}; the current builder uses the 'docker' driver, which "
    "exports only the inline cache. Fix: create a docker-container builder before the build "
    "(`docker buildx create --use --driver docker-container`, or docker/setup-buildx-action), "
    "or set 'cache' to registry-inline."
)
NO_BUILDX = (
    "cache mode '{mode}' needs {required}, and this runner has only `docker build` "
    "(20.10.24+dfsg1) without buildx, which can only read and write the inline cache. Fix: "
    "install buildx (docker/setup-buildx-action, or the docker-buildx package), or set 'cache' "
    "to registry-inline or none."
)
OLD_BUILDX = (
    "cache mode '{mode}' needs {required}, and this runner's buildx is {found} ({version}). "
    "Fix: install buildx {minimum} or later (docker/setup-buildx-action installs the latest), "
    "or choose registry-inline for 'cache'."
)


def _error(template: str, mode: CacheMode, **extra: str) -> str:
    return template.format(mode=mode, required=required_builder(mode), **extra)


def _old(mode: CacheMode, builder: Builder, found: str, minimum: str) -> str:
    return _error(OLD_BUILDX, mode, found=found, version=builder.version, minimum=minimum)


INLINE_TO = ["--cache-to", "type=inline"]
INLINE_ARG = ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
FROM_SOURCE = ["--cache-from", SOURCE]

# (row, mode, builder, cache_source, expected argv or the expected error line)
CASES: list[tuple[int, CacheMode, Builder, str | None, list[str] | str]] = [
    # registry-inline: every builder
    (1, "registry-inline", BUILDX_DOCKER, SOURCE, [*BUILDX_HEAD, *COMMON, *INLINE_TO, *FROM_SOURCE, *TAIL]),
    (
        2,
        "registry-inline",
        BUILDX_CONTAINER,
        SOURCE,
        [*BUILDX_HEAD, *COMMON, *INLINE_TO, *FROM_SOURCE, *TAIL],
    ),
    (3, "registry-inline", DOCKER_BUILD, SOURCE, [*DOCKER_HEAD, *COMMON, *INLINE_ARG, *FROM_SOURCE, *TAIL]),
    # first publish: nothing to read the cache from yet
    (4, "registry-inline", BUILDX_DOCKER, None, [*BUILDX_HEAD, *COMMON, *INLINE_TO, *TAIL]),
    (5, "registry-inline", DOCKER_BUILD, None, [*DOCKER_HEAD, *COMMON, *INLINE_ARG, *TAIL]),
    # registry
    (6, "registry", BUILDX_DOCKER, SOURCE, _error(NEEDS_CONTAINER, "registry")),
    (7, "registry", BUILDX_CONTAINER, SOURCE, [*BUILDX_HEAD, *COMMON, *REGISTRY_ARGS, *TAIL]),
    (8, "registry", DOCKER_BUILD, SOURCE, _error(NO_BUILDX, "registry")),
    (9, "registry", BUILDX_0_10, SOURCE, _old("registry", BUILDX_0_10, "0.10", "0.12")),
    # gha
    (10, "gha", BUILDX_DOCKER, SOURCE, _old("gha", BUILDX_DOCKER, "0.13", "0.21")),
    (11, "gha", BUILDX_CONTAINER, SOURCE, _old("gha", BUILDX_CONTAINER, "0.13", "0.21")),
    (12, "gha", DOCKER_BUILD, SOURCE, _error(NO_BUILDX, "gha")),
    (13, "gha", BUILDX_0_20, SOURCE, _old("gha", BUILDX_0_20, "0.20", "0.21")),
    (14, "gha", BUILDX_0_21, SOURCE, [*BUILDX_HEAD, *COMMON, *GHA_ARGS, *TAIL]),
    (15, "gha", BUILDX_0_21_DOCKER, SOURCE, _error(NEEDS_CONTAINER, "gha")),
    # local
    (16, "local", BUILDX_DOCKER, SOURCE, _error(NEEDS_CONTAINER, "local")),
    (17, "local", BUILDX_CONTAINER, SOURCE, [*BUILDX_HEAD, *COMMON, *LOCAL_ARGS, *TAIL]),
    (18, "local", DOCKER_BUILD, SOURCE, _error(NO_BUILDX, "local")),
    # none: no external cache with any builder
    (19, "none", BUILDX_DOCKER, SOURCE, [*BUILDX_HEAD, *COMMON, *TAIL]),
    (20, "none", BUILDX_CONTAINER, SOURCE, [*BUILDX_HEAD, *COMMON, *TAIL]),
    (21, "none", DOCKER_BUILD, SOURCE, [*DOCKER_HEAD, *COMMON, *TAIL]),
]


@pytest.mark.parametrize(
    ("mode", "builder", "cache_source", "expected"),
    [pytest.param(*row[1:], id=f"{row[0]:02d}-{row[1]}-{row[2].kind}-{row[2].driver}") for row in CASES],
)
def test_build_argv(
    mode: CacheMode, builder: Builder, cache_source: str | None, expected: list[str] | str
) -> None:
    def argv() -> list[str]:
        args = cache_arguments(
            mode, builder, cache_source=cache_source, cache_ref=CACHE_REF, local_dir=LOCAL_DIR, scope=SCOPE
        )
        return build_command(builder, replace(REQUEST, cache_args=args))

    if isinstance(expected, str):
        with pytest.raises(EngineError) as caught:
            argv()
        assert caught.value.line() == expected
    else:
        assert argv() == expected


def test_every_mode_and_builder_kind_has_a_row() -> None:
    covered = {(mode, builder.kind, builder.driver) for _, mode, builder, _, _ in CASES}
    for mode in CACHE_MODES:
        for builder in (BUILDX_DOCKER, BUILDX_CONTAINER, DOCKER_BUILD):
            assert (mode, builder.kind, builder.driver) in covered


@pytest.mark.parametrize(
    ("mode", "builder", "needs"),
    [
        ("registry-inline", BUILDX_DOCKER, False),
        ("registry-inline", DOCKER_BUILD, False),
        ("none", DOCKER_BUILD, False),
        ("registry", BUILDX_DOCKER, True),
        ("registry", BUILDX_CONTAINER, False),
        ("local", BUILDX_DOCKER, True),
        ("local", BUILDX_CONTAINER, False),
        ("gha", BUILDX_0_21_DOCKER, True),
        ("gha", BUILDX_0_21, False),
        # The docker driver on an engine with the containerd store exports every cache type,
        # a builder the workflow named included.
        ("registry", dataclasses.replace(BUILDX_DOCKER, containerd_store=True), False),
        ("local", dataclasses.replace(BUILDX_DOCKER, containerd_store=True), False),
        ("gha", dataclasses.replace(BUILDX_0_21_DOCKER, containerd_store=True), False),
        ("registry", dataclasses.replace(BUILDX_DOCKER, containerd_store=True, name="c", chosen=True), False),
    ],
)
def test_check_supported_says_when_a_container_builder_is_needed(
    mode: CacheMode, builder: Builder, needs: bool
) -> None:
    support = check_supported(mode, builder)
    assert support.mode == mode
    assert support.needs_container_builder is needs
    assert ("docker-container" in support.note) is needs


def test_unreadable_buildx_version_is_let_through_with_a_note() -> None:
    builder = Builder("buildx", "/usr/bin/docker", "buildx (dev build)", "docker-container")
    support = check_supported("registry", builder)
    assert not support.needs_container_builder
    assert "cannot read the buildx version from 'buildx (dev build)'" in support.note
    assert cache_arguments(
        "registry", builder, cache_source=None, cache_ref=CACHE_REF, local_dir=None, scope=""
    ) == tuple(REGISTRY_ARGS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("github.com/docker/buildx 0.13.1 788433953af10f2a698f5c07611dcf2f31ca6e1c", (0, 13)),
        ("github.com/docker/buildx v0.10.4 c513d34", (0, 10)),
        ("github.com/docker/buildx 0.13.1+ds1-3 0.13.1+ds1-3", (0, 13)),
        ("github.com/docker/buildx v0.21.0-desktop.1 abc", (0, 21)),
        ("buildx (dev build)", None),
    ],
)
def test_buildx_version(text: str, expected: tuple[int, int] | None) -> None:
    assert buildx_version(Builder("buildx", "docker", text, "docker")) == expected


def test_docker_build_has_no_buildx_version() -> None:
    assert buildx_version(DOCKER_BUILD) is None


@pytest.mark.parametrize(
    ("value", "mode"), [("", "registry-inline"), (" gha ", "gha"), *[(m, m) for m in CACHE_MODES]]
)
def test_parse_cache_mode(value: str, mode: CacheMode) -> None:
    assert parse_cache_mode(value) == mode


@pytest.mark.parametrize("value", ["inline", "Registry", "s3", "max"])
def test_parse_cache_mode_lists_the_valid_modes(value: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_cache_mode(value)
    assert caught.value.line() == (
        f"input 'cache' is '{value}', which is not a cache mode. Fix: use one of "
        "registry-inline, registry, gha, local, none (default registry-inline)."
    )


def test_local_dir_with_a_comma_is_quoted_for_buildx_csv() -> None:
    args = cache_arguments(
        "local", BUILDX_CONTAINER, cache_source=None, cache_ref=None, local_dir=Path("/tmp/a,b"), scope=""
    )
    assert args == (
        "--cache-to",
        'type=local,"dest=/tmp/a,b-new",mode=max',
        "--cache-from",
        'type=local,"src=/tmp/a,b"',
    )


@pytest.mark.parametrize(
    ("mode", "missing"), [("registry", "cache_ref"), ("local", "local_dir"), ("gha", "scope")]
)
def test_missing_caller_values_are_a_programming_error(mode: CacheMode, missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        cache_arguments(mode, BUILDX_0_21, cache_source=None, cache_ref=None, local_dir=None, scope="")


# --------------------------------------------------------------------------- real engine


def _cli_build(argv: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_CONFIG": str(config)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)


def test_plain_docker_build_inline_cache_argv_works(
    docker_client: DockerClient, busybox_base: str, tmp_path: Path
) -> None:
    """The docker-build rows for registry-inline, run for real: the first build embeds the
    cache in the image config, `docker push` carries it, and the next build reads it."""
    version = docker_client.version()["Version"]
    builder = Builder("docker-build", docker_cli(), version)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {busybox_base}\nRUN echo {secrets.token_hex(8)} > /marker\n")
    config = tmp_path / "docker-config"
    config.mkdir()
    with Registry(user=None, password=None) as registry:
        remote = f"{registry.host}/cache-test/app"
        made: list[str] = []
        try:
            for round_, source in enumerate((None, f"{remote}:prod")):
                request = BuildRequest(
                    dockerfile=context / "Dockerfile",
                    context=context,
                    platform="linux/amd64",
                    tags=(f"{remote}:prod",),
                    build_arg_keys=(),
                    iidfile=tmp_path / f"iid{round_}",
                )
                args = cache_arguments(
                    "registry-inline", builder, cache_source=source, cache_ref=None, local_dir=None, scope=""
                )
                done = _cli_build(build_command(builder, replace(request, cache_args=args)), config)
                assert done.returncode == 0, done.stdout + done.stderr
                made.append(f"{remote}:prod")
                if source is None:
                    for event in docker_client.api.push(remote, "prod", stream=True, decode=True):
                        assert "error" not in event, event
                    _, _, manifest = registry.manifest("cache-test/app", "prod")
                    image_config = json.loads(registry.blob("cache-test/app", manifest["config"]["digest"]))
                    assert "moby.buildkit.cache.v0" in image_config  # the inline cache travelled
                else:
                    log = done.stdout + done.stderr
                    assert f"importing cache manifest from {source}" in log, log
        finally:
            for ref in dict.fromkeys(made):
                docker_client.api.remove_image(ref, force=True)


# ------------------------------------------------------------- a builder named by the workflow

NAMED_REMOTE = Builder("buildx", "/usr/bin/docker", BUILDX_VERSION, "remote", "far-buildkit", chosen=True)
NAMED_DOCKER = replace(BUILDX_0_21_DOCKER, name="ctx", chosen=True)


def test_a_named_builder_is_used_as_it_is_and_loads_its_result() -> None:
    argv = build_command(NAMED_REMOTE, REQUEST)
    assert argv[:6] == [
        "/usr/bin/docker",
        "buildx",
        "build",
        "--builder",
        "far-buildkit",
        "--provenance=false",
    ]
    # Loaded into the engine, where the checks, the smoke boot and the push find it.
    assert "--load" in argv
    support = check_supported("registry", NAMED_REMOTE)
    assert not support.needs_container_builder


@pytest.mark.parametrize("mode", ["registry", "local", "gha"])
def test_a_named_docker_driver_builder_is_not_replaced_for_a_cache_export(mode: CacheMode) -> None:
    with pytest.raises(EngineError) as caught:
        check_supported(mode, NAMED_DOCKER)
    assert "the builder 'ctx' (input 'builder') has the docker driver" in caught.value.line()
    assert "does not change or replace a builder it was given" in caught.value.line()
    assert check_supported("registry-inline", NAMED_DOCKER).needs_container_builder is False


def test_a_named_docker_driver_builder_builds_from_its_own_context() -> None:
    """buildx refuses `--builder CTX` for a context's builder unless CTX is the current
    context; `--context CTX` makes it so for this one command."""
    argv = build_command(NAMED_DOCKER, REQUEST)
    assert argv[:6] == ["/usr/bin/docker", "--context", "ctx", "buildx", "build", "--provenance=false"]
    assert "--builder" not in argv
    assert NAMED_DOCKER.context == "ctx"
    assert NAMED_REMOTE.context is None
    assert replace(NAMED_DOCKER, name="default").context is None  # the default context is DOCKER_HOST's
    assert BUILDX_0_21_DOCKER.context is None  # the current builder, not named: no --context
