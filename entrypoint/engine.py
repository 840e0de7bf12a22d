"""The Docker engine through docker-py: is it there, what did the build produce, push it.

Builds go through the docker CLI (`buildkit`), because docker-py cannot drive BuildKit;
everything else the engine does for us is here.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from entrypoint import github
from entrypoint.errors import EngineError, PushRejectedError, RegistryError

if TYPE_CHECKING:
    from entrypoint.ecr import RegistryLogin


@dataclass(frozen=True)
class LocalImage:
    id: str
    os: str
    architecture: str
    size: int
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    layers: tuple[str, ...]


class Engine:
    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    @classmethod
    def connect(cls) -> Engine:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except DockerException as exc:
            raise EngineError(
                f"the Docker engine at {where} is not reachable: {_first_line(exc)}",
                "start the Docker daemon (GitHub-hosted Ubuntu runners have one), or point "
                "DOCKER_HOST at a running engine",
            ) from exc
        return cls(client)

    @property
    def architecture(self) -> str:
        return str(self.client.info().get("Architecture", ""))

    def runs(self, platform: str) -> bool:
        """Whether the engine can start images of `platform` natively (or with emulation)."""
        arch = platform.split("/")[1]
        native = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
        if native.get(self.architecture) == arch:
            return True
        # binfmt_misc entries registered by qemu-user-static let the kernel run foreign binaries.
        qemu = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}[arch]
        return Path("/proc/sys/fs/binfmt_misc", qemu).exists()

    def image(self, reference: str) -> LocalImage:
        try:
            attrs: dict[str, Any] = self.client.api.inspect_image(reference)
        except ImageNotFound as exc:
            raise EngineError(
                f"the engine has no image '{reference}' after the build",
                "check that the build loads its result into the engine (--load)",
            ) from exc
        config = attrs.get("Config") or {}
        return LocalImage(
            id=attrs["Id"],
            os=attrs.get("Os", ""),
            architecture=attrs.get("Architecture", ""),
            size=int(attrs.get("Size", 0)),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=tuple(config.get("Env") or ()),
            layers=tuple((attrs.get("RootFS") or {}).get("Layers") or ()),
        )

    def tag(self, source: str, repository: str, tag: str) -> None:
        self.client.api.tag(source, repository, tag, force=True)

    def untag(self, reference: str) -> None:
        # Leaving a stray local tag behind is harmless; failing the publish for it is not.
        with contextlib.suppress(APIError):
            self.client.api.remove_image(reference, noprune=True)

    def push(self, repository: str, tag: str, login: RegistryLogin) -> str:
        """Push one tag and return the manifest digest the registry stored."""
        auth = {"username": login.username, "password": login.password}
        digest = ""
        reference = f"{repository}:{tag}"
        try:
            for event in self.client.api.push(repository, tag, stream=True, decode=True, auth_config=auth):
                if "error" in event or "errorDetail" in event:
                    message = (event.get("errorDetail") or {}).get("message") or event.get("error", "")
                    raise _push_error(reference, str(message))
                aux = event.get("aux") or {}
                if aux.get("Digest"):
                    digest = str(aux["Digest"])
                status = event.get("status")
                if (
                    status
                    and event.get("id")
                    and status in ("Pushed", "Layer already exists", "Mounted from")
                ):
                    github.info(f"  {event['id']}: {status}")
        except APIError as exc:
            raise _push_error(reference, _first_line(exc)) from exc
        if not digest:
            raise RegistryError(
                f"the engine pushed {reference} but reported no digest",
                "rerun; if it persists, check the engine's log",
            )
        return digest


def _first_line(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else type(exc).__name__


def _push_error(reference: str, message: str) -> RegistryError:
    lower = message.lower()
    host = reference.split("/", 1)[0]
    if any(m in lower for m in ("connection refused", "no such host", "i/o timeout", "dial tcp")):
        return RegistryError(
            f"registry {host} is unreachable while pushing {reference}: {message}",
            f"check that the registry host '{host}' is right and reachable from this runner",
        )
    if any(m in lower for m in ("unauthorized", "authentication required", "no basic auth")):
        return RegistryError(
            f"registry {host} refused the login while pushing {reference}: {message}",
            "make sure 'registry' is the ECR registry of this account and region",
        )
    if "immutable" in lower or "tag invalid" in lower:
        fix = (
            'the repository\'s tags are immutable: set image_tag_mutability = "MUTABLE" on the '
            "aws_ecr_repository (or IMMUTABLE_WITH_EXCLUSION for the moving tags)"
        )
    elif any(m in lower for m in ("denied", "unsupported", "forbidden", "method not allowed")):
        fix = (
            "the registry does not accept pushes: allow ecr:PutImage and the layer upload "
            "actions to the role, and check the registry is not read-only"
        )
    else:
        fix = "see the registry's message; rerun if it was transient"
    return PushRejectedError(f"registry {host} rejected the push of {reference}: {message}", fix)
