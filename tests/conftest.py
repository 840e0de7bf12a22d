"""Fixtures for the local test stack (see scripts/stack.sh and tests/support/).

Session-scoped: docker_client, moto_server, registry, busybox_base, python_base,
adapter_image. Function-scoped: aws_env, ecr_repository, workspace.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import TYPE_CHECKING, Protocol

import boto3
import docker
import docker.errors
import pytest
import requests

from tests.support.act import action_checkout
from tests.support.ecrsync import EcrSync
from tests.support.stack import (
    ECR_PASSWORD,
    ECR_USER,
    MotoServer,
    Registry,
    ensure_adapter_standin,
    ensure_busybox_base,
    ensure_python_base,
)
from tests.support.workspace import Workspace

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from docker import DockerClient

AWS_REGION = "eu-west-2"

# Variables that could make boto3 (or the AWS CLI) look past the moto endpoint.
_AWS_VARS_TO_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_ENDPOINT_URL_STS",
    "AWS_ACCOUNT_ID",
)


class MakeRepository(Protocol):
    def __call__(self, name: str | None = None, mutability: str = "MUTABLE") -> str: ...


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    """docker-py client for the local engine; fails (never skips) when it is down."""
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        pytest.fail(
            f"Docker engine not reachable: {exc}\n"
            "Run `bash scripts/stack.sh` (installs and starts dockerd), "
            "then `. .stack/env.sh`.",
            pytrace=False,
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto_server on 127.0.0.1 (in-memory AWS, ECR included)."""
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A registry on 127.0.0.1 that takes moto's ECR login (AWS / 123456789012-auth-token)."""
    with Registry(user=ECR_USER, password=ECR_PASSWORD) as reg:
        yield reg


@pytest.fixture
def aws_env(
    moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Point boto3 (in-process and in subprocesses) at moto; returns the variables set."""
    for var in _AWS_VARS_TO_DROP:
        monkeypatch.delenv(var, raising=False)
    no_config = tmp_path_factory.mktemp("aws") / "absent"
    env = {
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
        "AWS_REGION": AWS_REGION,
        # No host config or credentials files, and never ask the instance metadata service.
        "AWS_CONFIG_FILE": str(no_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(no_config),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def ecr_repository(aws_env: dict[str, str]) -> Iterator[MakeRepository]:
    """Factory: ``make(name=None, mutability="MUTABLE") -> name`` creates an ECR
    repository in moto (default name ``t<hex8>-sse-streaming-lambda``); all are deleted
    afterwards."""
    ecr = boto3.client("ecr")
    made: list[str] = []

    def make(name: str | None = None, mutability: str = "MUTABLE") -> str:
        repo = name or f"t{secrets.token_hex(4)}-sse-streaming-lambda"
        ecr.create_repository(repositoryName=repo, imageTagMutability=mutability)  # type: ignore[arg-type]
        made.append(repo)
        return repo

    yield make
    for repo in made:
        with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
            ecr.delete_repository(repositoryName=repo, force=True)


@pytest.fixture(scope="session")
def busybox_base(docker_client: DockerClient) -> str:
    """Image name of the local busybox base (static busybox + host CA bundle)."""
    return ensure_busybox_base(docker_client)


@pytest.fixture(scope="session")
def python_base(docker_client: DockerClient) -> str:
    """Image name of the local Debian bookworm python3 base (debootstrap, cached)."""
    return ensure_python_base(docker_client)


@pytest.fixture(scope="session")
def adapter_image(docker_client: DockerClient) -> str:
    """Image name of the local Lambda Web Adapter stand-in (holds /lambda-adapter)."""
    return ensure_adapter_standin(docker_client)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A git repo with one commit; ``write()``, ``commit()`` / ``commit_files()`` -> SHA."""
    ws = Workspace(tmp_path / "workspace")
    ws.init()
    return ws


@pytest.fixture(scope="session")
def action_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The action as a runner checks it out (tracked files only), for act's --local-repository."""
    return action_checkout(tmp_path_factory.mktemp("action"))


@pytest.fixture
def app(workspace: Workspace, busybox_base: str) -> Workspace:
    """The workspace with a small busybox app committed: a Dockerfile that copies app.txt."""
    workspace.commit_files(
        {
            "Dockerfile": f'FROM {busybox_base}\nCOPY app.txt /app.txt\nCMD ["cat", "/app.txt"]\n',
            "app.txt": "v1\n",
        },
        "app",
    )
    return workspace


@pytest.fixture(scope="session")
def ecr_sync(moto_server: MotoServer) -> Iterator[EcrSync]:
    """A registry (``ecr_sync.registry``, moto's ECR login) whose every manifest push is put
    into moto's ECR with the registry's digest, as ECR's scanning sees a push; create the
    repository (``ecr_repository``) before pushing, and ``ecr_sync.wait(repo, digest)``."""
    with (
        EcrSync(moto_server.endpoint, AWS_REGION) as sync,
        Registry(user=ECR_USER, password=ECR_PASSWORD, notify_url=sync.url) as reg,
    ):
        sync.follow(reg)
        yield sync
