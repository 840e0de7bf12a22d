"""`python -m bench.promote [--runs N]`: promotion against pull/tag/push through the engine.

The example SSE Lambda image (about 100 MB of layers on the local Python base) is published
once to a "preprod" registry. Each sample then puts it into a new, empty target repository,
on a fresh engine (our images removed, page cache dropped):

- **action**: `python -m entrypoint promote --source <registry>/<repository>@<digest>` (its
  venv exists);
- **engine**: what a careful user scripts without us: ECR token from boto3 in a process of
  its own, `docker login`, `docker pull <source>@<digest>`, `docker tag`, `docker push` of the
  commit, environment and latest tags. Each sample gets a Docker engine of its own, started
  (untimed) on an empty data root, as a fresh runner's is: nothing pulled before, no memory
  of which registry holds which layer.

Two cases: the target repository on the same registry, and on a second registry (another
account). Writes bench/promote-results.md and the README block between the bench-promote
markers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import docker

from bench.engine import fresh_page_cache
from bench.report import write_block
from bench.run import _subprocess_env
from tests.support.stack import (
    ECR_PASSWORD,
    ECR_USER,
    REPO_ROOT,
    MotoServer,
    Registry,
    docker_cli,
    ensure_adapter_standin,
    ensure_python_base,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

README = REPO_ROOT / "README.md"
RESULTS = REPO_ROOT / "bench" / "promote-results.md"
START, END = "<!-- bench-promote:start -->", "<!-- bench-promote:end -->"
REGION = "eu-west-2"
COMMIT = "b" * 40
# The fresh engines attach to a bridge of their own: with `--bridge none` dockerd deletes the
# stack engine's docker0.
BRIDGE = "benchbr0"
EXAMPLE = REPO_ROOT / "examples" / "sse-streaming-lambda"


def _say(message: str) -> None:
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


def _env(moto: str, tmp: Path) -> dict[str, str]:
    return _subprocess_env(moto, tmp) | {"GITHUB_SHA": COMMIT}


def _run(argv: list[str], env: dict[str, str], stdin: str | None = None) -> None:
    done = subprocess.run(
        argv, env=env, input=stdin, capture_output=True, text=True, timeout=900, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{done.stdout}\n{done.stderr}")


def _token_script() -> str:
    return (
        "import base64, boto3\n"
        "data = boto3.client('ecr').get_authorization_token()['authorizationData'][0]['authorizationToken']\n"
        "print(base64.b64decode(data).decode().partition(':')[2])\n"
    )


def by_action(env: dict[str, str], source: str, target: Registry, repository: str) -> float:
    started = time.monotonic()
    _run(
        [sys.executable, "-I", "-m", "entrypoint", "promote", "--source", source, "--env", "prod",
         "--region", REGION, "--repository", repository, "--registry", target.host],
        env | {"PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    return time.monotonic() - started


@contextlib.contextmanager
def own_bridge() -> Iterator[None]:
    """The bridge the fresh engines attach to, made here and removed afterwards."""
    made = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, check=False).returncode != 0
    if made:
        for argv in (
            ["ip", "link", "add", BRIDGE, "type", "bridge"],
            ["ip", "addr", "add", "172.31.254.1/24", "dev", BRIDGE],
            ["ip", "link", "set", BRIDGE, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)
    try:
        yield
    finally:
        if made:
            subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)


@contextlib.contextmanager
def fresh_engine(root: Path) -> Iterator[str]:
    """A dockerd of its own on an empty data root; yields its DOCKER_HOST. No bridge or
    iptables, so it leaves the stack's engine alone; it reaches the registries on loopback."""
    root.mkdir(parents=True)
    socket = root / "docker.sock"
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "--pidfile", str(root / "dockerd.pid"), "--host", f"unix://{socket}", "--bridge", BRIDGE,
         "--iptables=false", "--ip6tables=false", "--containerd-namespace", f"bench{os.getpid()}",
         "--containerd-plugins-namespace", f"bench{os.getpid()}p"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    host = f"unix://{socket}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(docker.errors.DockerException):
                docker.DockerClient(base_url=host, timeout=5).ping()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the benchmark's own dockerd did not start: see {root / 'dockerd.log'}")
            time.sleep(0.2)
        yield host
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        subprocess.run(["umount", "-R", str(root / "data")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def by_engine(env: dict[str, str], source: str, target: Registry, repository: str, config: Path) -> float:
    docker_env = env | {"DOCKER_CONFIG": str(config)}
    cli = docker_cli()
    started = time.monotonic()
    token = subprocess.run(
        [sys.executable, "-c", _token_script()], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    source_host = source.split("/", 1)[0]
    for host in dict.fromkeys((source_host, target.host)):
        _run([cli, "login", "--username", "AWS", "--password-stdin", host], docker_env, stdin=token)
    _run([cli, "pull", "--quiet", source], docker_env)
    for tag in (COMMIT, "prod", "latest"):
        _run([cli, "tag", source, f"{target.host}/{repository}:{tag}"], docker_env)
    for tag in (COMMIT, "prod", "latest"):
        _run([cli, "push", "--quiet", f"{target.host}/{repository}:{tag}"], docker_env)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.promote", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    began = time.monotonic()
    client = docker.from_env(timeout=600)
    base, adapter = ensure_python_base(client), ensure_adapter_standin(client)
    times: dict[tuple[str, str], list[float]] = {}
    size = 0
    with (
        own_bridge(),
        MotoServer() as moto,
        Registry(user=ECR_USER, password=ECR_PASSWORD) as preprod,
        Registry(user=ECR_USER, password=ECR_PASSWORD) as prod,
        tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        env = _env(moto.endpoint, tmp)
        ecr = boto3.client("ecr", region_name=REGION, endpoint_url=moto.endpoint,
                           aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        # The tested image: the example, built and pushed once (untimed).
        image = f"{preprod.host}/preprod-sse/app"
        subprocess.run(
            [docker_cli(), "build", "--quiet", "-t", f"{image}:preprod", "--build-arg", f"BASE_IMAGE={base}",
             "--build-arg", f"ADAPTER_IMAGE={adapter}", str(EXAMPLE)],
            env={**os.environ, "DOCKER_BUILDKIT": "1"}, check=True, capture_output=True,
        )  # fmt: skip
        auth = {"username": ECR_USER, "password": ECR_PASSWORD}
        for event in client.api.push(image, "preprod", stream=True, decode=True, auth_config=auth):
            if "error" in event:
                raise SystemExit(str(event))
        digest, _, manifest = preprod.manifest("preprod-sse/app", "preprod")
        size = sum(layer["size"] for layer in manifest["layers"])
        source = f"{image}@{digest}"
        _say(f"source {source}, {len(manifest['layers'])} layers, {size / 1e6:.0f} MB compressed")
        for run in range(args.runs):
            for case, target in (("same registry", preprod), ("another registry", prod)):
                order = ("action", "engine") if run % 2 == 0 else ("engine", "action")
                for approach in order:
                    repository = f"prod-{case.split()[0]}-{approach}-{run}"
                    ecr.create_repository(repositoryName=repository)
                    fresh_page_cache()
                    config = tmp / f"docker-{repository}"
                    config.mkdir()
                    if approach == "action":
                        seconds = by_action(env, source, target, repository)
                    else:
                        with fresh_engine(tmp / f"engine-{repository}") as host:
                            fresh_page_cache()
                            seconds = by_engine(
                                env | {"DOCKER_HOST": host}, source, target, repository, config
                            )
                    found = target.manifest(repository, "prod")[0]
                    if found != digest:
                        raise SystemExit(
                            f"{approach} {case}: prod is {found}, not the source digest {digest}"
                        )
                    times.setdefault((case, approach), []).append(seconds)
                    _say(f"{case:<16} {approach:<6} run {run + 1}: {seconds:.2f} s")
    block = render(times, args.runs, size, time.monotonic() - began)
    write_block(block, RESULTS, "Promotion benchmark", README, (START, END))
    print(block)
    return 0


def render(times: dict[tuple[str, str], list[float]], runs: int, size: int, took: float) -> str:
    med = statistics.median
    rows = []
    for case in ("same registry", "another registry"):
        action, engine = med(times[(case, "action")]), med(times[(case, "engine")])
        rows.append(f"| {case} | {action:.2f} | {engine:.2f} | {engine / action:.1f}x faster |")
    same = med(times[("same registry", "action")])
    samples = "; ".join(
        f"{case} {approach}: {', '.join(f'{t:.2f}' for t in values)}"
        for (case, approach), values in times.items()
    )
    return "\n".join(
        [
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with "
            f"`bash bench/promote.sh --runs {runs}` "
            f"(median of {runs}; {took:.0f} s in all) on {os.cpu_count()} CPUs: the example image "
            f"({size / 1e6:.0f} MB of compressed layers) into a new repository; for pull/tag/push a new "
            "Docker engine on an empty data root each time; page cache dropped before each sample.",
            "",
            "| case | promote action s | pull/tag/push through the engine s | |",
            "|---|--:|--:|---|",
            *rows,
            "",
            "| goal | result | measured |",
            "|---|---|---|",
            f"| same-registry promotion ≤ 2 s | **{'PASS' if same <= 2.0 else 'MISS'}** | {same:.2f} s |",
            "",
            f"Samples: {samples}.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
