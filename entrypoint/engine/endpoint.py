"""Where the Docker engine is, found as the docker CLI finds it: `DOCKER_HOST` (a socket,
`tcp://` with `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, or `ssh://` through the runner's ssh),
else the Docker context `DOCKER_CONTEXT` or the config's current context names."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import docker
from docker.tls import TLSConfig

from entrypoint.errors import EngineError

if TYPE_CHECKING:
    from collections.abc import Mapping


# The settings that choose the engine, in the CLI's order of precedence.
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")


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
                # Unversioned: Docker 29 refuses /v1.24/... (its floor is API 1.44), and an
                # unversioned /version is answered by every engine.
                _API_VERSIONS[self.url] = str(probe.api.version(api_version=False)["ApiVersion"])
            finally:
                probe.close()
        client = docker.DockerClient(version=_API_VERSIONS[self.url], **settings)
        client.api.trust_env = False
        return client


# docker-py's oldest API version, for the client that only asks the engine for its own.
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
        return _context_endpoint(name, environ)
    return Endpoint("unix:///var/run/docker.sock", "default socket")


def _context_endpoint(name: str, environ: Mapping[str, str]) -> Endpoint:
    """A context as the CLI stores it, read by the CLI: docker-py looks for contexts only
    beside a config.json, and `docker context create` writes none, so on a runner whose
    Docker folder holds nothing but contexts docker-py would find none."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), **environ}
    cli = shutil.which("docker", path=env["PATH"])
    if cli is None:
        raise EngineError(
            f"the Docker context '{name}' is chosen, and the docker CLI that reads contexts is not on PATH",
            "install Docker on the runner (GitHub-hosted Ubuntu runners have it)",
        )
    try:
        inspect = subprocess.run(
            [cli, "context", "inspect", name],
            capture_output=True, text=True, check=False, timeout=30, env=env,
        )  # fmt: skip
        (meta,) = json.loads(inspect.stdout) if inspect.returncode == 0 else [None]
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise EngineError(
            f"the docker CLI cannot read the Docker context '{name}': {exc}", "reinstall Docker"
        ) from exc
    if not isinstance(meta, dict) or not meta.get("Endpoints", {}).get("docker", {}).get("Host"):
        raise EngineError(
            f"the Docker context '{name}' does not exist",
            "create it (docker context create) before this step, or unset DOCKER_CONTEXT",
        )
    engine = meta["Endpoints"]["docker"]
    folder = Path(meta.get("Storage", {}).get("TLSPath") or "/nonexistent") / "docker"
    files = {kind: folder / f"{kind}.pem" for kind in ("ca", "cert", "key")}
    tls = None
    if all(path.is_file() for path in files.values()):
        tls = TLSConfig(
            client_cert=(str(files["cert"]), str(files["key"])),
            ca_cert=str(files["ca"]),
            verify=not engine.get("SkipTLSVerify", False),
        )
    return Endpoint(str(engine["Host"]), f"context {name}", tls)


def _current_context(environ: Mapping[str, str]) -> str:
    config = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads(config.read_text()).get("currentContext") or "")
    return ""


def first_line(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else type(exc).__name__
