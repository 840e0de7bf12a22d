"""The Docker engine the benchmark runs on, and turning it into what a new GitHub runner has.

`open_engine(kind)` gives a `BenchEngine`: the host's engine (Debian 12's Docker 20.10, the
one the rest of the stack uses), or Debian sid's Docker 28.5 + buildx 0.29 with the classic
or the containerd image store, started for the whole run by tests/support/engines.py. Every
docker CLI call and docker-py client of the benchmark goes through it: `env` (DOCKER_HOST,
sid's CLI first on PATH), `docker` (the CLI's path), `client()`, `docker_config()` (an empty
config folder that still finds the engine's buildx), `pid()` (restart detection).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import docker
import docker.errors
import requests

from tests.support.engines import SID_DOCKER, sid_engine, unavailable_reason
from tests.support.stack import REPO_ROOT, docker_cli

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from docker import DockerClient

    from tests.support.engines import Engine

EngineKind = Literal["host", "classic", "containerd"]
ENGINE_KINDS: tuple[EngineKind, ...] = get_args(EngineKind)


def _repository_name(reference: str) -> str:
    """`127.0.0.1:5000/name:tag` or `name:tag` -> `name` (the last path part)."""
    return reference.rpartition(":")[0].rpartition("/")[2]


def our_tags(client: DockerClient, prefix: str) -> list[str]:
    """Every local tag of a repository this benchmark made (their names start with ``prefix``)."""
    return [
        tag
        for image in client.images.list()
        for tag in image.tags
        if _repository_name(tag).startswith(prefix)
    ]


def empty_engine(client: DockerClient, prefix: str, *, prune_cache: bool = True) -> None:
    """Remove our images and (by default) all build cache; base images stay.

    Only our tags are removed, by name, so images other processes use are left alone; an
    image goes when its last tag does. Build cache cannot be told apart by owner, so all
    of it goes, as in tests/test_republish.py (`all=True`: used-before records too).
    """
    for tag in our_tags(client, prefix):
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(tag, force=True)
    if prune_cache:
        client.api.prune_builds(all=True)
    left = our_tags(client, prefix)
    if left:
        raise RuntimeError(f"images still in the engine after emptying it: {', '.join(left)}")


# dockerd writes its pid here; a new pid means the engine restarted (e.g. after a crash).
DOCKERD_PIDFILE = Path("/var/run/docker.pid")


def fresh_page_cache() -> bool:
    """Drop the kernel's page cache (root only; False where it cannot): a fresh runner has
    nothing cached, and on these VMs memory the guest frees goes back to the host, so without
    the drop each sample's writes cost more than the one before."""
    if os.geteuid() != 0:
        return False
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def engine_pid(pidfile: Path = DOCKERD_PIDFILE) -> str:
    try:
        return pidfile.read_text().strip()
    except OSError:
        return ""


def engine_answers(client: DockerClient) -> bool:
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException):
        return False


def wait_for_engine(client: DockerClient, timeout: float = 180.0, *, restart: bool = True) -> None:
    """Until the engine answers again; after 30 s, `scripts/stack.sh up` (re)starts it
    (the host's engine only: `restart=False` for one this process started)."""
    started = time.monotonic()
    restarted = not restart
    while time.monotonic() - started < timeout:
        if engine_answers(client):
            return
        if not restarted and time.monotonic() - started > 30:
            subprocess.run(["bash", str(REPO_ROOT / "scripts" / "stack.sh"), "up"], check=False)
            restarted = True
        time.sleep(2)
    raise RuntimeError(f"the Docker engine did not answer again within {timeout:.0f} s")


@dataclass
class BenchEngine:
    """The engine of a benchmark run and how every process of the run reaches it."""

    kind: EngineKind
    docker: str  # the docker CLI of this engine (absolute path)
    env: dict[str, str] = field(default_factory=dict)  # on top of the run's environment
    sid: Engine | None = None
    _client: DockerClient | None = None

    def client(self) -> DockerClient:
        """One docker-py client to this engine for the whole run (10 min timeout)."""
        if self._client is None:
            if self.sid is not None:
                self._client = self.sid.client(timeout=600)
            else:
                self._client = docker.from_env(timeout=600)
        return self._client

    def pid(self) -> str:
        """dockerd's pid: a new one means the engine restarted under a sample."""
        if self.sid is not None:
            return engine_pid(self.sid.root / "dockerd.pid")
        return engine_pid()

    def alive(self) -> bool:
        """False when the engine's process is gone for good (a sid engine is not restarted)."""
        process = self.sid.process if self.sid is not None else None
        return process is None or process.poll() is None

    def wait(self) -> None:
        if not self.alive():
            assert self.sid is not None
            raise RuntimeError(f"the sid engine ({self.kind}) exited:\n{self.sid.log()}")
        wait_for_engine(self.client(), restart=self.sid is None)

    def forward(self, port: int) -> None:
        """Make the host's 127.0.0.1:`port` (a registry) reachable from the engine."""
        if self.sid is not None:
            self.sid.forward(port)

    def load_image(self, name: str) -> None:
        """Copy a base image made on the host's engine into this one (no-op on the host)."""
        if self.sid is not None:
            self.sid.load_image(name)

    def docker_config(self, folder: Path) -> Path:
        """A new, empty DOCKER_CONFIG folder (nobody logged in), whose CLI still finds this
        engine's buildx: sid's cli-plugins are linked in, as in the tests."""
        folder.mkdir()
        if self.sid is not None:
            self.sid.make_docker_config(folder)
        return folder

    def cli_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with this engine's variables; sid's CLI goes before any other docker."""
        env = dict(base)
        if self.sid is not None:
            env |= self.env
            env["PATH"] = f"{self.sid.cli_bin}{os.pathsep}{base.get('PATH', '')}"
        return env

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@contextlib.contextmanager
def open_engine(kind: EngineKind) -> Iterator[BenchEngine]:
    """The host's engine as it is, or sid's started (and stopped after) with `kind`'s store."""
    if kind == "host":
        engine = BenchEngine(kind, docker_cli())
        try:
            yield engine
        finally:
            engine.close()
        return
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"--engine {kind}: {reason}")
    # No published ports to mirror: the benchmark boots no container.
    with sid_engine(kind, mirror_ports=False) as sid:
        engine = BenchEngine(kind, str(SID_DOCKER), env=sid.env(), sid=sid)
        try:
            yield engine
        finally:
            engine.close()


def engine_facts(engine: BenchEngine) -> dict[str, str]:
    """What names the engine in a results file: server version, storage driver, image
    store, buildx, CLI."""
    client = engine.client()
    info = client.info()
    server = client.version()
    status = {str(k): str(v) for k, v in (info.get("DriverStatus") or [])}
    containerd_store = "snapshotter" in status.get("driver-type", "")
    env = engine.cli_env(os.environ)
    buildx = _first_line([engine.docker, "buildx", "version"], env)
    cli = _first_line([engine.docker, "version", "--format", "{{.Client.Version}}"], env)
    names = {
        "host": "the host's engine",
        "classic": "Debian sid's engine, classic image store",
        "containerd": "Debian sid's engine, containerd image store",
    }
    front_end = f"docker buildx build ({buildx})" if buildx else "DOCKER_BUILDKIT=1 docker build"
    return {
        "engine": names[engine.kind],
        "Docker": f"CLI {cli}, engine {server.get('Version', '?')} (API {server.get('ApiVersion', '?')})",
        "storage driver": str(info.get("Driver", "?"))
        + (f" ({status['driver-type']})" if "driver-type" in status else ""),
        "containerd image store": "yes" if containerd_store else "no",
        "buildx": buildx or "none (the CLI's own builder)",
        "BuildKit front end": front_end,
    }


def _first_line(argv: list[str], env: Mapping[str, str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=dict(env))
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""


def which_docker(env: Mapping[str, str]) -> str | None:
    """The docker a process with `env` runs (for a check that it is the engine's)."""
    return shutil.which("docker", path=env.get("PATH"))
