"""The Docker engine through docker-py: is it there, what did the build produce, push it.

Builds go through the docker CLI (`buildkit`), because docker-py cannot drive BuildKit;
everything else the engine does for us is here.

The engine is found as the docker CLI finds it (`Endpoint`): `DOCKER_HOST` (a socket,
`tcp://` with `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, or `ssh://` through the runner's ssh),
else the Docker context `DOCKER_CONTEXT` or the config's current context names. A remote
engine runs the smoke boot on its own host, so its published port is reached there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import docker
import requests
import urllib3
from docker.context import ContextAPI
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from entrypoint import cancel, github
from entrypoint.errors import EngineError, PushRejectedError, RegistryError, push_rejection_fix
from entrypoint.imagefacts import ImageFacts, env_of

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from docker import DockerClient
    from docker.tls import TLSConfig

    from entrypoint.ecr import RegistryLogin


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


@dataclass(frozen=True)
class Endpoint:
    """Where the engine is, and how docker-py reaches it (TLS settings included)."""

    url: str
    source: str  # what chose it: DOCKER_HOST, a context, or the default socket
    tls: TLSConfig | None = None

    @property
    def remote(self) -> bool:
        return not self.url.startswith(("unix://", "npipe://"))

    @property
    def host(self) -> str:
        """The host a port the engine publishes is reached on."""
        return (urlsplit(self.url).hostname or "127.0.0.1") if self.remote else "127.0.0.1"

    def describe(self) -> str:
        how = ", TLS" if self.tls is not None else ""
        return f"{self.url} ({self.source}{how}{', remote' if self.remote else ''})"

    def client(self, timeout: float) -> docker.DockerClient:
        # ssh:// through the runner's own ssh (its config, keys and known hosts).
        settings: dict[str, Any] = {
            "base_url": self.url, "tls": self.tls or False, "timeout": timeout, "use_ssh_client": True,
        }  # fmt: skip
        if self.tls is None or not self.tls.ca_cert:
            return docker.DockerClient(**settings)
        # requests lets REQUESTS_CA_BUNDLE (which many runners set, for their proxy) replace
        # the engine's own CA from DOCKER_CERT_PATH, so the environment is kept out; docker-py
        # would ask the engine for its API version before that could be said.
        if self.url not in _API_VERSIONS:
            probe = docker.DockerClient(version=_MIN_API_VERSION, **settings)
            probe.api.trust_env = False
            try:
                _API_VERSIONS[self.url] = str(probe.version()["ApiVersion"])
            finally:
                probe.close()
        client = docker.DockerClient(version=_API_VERSIONS[self.url], **settings)
        client.api.trust_env = False
        return client


# docker-py's oldest API version; every engine answers /version at it.
_MIN_API_VERSION = "1.24"
_API_VERSIONS: dict[str, str] = {}


def find_endpoint(environ: Mapping[str, str]) -> Endpoint:
    """The engine the docker CLI would use, by the CLI's own order of settings."""
    if environ.get("DOCKER_HOST"):
        # docker-py reads the TLS settings as the CLI does; the URL is kept as it was given.
        settings = docker.utils.kwargs_from_env(environment=dict(environ))
        return Endpoint(environ["DOCKER_HOST"], "DOCKER_HOST", settings.get("tls") or None)
    name = environ.get("DOCKER_CONTEXT") or _current_context(environ)
    if name and name != "default":
        context = ContextAPI.get_context(name)
        if context is None:
            raise EngineError(
                f"the Docker context '{name}' does not exist",
                "create it (docker context create) before this step, or unset DOCKER_CONTEXT",
            )
        return Endpoint(str(context.Host), f"context {name}", context.TLSConfig or None)
    return Endpoint("unix:///var/run/docker.sock", "default socket")


def _current_context(environ: Mapping[str, str]) -> str:
    config = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads(config.read_text()).get("currentContext") or "")
    return ""


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

    @classmethod
    def connect(cls, environ: Mapping[str, str] | None = None) -> Engine:
        try:
            endpoint = find_endpoint(os.environ if environ is None else environ)
        except (DockerException, OSError, KeyError) as exc:
            raise EngineError(
                f"cannot read the Docker engine's settings: {_first_line(exc)}",
                "check DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH and DOCKER_CONTEXT",
            ) from exc
        try:
            client = endpoint.client(timeout=120)
            client.ping()
        except DockerException as exc:
            raise EngineError(
                f"the Docker engine at {endpoint.describe()} is not reachable: {_first_line(exc)}",
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

    def facts(self, reference: str, adapter_path: str) -> ImageFacts:
        """Facts of an image in the engine: its config, its uncompressed size, and whether it
        holds the file at `adapter_path` (the Lambda Web Adapter)."""
        try:
            attrs: dict[str, Any] = self.client.api.inspect_image(reference)
        except ImageNotFound as exc:
            raise EngineError(
                f"the engine has no image '{reference}' after the build",
                "check that the build loads its result into the engine (--load)",
            ) from exc
        config = attrs.get("Config") or {}
        return ImageFacts(
            reference=reference,
            media_type=None,
            os=attrs.get("Os", ""),
            architecture=attrs.get("Architecture", ""),
            size=int(attrs.get("Size", 0)),
            size_compressed=False,
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=env_of(config.get("Env") or ()),
            has_web_adapter=self.has_file(str(attrs["Id"]), adapter_path),
        )

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

    def push(self, repository: str, tag: str, login: RegistryLogin) -> str:
        """Push one tag and return the manifest digest the registry stored.

        The engine's push reports progress as it goes. A push that makes none for
        `PUSH_STALL_S` (a reset it keeps retrying, a connection that stopped moving) is
        dropped and asked for again, within `PUSH_BUDGET_S`: layers already stored are not
        sent again, and an upload still in flight is joined, not restarted (the engine keeps
        it), so a registry that recovers within the budget completes the push. Then one line
        names the registry, the layer and what to check."""
        reference = f"{repository}:{tag}"
        started = time.monotonic()
        deadline = started + PUSH_BUDGET_S
        stall: _Stalled | None = None
        tries = 0
        while tries < PUSH_TRIES and time.monotonic() < deadline:
            tries += 1
            try:
                return self._push_once(repository, tag, login, deadline)
            except _Stalled as stalled:
                stall = stalled
                if tries < PUSH_TRIES and time.monotonic() < deadline:
                    github.warning(
                        f"the push of {reference} {stalled.what}; asking the engine again "
                        f"({tries + 1}/{PUSH_TRIES})"
                    )
        host = reference.split("/", 1)[0]
        raise RegistryError(
            f"pushing {reference} to {host} did not finish: it {stall.what if stall else 'ran out of time'} "
            f"({tries} tries in {time.monotonic() - started:.0f} s); no environment tag was moved",
            f"check the network path from this runner to {host} (proxy, VPN, MTU, NAT timeouts) "
            "and the registry's health, then rerun",
            temporary=True,
        )

    def _push_once(self, repository: str, tag: str, login: RegistryLogin, deadline: float) -> str:
        auth = {"username": login.username, "password": login.password}
        reference = f"{repository}:{tag}"
        # A client of its own whose read timeout is the stall limit: an engine that sends
        # nothing at all for that long is stuck, whatever the layer.
        api = self.endpoint.client(timeout=PUSH_STALL_S).api
        # The push's streaming response, kept through a requests hook (the docker-py client
        # is a requests session) so that it can be closed: the engine cancels a push when
        # its caller hangs up, uploads in flight included.
        responses: list[requests.Response] = []
        api.hooks["response"].append(lambda response, *args, **kwargs: responses.append(response))
        progress = _Progress()

        def hang_up() -> None:
            for response in responses:
                response.close()

        try:
            with cancel.stopper(hang_up):
                digest = self._follow(api, (repository, tag), auth, progress, deadline)
        except APIError as exc:
            raise _push_error(reference, _first_line(exc)) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            cancel.raise_if_requested()
            raise _Stalled(f"sent no word for {PUSH_STALL_S:.0f} s{progress.where()}") from exc
        finally:
            # Closing the connection cancels the engine's push; the next try starts clean.
            for response in responses:
                response.close()
            api.close()
        if not digest:
            raise RegistryError(
                f"the engine pushed {reference} but reported no digest",
                "rerun; if it persists, check the engine's log",
            )
        return digest

    @staticmethod
    def _follow(
        api: Any, pushed: tuple[str, str], auth: dict[str, str], progress: _Progress, deadline: float
    ) -> str:
        """Read the push's progress to its end; the digest it reports."""
        repository, tag = pushed
        reference = f"{repository}:{tag}"
        digest = ""
        for event in api.push(repository, tag, stream=True, decode=True, auth_config=auth):
            cancel.raise_if_requested()
            if "error" in event or "errorDetail" in event:
                message = (event.get("errorDetail") or {}).get("message") or event.get("error", "")
                raise _push_error(reference, str(message))
            aux = event.get("aux") or {}
            if aux.get("Digest"):
                digest = str(aux["Digest"])
            progress.see(event)
            status = event.get("status")
            if status and event.get("id") and status in ("Pushed", "Layer already exists", "Mounted from"):
                github.info(f"  {event['id']}: {status}")
            now = time.monotonic()
            if now - progress.at > PUSH_STALL_S:
                raise _Stalled(f"made no progress for {PUSH_STALL_S:.0f} s{progress.where()}")
            if now > deadline:
                raise _Stalled(f"was still running after {PUSH_BUDGET_S:.0f} s{progress.where()}")
        return digest


# A push with no progress for this long is stopped and tried again; the whole push, tries
# included, ends within the budget, so its error line comes within 90 s of the fault.
PUSH_STALL_S = 20.0
PUSH_BUDGET_S = 75.0
PUSH_TRIES = 3


def _layer_done(status: str) -> bool:
    return status in ("Pushed", "Layer already exists") or status.startswith("Mounted from")


class _Stalled(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Progress:
    """When the push last moved: bytes sent for a layer, or a layer done."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self._sent: dict[str, int] = {}
        self._open: dict[str, str] = {}  # layer -> its last status, while not done

    def see(self, event: dict[str, Any]) -> None:
        layer, status = str(event.get("id") or ""), str(event.get("status") or "")
        detail = event.get("progressDetail") or {}
        current = int(detail.get("current") or 0)
        moved = _layer_done(status)
        if status == "Pushing" and current > self._sent.get(layer, -1):
            self._sent[layer] = current
            moved = True
        if moved or (event.get("aux") or {}).get("Digest"):
            self.at = time.monotonic()
        if not layer:
            return
        if _layer_done(status):
            self._open.pop(layer, None)
        else:
            total = int(detail.get("total") or 0)
            size = f", {current / 1e6:.1f} of {total / 1e6:.1f} MB sent" if total else ""
            self._open[layer] = status + size

    def where(self) -> str:
        """The layer the push is stuck on: the last one still open."""
        if not self._open:
            return ""
        layer, status = list(self._open.items())[-1]
        return f" at layer {layer} ({status})"


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
    fix = push_rejection_fix(0, (), message)
    return PushRejectedError(f"registry {host} rejected the push of {reference}: {message}", fix)
