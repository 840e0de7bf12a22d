"""The Docker engine through docker-py, the only caller of it: is it there, what did the
build produce, run a container, push it.

Builds go through the docker CLI (`buildkit`), because docker-py cannot drive BuildKit;
everything else the engine does for us is in this package: `endpoint` finds the engine as
the docker CLI would (a remote one runs the smoke boot on its own host, so its published
port is reached there), `push` pushes one tag under a watchdog.

May import the ground floor (github, cancel, errors) and a registry login's type; nothing
above it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from entrypoint.engine import push
from entrypoint.engine.endpoint import ENGINE_VARIABLES as ENGINE_VARIABLES
from entrypoint.engine.endpoint import Endpoint, find_endpoint, first_line
from entrypoint.errors import EngineError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    import docker
    from docker import DockerClient

    from entrypoint.engine.push import Pushed
    from entrypoint.registry.ecr import RegistryLogin


class ContainerError(Exception):
    """The engine refused an operation on a container; the message is the engine's."""


class Container:
    """A container the action made (the smoke boot's), through the engine: start it, read
    its state and log, run a command in it, find its published port, remove it."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self.short_id = str(container.short_id)

    def start(self) -> None:
        try:
            self._container.start()
        except APIError as exc:
            raise ContainerError(str(exc.explanation or exc)) from exc

    def state(self) -> dict[str, Any]:
        """The engine's `State` (Status, ExitCode, OOMKilled, ...), as fresh as it can tell."""
        with contextlib.suppress(APIError):
            self._container.reload()
        state: dict[str, Any] = self._container.attrs.get("State") or {}
        return state

    def exec(self, argv: list[str]) -> tuple[int, bytes]:
        try:
            code, output = self._container.exec_run(argv, demux=False)
        except APIError as exc:
            raise ContainerError(str(exc)) from exc
        return int(code or 0), output or b""

    def exec_stream(self, argv: list[str]) -> ExecStream:
        """Start a command in the container; its output is read as the engine forwards it."""
        api = self._container.client.api
        try:
            exec_id = str(api.exec_create(self._container.id, argv)["Id"])
            frames = api.exec_start(exec_id, stream=True, demux=True)
        except APIError as exc:
            raise ContainerError(str(exc)) from exc
        return ExecStream(api, exec_id, frames)

    def logs(self, tail: int) -> bytes:
        try:
            return bytes(self._container.logs(tail=tail))
        except APIError:
            return b""

    def host_port(self, port: int) -> str | None:
        """The runner's port published for `port`/tcp, if any."""
        bindings = (self._container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp")
        return str(bindings[0]["HostPort"]) if bindings else None

    def remove(self) -> str | None:
        """Remove it (running or not); the engine's words when it could not."""
        try:
            self._container.remove(force=True)
        except NotFound:
            return None
        except APIError as exc:
            return str(exc)
        return None


class ExecStream:
    """A command running in a container: its output piece by piece, as the command wrote it
    (what a streaming probe times), then its exit code."""

    def __init__(self, api: Any, exec_id: str, frames: Iterator[tuple[bytes | None, bytes | None]]) -> None:
        self._api = api
        self._id = exec_id
        self._frames = frames

    def pieces(self) -> Iterator[tuple[bytes, bytes]]:
        """(stdout, stderr) pieces, one of them empty, until the command ends; ContainerError
        when the engine drops the stream (the container was removed)."""
        try:
            for out, err in self._frames:
                yield out or b"", err or b""
        except (APIError, OSError, requests.RequestException) as exc:
            raise ContainerError(str(exc)) from exc

    def exit_code(self) -> int | None:
        """None while it runs, or when the engine cannot tell."""
        try:
            found = self._api.exec_inspect(self._id)
        except (APIError, requests.RequestException):
            return None
        return None if found.get("Running") else int(found.get("ExitCode") or 0)


class Engine:
    def __init__(self, client: docker.DockerClient, endpoint: Endpoint | None = None) -> None:
        self.client = client
        self.endpoint = endpoint or Endpoint("unix:///var/run/docker.sock", "default socket")

    def create_container(self, image: str, **settings: Any) -> Container:
        """A created (not started) container of `image`; `settings` as docker-py's."""
        try:
            return Container(self.client.containers.create(image, detach=True, **settings))
        except ImageNotFound as exc:
            raise EngineError(f"the engine has no image '{image}' to run", "build the image first") from exc
        except APIError as exc:
            raise ContainerError(str(exc.explanation or exc)) from exc

    @functools.cached_property
    def containerd_store(self) -> bool:
        """Whether the engine keeps images in containerd's store (Docker 29's default on new
        installs; `features.containerd-snapshotter`) rather than its classic graph drivers:
        there an image's ID is its manifest's digest, its push can carry an index, and the
        docker driver of buildx exports every cache type."""
        status = self.client.info().get("DriverStatus") or []
        return any("io.containerd.snapshotter" in str(value) for _, value in status)

    def image_id(self, reference: str) -> str:
        """The ID the engine itself gives the image a tag names. A build's `--iidfile` is no
        substitute: buildx 0.29 writes the config's digest there, which the containerd store
        does not know an image by (docker/buildx#3952)."""
        return str(self.inspect_image(reference)["Id"])

    def push(self, repository: str, tag: str, login: RegistryLogin, platform: str | None = None) -> Pushed:
        """Push one tag; the digest the registry stored and the layers it uploaded (see
        `push.push`). `platform`: the image manifest to push, where the store holds an index
        (the containerd store)."""
        return push.push(self.endpoint, repository, tag, login, platform if self.containerd_store else None)

    @classmethod
    def connect(cls, environ: Mapping[str, str] | None = None) -> Engine:
        try:
            endpoint = find_endpoint(os.environ if environ is None else environ)
        except (DockerException, OSError, KeyError) as exc:
            raise EngineError(
                f"cannot read the Docker engine's settings: {first_line(exc)}",
                "check DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH and DOCKER_CONTEXT",
            ) from exc
        if endpoint.url.startswith("ssh://") and importlib.util.find_spec("paramiko") is None:
            raise EngineError(
                f"the Docker engine is reached over ssh ({endpoint.describe()}), and this Python "
                "has no ssh support for docker-py (paramiko)",
                "set DOCKER_HOST (or the Docker context) in the job's env before the action's "
                "step, or name the context in its builder input, so its set-up installs "
                "lock/ssh.txt; running the entrypoint yourself, "
                "pip install 'docker[ssh]'",
            )
        try:
            client = endpoint.client(timeout=120)
            client.ping()
        except (DockerException, requests.RequestException) as exc:
            raise EngineError(
                f"the Docker engine at {endpoint.describe()} is not reachable: {first_line(exc)}",
                "start the Docker daemon (GitHub-hosted Ubuntu runners have one), or point "
                "DOCKER_HOST (with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for TLS) at a running engine",
            ) from exc
        return cls(client, endpoint)

    @property
    def architecture(self) -> str:
        return str(self.client.info().get("Architecture", ""))

    def runs(self, platform: str) -> bool:
        """Whether the engine can start images of `platform` natively (or with emulation)."""
        arch = platform.split("/")[1]
        native = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
        if native.get(self.architecture) == arch:
            return True
        if self.endpoint.remote:
            return False  # this runner's binfmt entries say nothing of another host's kernel
        # binfmt_misc entries registered by qemu-user-static let the kernel run foreign binaries.
        qemu = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}[arch]
        return Path("/proc/sys/fs/binfmt_misc", qemu).exists()

    def inspect_image(self, reference: str) -> dict[str, Any]:
        """The engine's record of an image (config, size, id), for the checks to read."""
        try:
            attrs: dict[str, Any] = self.client.api.inspect_image(reference)
        except ImageNotFound as exc:
            raise EngineError(
                f"the engine has no image '{reference}' after the build",
                "check that the build loads its result into the engine (--load)",
            ) from exc
        return attrs

    def history(self, reference: str) -> list[dict[str, Any]]:
        """The image's layers as the engine's history lists them (size, the instruction that
        made each); empty when the engine keeps none (an imported image)."""
        try:
            steps: list[dict[str, Any]] = self.client.api.history(reference)
        except APIError:
            return []
        return steps

    def has_file(self, image_id: str, path: str) -> bool:
        """Look for a file in the image's merged filesystem through a created, never started,
        container: the engine resolves layers and whiteouts, and nothing in the image runs."""
        try:
            # The entrypoint only satisfies "no command specified" for images without one.
            created = self.client.api.create_container(
                image_id,
                entrypoint=["/lambda-checks-never-started"],
                network_disabled=True,
                labels={"lambda-image-publish.purpose": "file-check"},
            )
        except APIError as exc:
            raise EngineError(
                f"the engine could not create a container from {image_id[:19]} to look for {path}: "
                f"{exc.explanation or exc}",
                "check the engine's disk space and log, then rerun",
            ) from exc
        container_id = str(created["Id"])
        try:
            # HEAD /containers/{id}/archive is the engine's stat; docker-py only offers it
            # inside get_archive, which would also start streaming the file.
            api = self.client.api
            response = api.head(
                f"{api.base_url}/v{api.api_version}/containers/{container_id}/archive",
                params={"path": path},
            )
            if response.status_code == 404:
                return False
            if response.status_code != 200:
                raise EngineError(
                    f"the engine answered HTTP {response.status_code} when asked for {path} in "
                    f"{image_id[:19]}",
                    "check the engine's log, then rerun",
                )
            return True
        finally:
            with contextlib.suppress(NotFound):
                self.client.api.remove_container(container_id, force=True)

    def tag(self, source: str, repository: str, tag: str) -> None:
        self.client.api.tag(source, repository, tag, force=True)

    def untag(self, reference: str) -> None:
        # Leaving a stray local tag behind is harmless; failing the publish for it is not.
        with contextlib.suppress(APIError):
            self.client.api.remove_image(reference, noprune=True)


def resolve_with_engine(client: DockerClient) -> Callable[[str], str | None]:
    """A resolver asking the Docker engine: the registry's manifest digest first, else the
    local image ID. For the registry, the engine uses the credentials docker-py sends: those
    of the docker CLI config (DOCKER_CONFIG) as it was when `client` was made.

    The registry digest is what a fresh runner's build pulls. A builder with the `docker`
    driver would use a local image of that name instead, without pulling; the digest still
    moves when the registry's image does, which is the update worth rebuilding for.
    """
    known: dict[str, str | None] = {}

    def resolve(ref: str) -> str | None:
        if ref not in known:
            known[ref] = _identity(client, ref)
        return known[ref]

    return resolve


def _identity(client: DockerClient, ref: str) -> str | None:
    # A digest-pinned reference is its own identity: no need to ask anyone.
    pinned = re.search(r"@(sha256:[0-9a-f]{64})$", ref)
    if pinned:
        return pinned.group(1)
    try:
        found = client.api.inspect_distribution(ref)
        digest = (found.get("Descriptor") or {}).get("digest")
        if digest:
            return str(digest)
    except (DockerException, requests.RequestException):
        pass  # no registry, no credentials, or no such image there: try the engine's own
    try:
        image_id = client.api.inspect_image(ref).get("Id")
    except (DockerException, requests.RequestException):
        return None
    return str(image_id) if image_id else None
