"""Trust, second pass: what the checkout's files and the job's other steps could do with the
deploy role, each attack performed for real and shown to fail (issue 23). The first pass is
tests/test_security.py; README's Security section lists which test holds each promise.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import pytest

from entrypoint.errors import InputError
from entrypoint.inputs import parse_release
from tests.support.run import publish as publish_in

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.run import Run
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace


# ------------------------------------------------ 1. a config file and the deploy role


def _release(
    ws: Workspace, registry: Registry, tmp: Path, prefix: str, *args: str, env: dict[str, str] | None = None
) -> Run:
    """A preprod release of the workspace's lambdas.yml; `env`: the step's extra variables."""
    return publish_in(
        ws.path, registry.host, tmp, "--config", "lambdas.yml", "--dockerfile", "", *args,
        repository=f"{prefix}-{{env}}-{{name}}", env=env,
    )  # fmt: skip


def _one_service(ws: Workspace, base: str, keys: str, dockerfile: str = "") -> None:
    ws.commit_files(
        {
            "lambdas.yml": f"images:\n  - name: api\n    dockerfile: api/Dockerfile\n{keys}",
            "api/Dockerfile": dockerfile
            or f'FROM {base}\nCOPY main.txt /main.txt\nCMD ["cat", "/main.txt"]\n',
            "api/main.txt": "api v1\n",
        },
        "a config from a pull request",
    )


@pytest.fixture
def prefix(ecr_repository: MakeRepository) -> str:
    prefix = f"t{secrets.token_hex(4)}"
    for env in ("preprod", "prod"):
        ecr_repository(f"{prefix}-{env}-api")
    return prefix


def test_a_config_file_cannot_read_the_deploy_roles_keys_into_the_build(
    workspace: Workspace, registry: Registry, prefix: str, tmp_path: Path, busybox_base: str
) -> None:
    """The attack: the file maps a BuildKit secret to AWS_SECRET_ACCESS_KEY, and a RUN step
    copies it into the image (a real one would send it away). Before the fix the key was in
    the pushed image; now the run stops at the inputs and nothing is built or pushed."""
    stealing = (
        f"FROM {busybox_base}\n"
        "RUN --mount=type=secret,id=k --mount=type=secret,id=t cat /run/secrets/k /run/secrets/t > /stolen\n"
        'CMD ["cat", "/stolen"]\n'
    )
    _one_service(
        workspace, busybox_base, "    secrets: {k: AWS_SECRET_ACCESS_KEY, t: AWS_SESSION_TOKEN}\n", stealing
    )
    run = _release(workspace, registry, tmp_path, prefix, env={"AWS_SESSION_TOKEN": "session-" + "x" * 20})
    assert run.code == 2, run.log
    assert run.error_lines() == [
        "::error::lambdas.yml line 4, image 'api': 'secrets' gives id 'k' the variable "
        "AWS_SECRET_ACCESS_KEY, which the workflow's 'secrets' input does not pass. Fix: a config "
        "file may only use the variables the workflow's 'secrets' input names: add a line "
        "id=AWS_SECRET_ACCESS_KEY there (and AWS_SECRET_ACCESS_KEY to the step's env) if this build "
        "may read it; the workflow, not the checkout, decides which secrets a build sees."
    ]
    assert "▶ build" not in run.log
    assert registry.tags(f"{prefix}-preprod-api") == []


def test_a_config_file_uses_the_secrets_the_workflow_passes(
    workspace: Workspace, registry: Registry, prefix: str, tmp_path: Path, busybox_base: str
) -> None:
    """The positive side: the file picks a variable the workflow's 'secrets' input names
    (under an id of its own), and the build reads it."""
    dockerfile = (
        f"FROM {busybox_base}\n"
        'RUN --mount=type=secret,id=npm test "$(cat /run/secrets/npm)" = token-value-123456\n'
        'CMD ["true"]\n'
    )
    _one_service(workspace, busybox_base, "    secrets: {npm: NPM_TOKEN}\n", dockerfile)
    run = _release(
        workspace, registry, tmp_path, prefix, "--secrets", "registry=NPM_TOKEN",
        env={"NPM_TOKEN": "token-value-123456"},
    )  # fmt: skip
    assert run.code == 0, run.log
    assert workspace.head in registry.tags(f"{prefix}-preprod-api")


def test_a_config_file_cannot_push_into_another_environments_repository(
    workspace: Workspace, registry: Registry, prefix: str, tmp_path: Path, busybox_base: str
) -> None:
    """A preprod run whose role may write both repositories: the file names prod's."""
    _one_service(workspace, busybox_base, f'    repository: "{prefix}-prod-api"\n')
    run = _release(workspace, registry, tmp_path, prefix)
    assert run.code == 2, run.log
    (line,) = run.error_lines()
    assert f"lambdas.yml line 4, image 'api': repository '{prefix}-prod-api' has no {{env}}" in line
    assert "allow it in the workflow's 'config-repositories' input" in line
    assert registry.tags(f"{prefix}-prod-api") == []
    assert registry.tags(f"{prefix}-preprod-api") == []


def test_a_config_file_cannot_move_another_environments_tag(
    workspace: Workspace, registry: Registry, prefix: str, tmp_path: Path, busybox_base: str
) -> None:
    _one_service(workspace, busybox_base, "    tags: [prod]\n")
    run = _release(workspace, registry, tmp_path, prefix)
    assert run.code == 2, run.log
    (line,) = run.error_lines()
    assert (
        "lambdas.yml line 4, image 'api': tag 'prod' is not allowed by the workflow's 'config-tags' input"
        in line
    )
    assert registry.tags(f"{prefix}-preprod-api") == []


def test_what_the_workflow_allows_a_config_file(
    workspace: Workspace, registry: Registry, prefix: str, tmp_path: Path, busybox_base: str
) -> None:
    """'config-repositories' and 'config-tags' let the file go further, by name or pattern."""
    _one_service(workspace, busybox_base, f'    repository: "{prefix}-preprod-api"\n    tags: [v1.2.3]\n')
    run = _release(
        workspace, registry, tmp_path, prefix,
        "--config-repositories", f"{prefix}-*-api", "--config-tags", "v*",
    )  # fmt: skip
    assert run.code == 0, run.log
    assert {"v1.2.3", "preprod", workspace.head} <= set(registry.tags(f"{prefix}-preprod-api"))


@pytest.mark.parametrize(
    ("keys", "inputs", "expected"),
    [
        ("    secrets: {k: GITHUB_TOKEN}\n", {"secrets": "k=NPM_TOKEN"}, "the variable GITHUB_TOKEN, which"),
        ('    repository: "shared-api"\n', {"config-repositories": "other-*"}, "repository 'shared-api' has"),
        ("    tags: [stable]\n", {"config-tags": "v*"}, "tag 'stable' is not allowed"),
        ("    tags: [latest]\n", {}, "tag 'latest' is not allowed"),
    ],
)
def test_config_trust_rules(workspace: Workspace, keys: str, inputs: dict[str, str], expected: str) -> None:
    (workspace.path / "api").mkdir()
    (workspace.path / "api" / "Dockerfile").write_text("FROM scratch\n")
    (workspace.path / "lambdas.yml").write_text(
        f"images:\n  - name: api\n    dockerfile: api/Dockerfile\n{keys}"
    )
    raw = {"env": "preprod", "region": "eu-west-2", "config": "lambdas.yml", **inputs}
    with pytest.raises(InputError) as raised:
        parse_release(raw, workspace.path)
    assert expected in raised.value.line()
