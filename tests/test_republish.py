"""Republishing on a fresh runner: unchanged sources skip the build, code-only changes reuse
the dependency layers from the registry's inline cache. Each 'fresh runner' is the same
engine emptied of everything but the base images."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import TYPE_CHECKING

import docker.errors
import pytest

from entrypoint.build.buildkit import detect_builder
from tests.support.run import publish as publish_in

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.run import Run
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

SKIPPED = "build skipped: nothing that goes into the image changed"


def dockerfile(base: str) -> str:
    # A "dependency" layer built from deps.txt before the code, like the SSE example's pip step.
    return (
        f"FROM {base}\n"
        "ARG FLAVOUR=plain\n"
        "COPY deps.txt /deps/deps.txt\n"
        "RUN mkdir -p /deps/site && for d in $(cat /deps/deps.txt); do "
        'echo "$d-$(date +%s%N)" > /deps/site/$d; done\n'
        "COPY app/ /app/\n"
        'LABEL flavour="${FLAVOUR}"\n'
        'CMD ["cat", "/app/main.txt"]\n'
    )


@pytest.fixture
def service(workspace: Workspace, busybox_base: str) -> Workspace:
    workspace.commit_files(
        {
            "Dockerfile": dockerfile(busybox_base),
            ".dockerignore": ".git\ndocs/\n*.md\n",
            "deps.txt": "alpha\nbeta\n",
            "app/main.txt": "v1\n",
            "docs/notes.txt": "first notes\n",
        },
        "service",
    )
    return workspace


def empty_engine(client: DockerClient, repo: str) -> None:
    """What a new runner has: no images of ours and no build cache (bases stay)."""
    for image in client.images.list(name=repo):
        for tag in image.tags:
            with contextlib.suppress(docker.errors.NotFound):
                client.images.remove(tag, force=True)
    client.api.prune_builds()
    client.images.prune(filters={"dangling": True})


def publish(ws: Workspace, registry: Registry, repo: str, tmp: Path, *args: str) -> Run:
    run = publish_in(ws.path, registry.host, tmp, *args, repository=repo)
    assert run.code == 0, run.log
    return run


def layers(registry: Registry, repo: str, digest: str) -> list[str]:
    return [layer["digest"] for layer in registry.manifest(repo, digest)[2]["layers"]]


def test_unchanged_sources_skip_the_build_on_an_empty_engine(
    service: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    first = publish(service, registry, repo, tmp_path)
    empty_engine(docker_client, repo)

    # A new commit that changes nothing the image is made of (an ignored file).
    service.commit_files({"docs/notes.txt": "second notes\n", "CHANGELOG.md": "x\n"}, "docs only")
    again = publish(service, registry, repo, tmp_path)
    assert SKIPPED in again.stdout, again.stdout
    assert "▶ build\n" not in again.stdout and "BuildKit build log" not in again.stdout
    assert again.outputs["digest"] == first.outputs["digest"]
    assert registry.manifest(repo, service.head)[0] == first.outputs["digest"]
    # No image was pulled or built: the engine is still empty of ours.
    assert docker_client.images.list(name=repo) == []


def test_a_skipped_build_stops_the_builder_probe_instead_of_waiting_for_it(
    service: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    """The builder probe (docker buildx runs, a fifth of a second on a cold Docker 28) starts
    with the source lookup; once the image is found already built nothing waits for it: its
    CLI runs are killed, none is left running. Here buildx hangs: waited for, the publish
    would fail after the probe's 30 s timeout."""
    repo = ecr_repository()
    publish(service, registry, repo, tmp_path)
    real = shutil.which("docker")
    assert real is not None
    started = tmp_path / "buildx-pids"
    wrapper = tmp_path / "hanging-buildx"
    wrapper.mkdir()
    (wrapper / "docker").write_text(
        f'#!/bin/sh\nif [ "$1" = buildx ]; then echo $$ >> {started}; exec sleep 300; fi\nexec {real} "$@"\n'
    )
    (wrapper / "docker").chmod(0o755)
    service.commit_files({"docs/notes.txt": "again\n"}, "docs only")
    again = publish_in(
        service.path, registry.host, tmp_path, repository=repo,
        env={"PATH": f"{wrapper}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert again.code == 0, again.log
    assert SKIPPED in again.stdout, again.stdout
    pids = [int(pid) for pid in started.read_text().split()]
    assert pids, "the probe never ran docker buildx"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(
    ("change", "args"),
    [
        ({"app/main.txt": "v2\n"}, []),
        ({"app/extra.txt": "new file\n"}, []),
        ({}, ["--build-args", "FLAVOUR=spicy"]),
        ({"Dockerfile": "# a comment changes the Dockerfile\n"}, []),
    ],
    ids=["included-file", "new-file", "build-arg", "dockerfile"],
)
def test_changes_that_reach_the_image_rebuild(
    service: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
    change: dict[str, str],
    args: list[str],
    busybox_base: str,
) -> None:
    repo = ecr_repository()
    first = publish(service, registry, repo, tmp_path)
    if "Dockerfile" in change:
        change = {"Dockerfile": change["Dockerfile"] + dockerfile(busybox_base)}
    service.commit_files(change, "change")
    again = publish(service, registry, repo, tmp_path, *args)
    assert SKIPPED not in again.stdout
    assert "no image with this fingerprint yet: building" in again.stdout
    # A comment in the Dockerfile rebuilds, but BuildKit may well produce the same image.
    if change.get("app/main.txt") or args:
        assert again.outputs["digest"] != first.outputs["digest"]


def test_force_build_bypasses_the_skip(
    service: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    publish(service, registry, repo, tmp_path)
    forced = publish(service, registry, repo, tmp_path, "--force-build", "true")
    assert SKIPPED not in forced.stdout
    assert "force-build is true" in forced.stdout
    assert "BuildKit build log" in forced.stdout


def test_code_change_on_an_empty_engine_reuses_dependency_layers(
    service: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    first = publish(service, registry, repo, tmp_path)
    empty_engine(docker_client, repo)

    service.commit_files({"app/main.txt": "v2\n"}, "code only")
    second = publish(service, registry, repo, tmp_path)
    assert f"cache from {registry.host}/{repo}:preprod" in second.stdout
    # The dependency step came from the registry's inline cache, not from a rerun.
    dependency_step = next(line for line in second.stdout.splitlines() if "RUN mkdir -p /deps/site" in line)
    step_id = dependency_step.split()[0]
    assert f"{step_id} CACHED" in second.stdout, second.stdout

    first_layers = layers(registry, repo, first.outputs["digest"])
    second_layers = layers(registry, repo, second.outputs["digest"])
    assert second_layers[:-1] == first_layers[:-1]  # base, deps.txt, dependency layer
    assert second_layers[-1] != first_layers[-1]  # the code layer
    config = json.loads(
        registry.blob(repo, registry.manifest(repo, second.outputs["digest"])[2]["config"]["digest"])
    )
    assert config["config"]["Cmd"] == ["cat", "/app/main.txt"]


def test_cache_none_builds_and_publishes(
    service: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    run = publish(service, registry, repo, tmp_path, "--cache", "none")
    assert "BUILDKIT_INLINE_CACHE" not in run.stdout and "--cache-from" not in run.stdout
    assert registry.manifest(repo, "latest")[0] == run.outputs["digest"]


def test_inline_cache_metadata_travels_with_the_image(
    service: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    run = publish(service, registry, repo, tmp_path)
    manifest = registry.manifest(repo, run.outputs["digest"])[2]
    config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
    assert "moby.buildkit.cache.v0" in config


@pytest.mark.parametrize(
    ("mode", "extra"),
    [("registry", []), ("gha", []), ("local", ["--cache-dir", "cache"])],
)
def test_cache_modes_this_builder_cannot_run_fail_before_building(
    service: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
    mode: str,
    extra: list[str],
) -> None:
    # Plain `docker build` (Debian 12) can only use the inline cache. With buildx (Debian 13)
    # these modes need a docker-container builder, which must pull moby/buildkit: offline
    # here, so making it fails too, still before anything is built.
    builder = detect_builder()
    repo = ecr_repository()
    run = publish_in(service.path, registry.host, tmp_path, "--cache", mode, *extra, repository=repo)
    assert run.code == 1, run.log
    [line] = run.error_lines()
    if builder.kind == "docker-build":
        assert f"cache mode '{mode}' needs" in line and "install buildx" in line
    else:
        assert "docker-container" in line or f"cache mode '{mode}' needs" in line
    assert "▶ build" not in run.stdout
    assert registry.tags(repo) == []


def test_three_successive_code_changes_each_on_an_empty_engine_keep_the_dependency_layer(
    service: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    """The inline cache chain holds: on this BuildKit an image built from another's inline
    cache records only its own new layers, so without the anchor every second code change
    reinstalled the dependencies."""
    repo = ecr_repository()
    first = publish(service, registry, repo, tmp_path)
    anchor = "buildcache-inline-preprod"
    assert registry.manifest(repo, anchor)[0] == first.outputs["digest"]
    assert "(its inline cache covers 3 layers)" in first.stdout  # deps.txt, the install, the code
    dependency_layer = layers(registry, repo, first.outputs["digest"])[-2]
    for change in range(2, 5):
        empty_engine(docker_client, repo)
        service.commit_files({"app/main.txt": f"v{change}\n"}, f"code only {change}")
        run = publish(service, registry, repo, tmp_path)
        step = next(line for line in run.stdout.splitlines() if "RUN mkdir -p /deps/site" in line)
        assert f"{step.split()[0]} CACHED" in run.stdout, f"change {change} reinstalled:\n{run.stdout}"
        assert layers(registry, repo, run.outputs["digest"])[-2] == dependency_layer
        # The anchor is on an image whose inline cache describes the dependency layer: the
        # first, or a later one whose cache (BuildKit decides) covers as many layers.
        anchored = registry.manifest(repo, anchor)[0]
        assert layers(registry, repo, anchored)[-2] == dependency_layer
