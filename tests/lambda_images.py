"""Real images for the Lambda checks, smoke and verify tests: built with BuildKit from the
local bases, pushed with the engine, removed afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from typing import TYPE_CHECKING

import docker.errors

from tests.support.stack import ECR_PASSWORD, ECR_USER, docker_cli

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

    from tests.support.stack import Registry


class Images:
    """Builds images under unique names and removes every one of them on `cleanup`."""

    def __init__(self, client: DockerClient, workdir: Path) -> None:
        self.client = client
        self.workdir = workdir
        self.made: list[str] = []

    def build(
        self,
        dockerfile: str,
        *,
        name: str = "lambda-checks/test",
        files: dict[str, str] | None = None,
        platform: str | None = None,
    ) -> str:
        tag = f"{name}:{secrets.token_hex(4)}"
        context = self.workdir / tag.replace("/", "_").replace(":", "_")
        context.mkdir(parents=True)
        (context / "Dockerfile").write_text(dockerfile)
        for path, text in (files or {}).items():
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            (context / path).write_text(text)
        argv = [docker_cli(), "build", "--progress=plain", "-t", tag]
        if platform:
            argv += ["--platform", platform]
        done = subprocess.run(
            [*argv, str(context)],
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        self.made.append(tag)
        return tag

    def push(self, image: str, registry: Registry, repository: str, tag: str = "v1") -> str:
        """Push `image` as registry/repository:tag; returns the manifest digest."""
        remote = f"{registry.host}/{repository}"
        self.client.api.tag(image, remote, tag)
        self.made.append(f"{remote}:{tag}")
        auth = {"username": ECR_USER, "password": ECR_PASSWORD}
        for event in self.client.api.push(remote, tag, stream=True, decode=True, auth_config=auth):
            assert "error" not in event, event
        return registry.manifest(repository, tag)[0]

    def containers_of(self, image: str) -> list[str]:
        return [c.id for c in self.client.containers.list(all=True, filters={"ancestor": image})]

    def cleanup(self) -> None:
        for tag in reversed(self.made):
            with contextlib.suppress(docker.errors.APIError):
                self.client.images.remove(tag, force=True)
