"""Promote and rollback against real registries: the image reaches the next environment byte
for byte (same digest), nothing is written when the source is wrong, and rollback moves the
environment back to an image its history names.

Two CNCF registries on loopback stand in for two AWS accounts' ECR registries; both take the
one ECR login moto hands out, as one token serves every registry the role may use.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest
import yaml

from entrypoint.inputs import PROMOTE_INPUTS, ROLLBACK_INPUTS
from tests.lambda_images import Images
from tests.support.act import consumer
from tests.support.oci import push_index_with_attestation
from tests.support.run import REGION, REPO_ROOT, Run, run_entrypoint
from tests.support.stack import ECR_PASSWORD, ECR_USER, Registry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.workspace import Workspace

COMMIT = "c0ffee" + "0" * 34


@pytest.fixture(scope="module")
def images(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    made = Images(docker_client, tmp_path_factory.mktemp("promote"))
    yield made
    made.cleanup()


def _app(images: Images, busybox_base: str, adapter_image: str, version: str) -> str:
    return images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "COPY version.txt /var/task/version.txt\n"
        'CMD ["httpd", "-f", "-p", "8080"]\n',
        name="promote/app",
        files={"version.txt": version},
    )


@pytest.fixture(scope="module")
def app_v1(images: Images, busybox_base: str, adapter_image: str) -> str:
    return _app(images, busybox_base, adapter_image, "v1\n")


@pytest.fixture(scope="module")
def app_v2(images: Images, busybox_base: str, adapter_image: str) -> str:
    return _app(images, busybox_base, adapter_image, "v2\n")


@pytest.fixture(scope="module")
def other_account() -> Iterator[Registry]:
    """A second registry: the prod account's."""
    with Registry(user=ECR_USER, password=ECR_PASSWORD) as reg:
        yield reg


def promote(tmp_path: Path, *args: str, commit: str = COMMIT) -> Run:
    return run_entrypoint(
        ["promote", "--region", REGION, *args], cwd=tmp_path, tmp=tmp_path, env={"GITHUB_SHA": commit}
    )


def rollback(tmp_path: Path, *args: str) -> Run:
    return run_entrypoint(["rollback", "--region", REGION, *args], cwd=tmp_path, tmp=tmp_path)


def _blobs(registry: Registry, repository: str, digest: str) -> list[str]:
    _, _, body = registry.manifest(repository, digest)
    return [body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]


def _source(images: Images, image: str, registry: Registry) -> tuple[str, str]:
    repository = f"t{secrets.token_hex(3)}-preprod/app"
    return repository, images.push(image, registry, repository, "preprod")


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_the_actions_declare_every_input_their_command_reads(action: str) -> None:
    names = PROMOTE_INPUTS if action == "promote" else ROLLBACK_INPUTS
    spec = yaml.safe_load((REPO_ROOT / action / "action.yml").read_text())
    assert list(spec["inputs"]) == list(names)
    steps = spec["runs"]["steps"]
    assert steps[0]["env"]["ACTION_PATH"] == "${{ github.action_path }}/.."
    for name in names:
        assert steps[-1]["env"][f"INPUT_{name.upper()}"] == f"${{{{ inputs.{name} }}}}"
    assert steps[-1]["run"] == f'"$ACTION_PYTHON" -I -m entrypoint {action}'
    assert set(spec["outputs"]) == {"image-uri", "digest", "tags", "registry", "repository"}


def test_cross_registry_promotion_is_byte_exact_and_a_rerun_writes_nothing(
    images: Images,
    app_v1: str,
    registry: Registry,
    other_account: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    source_repo, digest = _source(images, app_v1, registry)
    target = ecr_repository()
    run = promote(
        tmp_path,
        "--source", f"{registry.host}/{source_repo}@{digest}",
        "--env", "prod",
        "--repository", target,
        "--registry", other_account.host,
    )  # fmt: skip
    assert run.code == 0, run.log
    assert run.outputs["digest"] == digest
    assert run.outputs["image-uri"] == f"{other_account.host}/{target}@{digest}"
    assert run.outputs["tags"].splitlines() == [
        f"{other_account.host}/{target}:{t}" for t in (COMMIT, "prod", "latest")
    ]
    # The manifest's exact bytes and media type, and every blob, byte for byte.
    assert other_account.manifest_raw(target, digest) == registry.manifest_raw(source_repo, digest)
    blobs = _blobs(registry, source_repo, digest)
    assert len(blobs) >= 3
    for blob in blobs:
        assert other_account.blob(target, blob) == registry.blob(source_repo, blob)
    for tag in (COMMIT, "prod", "latest"):
        assert other_account.manifest(target, tag)[0] == digest
    assert f"0 blob(s) already there, 0 mounted, {len(blobs)} copied" in run.stdout
    assert "Lambda image promoted" in run.summary

    tags_before = sorted(other_account.tags(target))
    again = promote(
        tmp_path,
        "--source", f"{registry.host}/{source_repo}@{digest}",
        "--env", "prod",
        "--repository", target,
        "--registry", other_account.host,
    )  # fmt: skip
    assert again.code == 0, again.log
    assert f"{len(blobs)} blob(s) already there, 0 mounted, 0 copied" in again.stdout
    for tag in (COMMIT, "prod", "latest"):
        assert f"  {tag} already points at {digest}" in again.stdout
    assert sorted(other_account.tags(target)) == tags_before  # no history entry for a no-op


def test_same_registry_promotion_mounts_the_layers(
    images: Images, app_v1: str, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    source_repo, digest = _source(images, app_v1, registry)
    target = ecr_repository()
    run = promote(
        tmp_path,
        "--source", f"{registry.host}/{source_repo}:preprod",
        "--env", "prod",
        "--repository", target,
        "--registry", registry.host,
    )  # fmt: skip
    assert run.code == 0, run.log
    # A tag source is resolved once, and the digest is what is promoted.
    assert f"{registry.host}/{source_repo}:preprod resolves to {digest}; promoting that digest" in run.stdout
    assert run.outputs["digest"] == digest
    blobs = _blobs(registry, source_repo, digest)
    assert f"0 blob(s) already there, {len(blobs)} mounted, 0 copied" in run.stdout
    assert registry.manifest_raw(target, "prod") == registry.manifest_raw(source_repo, digest)


def test_a_missing_source_digest_is_refused_with_nothing_written(
    registry: Registry, other_account: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    target = ecr_repository()
    missing = "sha256:" + "e" * 64
    run = promote(
        tmp_path,
        "--source", f"{registry.host}/nothing-here/app@{missing}",
        "--env", "prod",
        "--repository", target,
        "--registry", other_account.host,
    )  # fmt: skip
    assert run.code == 1
    [line] = run.error_lines()
    assert f"{registry.host}/nothing-here/app@{missing} is not in its registry" in line
    assert "nothing was written" in line
    assert target not in other_account.catalog()
    assert run.outputs == {}


def test_an_attestation_index_is_refused_before_anything_is_written(
    registry: Registry, other_account: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    source_repo = f"t{secrets.token_hex(3)}-preprod/app"
    pushed = push_index_with_attestation(registry, source_repo)
    target = ecr_repository()
    run = promote(
        tmp_path,
        "--source", f"{registry.host}/{source_repo}@{pushed.index_digest}",
        "--env", "prod",
        "--repository", target,
        "--registry", other_account.host,
    )  # fmt: skip
    assert run.code == 1
    [line] = run.error_lines()
    assert "it is an image index (application/vnd.oci.image.index.v1+json) of 2 manifest(s)" in line
    assert "nothing was written" in line
    # The fix names the image manifest inside, which is what can be promoted.
    assert f"{registry.host}/{source_repo}@{pushed.image_digest} (linux/amd64)" in line
    assert pushed.attestation_digest not in line
    assert target not in other_account.catalog()


def test_an_immutable_target_whose_env_tag_names_another_image_is_refused_up_front(
    images: Images,
    app_v1: str,
    app_v2: str,
    registry: Registry,
    other_account: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    target = ecr_repository(mutability="IMMUTABLE")
    old = images.push(app_v1, other_account, target, "prod")
    source_repo, digest = _source(images, app_v2, registry)
    run = promote(
        tmp_path,
        "--source", f"{registry.host}/{source_repo}@{digest}",
        "--env", "prod",
        "--repository", target,
        "--registry", other_account.host,
    )  # fmt: skip
    assert run.code == 1
    [line] = run.error_lines()
    assert f"has immutable tags (IMMUTABLE) and prod (at {old[:19]}…)" in line
    assert "nothing was written" in line
    assert other_account.manifest(target, "prod")[0] == old
    assert not other_account.has_manifest(target, digest)


def test_rollback_to_previous_and_to_a_named_digest(
    images: Images,
    app_v1: str,
    app_v2: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    target = ecr_repository()
    first_repo, first = _source(images, app_v1, registry)
    second_repo, second = _source(images, app_v2, registry)
    common = ("--env", "prod", "--repository", target, "--registry", registry.host)
    assert promote(tmp_path, "--source", f"{registry.host}/{first_repo}@{first}", *common).code == 0
    moved = promote(tmp_path, "--source", f"{registry.host}/{second_repo}@{second}", *common, commit="d" * 40)
    assert moved.code == 0, moved.log
    history = [t for t in registry.tags(target) if t.startswith("history-prod-")]
    assert len(history) == 1
    assert registry.manifest(target, history[0])[0] == first  # where prod was before it moved

    back = rollback(tmp_path, *common)
    assert back.code == 0, back.log
    assert back.outputs["digest"] == first
    assert back.outputs["image-uri"] == f"{registry.host}/{target}@{first}"
    for tag in ("prod", "latest"):
        assert registry.manifest(target, tag)[0] == first
    assert f"{history[0]}: prod pointed at {second}" not in back.stdout
    assert f"{history[0]}: prod pointed at {first} before its last move" in back.stdout
    assert "passes Lambda's rules" in back.stdout
    assert "Lambda image rolled back" in back.summary

    forward = rollback(tmp_path, *common, "--to", second)
    assert forward.code == 0, forward.log
    assert registry.manifest(target, "prod")[0] == second
    assert registry.manifest(target, "latest")[0] == second
    by_commit = rollback(tmp_path, *common, "--to", COMMIT)
    assert by_commit.code == 0, by_commit.log
    assert registry.manifest(target, "prod")[0] == first


def test_rollback_without_history_or_to_a_gone_image_moves_nothing(
    images: Images, app_v1: str, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    target = ecr_repository()
    common = ("--env", "prod", "--repository", target, "--registry", registry.host)
    empty = rollback(tmp_path, *common)
    assert empty.code == 1
    [line] = empty.error_lines()
    assert f"{registry.host}/{target}:prod does not exist, so there is nothing to roll back" in line

    source_repo, digest = _source(images, app_v1, registry)
    assert promote(tmp_path, "--source", f"{registry.host}/{source_repo}@{digest}", *common).code == 0
    no_history = rollback(tmp_path, *common)
    assert no_history.code == 1
    [line] = no_history.error_lines()
    assert "has no earlier image recorded" in line
    assert "nothing was moved" in line
    gone = "sha256:" + "f" * 64
    missing = rollback(tmp_path, *common, "--to", gone)
    assert missing.code == 1
    [line] = missing.error_lines()
    assert f"{registry.host}/{target}@{gone} is not in the repository" in line
    for tag in ("prod", "latest"):
        assert registry.manifest(target, tag)[0] == digest
    assert missing.outputs == {}


def test_a_malformed_source_is_an_input_error(tmp_path: Path, ecr_repository: MakeRepository) -> None:
    run = promote(tmp_path, "--source", "not a reference", "--env", "prod", "--repository", ecr_repository())
    assert run.code == 2
    [line] = run.error_lines()
    assert "input 'source' is 'not a reference', not an image reference" in line


def test_each_environment_reads_its_own_history(
    images: Images,
    app_v1: str,
    app_v2: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    """`prod` and `prod-eu` share a prefix; each environment's rollback reads its own history."""
    target = ecr_repository()
    one_repo, one = _source(images, app_v1, registry)
    two_repo, two = _source(images, app_v2, registry)
    for env, order in (("prod-eu", (one, two)), ("prod", (two,))):
        for n, digest in enumerate(order):
            repo = one_repo if digest == one else two_repo
            done = promote(
                tmp_path, "--source", f"{registry.host}/{repo}@{digest}", "--env", env,
                "--repository", target, "--registry", registry.host,
                commit=f"{n}{'a' if env == 'prod' else 'b'}" * 20,
            )  # fmt: skip
            assert done.code == 0, done.log
    refused = rollback(tmp_path, "--env", "prod", "--repository", target, "--registry", registry.host)
    assert refused.code == 1  # prod-eu's history is not prod's
    eu = rollback(tmp_path, "--env", "prod-eu", "--repository", target, "--registry", registry.host)
    assert eu.code == 0, eu.log
    assert eu.outputs["digest"] == one
    assert registry.manifest(target, "prod")[0] == two


def test_promote_then_rollback_in_a_consumer_workflow(
    images: Images,
    app_v1: str,
    app_v2: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    workspace: Workspace,
    action_dir: Path,
    tmp_path: Path,
) -> None:
    """Under act: promote twice in one job (the repository@digest form a job output carries),
    then a second job rolls the environment back to where the first promotion put it."""
    target = ecr_repository()
    one_repo, one = _source(images, app_v1, registry)
    two_repo, two = _source(images, app_v2, registry)
    run = consumer(
        workspace,
        tmp_path,
        f"""\
        name: release
        on: push
        jobs:
          prod:
            runs-on: ubuntu-latest
            outputs:
              digest: ${{{{ steps.second.outputs.digest }}}}
            steps:
              - uses: owner/lambda-image-publish/promote@v1
                with:
                  source: {one_repo}@{one}
                  env: prod
                  region: {REGION}
                  repository: {target}
                  registry: {registry.host}
              - id: second
                uses: owner/lambda-image-publish/promote@v1
                with:
                  source: {registry.host}/{two_repo}@{two}
                  env: prod
                  region: {REGION}
                  repository: {target}
                  registry: {registry.host}
          back:
            needs: prod
            runs-on: ubuntu-latest
            steps:
              - id: rollback
                uses: owner/lambda-image-publish/rollback@v1
                with:
                  env: prod
                  region: {REGION}
                  repository: {target}
                  registry: {registry.host}
              - run: |
                  echo "OUT promoted=${{{{ needs.prod.outputs.digest }}}}"
                  echo "OUT now=${{{{ steps.rollback.outputs.digest }}}}"
                  echo "OUT uri=${{{{ steps.rollback.outputs.image-uri }}}}"
        """,
        action_dir,
        aws_env,
    )
    assert run.code == 0, run.log
    assert run.values("back") == {"promoted": two, "now": one, "uri": f"{registry.host}/{target}@{one}"}
    assert registry.manifest(target, "prod")[0] == one
    assert run.commands("prod", "error") == run.commands("back", "error") == []
