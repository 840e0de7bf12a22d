"""action.yml as a runner runs it: inputs substituted into the steps, the action's own
Python environment set up by its setup step, outputs read back from GITHUB_OUTPUT."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from entrypoint.inputs import PUBLISH_INPUTS
from tests.support.composite import run_composite, runner_environment
from tests.support.stack import STACK_DIR

if TYPE_CHECKING:
    from tests.conftest import MakeRepository
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def runner_temp() -> Path:
    # Shared across tests and runs, as the action's venv cache is meant to be within a job.
    path = STACK_DIR / "runner-temp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_action_declares_every_input_the_entrypoint_reads() -> None:
    spec = yaml.safe_load((ROOT / "action.yml").read_text())
    assert list(spec["inputs"]) == list(PUBLISH_INPUTS)
    step_env = spec["runs"]["steps"][-1]["env"]
    for name in PUBLISH_INPUTS:
        assert step_env[f"INPUT_{name.upper()}"] == f"${{{{ inputs.{name} }}}}"
    assert set(spec["outputs"]) == {"image-uri", "digest", "tags", "registry", "repository"}


def test_gha_cache_mode_exposes_the_runtime_token_only_when_asked() -> None:
    spec = yaml.safe_load((ROOT / "action.yml").read_text())
    [step] = [s for s in spec["runs"]["steps"] if "uses" in s]
    assert step["if"] == "inputs.cache == 'gha'"
    assert step["uses"].startswith("actions/github-script@")
    for name in ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL"):
        assert name in step["with"]["script"]


def test_action_publishes_and_its_outputs_reach_the_job(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    runner_temp: Path,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    workspace.commit_files(
        {
            "service/Dockerfile": (
                f'FROM {busybox_base}\nARG NAME\nRUN echo "$NAME" > /name\nCMD ["cat", "/name"]\n'
            ),
        },
        "service",
    )
    run = run_composite(
        ROOT,
        {
            "env": "prod",
            "region": "eu-west-2",
            "dockerfile": "service/Dockerfile",
            "repository": repo,
            "registry": registry.host,
            "build-args": "NAME=composite",
            "tags": "v1.2.3",
        },
        workspace=workspace.path,
        runner_temp=runner_temp,
        env=runner_environment(aws_env | {"GITHUB_SHA": workspace.head}),
        step_dir=tmp_path,
    )
    assert run.code == 0, run.log
    assert run.steps_run == ["python", "publish"]
    digest = run.outputs["digest"]
    assert run.outputs["image-uri"] == f"{registry.host}/{repo}@{digest}"
    assert run.outputs["repository"] == repo
    assert run.outputs["tags"].splitlines() == [
        f"{registry.host}/{repo}:{t}" for t in (workspace.head, "prod", "latest", "v1.2.3")
    ]
    for tag in (workspace.head, "prod", "latest", "v1.2.3"):
        assert registry.manifest(repo, tag)[0] == digest
    # The action ran from its own venv, not from this test's interpreter.
    python = (tmp_path / "python.output").read_text()
    assert str(runner_temp) in python


def test_action_failure_fails_the_step_with_one_error(
    workspace: Workspace, aws_env: dict[str, str], runner_temp: Path, tmp_path: Path
) -> None:
    run = run_composite(
        ROOT,
        {"env": "prod", "region": "eu-west-2", "dockerfile": "nope/Dockerfile"},
        workspace=workspace.path,
        runner_temp=runner_temp,
        env=runner_environment(aws_env),
        step_dir=tmp_path,
    )
    assert run.code == 2
    errors = [line for line in run.log.splitlines() if line.startswith("::error::")]
    assert errors == [
        "::error::Dockerfile 'nope/Dockerfile' does not exist (looked for "
        f"{workspace.path}/nope/Dockerfile). Fix: check the 'dockerfile' input, and that "
        "actions/checkout ran before this step."
    ]


def test_required_inputs_are_enforced_like_the_runner(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Input required and not supplied: region"):
        run_composite(
            ROOT,
            {"env": "prod", "dockerfile": "Dockerfile"},
            workspace=tmp_path,
            runner_temp=tmp_path,
            env={},
            step_dir=tmp_path,
        )


def test_workflows_are_clean_under_actionlint() -> None:
    workflows = sorted(str(p) for p in ROOT.glob("**/.github/workflows/*.yml") if ".stack" not in p.parts)
    assert workflows, "no workflow files found"
    done = subprocess.run(["actionlint", *workflows], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
