"""`python -m bench [--runs N] [--cases KEYS] [--engine host|classic|containerd]`: the action
against plain docker, side by side.

`--engine` (default host): the host's Docker 20.10, or Debian sid's Docker 28.5 + buildx 0.29
with the classic or the containerd image store, started for the whole run (bench/engine.py);
the registries are forwarded into it and the base images copied in. That engine cannot reach
the package index, so there every approach builds the example from a wheelhouse
(bench/offline.py).

For each run, case and approach (the order of the approaches alternates between runs):

1. a new git copy of the example, a new ECR repository in moto and a new registry;
2. untimed, when the case needs it: the previous publish, made by the same approach;
3. the case's commit (none for clean; empty; code edit; requirements edit);
4. the engine emptied (our images and all build cache; base images stay);
5. the timed publish, then a check that the commit, environment and latest tags all name one
   manifest in the registry.

Every publish's log goes to bench/logs/<UTC time>/. On the host's engine, a run of all cases
writes bench/results.md and the README's benchmark block; a run of some cases writes its
results next to its logs only. On a sid engine every run writes bench/results-<engine>.md
(which names the cases it measured) and a copy next to its logs; the README is not touched.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import docker
import requests
from docker.errors import DockerException

from bench.approaches import Action, Plain, PublishFailed, Target, action_python
from bench.cases import CASE_KEYS, CASES, Case, example_workspace
from bench.engine import (
    ENGINE_KINDS,
    BenchEngine,
    empty_engine,
    engine_answers,
    engine_facts,
    open_engine,
    which_docker,
)
from bench.offline import WHEELHOUSE, download_wheels, image_python, offline_example
from bench.report import (
    Observation,
    Sample,
    goals,
    group,
    observe_action,
    observe_plain,
    render,
    replace_readme_block,
    results_file,
)
from tests.support.stack import (
    REPO_ROOT,
    STACK_DIR,
    MotoServer,
    Registry,
    ensure_adapter_standin,
    ensure_python_base,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from docker import DockerClient
    from mypy_boto3_ecr import ECRClient

    from bench.approaches import Approach, Published
    from bench.engine import EngineKind
    from tests.support.workspace import Workspace

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR.parent / "README.md"
RESULTS = BENCH_DIR / "results.md"


def results_path(engine: EngineKind) -> Path:
    """bench/results.md for the host's engine, bench/results-<engine>.md for the others."""
    return RESULTS if engine == "host" else BENCH_DIR / f"results-{engine}.md"


ENV = "preprod"
REGION = "eu-west-2"
# A sample is redone when the engine restarted under it: dockerd 20.10 can panic when build
# cache is pruned while another process's build imports registry cache (seen on this
# shared engine), and something (scripts/stack.sh) then starts it again.
ATTEMPTS = 3


@dataclass(frozen=True)
class Context:
    engine: BenchEngine
    client: DockerClient  # the engine's
    ecr: ECRClient
    prefix: str  # every repository (and so every local image) of this run starts with it
    tmp: Path
    logs: Path
    build_args: tuple[tuple[str, str], ...]
    example: Path
    redone: list[str] = field(default_factory=list)  # samples redone after an engine restart


def _say(message: str) -> None:
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="samples per case and approach (median)")
    parser.add_argument(
        "--cases",
        default=",".join(CASE_KEYS),
        help=f"comma-separated subset of {', '.join(CASE_KEYS)} (default: all)",
    )
    parser.add_argument(
        "--ref",
        default=None,
        help="measure the action and the example as committed at this git revision "
        "(e.g. HEAD) instead of the working tree, which others may be editing",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_KINDS,
        default="host",
        help="host: the host's Docker engine (default); classic, containerd: Debian sid's Docker "
        "28.5 + buildx 0.29 with that image store, started for the run",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    unknown = set(args.cases.split(",")) - set(CASE_KEYS)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    return args


def _subprocess_env(moto_endpoint: str, tmp: Path) -> dict[str, str]:
    """This environment without runner or AWS variables, pointed at moto."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "AWS_"))}
    absent = str(tmp / "no-aws-config")
    env |= {
        "PATH": f"{STACK_DIR / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": absent,
        "AWS_SHARED_CREDENTIALS_FILE": absent,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return env


def _check_tags(registry: Registry, target: Target, commit: str) -> None:
    digests = {tag: registry.manifest(target.repository, tag)[0] for tag in (commit, target.env, "latest")}
    if len(set(digests.values())) != 1:
        raise RuntimeError(f"{target.repository}: the tags do not name one manifest: {digests}")


def _publish(ctx: Context, approach: Approach, ws: Workspace, target: Target, phase: str) -> Published:
    # empty: nobody logged in yet (on a sid engine it links sid's buildx, nothing else)
    docker_config = ctx.engine.docker_config(ws.path.parent / f"{ws.path.name}.docker-{phase}")
    published = approach.publish(ws, target, docker_config)
    (ctx.logs / f"{target.repository.removeprefix(ctx.prefix)}-{phase}.log").write_text(published.log)
    return published


def measure(ctx: Context, case: Case, approach: Approach, run: int) -> Sample:
    """One sample; redone from scratch when the shared engine restarted under it."""
    for attempt in range(1, ATTEMPTS + 1):
        pid = ctx.engine.pid()
        try:
            return _measure_once(ctx, case, approach, run, attempt)
        except (PublishFailed, DockerException, requests.RequestException) as exc:
            if attempt == ATTEMPTS or (engine_answers(ctx.client) and ctx.engine.pid() == pid):
                raise
            _say(
                f"the Docker engine stopped or restarted during {case.key} {approach.name} run {run} "
                f"({type(exc).__name__}); waiting for it, then redoing the sample"
            )
            ctx.engine.wait()
            ctx.redone.append(f"{case.title} / {approach.name} / run {run}")
    raise AssertionError("unreachable")


def _measure_once(ctx: Context, case: Case, approach: Approach, run: int, attempt: int) -> Sample:
    name = f"{ctx.prefix}{case.key}-{approach.name}-{run}" + (f"-retry{attempt - 1}" if attempt > 1 else "")
    ws = example_workspace(ctx.tmp / name, ctx.example)
    ctx.ecr.create_repository(repositoryName=name)
    with Registry() as registry:
        ctx.engine.forward(int(registry.host.rsplit(":", 1)[1]))
        target = Target(registry.host, name, ENV, REGION, ctx.build_args)
        if case.previous:
            previous = _publish(ctx, approach, ws, target, "setup")
            _check_tags(registry, target, previous.commit)
            _say(f"  {case.key:<9} {approach.name:<7} run {run}: previous publish {previous.seconds:.1f} s")
        observe = observe_action if approach.name == "action" else observe_plain
        load = os.getloadavg()[0]
        # A case with history times every change in it: a chain that breaks shows in the
        # change it breaks at, whichever that is.
        seconds = 0.0
        observations = []
        for step in range(case.history + 1):
            if case.change is not None:
                case.change(ws, f"{name}-{step}")
            empty_engine(ctx.client, ctx.prefix)
            phase = "measured" if step == case.history else f"measured-{step}"
            published = _publish(ctx, approach, ws, target, phase)
            _check_tags(registry, target, published.commit)
            seconds += published.seconds
            observations.append(observe(published.log))
            if case.history:
                _say(
                    f"  {case.key:<9} {approach.name:<7} run {run}: change {step + 1} "
                    f"{published.seconds:.1f} s (pip step {observations[-1].dependencies})"
                )
    sample = Sample(case.key, approach.name, run, seconds, _combined(observations), load)
    _say(f"{case.key:<9} {approach.name:<6} run {run}: {sample.seconds:.2f} s ({_short(sample)})")
    return sample


def _combined(observations: list[Observation]) -> Observation:
    """One observation for a case of several publishes: the dependency step counts as
    cached only when it was cached in every one."""
    if len(observations) == 1:
        return observations[0]
    ran = any(o.dependencies == "ran" for o in observations)
    return Observation(skipped=False, dependencies="ran" if ran else "cached")


def _short(sample: Sample) -> str:
    if sample.observation.skipped:
        return "build skipped"
    return f"pip step {sample.observation.dependencies}"


def machine_info(engine: BenchEngine) -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    facts = engine_facts(engine)
    return {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "OS": f"{_os_name()}, kernel {platform.release()}",
        **facts,
        "Python": platform.python_version(),
    }


def _os_name() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


# entrypoint/ with what the action's set-up reads (lock/, scripts/), and the example.
_MEASURED = (
    "entrypoint",
    "lock",
    "scripts/action-python.sh",
    "scripts/install.py",
    "examples/sse-streaming-lambda",
)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def measured_sources(ref: str | None, into: Path) -> tuple[Path, str]:
    """(folder holding entrypoint/ and examples/, what it is): the working tree, or ``ref``."""
    if ref is None:
        dirty = _git("status", "--porcelain", "--", *_MEASURED)
        note = " with uncommitted changes in entrypoint/ or the example" if dirty else ""
        return REPO_ROOT, f"working tree at {_git('rev-parse', '--short', 'HEAD')}{note}"
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit, *_MEASURED],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into, f"commit {commit[:12]} ({ref})"


def _offline_note(
    facts: dict[str, str], wheels: tuple[str, ...], megabytes: float, python: str, images: str
) -> str:
    """What differs from the host run, for a results file of a sid engine."""
    listed = ", ".join(f"`{w}`" for w in wheels)
    return f"""**Engine: {facts["engine"]}** ({facts["Docker"]}; storage driver {facts["storage driver"]}; \
containerd image store: {facts["containerd image store"]}; buildx {facts["buildx"]}). What differs \
from the host run (`bench/results.md`, the host's Docker 20.10 engine):

- the engine: Debian sid's dockerd 28.5 (containerd 2.1, runc 1.3), started by \
`tests/support/engines.py` for this run on an empty data root, in a network namespace of its \
own; every approach uses it and sid's docker CLI (so plain `docker build` is `docker buildx \
build` on buildx's docker driver). Each run's registries are reached from that namespace at \
the same `127.0.0.1:<port>` through a unix-socket port bridge.
- the base images: the same local images as on the host ({images}), made on the \
host's engine and copied in (`docker save | docker load`) before the run; emptying the \
engine keeps them, as on the host.
- the dependency step: that namespace has no route to the package index, and the example's \
Dockerfile takes no build argument for pip's index or options, so every approach builds a \
copy of the example whose Dockerfile differs in the pip step only: `RUN \
--mount=type=bind,source={WHEELHOUSE},target=/{WHEELHOUSE} python3 -m venv /opt/venv && \
/opt/venv/bin/pip install --no-index --find-links /{WHEELHOUSE} --no-cache-dir -r \
requirements.txt`. The wheels ({len(wheels)} files, {megabytes:.1f} MB, in `{WHEELHOUSE}/` of \
the build context and of each test repository's first commit) were downloaded once on the \
host before the run, untimed: `pip download --only-binary=:all: --platform manylinux2014_x86_64 \
--python-version {python} -r requirements.txt` with this machine's pip configuration. So pip \
here installs the same pinned packages without downloading them (on the host it downloads \
them from PyPI, through this machine's TLS-intercepting proxy, inside the build), and every \
build context is {megabytes:.1f} MB bigger. The bind mount adds no layer: the image's layers are \
those of the host run. Wheels: {listed}.
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    cases = [c for c in CASES if c.key in args.cases.split(",")]
    started = time.monotonic()
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    logs = BENCH_DIR / "logs" / (stamp if args.engine == "host" else f"{stamp}-{args.engine}")
    logs.mkdir(parents=True)
    # The base images are made on the host's engine (tests/support/stack.py), whatever the run's.
    host = docker.from_env(timeout=600)
    host.ping()
    build_args = (
        ("BASE_IMAGE", ensure_python_base(host)),
        ("ADAPTER_IMAGE", ensure_adapter_standin(host)),
    )
    prefix = f"bench{secrets.token_hex(3)}-"
    samples: list[Sample] = []
    engine_note = ""
    _say(f"{len(cases)} case(s) x 3 approaches x {args.runs} run(s), {args.engine} engine; logs in {logs}")
    with (
        open_engine(args.engine) as engine,
        MotoServer() as moto,
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
    ):
        client = engine.client()
        client.ping()
        for _, image in build_args:
            engine.load_image(image)
        machine = machine_info(engine)
        load_start = os.getloadavg()[0]
        try:
            env = engine.cli_env(_subprocess_env(moto.endpoint, Path(tmp)))
            found = which_docker(env)
            if found is None or Path(found).resolve() != Path(engine.docker).resolve():
                raise RuntimeError(f"the publishes would run {found}, not the engine's CLI {engine.docker}")
            ecr = boto3.client(
                "ecr",
                region_name=REGION,
                endpoint_url=moto.endpoint,
                aws_access_key_id="bench",
                aws_secret_access_key="bench",
            )
            source, source_note = measured_sources(args.ref, Path(tmp) / "measured-sources")
            machine["action and example measured"] = source_note
            _say(f"measuring the action and the example from the {source_note}")
            example = source / "examples" / "sse-streaming-lambda"
            if args.engine != "host":
                python = image_python(host, dict(build_args)["BASE_IMAGE"])
                wheels_dir = Path(tmp) / "wheels"
                wheels = download_wheels(example / "requirements.txt", wheels_dir, python)
                megabytes = sum(p.stat().st_size for p in wheels_dir.glob("*.whl")) / 1e6
                example = offline_example(example, Path(tmp) / "example-offline", wheels_dir)
                images = ", ".join(f"`{image}`" for _, image in build_args)
                engine_note = _offline_note(engine_facts(engine), wheels, megabytes, python, images)
                (logs / "Dockerfile.offline").write_text((example / "Dockerfile").read_text())
                _say(f"{len(wheels)} wheels ({megabytes:.1f} MB) for python {python}: pip installs from them")
            ctx = Context(engine, client, ecr, prefix, Path(tmp), logs, build_args, example)
            action = Action(env, action_python(source, Path(tmp) / "runner-temp"))
            _say(f"the action runs as action.yml runs it: {action.python} -I -m entrypoint")
            approaches: tuple[Approach, ...] = (
                action,
                Plain(env, moto.endpoint, docker=engine.docker),
                Plain(env, moto.endpoint, name="careful", careful=True, docker=engine.docker),
            )
            for run in range(1, args.runs + 1):
                # Alternate which approach goes first, so drift over time hits both alike.
                order = approaches if run % 2 else approaches[::-1]
                for case in cases:
                    for approach in order:
                        samples.append(measure(ctx, case, approach, run))
        finally:
            try:
                empty_engine(client, prefix, prune_cache=False)
            except (DockerException, requests.RequestException, RuntimeError) as exc:
                _say(f"could not remove this run's images ({exc}); they are named {prefix}*")
    host.close()
    wall = time.monotonic() - started
    machine["load average (1 min)"] = f"{load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    if ctx.redone:
        machine["samples redone after the engine restarted"] = "; ".join(ctx.redone)

    (logs / "samples.json").write_text(json.dumps([asdict(s) for s in samples], indent=2) + "\n")
    results = group(cases, samples)
    block = render(results, samples, machine, args.runs, wall, engine_note=engine_note)
    print("\n" + block, flush=True)
    for goal in goals(results):
        print(f"{goal.verdict}: {goal.text} ({goal.measured})", flush=True)
    text = results_file(block, engine=args.engine, cases=[c.key for c in cases], runs=args.runs)
    if args.engine != "host":
        path = results_path(args.engine)
        path.write_text(text)
        (logs / "results.md").write_text(text)
        _say(f"wrote {path} (and a copy in {logs}); README untouched")
    elif len(cases) == len(CASES):
        RESULTS.write_text(text)
        README.write_text(replace_readme_block(README.read_text(), block))
        _say(f"wrote {RESULTS} and the benchmark block of {README}")
    else:
        (logs / "results.md").write_text(text)
        _say(f"some cases only: wrote {logs / 'results.md'} (README and bench/results.md untouched)")
    _say(f"benchmark wall time {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
