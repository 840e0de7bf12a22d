"""The publish job end to end: a real BuildKit build, moto's ECR API, a real registry,
and every result checked through the registry's HTTP API."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest

from entrypoint.commands.plan import Plan, Target
from entrypoint.commands.publish import reduce_to_image_manifest
from entrypoint.errors import PushRejectedError
from entrypoint.inputs import parse_publish
from entrypoint.registry.client import RegistryClient
from entrypoint.registry.ecr import RegistryLogin, Repository
from entrypoint.registry.transport import CredentialScope, Transport
from tests.support.oci import push_index_with_attestation
from tests.support.run import REGION
from tests.support.run import publish as publish_in
from tests.support.stack import ECR_PASSWORD, ECR_USER, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST, Registry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.run import Run
    from tests.support.workspace import Workspace


def dockerfile(base: str, extra: str = "") -> str:
    return (
        f"FROM {base}\n"
        "ARG GREETING=hello\n"
        'LABEL greeting="${GREETING}"\n'
        "COPY app.txt /app/app.txt\n"
        f"{extra}"
        'CMD ["cat", "/app/app.txt"]\n'
    )


def publish(
    ws: Workspace,
    registry: Registry,
    tmp: Path,
    *args: str,
    env: str = "preprod",
    repo: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Run:
    return publish_in(ws.path, registry.host, tmp, *args, repository=repo, environment=env, env=extra_env)


@pytest.fixture
def app(workspace: Workspace, busybox_base: str) -> Workspace:
    workspace.commit_files({"Dockerfile": dockerfile(busybox_base), "app.txt": "v1\n"}, "app v1")
    return workspace


@pytest.fixture
def own_registry() -> Iterator[Registry]:
    """A registry of this test's own, for the default repository name that tests share."""
    with Registry() as registry:
        yield registry


def digest_of(registry: Registry, repo: str, tag: str) -> str:
    return registry.manifest(repo, tag)[0]


def test_publish_tags_commit_env_and_latest_with_one_single_manifest(
    app: Workspace, own_registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    registry = own_registry
    repo = ecr_repository("preprod-sse-streaming-lambda")
    run = publish(app, registry, tmp_path)
    assert run.code == 0, run.log

    digest = run.outputs["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert run.outputs["image-uri"] == f"{registry.host}/{repo}@{digest}"
    assert run.outputs["repository"] == repo
    assert run.outputs["registry"] == registry.host
    assert run.outputs["tags"].splitlines() == [
        f"{registry.host}/{repo}:{app.head}",
        f"{registry.host}/{repo}:preprod",
        f"{registry.host}/{repo}:latest",
    ]
    # Every tag resolves, through the registry's own API, to the output digest.
    for tag in (app.head, "preprod", "latest"):
        assert digest_of(registry, repo, tag) == digest
    tags = registry.tags(repo)
    [source_tag] = [t for t in tags if t.startswith("src-")]
    # And the inline-cache anchor, which a first publish sets to the image it built.
    assert sorted(tags) == sorted([app.head, "preprod", "latest", source_tag, "buildcache-inline-preprod"])
    assert digest_of(registry, repo, source_tag) == digest
    assert digest_of(registry, repo, "buildcache-inline-preprod") == digest

    # A single linux/amd64 image manifest: what Lambda accepts.
    _, media_type, manifest = registry.manifest(repo, digest)
    assert media_type in (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST)
    assert "manifests" not in manifest
    config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["config"]["Cmd"] == ["cat", "/app/app.txt"]

    assert f"| image | <code>{registry.host}/{repo}@{digest}</code> |" in run.summary
    assert digest in run.summary
    assert "::group::BuildKit build log" in run.stdout


def test_second_publish_moves_env_and_latest_and_keeps_first_commit_tag(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    first = publish(app, registry, tmp_path, repo=repo)
    assert first.code == 0, first.log
    first_sha, first_digest = app.head, first.outputs["digest"]

    second_sha = app.commit_files({"app.txt": "v2\n"}, "app v2")
    second = publish(app, registry, tmp_path, repo=repo)
    assert second.code == 0, second.log
    second_digest = second.outputs["digest"]

    assert second_digest != first_digest
    assert digest_of(registry, repo, "latest") == second_digest
    assert digest_of(registry, repo, "preprod") == second_digest
    assert digest_of(registry, repo, second_sha) == second_digest
    # The earlier image stays addressable by its commit tag, for rollback.
    assert digest_of(registry, repo, first_sha) == first_digest
    assert f"was {first_digest}" in second.stdout
    # Where preprod was is recorded for rollback, once: the first publish moved nothing.
    [history] = [t for t in registry.tags(repo) if t.startswith("history-preprod-")]
    assert digest_of(registry, repo, history) == first_digest
    assert f"{history} -> {first_digest} (where preprod was, for rollback)" in second.stdout


def test_rerun_of_the_same_commit_is_idempotent(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    first = publish(app, registry, tmp_path, repo=repo)
    again = publish(app, registry, tmp_path, repo=repo)
    assert (first.code, again.code) == (0, 0), again.log
    assert again.outputs["digest"] == first.outputs["digest"]
    assert "latest already points at" in again.stdout
    assert digest_of(registry, repo, "latest") == first.outputs["digest"]


def test_build_args_and_extra_tags(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    run = publish(
        app,
        registry,
        tmp_path,
        "--build-args",
        "GREETING=bonjour\n\nUNUSED=x",
        "--tags",
        "release-1\nstable",
        env="prod",
        repo=repo,
    )
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    for tag in (app.head, "prod", "latest", "release-1", "stable"):
        assert digest_of(registry, repo, tag) == digest
    _, _, manifest = registry.manifest(repo, digest)
    config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
    assert config["config"]["Labels"]["greeting"] == "bonjour"
    # Build-arg values reach the build through the environment, never the command line.
    assert "bonjour" not in next(line for line in run.stdout.splitlines() if line.startswith("$ "))


def test_custom_repository_template_and_github_sha(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository("team/preprod-api")
    sha = "ab" * 20
    run = publish(app, registry, tmp_path, "--repository", "team/{env}-api", extra_env={"GITHUB_SHA": sha})
    assert run.code == 0, run.log
    assert digest_of(registry, repo, sha) == run.outputs["digest"]


def test_push_false_builds_and_pushes_nothing(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    run = publish(app, registry, tmp_path, "--push", "false", repo=repo)
    assert run.code == 0, run.log
    assert run.outputs["digest"] == ""
    assert run.outputs["image-uri"] == ""
    assert registry.tags(repo) == []
    assert "nothing was pushed" in run.stdout


def test_immutable_repository_reruns_but_refuses_to_move_tags(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository(mutability="IMMUTABLE")
    first = publish(app, registry, tmp_path, repo=repo)
    assert first.code == 0, first.log
    rerun = publish(app, registry, tmp_path, repo=repo)
    assert rerun.code == 0, rerun.log
    assert rerun.outputs["digest"] == first.outputs["digest"]

    second_sha = app.commit_files({"app.txt": "v2\n"}, "app v2")
    refused = publish(app, registry, tmp_path, repo=repo)
    assert refused.code == 1
    [line] = refused.error_lines()
    assert "immutable tags" in line
    assert "preprod" in line
    assert "latest" in line
    assert "image_tag_mutability" in line
    # Refused before any push: no new commit tag, nothing moved.
    assert second_sha not in registry.tags(repo)
    assert digest_of(registry, repo, "latest") == first.outputs["digest"]


def test_an_index_the_engine_pushed_is_reduced_to_its_image_manifest(
    workspace: Workspace, registry: Registry, tmp_path: Path
) -> None:
    """Engines with the containerd image store push an index (here with a provenance
    attestation, as buildx adds by default); the commit tag must end up on the image itself."""
    commit = workspace.head
    repo = f"index/{commit[:8]}"
    pushed = push_index_with_attestation(registry, repo, tag=commit)
    workspace.commit_files({"Dockerfile": "FROM scratch\n"})
    inputs = parse_publish(
        {"env": "preprod", "region": REGION, "dockerfile": "Dockerfile", "repository": repo}, workspace.path
    )
    plan = Plan(inputs=inputs, commit=commit, registry=registry.host)
    client = RegistryClient(
        Transport(registry.host, ECR_USER, ECR_PASSWORD, scope=CredentialScope(registry.host))
    )
    target = Target(
        login=RegistryLogin(ECR_USER, ECR_PASSWORD, registry.host),
        registry=client,
        repository=Repository(repo, f"{registry.host}/{repo}", "123456789012", "MUTABLE"),
        current={},
    )

    image = reduce_to_image_manifest(plan, target, client.get_manifest(repo, pushed.index_digest))

    assert image.digest == pushed.image_digest
    digest, media_type, _ = registry.manifest(repo, commit)
    assert (digest, media_type) == (pushed.image_digest, MEDIA_OCI_MANIFEST)

    arm = parse_publish(
        {
            "env": "preprod",
            "region": REGION,
            "dockerfile": "Dockerfile",
            "repository": repo,
            "platform": "linux/arm64",
        },
        workspace.path,
    )
    with pytest.raises(PushRejectedError, match="index without a linux/arm64 image manifest"):
        reduce_to_image_manifest(
            Plan(inputs=arm, commit=commit, registry=registry.host),
            target,
            client.get_manifest(repo, pushed.index_digest),
        )
