"""action.yml and verify/action.yml inside consumer workflows, run by nektos/act (a real
runner emulator): `uses: owner/lambda-image-publish@v1`, inputs, the locked set-up, job
outputs passed to a second job, and the verify gate there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from entrypoint.inputs import PUBLISH_INPUTS
from tests.support.act import CHECKOUT, consumer

if TYPE_CHECKING:
    from tests.conftest import MakeRepository
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


def test_action_declares_every_input_the_entrypoint_reads() -> None:
    spec = yaml.safe_load((ROOT / "action.yml").read_text())
    assert list(spec["inputs"]) == list(PUBLISH_INPUTS)
    step_env = spec["runs"]["steps"][-1]["env"]
    for name in PUBLISH_INPUTS:
        assert step_env[f"INPUT_{name.upper()}"] == f"${{{{ inputs.{name} }}}}"
    assert set(spec["outputs"]) == {
        "image-uri",
        "digest",
        "tags",
        "registry",
        "repository",
        "images",
        "report",
    }


def test_gha_cache_mode_exposes_the_runtime_token_only_when_asked() -> None:
    spec = yaml.safe_load((ROOT / "action.yml").read_text())
    [step] = [s for s in spec["runs"]["steps"] if "uses" in s]
    assert step["if"] == "inputs.cache == 'gha'"
    assert step["uses"].startswith("actions/github-script@")
    for name in ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL"):
        assert name in step["with"]["script"]


def test_publish_then_verify_in_a_consumer_workflow(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    action_dir: Path,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    workspace.commit_files(
        {
            "service/Dockerfile": (
                f'FROM {busybox_base}\nARG NAME\nRUN echo "$NAME" > /name\nCMD ["cat", "/name"]\n'
            )
        },
        "service",
    )
    run = consumer(
        workspace,
        tmp_path,
        f"""\
        name: deploy
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            outputs:
              digest: ${{{{ steps.publish.outputs.digest }}}}
              image-uri: ${{{{ steps.publish.outputs.image-uri }}}}
              repository: ${{{{ steps.publish.outputs.repository }}}}
              tags: ${{{{ steps.publish.outputs.tags }}}}
            steps:
              - uses: {CHECKOUT}
              - id: publish
                uses: owner/lambda-image-publish@v1
                with:
                  env: prod
                  region: eu-west-2
                  dockerfile: service/Dockerfile
                  repository: {repo}
                  registry: {registry.host}
                  build-args: NAME=act
                  tags: v1.2.3
          gate:
            needs: build
            runs-on: ubuntu-latest
            steps:
              - env:
                  TAGS: ${{{{ needs.build.outputs.tags }}}}
                run: |
                  echo "OUT digest=${{{{ needs.build.outputs.digest }}}}"
                  echo "OUT image-uri=${{{{ needs.build.outputs.image-uri }}}}"
                  echo "OUT repository=${{{{ needs.build.outputs.repository }}}}"
                  echo "OUT tags=$(echo "$TAGS" | tr '\\n' ' ')"
              - id: verify
                uses: owner/lambda-image-publish/verify@v1
                with:
                  image-uris: ${{{{ needs.build.outputs.image-uri }}}}
                  region: eu-west-2
                  registry: {registry.host}
              - run: echo "OUT checked=${{{{ steps.verify.outputs.checked }}}}"
        """,
        action_dir,
        aws_env,
    )
    assert run.code == 0, run.log
    seen = run.values("gate")
    assert "digest" in seen, run.log
    digest = seen["digest"]
    assert digest.startswith("sha256:")
    assert seen["image-uri"] == f"{registry.host}/{repo}@{digest}"
    assert seen["repository"] == repo
    assert seen["tags"].split() == [
        f"{registry.host}/{repo}:{t}" for t in (workspace.head, "prod", "latest", "v1.2.3")
    ]
    assert seen["checked"] == "1"
    for tag in (workspace.head, "prod", "latest", "v1.2.3"):
        assert registry.manifest(repo, tag)[0] == digest
    # The locked set-up ran in each job (fresh runner), from the runner's temp folder.
    assert [line for line in run.job_lines("build") if line.startswith("Set up the action's locked Python")]
    assert run.commands("build", "error") == [] and run.commands("gate", "error") == []


def test_a_failing_publish_fails_the_job_with_one_error(
    workspace: Workspace, aws_env: dict[str, str], action_dir: Path, tmp_path: Path
) -> None:
    run = consumer(
        workspace,
        tmp_path,
        f"""\
        name: deploy
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            steps:
              - uses: {CHECKOUT}
              - uses: owner/lambda-image-publish@v1
                with:
                  env: prod
                  region: eu-west-2
                  dockerfile: nope/Dockerfile
              - run: echo "OUT reached=yes"
        """,
        action_dir,
        aws_env,
    )
    assert run.code != 0
    errors = run.commands("build", "error")
    assert len(errors) == 1, run.log
    assert errors[0].startswith("Dockerfile 'nope/Dockerfile' does not exist (looked for ")
    assert "Fix: check the 'dockerfile' input, and that actions/checkout ran before this step." in errors[0]
    assert run.values("build") == {}  # the job stopped at the failing step


def test_workflows_are_clean_under_actionlint(tmp_path: Path) -> None:
    projects = sorted(
        p.parent.parent for p in ROOT.glob("**/.github/workflows") if not {".stack", ".venv"} & set(p.parts)
    )
    assert ROOT in projects and ROOT / "examples" / "sse-streaming-lambda" in projects
    for number, project in enumerate(projects):
        # actionlint takes the folder holding .git as the project (reusable workflows resolve there).
        copy = tmp_path / str(number)
        shutil.copytree(project / ".github", copy / ".github")
        (copy / ".git").mkdir()
        workflows = sorted(str(p.relative_to(copy)) for p in (copy / ".github" / "workflows").glob("*.yml"))
        done = subprocess.run(
            ["actionlint", *workflows], cwd=copy, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{project}: {done.stdout}{done.stderr}"
