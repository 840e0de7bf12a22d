"""Dockerfile.action: the same entrypoint as a container, for CI systems other than GitHub
Actions. Built on the local Python base (no registry is reachable here) and used to publish
to the test stack through the engine's socket."""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.support.run import REGION, REPO_ROOT
from tests.support.stack import docker_cli

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tests.conftest import MakeRepository
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

IMAGE = "local/lambda-image-publish:test"


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    return subprocess.run(
        [docker_cli(), *args], capture_output=True, text=True, check=False, timeout=timeout, env=env
    )


@pytest.fixture(scope="module")
def action_image(python_base: str) -> str:
    built = docker(
        "build", "--file", str(REPO_ROOT / "Dockerfile.action"), "--build-arg", f"BASE_IMAGE={python_base}",
        "--tag", IMAGE, str(REPO_ROOT),
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    return IMAGE


def run_image(
    image: str, args: Sequence[str], *, options: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", *options, image, *args)


def test_help_works_without_arguments_or_a_runner(action_image: str) -> None:
    for args in ([], ["--help"]):
        done = run_image(action_image, args)
        assert done.returncode == 0, done.stderr
        assert "{publish,verify,promote,rollback,deployed}" in done.stdout
    publish = run_image(action_image, ["publish", "--help"])
    assert publish.returncode == 0
    assert "--dockerfile VALUE" in publish.stdout and "--secrets VALUE" in publish.stdout


def test_the_image_holds_the_lock_and_no_test_tools(action_image: str) -> None:
    listing = run_image(
        action_image,
        ["-c", "import importlib.metadata as m; print(*(d.metadata['Name'] for d in m.distributions()))"],
        options=["--entrypoint", "/opt/lambda-image-publish/venv/bin/python"],
    )
    assert listing.returncode == 0, listing.stderr
    names = {name.lower() for name in listing.stdout.split()}
    assert {"boto3", "docker", "actions-toolkit", "pyyaml"} <= names
    assert not names & {"pytest", "ruff", "mypy", "moto", "pip", "pygithub"}
    tools = run_image(
        action_image, ["-c", "docker --version && ! command -v pytest"], options=["--entrypoint", "sh"]
    )
    assert tools.returncode == 0, tools.stdout + tools.stderr


def test_publish_through_the_image_to_the_stack(
    action_image: str,
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
) -> None:
    workspace.commit_files(
        {"Dockerfile": f'FROM {busybox_base}\nRUN echo built > /built\nCMD ["cat", "/built"]\n'}
    )
    repo = ecr_repository()
    env_flags = [flag for key, value in aws_env.items() for flag in ("--env", f"{key}={value}")]
    done = run_image(
        action_image,
        ["publish", "--env", "preprod", "--region", REGION, "--dockerfile", "Dockerfile",
         "--repository", repo, "--registry", registry.host],
        options=[
            # Host networking: the registry and moto listen on the host's loopback.
            "--network", "host",
            "--volume", "/var/run/docker.sock:/var/run/docker.sock",
            "--volume", f"{workspace.path}:/workspace",
            "--env", f"CI_COMMIT_SHA={workspace.head}",  # as GitLab CI sets it
            *env_flags,
        ],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = dict(
        line.split("=", 1) for line in done.stdout.splitlines() if line.startswith(("digest=", "image-uri="))
    )
    digest = outputs["digest"]
    assert outputs["image-uri"] == f"{registry.host}/{repo}@{digest}"
    for tag in (workspace.head, "preprod", "latest"):
        assert registry.manifest(repo, tag)[0] == digest
    assert "::" not in done.stdout  # no workflow commands outside Actions
