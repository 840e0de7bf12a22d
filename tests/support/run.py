"""Run the entrypoint the way a runner step does and read back what it wrote."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "sse-streaming-lambda"
REGION = "eu-west-2"


def read_github_file(path: Path) -> dict[str, str]:
    """Parse a GITHUB_OUTPUT / GITHUB_ENV file: `name=value` and `name<<DELIM ... DELIM`."""
    values: dict[str, str] = {}
    lines = path.read_text().splitlines() if path.exists() else []
    i = 0
    while i < len(lines):
        line = lines[i]
        heredoc = re.match(r"^([^=<]+)<<(.+)$", line)
        if heredoc:
            name, delimiter = heredoc.groups()
            end = lines.index(delimiter, i + 1)
            values[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
            continue
        name, _, value = line.partition("=")
        values[name] = value
        i += 1
    return values


_STOP_COMMANDS = re.compile(r"^::(?:stop-commands::[0-9a-f]{32}|[0-9a-f]{32}::)\n", re.MULTILINE)


def _without_stop_commands(text: str) -> str:
    return _STOP_COMMANDS.sub("", text)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str
    seconds: float

    @property
    def log(self) -> str:
        """What the runner shows: it consumes the stop-commands lines that fence relayed text."""
        return _without_stop_commands(self.stdout) + self.stderr

    def error_lines(self) -> list[str]:
        return [line for line in self.log.splitlines() if line.startswith(("::error::", "error: "))]


def run_entrypoint(
    args: list[str],
    *,
    cwd: Path,
    tmp: Path,
    env: Mapping[str, str] | None = None,
    on_runner: bool = True,
    timeout: float = 600,
    rss_file: Path | None = None,
) -> Run:
    """`python -m entrypoint ARGS` in a subprocess with runner files in `tmp`; with
    `rss_file`, its peak resident memory (kB) is written there (tests.support.rss)."""
    output = tmp / "github_output"
    summary = tmp / "step_summary"
    for path in (output, summary):
        path.write_text("")
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "INPUT_")) and k not in ("CI_COMMIT_SHA", "GIT_COMMIT")
    }
    full_env = {**inherited, "PYTHONPATH": str(REPO_ROOT)}
    if on_runner:
        full_env |= {
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
        }
    # The test's own variables win, runner files included.
    full_env |= env or {}
    started = time.monotonic()
    measured = [sys.executable, "-m", "tests.support.rss", str(rss_file), "--"] if rss_file else []
    done = subprocess.run(
        [*measured, sys.executable, "-m", "entrypoint", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(
        code=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        outputs=read_github_file(output),
        summary=summary.read_text(),
        seconds=time.monotonic() - started,
    )


def publish(
    workspace: Path,
    registry: str,
    tmp: Path,
    *args: str,
    repository: str | None = None,
    environment: str = "preprod",
    dockerfile: str = "Dockerfile",
    env: Mapping[str, str] | None = None,
    on_runner: bool = True,
) -> Run:
    """`python -m entrypoint publish` with the inputs every test gives; `args` come last and win."""
    argv = [
        "publish",
        "--env",
        environment,
        "--region",
        REGION,
        "--dockerfile",
        dockerfile,
        "--registry",
        registry,
    ]
    if repository:
        argv += ["--repository", repository]
    return run_entrypoint([*argv, *args], cwd=workspace, tmp=tmp, env=env, on_runner=on_runner)


def example_build_args(python_base: str, adapter_image: str) -> list[str]:
    """The example's public base images replaced by the locally made ones."""
    return ["--build-args", f"BASE_IMAGE={python_base}\nADAPTER_IMAGE={adapter_image}"]


def start_publish(
    ws: Path, registry: str, tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """The entrypoint as a runner starts it, left running for the test to watch or cancel."""
    output = tmp / "github_output"
    output.write_text("")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    full |= {
        "PYTHONPATH": str(REPO_ROOT),
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(output),
        "RUNNER_TEMP": str(tmp),
        **(env or {}),
    }
    argv = [sys.executable, "-m", "entrypoint", "publish", "--env", "preprod", "--region", REGION]
    argv += ["--dockerfile", "Dockerfile", "--registry", registry, *args]
    return subprocess.Popen(
        argv, cwd=ws, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 120) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return lines
        assert time.monotonic() < deadline, "".join(lines)
    raise AssertionError(f"{marker!r} never printed:\n" + "".join(lines))
