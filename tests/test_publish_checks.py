"""Nothing Lambda would refuse, and nothing that cannot boot, leaves the runner: the publish
job checks the built image and smoke-boots it before pushing anything."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.support.run import EXAMPLE, example_build_args
from tests.support.run import publish as publish_in

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.run import Run
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace


def publish(
    ws: Workspace, registry: Registry, repo: str, tmp: Path, *args: str, dockerfile: str = "Dockerfile"
) -> Run:
    return publish_in(ws.path, registry.host, tmp, *args, repository=repo, dockerfile=dockerfile)


def refused(run: Run, registry: Registry, repo: str) -> str:
    assert run.code == 1, run.log
    [line] = run.error_lines()
    assert "▶ push" not in run.stdout
    assert registry.tags(repo) == []
    return line


def test_platform_input_builds_for_lambda_arm64(
    workspace: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    # The build always targets 'platform', so a wrong-architecture image can only come from
    # elsewhere: the verify gate's tests cover that (tests/test_verify.py, test_lambda_checks.py).
    workspace.commit_files(
        {"Dockerfile": 'FROM scratch\nCOPY app.txt /app.txt\nCMD ["/app"]\n', "app.txt": "x\n"}
    )
    repo = ecr_repository()
    run = publish(workspace, registry, repo, tmp_path, "--platform", "linux/arm64")
    assert run.code == 0, run.log
    manifest = registry.manifest(repo, run.outputs["digest"])[2]
    config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("linux", "arm64")


def test_image_without_entrypoint_or_cmd_is_refused(
    workspace: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    workspace.commit_files({"Dockerfile": "FROM scratch\nCOPY app.txt /app.txt\n", "app.txt": "x\n"})
    repo = ecr_repository()
    line = refused(publish(workspace, registry, repo, tmp_path), registry, repo)
    assert "ENTRYPOINT" in line and "CMD" in line


def test_image_that_exits_at_start_fails_its_smoke_boot_with_its_log(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    workspace.commit_files(
        {
            "Dockerfile": f'FROM {busybox_base}\nCMD ["sh", "-c", "echo config file missing >&2; exit 3"]\n',
        }
    )
    repo = ecr_repository()
    run = publish(workspace, registry, repo, tmp_path, "--smoke", "8080/health", "--smoke-timeout", "10")
    line = refused(run, registry, repo)
    assert "exited with code 3" in line
    assert "config file missing" in run.stdout
    leftovers = docker_client.containers.list(
        all=True, filters={"label": "lambda-image-publish.purpose=smoke-boot"}
    )
    assert leftovers == []


@pytest.fixture
def example(workspace: Workspace) -> Workspace:
    workspace.add_tree(EXAMPLE, "service", "example service")
    return workspace


def test_example_passes_its_smoke_boot_and_invoke_mode_check(
    example: Workspace,
    python_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    run = publish(
        example,
        registry,
        repo,
        tmp_path,
        *example_build_args(python_base, adapter_image),
        "--smoke",
        "8080/health",
        "--invoke-mode",
        "response-stream",
        dockerfile="service/Dockerfile",
    )
    assert run.code == 0, run.log
    assert "▶ smoke boot" in run.stdout
    assert registry.manifest(repo, "latest")[0] == run.outputs["digest"]


def test_example_missing_a_runtime_dependency_fails_its_smoke_boot(
    example: Workspace,
    python_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    requirements = example.path / "service" / "requirements.txt"
    kept = [line for line in requirements.read_text().splitlines() if not line.lower().startswith("fastapi")]
    requirements.write_text("\n".join(kept) + "\n")
    example.commit("drop fastapi")
    repo = ecr_repository()
    run = publish(
        example,
        registry,
        repo,
        tmp_path,
        *example_build_args(python_base, adapter_image),
        "--smoke",
        "8080/health",
        dockerfile="service/Dockerfile",
    )
    line = refused(run, registry, repo)
    assert "smoke boot" in line
    assert "ModuleNotFoundError: No module named 'fastapi'" in run.stdout


def test_buffered_invoke_mode_is_refused_for_a_streaming_adapter_image(
    example: Workspace,
    python_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    run = publish(
        example,
        registry,
        repo,
        tmp_path,
        *example_build_args(python_base, adapter_image),
        "--invoke-mode",
        "buffered",
        dockerfile="service/Dockerfile",
    )
    line = refused(run, registry, repo)
    assert "AWS_LWA_INVOKE_MODE" in line and "response_stream" in line


def test_an_image_that_leaves_the_invoke_mode_to_the_function_is_published_with_a_notice(
    workspace: Workspace,
    busybox_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """SAM templates and Terraform `environment` blocks often set AWS_LWA_INVOKE_MODE on the
    function: the image is right, and publish cannot see the function, so it says so."""
    workspace.commit_files(
        {
            "Dockerfile": (
                f"FROM {busybox_base}\n"
                f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
                'CMD ["httpd", "-f", "-p", "8080"]\n'
            )
        }
    )
    repo = ecr_repository()
    run = publish(workspace, registry, repo, tmp_path, "--invoke-mode", "RESPONSE_STREAM")
    assert run.code == 0, run.log
    notices = [line for line in run.stdout.splitlines() if line.startswith("::notice::")]
    assert any(
        "does not set AWS_LWA_INVOKE_MODE: the function must set AWS_LWA_INVOKE_MODE=response_stream" in n
        for n in notices
    ), run.stdout
    assert registry.manifest(repo, "preprod")[0] == run.outputs["digest"]


def test_smoke_auto_boots_an_adapter_app_on_loopback_as_lambda_would(
    workspace: Workspace,
    busybox_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """An app that listens on 127.0.0.1 only, at the adapter's port: right for Lambda, so it passes."""
    workspace.commit_files(
        {
            "Dockerfile": (
                f"FROM {busybox_base}\n"
                f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
                "RUN mkdir -p /var/task/www && echo ok > /var/task/www/ready\n"
                "ENV AWS_LWA_PORT=9000 AWS_LWA_READINESS_CHECK_PATH=/ready\n"
                "ENV AWS_LWA_INVOKE_MODE=response_stream\n"
                'CMD ["httpd", "-f", "-p", "127.0.0.1:9000", "-h", "/var/task/www"]\n'
            )
        }
    )
    repo = ecr_repository()
    run = publish(workspace, registry, repo, tmp_path, "--smoke", "auto", "--smoke-memory", "256")
    assert run.code == 0, run.log
    assert "smoke: auto chose GET :9000/ready (port from AWS_LWA_PORT" in run.stdout
    assert (
        "as Lambda runs it: read-only root with a writable /tmp, user 993:990, 256 MB, AWS_REGION=eu-west-2"
        in (run.stdout)
    )
    assert "GET :9000/ready answered HTTP 200" in run.stdout
    assert registry.manifest(repo, "preprod")[0] == run.outputs["digest"]
