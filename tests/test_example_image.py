"""The example SSE streaming Lambda, published by the action on a locally made Python base,
then booted: /health answers and the SSE route streams events."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import requests

from tests.support.run import EXAMPLE, example_build_args, publish

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace


def wait_for_health(base: str, container: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    logs = container.logs().decode(errors="replace")  # type: ignore[attr-defined]
    raise AssertionError(f"/health did not answer within {timeout} s; container log:\n{logs}")


def test_example_image_publishes_boots_and_streams(
    workspace: Workspace,
    python_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    sha = workspace.add_tree(EXAMPLE, "service", "example service")
    repo = ecr_repository()
    run = publish(
        workspace.path,
        registry.host,
        tmp_path,
        *example_build_args(python_base, adapter_image),
        repository=repo,
        dockerfile="service/Dockerfile",
    )
    assert run.code == 0, run.log
    digest = run.outputs["digest"]
    _, _, manifest = registry.manifest(repo, digest)
    config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
    assert "AWS_LWA_INVOKE_MODE=response_stream" in config["config"]["Env"]

    container = docker_client.containers.run(
        f"{repo}:{sha}",
        detach=True,
        ports={"8080/tcp": ("127.0.0.1", None)},
        environment={"SSE_EVENT_DELAY_SECONDS": "0"},
    )
    try:
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        base = f"http://127.0.0.1:{port}"
        wait_for_health(base, container)
        assert requests.get(f"{base}/health", timeout=5).json() == {"status": "ok"}
        with requests.get(f"{base}/stream", params={"count": 3}, stream=True, timeout=10) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines: list[str] = []
            for line in response.iter_lines(decode_unicode=True):
                if line == "" and lines:
                    break  # the first complete event
                lines.append(line)
        fields = dict(line.split(": ", 1) for line in lines)
        assert fields["id"] == "1"
        assert fields["event"] == "tick"
        assert json.loads(fields["data"])["seq"] == 1
    finally:
        container.remove(force=True)
