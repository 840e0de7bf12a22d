"""The two ways of publishing that are compared, each timed as one unit.

* action: `python -I -m entrypoint publish ...` as a subprocess, as action.yml runs it: the
  Python of the venv the action's own set-up made (scripts/action-python.sh, untimed, once per
  benchmark; bench/setup.py times the set-up), which holds only lock/runtime.txt.
* plain: what a workflow without the action does: an ECR token (boto3, in this process, so
  no interpreter start-up is counted against it), `docker login --password-stdin`,
  `DOCKER_BUILDKIT=1 docker build`, `docker tag` to the environment and `latest`, and
  `docker push` of the three tags.

Both get the same environment: moto for the ECR API, a private, initially empty
DOCKER_CONFIG per publish (so nothing is written to the user's Docker config), and the
BuildKit-capable docker CLI first on PATH. On a sid engine (`--engine classic|containerd`)
that is sid's docker 28.5 CLI, DOCKER_HOST is its socket and each DOCKER_CONFIG links sid's
cli-plugins (buildx 0.29), so `docker build` is `docker buildx build` there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from tests.support.act import runner_path
from tests.support.stack import docker_cli

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from tests.support.workspace import Workspace

ApproachName = Literal["action", "plain", "careful"]

# One publish must not hang the benchmark; a full build with pip takes about a minute.
PUBLISH_TIMEOUT = 1800.0


class PublishFailed(RuntimeError):
    """A publish exited non-zero; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Target:
    registry: str  # host:port
    repository: str
    env: str
    region: str
    build_args: tuple[tuple[str, str], ...]

    def reference(self, tag: str) -> str:
        return f"{self.registry}/{self.repository}:{tag}"


@dataclass(frozen=True)
class Published:
    seconds: float
    log: str
    commit: str


class Approach(Protocol):
    @property
    def name(self) -> ApproachName: ...

    def publish(self, ws: Workspace, target: Target, docker_config: Path) -> Published: ...


def _failed(what: str, code: int, log: str) -> PublishFailed:
    tail = "\n".join(log.splitlines()[-40:])
    return PublishFailed(f"{what} exited with code {code}; last lines of its log:\n{tail}")


def action_python(source: Path, runner_temp: Path) -> str:
    """The Python the action's set-up gives the publish step: a venv with lock/runtime.txt
    and the entrypoint package of `source` (a folder holding entrypoint/, lock/, scripts/)."""
    runner_temp.mkdir(parents=True, exist_ok=True)
    output = runner_temp / "github-output"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = runner_path(env["PATH"])  # the runner's python3, not this venv's
    done = subprocess.run(
        ["bash", str(source / "scripts" / "action-python.sh")],
        env=env | {"ACTION_PATH": str(source), "RUNNER_TEMP": str(runner_temp), "GITHUB_OUTPUT": str(output)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise _failed("scripts/action-python.sh", done.returncode, done.stdout + done.stderr)
    return output.read_text().strip().rpartition("python=")[2]


@dataclass(frozen=True)
class Action:
    env: Mapping[str, str]
    python: str  # the venv's python from action_python
    name: ApproachName = "action"

    def publish(self, ws: Workspace, target: Target, docker_config: Path) -> Published:
        argv = [
            self.python,
            "-I",
            "-m",
            "entrypoint",
            "publish",
            "--env",
            target.env,
            "--region",
            target.region,
            "--dockerfile",
            "Dockerfile",
            "--registry",
            target.registry,
            "--repository",
            target.repository,
            "--build-args",
            "\n".join(f"{k}={v}" for k, v in target.build_args),
        ]
        env = {**self.env, "DOCKER_CONFIG": str(docker_config)}
        started = time.monotonic()
        done = subprocess.run(
            argv,
            cwd=ws.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=PUBLISH_TIMEOUT,
            check=False,
        )
        seconds = time.monotonic() - started
        if done.returncode != 0:
            raise _failed("python -m entrypoint publish", done.returncode, done.stdout)
        return Published(seconds=seconds, log=done.stdout, commit=ws.head)


_GET_LOGIN_PASSWORD = (
    "import base64, sys, boto3\n"
    "data = boto3.client('ecr', region_name=sys.argv[1], endpoint_url=sys.argv[2])"
    ".get_authorization_token()['authorizationData'][0]['authorizationToken']\n"
    "print(base64.b64decode(data).decode().partition(':')[2])\n"
)


@dataclass(frozen=True)
class Plain:
    """Plain docker; `careful` is how build-push-action users set up the inline cache:
    `--cache-from` the environment's previous image, with the inline cache in the image."""

    env: Mapping[str, str]
    aws_endpoint: str
    name: ApproachName = "plain"
    careful: bool = False
    docker: str | None = None  # the engine's docker CLI; None: the stack's (host engine)

    def publish(self, ws: Workspace, target: Target, docker_config: Path) -> Published:
        commit = ws.head  # a workflow has it for free in ${{ github.sha }}
        docker = self.docker or docker_cli()
        env = {**self.env, "DOCKER_BUILDKIT": "1", "DOCKER_CONFIG": str(docker_config)}
        log: list[str] = []

        def run(argv: list[str], stdin: str | None = None) -> None:
            log.append("$ " + " ".join(argv))
            began = time.monotonic()
            done = subprocess.run(
                argv,
                cwd=ws.path,
                env=env,
                input=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=PUBLISH_TIMEOUT,
                check=False,
            )
            log.append(f"{done.stdout}(took {time.monotonic() - began:.2f} s)\n")
            if done.returncode != 0:
                raise _failed(" ".join(argv[:2]), done.returncode, "\n".join(log))

        started = time.monotonic()
        # A process of its own, as `aws ecr get-login-password` (or amazon-ecr-login) is in a
        # workflow: the same boto3 call the AWS CLI makes, with its start-up cost.
        token = subprocess.run(
            [sys.executable, "-c", _GET_LOGIN_PASSWORD, target.region, self.aws_endpoint],
            env={**env, "AWS_ENDPOINT_URL": self.aws_endpoint},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        log.append(f"$ aws ecr get-login-password (boto3 in a new process)\n(exit {token.returncode})")
        if token.returncode != 0:
            raise _failed("get-login-password", token.returncode, token.stderr)
        password = token.stdout.strip()
        run([docker, "login", "--username", "AWS", "--password-stdin", target.registry], stdin=password)
        build_args = [a for k, v in target.build_args for a in ("--build-arg", f"{k}={v}")]
        cache = (
            ["--build-arg", "BUILDKIT_INLINE_CACHE=1", "--cache-from", target.reference(target.env)]
            if self.careful
            else []
        )
        run([docker, "build", "--tag", target.reference(commit), *build_args, *cache, "."])
        for tag in (target.env, "latest"):
            run([docker, "tag", target.reference(commit), target.reference(tag)])
        for tag in (commit, target.env, "latest"):
            run([docker, "push", target.reference(tag)])
        seconds = time.monotonic() - started
        return Published(seconds=seconds, log="\n".join(log), commit=commit)
