"""`python -m bench.setup [--runs N] [--engine host|classic|containerd]`: what a pinned action
costs before it does anything.

Three measurements, each on a fresh runner (a new RUNNER_TEMP, so nothing of an earlier
run is reused), median of N:

1. set-up alone, cold: the locked set-up (scripts/action-python.sh: scripts/install.py
   fetches lock/runtime.txt's wheels, checked by hash, and installs them with pypa/installer)
   against the set-up of v1.0.0, which made a venv with `python -m venv` and ran
   `pip install` of the action (resolving `>=` ranges);
2. set-up alone, warm: the second use in one job (the venv is there);
3. the whole action under nektos/act in a consumer workflow, unchanged republish of the
   example SSE Lambda: a first run publishes (untimed), then each sample is a new act run
   (a fresh runner: new workspace and RUNNER_TEMP) on a new empty commit. The time is act's
   own for the `uses:` step, set-up included.

Before every sample the kernel's page cache is dropped (as root): a fresh runner starts with
nothing cached. It also keeps samples independent on these VMs, where memory the guest frees
is handed back to the host and touching it again is slow, so that without the drop each
sample's writes (a venv, then a 37 MB uv) cost more than the one before: 1.8 s, 2.5, 3.2, 3.9, 4.1.

Writes bench/setup-results.md and the README block between the bench-setup markers.

`--engine classic|containerd`: the whole action only (3.), on Debian sid's Docker 28.5 +
buildx 0.29 with that image store (bench/engine.py): the job's DOCKER_HOST is that engine and
sid's docker CLI is first on its PATH. The set-up alone (1., 2.) runs no docker command and is
the same on every engine. The example builds from wheels downloaded on the host, as in
`bench/run.py --engine` (that engine's namespace has no route out), for the untimed first
publish only: the samples build nothing. Writes bench/setup-results-<engine>.md.
"""

from __future__ import annotations

import argparse
import os
import platform
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

from bench.cases import EXAMPLE, example_workspace
from bench.engine import ENGINE_KINDS, EngineKind, engine_facts, fresh_page_cache, open_engine
from bench.offline import download_wheels, image_python, offline_example
from bench.report import write_block
from tests.support.act import action_checkout, publish_workflow, run_act, runner_path
from tests.support.stack import (
    ECR_PASSWORD,
    ECR_USER,
    REPO_ROOT,
    STACK_DIR,
    MotoServer,
    Registry,
    ensure_adapter_standin,
    ensure_python_base,
)

README = REPO_ROOT / "README.md"
RESULTS = REPO_ROOT / "bench" / "setup-results.md"
LOGS = REPO_ROOT / "bench" / "logs" / "setup"
STAMP = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
START, END = "<!-- bench-setup:start -->", "<!-- bench-setup:end -->"
REGION = "eu-west-2"
# The set-up as v1.0.0 shipped it (scripts/action-python.sh at that release), for comparison.
V1_0_SETUP = """
set -euo pipefail
venv="$RUNNER_TEMP/lambda-image-publish-old"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$ACTION_PATH"
"""


def _say(message: str) -> None:
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


def runner_python() -> str:
    """The python3 a fresh runner's PATH gives the set-up, and its version."""
    python = shutil.which("python3", path=runner_path(os.environ["PATH"])) or "python3"
    done = subprocess.run([python, "-I", "-c", "import sys; print(sys.version.split()[0])"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return f"the runner's python3 {python} ({done.stdout.strip() or 'not found'})"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "VIRTUAL_ENV"))}
    # The runner's python3, not this venv's: a fresh runner has no project venv on PATH.
    env["PATH"] = runner_path(env["PATH"])
    env["PATH"] = f"{STACK_DIR / 'bin'}{os.pathsep}{env['PATH']}"
    return env | extra


def time_setup(action: Path, script: str | None, runner_temp: Path) -> float:
    argv = ["bash", "-c", script] if script else ["bash", str(action / "scripts" / "action-python.sh")]
    fresh_page_cache()
    started = time.monotonic()
    subprocess.run(
        argv,
        env=_env(ACTION_PATH=str(action), RUNNER_TEMP=str(runner_temp)),
        check=True,
        capture_output=True,
        cwd=action,
    )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.setup", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=ENGINE_KINDS, default="host")
    args = parser.parse_args(argv)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-setup-") as tmp_name:
        tmp = Path(tmp_name)
        action = action_checkout(tmp / "action")
        if args.engine != "host":
            whole, facts = whole_action(tmp, action, args.runs, args.engine)
            block = render_engine(whole, args.runs, time.monotonic() - began, args.engine, facts)
            results = RESULTS.with_name(f"setup-results-{args.engine}.md")
            results.write_text(f"# Set-up benchmark on the {args.engine} engine (Docker 28.5)\n\n{block}")
            print(block)
            return 0
        cold: list[float] = []
        old: list[float] = []
        warm: list[float] = []
        for run in range(args.runs):
            for name, script, into in (("locked", None, cold), ("v1.0.0", V1_0_SETUP, old)):
                temp = tmp / f"temp-{name}-{run}"
                temp.mkdir()
                into.append(time_setup(action, script, temp))
                _say(f"set-up {name} cold run {run + 1}: {into[-1]:.2f} s")
                if script is None:
                    warm.append(time_setup(action, None, temp))
                shutil.rmtree(temp)
        whole, _ = whole_action(tmp, action, args.runs, "host")
    took = time.monotonic() - began
    block = render(cold, old, warm, whole, args.runs, took)
    write_block(block, RESULTS, "Set-up benchmark", README, (START, END))
    print(block)
    return 0


# act's names for the action's step and for the two steps inside it.
WHOLE = "Main owner/lambda-image-publish@v1"
SETUP_STEP = "Main Prepare the action's Python environment"
PUBLISH_STEP = "Main Build and publish the Lambda image"


def whole_action(
    tmp: Path, action: Path, runs: int, kind: EngineKind
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Step times under act, unchanged republish, fresh runner each time: the whole `uses:`
    step, and its set-up and publish steps; and what names the engine."""
    with (
        open_engine(kind) as engine,
        MotoServer() as moto,
        Registry(user=ECR_USER, password=ECR_PASSWORD) as registry,
    ):
        host = docker.from_env(timeout=600)
        base, adapter = ensure_python_base(host), ensure_adapter_standin(host)
        for image in (base, adapter):
            engine.load_image(image)
        engine.forward(int(registry.host.rsplit(":", 1)[1]))
        example = EXAMPLE
        if kind != "host":
            wheels = tmp / "wheels"
            download_wheels(EXAMPLE / "requirements.txt", wheels, image_python(host, base))
            example = offline_example(EXAMPLE, tmp / "example-offline", wheels)
        facts = engine_facts(engine)
        aws = {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        if kind != "host":
            # The job's DOCKER_HOST, DOCKER_CONFIG (buildx 0.29) and PATH (sid's CLI first).
            aws |= engine.cli_env({"PATH": runner_path(os.environ["PATH"])})
        boto3.client("ecr", region_name=REGION, endpoint_url=moto.endpoint, aws_access_key_id="bench",
                     aws_secret_access_key="bench").create_repository(repositoryName="bench-sse")  # fmt: skip
        workspace = example_workspace(tmp / "consumer", example)
        workflow = tmp / "deploy.yml"
        workflow.write_text(
            publish_workflow(
                {"env": "preprod", "region": REGION, "dockerfile": "Dockerfile", "repository": "bench-sse",
                 "registry": registry.host, "build-args": f"BASE_IMAGE={base}\nADAPTER_IMAGE={adapter}"}
            )
        )  # fmt: skip
        first = run_act(workflow, workspace.path, action, env=aws, cache=tmp / "act-first")
        if first.code != 0:
            raise SystemExit(first.log)
        _say(f"first publish under act: {first.step_seconds('publish', WHOLE):.2f} s (untimed)")
        times: dict[str, list[float]] = {WHOLE: [], SETUP_STEP: [], PUBLISH_STEP: []}
        for run in range(runs):
            workspace.commit(f"bench: no change {run}")
            cache = tmp / f"act-{run}"
            fresh_page_cache()
            again = run_act(workflow, workspace.path, action, env=aws, cache=cache)
            # Every sample's act log is kept: an outlier can then be explained.
            LOGS.mkdir(parents=True, exist_ok=True)
            (LOGS / f"setup-{kind}-{STAMP}-run{run + 1}.log").write_text(again.log)
            if again.code != 0 or "build skipped" not in again.log:
                raise SystemExit(again.log)
            for name, found in times.items():
                found.append(again.step_seconds("publish", name))
            _say(
                f"unchanged republish under act, fresh runner, run {run + 1}: {times[WHOLE][-1]:.2f} s "
                f"(set-up {times[SETUP_STEP][-1]:.2f} s, publish {times[PUBLISH_STEP][-1]:.2f} s)"
            )
            shutil.rmtree(cache, ignore_errors=True)
        return times, facts


def render_engine(
    steps: dict[str, list[float]], runs: int, took: float, kind: EngineKind, facts: dict[str, str]
) -> str:
    """The whole-action figures on a sid engine, with its goal."""
    med = statistics.median
    whole = steps[WHOLE]
    verdict = "PASS" if med(whole) <= 3.0 else "MISS"
    cache = "Page cache dropped before every sample." if os.geteuid() == 0 else "Page cache kept (not root)."
    samples = ", ".join(f"{t:.2f}" for t in whole)
    parts = (
        f"set-up step {med(steps[SETUP_STEP]):.2f} s + publish step {med(steps[PUBLISH_STEP]):.2f} s "
        "+ act's handling of the steps"
    )
    median = f"{med(whole):.2f}"
    return f"""Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with \
`bash bench/setup.sh --engine {kind} --runs {runs}` (median of {runs}; {took:.0f} s in all) on \
{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, {runner_python()}. {cache}

Engine: {facts["engine"]} ({facts["Docker"]}; buildx {facts["buildx"]}; storage driver \
{facts["storage driver"]}; containerd image store: {facts["containerd image store"]}). The job reaches \
it through DOCKER_HOST, with sid's docker CLI first on PATH; the example's first publish (untimed) \
installs its packages from wheels downloaded on the host.

| what | seconds | note |
|---|--:|---|
| whole action under act, fresh runner, unchanged republish | {median} | {parts} |

| goal | result | measured |
|---|---|---|
| whole action, fresh runner, nothing changed: ≤ 3 s | **{verdict}** | {median} s (samples {samples}) |
"""


def render(
    cold: list[float],
    old: list[float],
    warm: list[float],
    steps: dict[str, list[float]],
    runs: int,
    took: float,
) -> str:
    med = statistics.median
    whole = steps[WHOLE]
    goal_whole = med(whole) <= 3.0
    goal_warm = med(warm) <= 0.2
    rows = [
        (
            "set-up, fresh runner",
            f"{med(cold):.2f}",
            f"{med(old):.2f}",
            f"{med(old) / med(cold):.1f}x faster",
        ),
        ("set-up, second use in a job", f"{med(warm):.3f}", "", ""),
        (
            "whole action under act, fresh runner, unchanged republish",
            f"{med(whole):.2f}",
            "",
            f"set-up step {med(steps[SETUP_STEP]):.2f} s + publish step {med(steps[PUBLISH_STEP]):.2f} s "
            "+ act's handling of the steps",
        ),
    ]
    lines = [
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `bash bench/setup.sh --runs {runs}` "
        f"(median of {runs}; {took:.0f} s in all) on {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, {runner_python()}. "
        + ("Page cache dropped before every sample." if os.geteuid() == 0 else "Page cache kept (not root)."),
        "",
        "| what | locked set-up (now) s | v1.0.0 set-up s | note |",
        "|---|--:|--:|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        "| goal | result | measured |",
        "|---|---|---|",
        f"| whole action, fresh runner, nothing changed: ≤ 3 s | **{'PASS' if goal_whole else 'MISS'}** | "
        f"{med(whole):.2f} s (samples {', '.join(f'{t:.2f}' for t in whole)}) |",
        f"| set-up, second use in a job: ≤ 0.2 s | **{'PASS' if goal_warm else 'MISS'}** | "
        f"{med(warm):.3f} s |",
        "",
        f"Samples, set-up cold: locked {', '.join(f'{t:.2f}' for t in cold)}; v1.0.0 "
        f"{', '.join(f'{t:.2f}' for t in old)}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
