"""`python -m bench.many [--runs N]`: six functions from one config file.

A repository of six services, each a Python image built on the locally made Debian base: a
dependency layer (a venv, and five standard-library packages copied into it and byte-compiled
at three optimisation levels: a few seconds of CPU, without network, so that the figures do
not depend on a package index) and a code layer. Every sample starts on an emptied engine (our images
removed, all build cache pruned): what a fresh runner has.

- **first publish, one step**: `python -m entrypoint publish --config lambdas.yml` into six
  new repositories (builds `parallel` at a time, one per core by default);
- **first publish, six steps**: `python -m entrypoint publish --dockerfile services/<name>/
  Dockerfile` six times in a row, into six other new repositories: what a workflow with one
  step (or one matrix job on one runner) per function does;
- **unchanged rerun, one step**: a new commit that changes nothing the images are made of,
  published with the config on an emptied engine: every image is skipped.

Those times are the entrypoint process's, start to exit (the action's venv exists, as after
its set-up step). The goal, an unchanged rerun of six in ≤ 3 s for the whole run, is measured
as a user waits for it: the `uses:` step under nektos/act on a fresh runner (new RUNNER_TEMP,
so the action's set-up runs cold; page cache dropped; engine emptied), as bench/setup.py does
for one image. Writes bench/many-results.md and the README block between the bench-many
markers.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import boto3
import docker

from bench.engine import empty_engine, fresh_page_cache
from bench.report import write_block
from bench.run import _subprocess_env
from bench.setup import WHOLE, runner_python
from tests.support.act import action_checkout, publish_workflow, run_act
from tests.support.stack import ECR_PASSWORD, ECR_USER, REPO_ROOT, MotoServer, Registry, ensure_python_base
from tests.support.workspace import Workspace

README = REPO_ROOT / "README.md"
RESULTS = REPO_ROOT / "bench" / "many-results.md"
START, END = "<!-- bench-many:start -->", "<!-- bench-many:end -->"
REGION = "eu-west-2"
NAMES = ("api", "orders", "billing", "worker", "reports", "cron")
PREFIX = "bmany"


def dockerfile(base: str) -> str:
    return (
        f"FROM {base}\n"
        "COPY deps.txt /opt/deps.txt\n"
        # The dependency layer: a venv and ~25 MB of byte code, a few seconds of CPU.
        "RUN python3 -m venv /opt/venv && cp -r /usr/lib/python3.11/email /usr/lib/python3.11/json "
        "/usr/lib/python3.11/asyncio /usr/lib/python3.11/xml /usr/lib/python3.11/http "
        "/opt/venv/lib/python3.11/site-packages/ && "
        "/opt/venv/bin/python -m compileall -q -o 0 -o 1 -o 2 /opt/venv/lib/python3.11/site-packages "
        "&& cat /opt/deps.txt > /opt/venv/deps.installed\n"
        "COPY app/ /app/\n"
        'CMD ["/opt/venv/bin/python", "/app/main.py"]\n'
    )


def make_workspace(path: Path, base: str) -> Workspace:
    ws = Workspace(path)
    ws.init()
    config = ["images:"]
    files: dict[str, str] = {}
    for name in NAMES:
        config += [f"  - name: {name}", f"    dockerfile: services/{name}/Dockerfile"]
        files |= {
            f"services/{name}/Dockerfile": dockerfile(base),
            f"services/{name}/deps.txt": f"{name}-requirements\n",
            f"services/{name}/app/main.py": f"print('{name}')\n",
        }
    files["lambdas.yml"] = "\n".join(config) + "\n"
    ws.commit_files(files, "six services")
    return ws


def _say(message: str) -> None:
    print(f"[bench.many] {message}", file=sys.stderr, flush=True)


def _publish(ws: Workspace, env: dict[str, str], registry: Registry, *args: str) -> float:
    argv = [sys.executable, "-m", "entrypoint", "publish", "--env", "preprod", "--region", REGION]
    argv += ["--registry", registry.host, *args]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ws.path, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-4000:] + done.stderr[-2000:])
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.many", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    began = time.monotonic()
    times: dict[str, list[float]] = {"release": [], "singles": [], "rerun": [], "act": []}
    client = docker.from_env(timeout=600)
    with (
        tempfile.TemporaryDirectory(prefix="bench-many-") as tmp_name,
        MotoServer() as moto,
        Registry(user=ECR_USER, password=ECR_PASSWORD) as registry,
    ):
        tmp = Path(tmp_name)
        env = _subprocess_env(moto.endpoint, tmp) | {"PYTHONPATH": str(REPO_ROOT)}
        ecr = boto3.client("ecr", region_name=REGION, endpoint_url=moto.endpoint,
                           aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        ws = make_workspace(tmp / "workspace", ensure_python_base(client))
        for run in range(args.runs):
            ours = f"{PREFIX}{secrets.token_hex(3)}"
            for approach in ("release", "singles"):
                for name in NAMES:
                    ecr.create_repository(repositoryName=f"{ours}-{approach}-preprod-{name}")
            ws.commit_files({"README.md": f"run {run}\n"}, f"run {run}")

            empty_engine(client, PREFIX)
            release = ("--config", "lambdas.yml", "--repository", f"{ours}-release-{{env}}-{{name}}")
            times["release"].append(_publish(ws, env, registry, *release))

            empty_engine(client, PREFIX)
            total = 0.0
            for name in NAMES:
                total += _publish(
                    ws, env, registry,
                    "--dockerfile", f"services/{name}/Dockerfile",
                    "--repository", f"{ours}-singles-{{env}}-{name}",
                )  # fmt: skip
            times["singles"].append(total)

            ws.commit_files({"README.md": f"run {run}, docs only\n"}, f"run {run} docs")
            empty_engine(client, PREFIX)
            times["rerun"].append(_publish(ws, env, registry, *release))
            _say(
                f"run {run + 1}: one step {times['release'][-1]:.1f} s, "
                f"six steps {times['singles'][-1]:.1f} s, unchanged rerun {times['rerun'][-1]:.2f} s"
            )
        times["act"] = under_act(tmp, ws, moto.endpoint, registry, release[-1], client, args.runs)
    block = render(times, args.runs, time.monotonic() - began)
    write_block(block, RESULTS, "Many-functions benchmark", README, (START, END))
    print(block)
    return 0


def under_act(
    tmp: Path,
    ws: Workspace,
    moto: str,
    registry: Registry,
    repository: str,
    client: docker.DockerClient,
    runs: int,
) -> list[float]:
    """The whole `uses:` step, fresh runner each time, unchanged sources (all six skipped)."""
    action = action_checkout(tmp / "action")
    workflow = tmp / "deploy.yml"
    workflow.write_text(
        publish_workflow(
            {"env": "preprod", "region": REGION, "config": "lambdas.yml",
             "repository": f'"{repository}"', "registry": registry.host}
        )
    )  # fmt: skip
    aws = {
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    seconds: list[float] = []
    for run in range(runs):
        ws.commit_files({"README.md": f"act run {run}\n"}, f"act run {run}")
        empty_engine(client, PREFIX)
        fresh_page_cache()
        cache = tmp / f"act-{run}"
        done = run_act(workflow, ws.path, action, env=aws, cache=cache)
        if done.code != 0 or done.log.count("build skipped") < len(NAMES):
            raise SystemExit(done.log[-6000:])
        seconds.append(done.step_seconds("publish", WHOLE))
        _say(f"unchanged rerun of six under act, fresh runner, run {run + 1}: {seconds[-1]:.2f} s")
        shutil.rmtree(cache, ignore_errors=True)
    return seconds


def render(times: dict[str, list[float]], runs: int, took: float) -> str:
    med = statistics.median
    release, singles, rerun, act = (med(times[k]) for k in ("release", "singles", "rerun", "act"))

    def samples(key: str) -> str:
        return ", ".join(f"{t:.2f}" for t in times[key])

    goal = act <= 3.0
    return "\n".join(
        [
            f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with "
            f"`bash bench/many.sh --runs {runs}` "
            f"(median of {runs}; {took:.0f} s in all) on {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}, {runner_python()}. Six Python services, each on an emptied engine.",
            "",
            "| case | seconds | samples |",
            "|---|--:|---|",
            f"| first publish of six, one step with `config` | {release:.1f} | {samples('release')} |",
            f"| first publish of six, six single-image steps in a row | {singles:.1f} "
            f"| {samples('singles')} |",
            f"| unchanged rerun of six, one step, emptied engine | {rerun:.2f} | {samples('rerun')} |",
            f"| the same, whole `uses:` step under act on a fresh runner (set-up included) | {act:.2f} "
            f"| {samples('act')} |",
            "",
            "| goal | result | measured |",
            "|---|---|---|",
            f"| unchanged rerun of six images, whole run (fresh runner, set-up included): ≤ 3 s "
            f"| **{'PASS' if goal else 'MISS'}** | {act:.2f} s |",
            f"| first publish, one step against six steps | | {singles / release:.2f}x faster |",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
