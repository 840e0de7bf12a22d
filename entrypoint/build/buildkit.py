"""Builds through the docker CLI with BuildKit: `docker buildx build` where buildx exists,
else `DOCKER_BUILDKIT=1 docker build` (docker-py cannot drive BuildKit).

`build_command` is a pure function of the builder and the request, pinned by a table test;
`run_build` streams the log and, on failure, names the step that failed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from entrypoint import cancel, github
from entrypoint.build.buildlog import LogReader, StepLog, build_failure
from entrypoint.cancel import Cancelled
from entrypoint.engine.endpoint import client_environment
from entrypoint.errors import BuildError, EngineError

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator, Mapping
    from pathlib import Path

BuilderKind = Literal["buildx", "docker-build"]

# Docker 23 made buildx the only way to BuildKit from `docker build`; older CLIs build
# with BuildKit themselves when DOCKER_BUILDKIT=1.
_LEGACY_BUILDKIT_CLI_MAJOR = 23


@dataclass(frozen=True)
class Builder:
    kind: BuilderKind
    cli: str
    version: str
    driver: str = "docker"  # buildx driver; the engine's own BuildKit for plain docker build
    name: str | None = None  # a buildx builder chosen by name rather than the current one
    chosen: bool = False  # named by the workflow: used as it is, never replaced or changed
    # The docker driver on an engine with the containerd image store, which exports every
    # cache type the docker-container driver does.
    containerd_store: bool = False

    @property
    def context(self) -> str | None:
        """The Docker context a named builder of the docker driver is: buildx lists one such
        builder per context and builds with it only from that context (`--context`), into
        that context's engine, which is then the engine for everything after the build."""
        return self.name if self.chosen and self.driver == "docker" and self.name != "default" else None


@dataclass(frozen=True)
class BuildRequest:
    dockerfile: Path
    context: Path
    platform: str
    tags: tuple[str, ...]
    build_arg_keys: tuple[str, ...]
    iidfile: Path
    cache_args: tuple[str, ...] = ()
    # (secret id, environment variable holding it): BuildKit reads the value from the CLI's
    # environment, so it is in no argv, no file and no image layer.
    secrets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    steps: tuple[StepLog, ...]

    @property
    def cached_steps(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps if s.cached)


class ProbeStopped(Exception):
    """The builder probe was stopped: nothing is going to build."""


def _run(
    argv: list[str], timeout: float = 30, stop: threading.Event | None = None
) -> subprocess.CompletedProcess[str]:
    """A docker CLI run that is not the build (inspect, version, create, bootstrap): with the
    allow-listed environment the build's CLI gets, never the job's AWS credentials or tokens
    (the CLI reaching an ssh:// engine runs ssh with it, too). `stop`: once set, the run is
    killed and ProbeStopped raised (a read-only probe nobody waits for any more)."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=client_environment(os.environ)
    ) as process:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                out, err = process.communicate(timeout=max(0.0, min(left, 0.05) if stop else left))
            except subprocess.TimeoutExpired:
                if (stop is None or not stop.is_set()) and time.monotonic() < deadline:
                    continue
                process.kill()
                process.communicate()
                if stop is not None and stop.is_set():
                    raise ProbeStopped from None
                raise
            return subprocess.CompletedProcess(argv, process.returncode, out, err)


def detect_builder(name: str | None = None, stop: threading.Event | None = None) -> Builder:
    """The builder the CLI offers: buildx's current one, plain BuildKit `docker build` on
    Docker < 23, or the buildx builder `name`, used as it is. `stop`: see _run."""
    cli = shutil.which("docker")
    if not cli:
        raise EngineError(
            "the docker CLI is not on PATH",
            "install Docker on the runner (GitHub-hosted Ubuntu runners have it)",
        )
    try:
        # Each `docker buildx` run starts the CLI and the plugin twice (metadata, then the
        # command): about 0.15 s apiece on Docker 28, so the two run at once. Where buildx is
        # missing, the inspect fails as well and is not read.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="buildx-probe") as pool:
            asked = pool.submit(_run, [cli, "buildx", "inspect", *([name] if name else [])], stop=stop)
            buildx = _run([cli, "buildx", "version"], stop=stop)
            inspect = asked.result()
        if buildx.returncode == 0:
            if name and inspect.returncode != 0:
                raise EngineError(
                    f"the buildx builder '{name}' (input 'builder') does not exist here: "
                    f"{(inspect.stderr or inspect.stdout).strip()[:200]}",
                    "create it before this step (docker/setup-buildx-action with name:, or docker "
                    "buildx create --name ...), or leave 'builder' empty for the current builder",
                )
            driver = builder_settings(inspect.stdout).driver or "docker"
            return Builder("buildx", cli, buildx.stdout.strip(), driver, name, chosen=name is not None)
        client = _run([cli, "version", "--format", "{{.Client.Version}}"], stop=stop)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"the docker CLI at {cli} does not run: {exc}", "reinstall Docker") from exc
    version = client.stdout.strip()
    if name:
        raise EngineError(
            f"input 'builder' names the buildx builder '{name}', and this runner's docker CLI "
            f"({version or 'unknown version'}) has no buildx plugin",
            "install buildx (docker/setup-buildx-action, or the docker-buildx package), or leave "
            "'builder' empty to build with the engine's own BuildKit",
        )
    major = re.match(r"(\d+)", version)
    if major and int(major.group(1)) < _LEGACY_BUILDKIT_CLI_MAJOR:
        return Builder("docker-build", cli, version)
    raise EngineError(
        f"the docker CLI at {cli} (version {version or 'unknown'}) has no buildx plugin, and "
        "since Docker 23 BuildKit builds need it",
        "install buildx (docker/setup-buildx-action, or the docker-buildx package)",
    )


CONTAINER_BUILDER = "lambda-image-publish"


@dataclass(frozen=True)
class BuilderSettings:
    driver: str
    network: str  # "host", or "default" for the driver's own network


def builder_settings(inspect_output: str) -> BuilderSettings:
    """Driver and network of a buildx builder, from `docker buildx inspect NAME`:
    `Driver: docker-container` and, per node, `Driver Options: network="host"`."""
    driver = re.search(r"^Driver:\s*(\S+)", inspect_output, re.MULTILINE)
    network = re.search(r'^Driver Options:.*\bnetwork="?([^",\s]+)', inspect_output, re.MULTILINE)
    return BuilderSettings(driver.group(1) if driver else "", network.group(1) if network else "default")


def create_command(builder: Builder, settings: BuilderSettings) -> list[str]:
    argv = [builder.cli, "buildx", "create", "--name", CONTAINER_BUILDER, "--driver", settings.driver]
    if settings.network != "default":
        argv += ["--driver-opt", f"network={settings.network}"]
    return argv


@contextmanager
def container_builder(builder: Builder, *, allow_host_network: bool) -> Iterator[Builder]:
    """A buildx docker-container builder, for cache exports the docker driver cannot do.

    Made once per runner and kept for the next build's cache. Its containers get the
    driver's own network: host networking would let every RUN step reach services on the
    runner's loopback, so only a loopback registry the workflow named (`registry:
    127.0.0.1:5000`) turns it on. A builder of that name with other settings was made by
    someone else and is refused, not reused. If the job is cancelled while the builder this
    run created is in use, it is removed.
    """
    wanted = BuilderSettings("docker-container", "host" if allow_host_network else "default")
    inspect = _run([builder.cli, "buildx", "inspect", CONTAINER_BUILDER])
    created = False
    if inspect.returncode == 0:
        found = builder_settings(inspect.stdout)
        if found != wanted:
            raise EngineError(
                f"a buildx builder named '{CONTAINER_BUILDER}' already exists with driver "
                f"{found.driver or 'unknown'} and network {found.network}, not the "
                f"{wanted.driver} builder with network {wanted.network} this action makes",
                f"remove it (docker buildx rm {CONTAINER_BUILDER}) so the action can make its own, "
                "or set 'cache' to registry-inline",
            )
    else:
        github.notice(
            f"creating the buildx builder '{CONTAINER_BUILDER}' (driver docker-container, network "
            f"{wanted.network}): the current builder's '{builder.driver}' driver cannot export "
            "this cache"
        )
        made = _run(create_command(builder, wanted))
        if made.returncode != 0:
            raise EngineError(
                f"could not create a buildx docker-container builder: {made.stderr.strip()[:300]}",
                "run docker/setup-buildx-action before this step, or set 'cache' to registry-inline",
            )
        created = True
    ours = Builder("buildx", builder.cli, builder.version, "docker-container", CONTAINER_BUILDER)
    try:
        _bootstrap(builder)
        yield ours
    except Cancelled:
        if created:
            _run([builder.cli, "buildx", "rm", "--force", CONTAINER_BUILDER])
        raise


def _bootstrap(builder: Builder) -> None:
    try:
        boot = _run([builder.cli, "buildx", "inspect", "--bootstrap", CONTAINER_BUILDER], timeout=300)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(
            "the buildx docker-container builder did not start in 300 s",
            "check that the runner can pull moby/buildkit, or set 'cache' to registry-inline",
        ) from exc
    if boot.returncode != 0:
        raise EngineError(
            f"the buildx docker-container builder did not start: {boot.stderr.strip()[:300]}",
            "check that the runner can pull moby/buildkit, or set 'cache' to registry-inline",
        )


def build_command(builder: Builder, request: BuildRequest) -> list[str]:
    """The argv of one build. Build-arg values stay out of it: `--build-arg KEY` makes the
    CLI read the value from the environment, so values never show in a process list."""
    argv = [builder.cli]
    if builder.context:
        argv += ["--context", builder.context]
    if builder.kind == "buildx":
        # Attestations would turn the pushed image into an OCI index that Lambda rejects.
        argv += ["buildx", "build"]
        if builder.name and not builder.context:
            argv += ["--builder", builder.name]
        argv += ["--provenance=false", "--sbom=false", "--load"]
    else:
        argv += ["build"]
    argv += ["--progress=plain", "--file", str(request.dockerfile), "--platform", request.platform]
    argv += ["--iidfile", str(request.iidfile)]
    for tag in request.tags:
        argv += ["--tag", tag]
    for key in request.build_arg_keys:
        argv += ["--build-arg", key]
    for secret_id, variable in request.secrets:
        argv += ["--secret", f"id={secret_id},env={variable}"]
    argv += list(request.cache_args)
    argv.append(str(request.context))
    return argv


def run_build(argv: list[str], env: Mapping[str, str], request: BuildRequest) -> BuildResult:
    reader = LogReader()
    with github.group("BuildKit build log"):
        github.info("$ " + " ".join(argv))
        try:
            process = subprocess.Popen(
                argv,
                env=dict(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            raise EngineError(f"cannot run {argv[0]}: {exc}", "install the docker CLI") from exc
        try:
            assert process.stdout is not None
            with cancel.stopper(process.terminate):
                for raw in process.stdout:
                    line = raw.rstrip("\n")
                    github.info(line)
                    reader.feed(line)
                code = process.wait()
            cancel.raise_if_requested()
        finally:
            _stop(process)
    if code != 0:
        raise build_failure(reader, request.dockerfile, request.context)
    image_id = request.iidfile.read_text().strip() if request.iidfile.exists() else ""
    if not image_id:
        raise BuildError("the build finished but wrote no image ID", "rerun the build")
    return BuildResult(image_id=image_id, steps=tuple(reader.steps.values()))


def _stop(process: subprocess.Popen[str]) -> None:
    """End a CLI we are leaving early (cancel): SIGTERM makes it cancel the build in BuildKit."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
