"""The hint for Dockerfiles that copy the code before installing dependencies."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from entrypoint.build.layering import cache_hostile_hint
from tests.support.run import EXAMPLE
from tests.support.run import publish as publish_in

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace


@pytest.mark.parametrize(
    ("dockerfile", "manifest"),
    [
        ("FROM python\nWORKDIR /app\nCOPY . .\nRUN pip install -r requirements.txt\n", "requirements.txt"),
        (
            "FROM python\nADD ./ /var/task/\nRUN pip install --no-cache-dir \\\n  -r req/prod.txt\n",
            "req/prod.txt",
        ),
        ("FROM node\nCOPY --chown=node . /app\nRUN npm ci\n", "package.json package-lock.json"),
        ("FROM python\nCOPY . .\nRUN pip install .\n", "pyproject.toml"),
        ("FROM python\nCOPY . .\nRUN uv sync --frozen\n", "pyproject.toml and its lock file"),
        ("FROM golang\nCOPY . .\nRUN go mod download && go build\n", "go.mod go.sum"),
    ],
)
def test_code_before_dependencies_gets_the_reordering(dockerfile: str, manifest: str) -> None:
    hint = cache_hostile_hint(dockerfile)
    assert hint is not None
    assert "every code change reinstalls all of them" in hint
    assert f"\n  COPY {manifest} ./\n  RUN " in hint


@pytest.mark.parametrize(
    "dockerfile",
    [
        "FROM python\nCOPY requirements.txt .\nRUN pip install -r requirements.txt\nCOPY . .\n",
        "FROM python AS deps\nCOPY . .\nFROM python\nRUN pip install -r requirements.txt\n",  # another stage
        "FROM python\nCOPY --from=deps /app /app\nRUN pip install -r requirements.txt\n",  # not the context
        "FROM python\nCOPY app/ /app\nRUN pip install -r /app/requirements.txt\n",  # a folder, not the root
        "FROM busybox\nCOPY . .\nRUN echo built\n",  # no install
    ],
)
def test_cache_friendly_dockerfiles_get_no_hint(dockerfile: str) -> None:
    assert cache_hostile_hint(dockerfile) is None


def test_the_example_is_cache_friendly() -> None:
    assert cache_hostile_hint((EXAMPLE / "Dockerfile").read_text()) is None


def test_publish_shows_the_hint(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    workspace.commit_files(
        {
            "Dockerfile": f'FROM {busybox_base}\nCOPY . /app\nRUN echo npm ci > /dev/null\nCMD ["true"]\n',
        }
    )
    run = publish_in(workspace.path, registry.host, tmp_path, repository=ecr_repository())
    assert run.code == 0, run.log
    [notice] = [line for line in run.stdout.splitlines() if "copies the whole build context" in line]
    assert notice.startswith("::notice::")
    assert "%0A  COPY package.json package-lock.json ./" in notice  # the runner shows %0A as a new line
