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
from docker.constants import DEFAULT_MAX_POOL_SIZE, DEFAULT_NUM_POOLS_SSH
from docker.tls import TLSConfig

from entrypoint.errors import EngineError

if TYPE_CHECKING:
    from collections.abc import Mapping


# The settings that choose the engine, in the CLI's order of precedence.
ENGINE_VARIABLES = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")

# Everything a process the action starts to reach the engine (the docker CLI and its
# buildx plugin, the `ssh` of an ssh:// engine, a credential helper) gets from the job's
# environment: an allow-list, so the AWS credentials, GITHUB_TOKEN and other steps' tokens
# reach none of them. What each name is for: finding the CLI, its config, plugins and
# builders (PATH, HOME, DOCKER_*, BUILDX_*), the engine (DOCKER_HOST, DOCKER_CONTEXT, TLS,
# rootless Docker's socket in XDG_RUNTIME_DIR), the network (proxies, the CA bundle) and,
# for an engine reached over ssh, the runner's ssh agent (ssh reads its keys and
# known_hosts from the user's home; the docker CLI runs ssh with its own environment).
CLIENT_ENVIRONMENT = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_API_VERSION",
    "DOCKER_CONFIG",
    "BUILDX_BUILDER",
    "BUILDX_CONFIG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SSH_AUTH_SOCK",
)


def client_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of `environ`: the whole environment of a child that talks to
    the engine."""
    return {name: environ[name] for name in CLIENT_ENVIRONMENT if environ.get(name)}


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
            "credstore_env": _credential_helper_environment(os.environ),
        }  # fmt: skip
        ssh = self.url.startswith("ssh://")
        own_ca = self.tls is not None and bool(self.tls.ca_cert)
        if not ssh and not own_ca:
            return docker.DockerClient(**settings)
        # Both need a change docker-py offers no setting for, made on the client before its
        # first request; docker-py would ask the engine for its API version before that.
        if self.url not in _API_VERSIONS:
            probe = self._adjusted(docker.DockerClient(version=_MIN_API_VERSION, **settings), timeout)
            try:
                # Unversioned: Docker 29 refuses /v1.24/... (its floor is API 1.44), and an
                # unversioned /version is answered by every engine.
                _API_VERSIONS[self.url] = str(probe.api.version(api_version=False)["ApiVersion"])
            finally:
                probe.close()
        return self._adjusted(docker.DockerClient(version=_API_VERSIONS[self.url], **settings), timeout)

    def _adjusted(self, client: docker.DockerClient, timeout: float) -> docker.DockerClient:
        if self.tls is not None and self.tls.ca_cert:
            # requests lets REQUESTS_CA_BUNDLE (which many runners set, for their proxy)
            # replace the engine's own CA from DOCKER_CERT_PATH, so the environment is kept out.
            client.api.trust_env = False
        if self.url.startswith("ssh://"):
            # docker-py runs `ssh` with the whole of os.environ (the AWS credentials of the
            # job included); this transport runs it with the allow-list.
            client.api.mount("http+docker://ssh", _ssh_adapter(self.url, timeout))
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
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
    env |= client_environment(environ)
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


def _credential_helper_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What docker-py lays over os.environ for a credential helper of the job's Docker
    config (`docker-credential-*`, run to resolve a base image's digest): docker-py can only
    add to os.environ there, so every name off the allow-list is emptied, which programs
    read as unset. The docker CLI runs the same helpers with the allow-list alone."""
    return {name: "" for name in environ if name not in CLIENT_ENVIRONMENT}


def _ssh_adapter(url: str, timeout: float) -> Any:
    """docker-py's ssh transport (`use_ssh_client`), its `ssh` run with the allow-listed
    environment instead of a copy of os.environ."""
    # docker-py's ssh module imports paramiko, which the set-up installs for ssh engines only.
    from docker.transport import sshconn  # noqa: PLC0415 - paramiko is there for ssh engines only

    environment = client_environment(os.environ)

    class Connection(sshconn.SSHConnection):  # type: ignore[misc]
        def connect(self) -> None:
            sock = sshconn.SSHSocket(self.ssh_host)
            sock.settimeout(self.timeout)
            argv = [
                "ssh",
                *(["-l", sock.user] if sock.user else []),
                *(["-p", sock.port] if sock.port else []),
            ]
            # A process group of its own (docker-py's ssh ignores SIGINT, the docker CLI's
            # has its own group too): a Ctrl-C or a runner's SIGINT to the action's group
            # leaves the connection up for the clean-up (the smoke container's removal).
            sock.proc = subprocess.Popen(
                [*argv, "--", sock.host, "docker system dial-stdio"],
                env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
            self.sock = sock

    class Pool(sshconn.SSHConnectionPool):  # type: ignore[misc]
        def _new_conn(self) -> Connection:
            return Connection(None, self.timeout, self.ssh_host)

    class Adapter(sshconn.SSHHTTPAdapter):  # type: ignore[misc]
        def get_connection(self, url: str, proxies: Any = None) -> Pool:
            # As docker-py's shell_out adapter: one pool per request, each connection an ssh.
            return Pool(None, timeout=self.timeout, maxsize=self.max_pool_size, host=self.ssh_host)

    return Adapter(
        url,
        timeout,
        pool_connections=DEFAULT_NUM_POOLS_SSH,
        max_pool_size=DEFAULT_MAX_POOL_SIZE,
        shell_out=True,
    )


def _current_context(environ: Mapping[str, str]) -> str:
    config = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads(config.read_text()).get("currentContext") or "")
    return ""


def first_line(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else type(exc).__name__
