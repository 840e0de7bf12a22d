"""Each failure the publish job promises to explain, caused for real: one error line that
names the cause and the fix, a non-zero exit, and no tag moved in the registry."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from tests.support.run import REGION, run_entrypoint
from tests.support.run import publish as publish_in
from tests.support.stack import MotoServer, Registry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import MakeRepository
    from tests.support.run import Run
    from tests.support.workspace import Workspace


def publish(
    ws: Workspace,
    host: str,
    repo: str,
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    on_runner: bool = True,
) -> Run:
    return publish_in(ws.path, host, tmp, *args, repository=repo, env=env, on_runner=on_runner)


def only_error(run: Run) -> str:
    assert run.code != 0, run.log
    errors = run.error_lines()
    assert len(errors) == 1, run.log
    # The error is the last thing the job says.
    assert run.log.rstrip().splitlines()[-1] == errors[0] or errors[0] in run.stderr
    return errors[0]


@pytest.fixture
def published(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> tuple[str, str]:
    """A repository that already holds a release, so 'no tag moved' can be checked."""
    repo = ecr_repository()
    run = publish(app, registry.host, repo, tmp_path)
    assert run.code == 0, run.log
    app.commit_files({"app.txt": "v2\n"}, "v2")
    return repo, run.outputs["digest"]


def assert_untouched(registry: Registry, repo: str, digest: str, ws: Workspace) -> None:
    assert registry.manifest(repo, "latest")[0] == digest
    assert registry.manifest(repo, "preprod")[0] == digest
    assert ws.head not in registry.tags(repo)


# Each input's values are table-tested on the parser (test_inputs.py); this runs one bad
# input through the whole entrypoint, after a publish, to show nothing happens.
@pytest.mark.parametrize(("args", "expected"), [(["--env", "Prod!"], "input 'env' is 'Prod!'")])
def test_invalid_input_fails_before_any_side_effect(
    app: Workspace,
    published: tuple[str, str],
    registry: Registry,
    tmp_path: Path,
    args: list[str],
    expected: str,
) -> None:
    repo, digest = published
    run = publish(app, registry.host, repo, tmp_path, *args)
    line = only_error(run)
    assert run.code == 2
    assert expected in line
    assert "Fix:" in line
    assert "▶ build" not in run.stdout
    assert_untouched(registry, repo, digest, app)


def test_missing_required_input_names_it(app: Workspace, tmp_path: Path) -> None:
    run = run_entrypoint([], cwd=app.path, tmp=tmp_path, env={"INPUT_REGION": REGION})
    assert "input 'env' is required" in only_error(run)


def test_plain_text_error_outside_a_runner(app: Workspace, registry: Registry, tmp_path: Path) -> None:
    run = publish(app, registry.host, "x-repo", tmp_path, "--env", "BAD", on_runner=False)
    assert run.stderr.startswith("error: input 'env' is 'BAD'")
    assert "::error::" not in run.log


def test_engine_not_reachable(
    app: Workspace, published: tuple[str, str], registry: Registry, tmp_path: Path
) -> None:
    repo, digest = published
    run = publish(
        app, registry.host, repo, tmp_path, env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    )
    line = only_error(run)
    assert "Docker engine" in line
    assert "not reachable" in line
    assert "DOCKER_HOST" in line
    assert_untouched(registry, repo, digest, app)


def test_failing_run_step_is_named_with_its_last_lines(
    app: Workspace,
    published: tuple[str, str],
    registry: Registry,
    tmp_path: Path,
    busybox_base: str,
) -> None:
    repo, digest = published
    app.commit_files(
        {
            "Dockerfile": (
                f"FROM {busybox_base}\nCOPY app.txt /app.txt\n"
                "RUN echo resolving dependencies && echo 'fatal: package xyz not found' >&2 && exit 7\n"
            )
        },
        "broken build",
    )
    run = publish(app, registry.host, repo, tmp_path)
    line = only_error(run)
    assert "build failed at step [3/3] RUN echo resolving dependencies" in line
    assert "exit code: 7" in line
    # The step's own last lines are shown, outside the folded build log.
    after_group = run.stdout.split("::endgroup::")[-1]
    assert "| fatal: package xyz not found" in after_group
    assert_untouched(registry, repo, digest, app)


def test_missing_base_image_fails_clearly(
    app: Workspace, published: tuple[str, str], registry: Registry, tmp_path: Path
) -> None:
    repo, digest = published
    app.commit_files({"Dockerfile": 'FROM 127.0.0.1:9/nothing/here:1\nCMD ["x"]\n'}, "bad base")
    run = publish(app, registry.host, repo, tmp_path)
    line = only_error(run)
    assert "build failed" in line
    assert "127.0.0.1:9/nothing/here:1" in line
    assert_untouched(registry, repo, digest, app)


def test_missing_aws_credentials_name_the_call(
    app: Workspace, published: tuple[str, str], registry: Registry, tmp_path: Path
) -> None:
    repo, digest = published
    run = publish(
        app, registry.host, repo, tmp_path, env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    )
    line = only_error(run)
    assert "AWS credentials are missing" in line
    assert "ecr:GetAuthorizationToken" in line
    assert "configure-aws-credentials" in line
    assert_untouched(registry, repo, digest, app)


def test_missing_repository_says_terraform_must_create_it(
    app: Workspace, registry: Registry, aws_env: dict[str, str], tmp_path: Path
) -> None:
    run = publish(app, registry.host, "never-created-repo", tmp_path)
    line = only_error(run)
    assert "ECR repository 'never-created-repo' does not exist" in line
    assert "terraform apply -target=aws_ecr_repository" in line
    assert "▶ build" not in run.stdout


def test_stopped_registry_is_named_within_30_seconds(
    app: Workspace, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    stopped = Registry().start()
    host = stopped.host
    stopped.stop()
    started = time.monotonic()
    run = publish(app, host, ecr_repository(), tmp_path)
    took = time.monotonic() - started
    line = only_error(run)
    assert f"registry {host} is unreachable" in line
    assert "connection refused" in line
    assert took < 30, f"the error came after {took:.1f} s"


def test_registry_refusing_the_login(app: Workspace, ecr_repository: MakeRepository, tmp_path: Path) -> None:
    with Registry(user="AWS", password="another-password") as wrong:
        repo = ecr_repository()
        run = publish(app, wrong.host, repo, tmp_path)
        line = only_error(run)
        assert f"registry {wrong.host} refused the login for user 'AWS'" in line
        assert "ecr:GetAuthorizationToken" in line
        assert wrong.catalog() == []


def test_push_rejected_by_a_read_only_registry(
    app: Workspace, published: tuple[str, str], registry: Registry, tmp_path: Path
) -> None:
    repo, digest = published
    # The same storage, served read-only: every push is refused by the registry itself.
    with Registry(readonly=True, storage=registry.storage) as readonly:
        run = publish(app, readonly.host, repo, tmp_path)
        line = only_error(run)
        assert f"registry {readonly.host} rejected the push of {readonly.host}/{repo}:{app.head}" in line
        assert "read-only" in line
    assert_untouched(registry, repo, digest, app)


@pytest.fixture
def moto_with_iam(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server that checks credentials against its IAM, as AWS does: after the first
    two calls (which create a user without permissions) every call is authenticated."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "2")
    with MotoServer() as server:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        yield server.endpoint


def test_denied_and_invalid_credentials_name_the_call(
    app: Workspace, aws_env: dict[str, str], moto_with_iam: str, tmp_path: Path
) -> None:
    iam = boto3.client("iam", endpoint_url=moto_with_iam, region_name=REGION)
    iam.create_user(UserName="deployer")
    key = iam.create_access_key(UserName="deployer")["AccessKey"]

    denied = publish(
        app,
        "127.0.0.1:9",
        "any-repo",
        tmp_path,
        env={
            "AWS_ENDPOINT_URL": moto_with_iam,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        },
    )
    line = only_error(denied)
    assert "AWS denied ecr:GetAuthorizationToken" in line
    assert "allow ecr:GetAuthorizationToken" in line

    unknown = publish(
        app,
        "127.0.0.1:9",
        "any-repo",
        tmp_path,
        env={
            "AWS_ENDPOINT_URL": moto_with_iam,
            "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000",
            "AWS_SECRET_ACCESS_KEY": "nope",
        },
    )
    line = only_error(unknown)
    assert "the AWS credentials are not valid: ecr:GetAuthorizationToken returned" in line


@pytest.mark.skipif(
    not Path("/usr/local/bin/docker").exists(), reason="needs a Docker >= 23 CLI without buildx"
)
def test_docker_cli_without_buildx_is_refused_before_building(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "docker").symlink_to("/usr/local/bin/docker")
    repo = ecr_repository()
    run = publish(
        app,
        registry.host,
        repo,
        tmp_path,
        env={"PATH": f"{shim}:{os.environ['PATH']}", "DOCKER_CONFIG": str(tmp_path / "cfg")},
    )
    line = only_error(run)
    assert "has no buildx plugin" in line
    assert "install buildx" in line
    assert registry.tags(repo) == []


@pytest.mark.parametrize("variable", ["GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"])
def test_a_missing_runner_file_is_one_clear_line_before_anything_happens(
    app: Workspace, registry: Registry, aws_env: dict[str, str], tmp_path: Path, variable: str
) -> None:
    missing = tmp_path / "gone" / "file"
    run = publish(app, registry.host, "app", tmp_path, env={variable: str(missing)})
    line = only_error(run)
    assert f"{variable} names {missing}, which is not a file" in line
    assert "Traceback" not in run.log
    assert "▶ plan" not in run.stdout  # refused before the plan, so nothing was built or pushed
