"""The example's own deploy workflow (deploy.yml calling deploy-env.yml for preprod, then
prod) under nektos/act, up to its Terraform steps: Terraform cannot fetch providers here.

Two lines are added to the publish step of the copy, and only there: `registry` (moto's ECR
login names an amazonaws.com host this machine cannot reach) and `build-args` (the public
base images cannot be pulled). Everything else runs as a user would copy it: the reusable
workflow, environment variables, the publish step with its smoke boot and invoke-mode check.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from tests.support.act import run_act
from tests.support.run import EXAMPLE, REGION

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

PUBLISH_WITH = "          invoke-mode: response-stream\n"
LOCAL_STACK = (
    "          registry: ${{ vars.TEST_REGISTRY }}\n"
    "          build-args: |\n"
    "            BASE_IMAGE=${{ vars.TEST_BASE_IMAGE }}\n"
    "            ADAPTER_IMAGE=${{ vars.TEST_ADAPTER_IMAGE }}\n"
)


def test_the_example_pipeline_publishes_preprod_and_stops_at_terraform(
    workspace: Workspace,
    python_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    action_dir: Path,
    tmp_path: Path,
) -> None:
    shutil.copytree(EXAMPLE, workspace.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    workflow = workspace.path / ".github" / "workflows" / "deploy-env.yml"
    text = workflow.read_text()
    assert text.count(PUBLISH_WITH) == 2  # publish and verify both set it; the first is publish
    workflow.write_text(text.replace(PUBLISH_WITH, PUBLISH_WITH + LOCAL_STACK, 1))
    workspace.commit("the example, as a repository of its own")
    for env in ("preprod", "prod"):
        ecr_repository(f"{env}-sse-streaming-lambda")

    run = run_act(
        workspace.path / ".github" / "workflows" / "deploy.yml",
        workspace.path,
        action_dir,
        env=aws_env,
        cache=tmp_path / "act-cache",
        variables={
            "AWS_DEPLOY_ROLE_ARN": "arn:aws:iam::123456789012:role/deploy",
            "AWS_REGION": REGION,
            "TEST_REGISTRY": registry.host,
            "TEST_BASE_IMAGE": python_base,
            "TEST_ADAPTER_IMAGE": adapter_image,
        },
        action_ref="your-org/lambda-image-publish@v1",
    )
    assert run.code != 0, run.log  # Terraform is a stand-in that refuses
    steps = [(step, result) for _, step, result, _ in run.steps]
    assert ("Main Publish image", "Success") in steps, run.log
    failures = [step for step, result in steps if result == "Failure"]
    assert failures and failures[0] == "Main terraform init", run.log
    # Nothing after the failed step ran: no plan, no verify, no apply, no prod job.
    ran = {s for s, _ in steps}
    later = {"Main terraform plan", "Main Verify plan", "Main terraform apply"}
    later.add("Main Check the deployed function")
    assert not later & ran
    assert not any(line.startswith("[deploy/prod") for line in run.log.splitlines())
    # The image is in preprod's repository, booted and checked on the way.
    log = "\n".join(line for line in run.log.splitlines() if "preprod" in line)
    assert "smoke boot" in log and "answered HTTP 200" in log
    digest = registry.manifest("preprod-sse-streaming-lambda", "preprod")[0]
    assert registry.manifest("preprod-sse-streaming-lambda", workspace.head)[0] == digest
