"""Runs a composite action's steps the way a GitHub runner does, on this machine.

What the runner does and this repeats: input defaults and `required`, `${{ }}` expressions
in `env`, `run`, `if` and `outputs` (inputs, steps.<id>.outputs, github.action_path,
github.workspace, runner.temp), one `bash --noprofile --norc -eo pipefail` per step with
its own GITHUB_OUTPUT file, stop at the first failing step, and the action's outputs
evaluated from the steps'. A `uses:` step whose `if` is true cannot run here, and says so.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from tests.support.run import read_github_file

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

_EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
_COMPARISON = re.compile(r"^(.+?)\s*(==|!=)\s*'([^']*)'$")


@dataclass
class CompositeRun:
    code: int = 0
    outputs: dict[str, str] = field(default_factory=dict)
    log: str = ""
    steps_run: list[str] = field(default_factory=list)


class Context:
    def __init__(self, inputs: dict[str, str], github: dict[str, str], runner: dict[str, str]) -> None:
        self.inputs = inputs
        self.github = github
        self.runner = runner
        self.steps: dict[str, dict[str, str]] = {}

    def value(self, expression: str) -> str:
        parts = expression.strip().split(".")
        if parts[0] == "inputs" and len(parts) == 2:
            return self.inputs.get(parts[1], "")
        if parts[0] == "github" and len(parts) == 2:
            return self.github[parts[1]]
        if parts[0] == "runner" and len(parts) == 2:
            return self.runner[parts[1]]
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return self.steps.get(parts[1], {}).get(parts[3], "")
        raise ValueError(f"expression not supported by the test runner: {expression}")

    def substitute(self, text: str) -> str:
        return _EXPRESSION.sub(lambda m: self.value(m.group(1)), text)

    def condition(self, expression: str) -> bool:
        expression = _EXPRESSION.sub(lambda m: m.group(1), expression).strip()
        match = _COMPARISON.match(expression)
        if not match:
            raise ValueError(f"condition not supported by the test runner: {expression}")
        left, operator, literal = match.groups()
        equal = self.value(left) == literal
        return equal if operator == "==" else not equal


def run_composite(
    action_dir: Path,
    with_inputs: Mapping[str, str],
    *,
    workspace: Path,
    runner_temp: Path,
    env: Mapping[str, str],
    step_dir: Path,
) -> CompositeRun:
    spec: dict[str, Any] = yaml.safe_load((action_dir / "action.yml").read_text())
    assert spec["runs"]["using"] == "composite"
    inputs: dict[str, str] = {}
    for name, declared in (spec.get("inputs") or {}).items():
        if name in with_inputs:
            inputs[name] = with_inputs[name]
        elif declared.get("required") and "default" not in declared:
            raise ValueError(f"Input required and not supplied: {name}")
        else:
            inputs[name] = str(declared.get("default", ""))
    unknown = set(with_inputs) - set(inputs)
    if unknown:
        raise ValueError(f"Unexpected input(s) {sorted(unknown)}")

    context = Context(
        inputs,
        github={"action_path": str(action_dir), "workspace": str(workspace)},
        runner={"temp": str(runner_temp)},
    )
    result = CompositeRun()
    for index, step in enumerate(spec["runs"]["steps"]):
        step_id = step.get("id", f"__{index}")
        if "if" in step and not context.condition(str(step["if"])):
            continue
        if "uses" in step:
            raise ValueError(f"step {step_id} uses {step['uses']}, which the test runner cannot run")
        assert step.get("shell") == "bash", "composite run steps must name their shell"
        output = step_dir / f"{step_id}.output"
        output.write_text("")
        script = step_dir / f"{step_id}.sh"
        script.write_text(context.substitute(step["run"]))
        step_env = {
            **env,
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTION_PATH": str(action_dir),
            "GITHUB_WORKSPACE": str(workspace),
            "RUNNER_TEMP": str(runner_temp),
            "GITHUB_OUTPUT": str(output),
        }
        step_env |= {k: context.substitute(str(v)) for k, v in (step.get("env") or {}).items()}
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=workspace,
            env=step_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        result.steps_run.append(step_id)
        result.log += done.stdout + done.stderr
        context.steps[step_id] = read_github_file(output)
        if done.returncode != 0:
            result.code = done.returncode
            return result
    result.outputs = {
        name: context.substitute(str(declared["value"]))
        for name, declared in (spec.get("outputs") or {}).items()
    }
    return result


def runner_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The job's environment as a runner step sees it, without this test's own INPUT_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_"))}
    base.pop("PYTHONPATH", None)
    return base | dict(extra)
