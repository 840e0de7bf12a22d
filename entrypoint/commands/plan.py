"""What will be built, tagged and pushed, computed before any side effect.

The commit tag goes first and never moves; `env`, `latest` and the extra tags move to the
new image only once it is complete in the registry.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from entrypoint.checks.sizes import human_bytes
from entrypoint.errors import InputError
from entrypoint.inputs import SHA_RE, PublishInputs
from entrypoint.registry import tags

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from entrypoint.checks.sizes import Growth
    from entrypoint.registry.client import Descriptor, RegistryClient
    from entrypoint.registry.ecr import Ecr, RegistryLogin, Repository


@dataclass(frozen=True)
class Plan:
    inputs: PublishInputs
    commit: str
    registry: str | None = None

    @property
    def commit_tag(self) -> str:
        return self.commit

    @property
    def moving_tags(self) -> tuple[str, ...]:
        tags = (self.inputs.env, "latest", *self.inputs.extra_tags)
        return tuple(t for t in dict.fromkeys(tags) if t != self.commit_tag)

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.commit_tag, *self.moving_tags)

    @property
    def local_image(self) -> str:
        """The engine-local name of the build result, independent of the registry."""
        return f"{self.inputs.repository}:{self.commit_tag}"

    @property
    def repository_path(self) -> str:
        return f"{self.registry or '<ECR registry>'}/{self.inputs.repository}"

    def reference(self, tag: str) -> str:
        return f"{self.repository_path}:{tag}"

    def with_registry(self, registry: str) -> Plan:
        return replace(self, registry=registry)

    def describe(self) -> list[str]:
        i = self.inputs
        lines = [
            f"environment : {i.env}",
            f"region      : {i.region}",
            f"dockerfile  : {i.dockerfile}",
            f"context     : {i.context}",
            f"platform    : {i.platform}",
            f"repository  : {self.repository_path}",
            f"commit      : {self.commit}",
            f"tags        : {', '.join(self.tags)} (commit tag first; the rest move after it)",
        ]
        if i.build_args:
            lines.append(f"build args  : {', '.join(k for k, _ in i.build_args)}")
        if not i.push:
            lines.append("push        : false (build and check only; nothing leaves this machine)")
        gates = _gates(i)
        if gates and i.push:
            lines.append(f"gates       : {gates} (before any tag moves)")
        return lines


def _gates(inputs: PublishInputs) -> str:
    budget, rule = inputs.budget, inputs.scan
    parts = [
        f"{what} {human_bytes(value)}"
        for what, value in (("size at most", budget.limit), ("warn above", budget.warn))
        if value is not None
    ]
    parts += [
        f"{what} {_growth(growth)}"
        for what, growth in (
            ("growth at most", budget.growth_limit),
            ("warn on growth above", budget.growth_warn),
        )
        if growth is not None
    ]
    if rule is not None:
        fails = f"fails on {rule.fail_on.lower()} and above" if rule.fail_on else "reports only"
        accepted = f", {len(rule.ignore)} accepted finding(s)" if rule.ignore else ""
        parts.append(f"ECR scan {fails}{accepted}")
    return "; ".join(parts)


def _growth(growth: Growth) -> str:
    both = [
        f"{growth.percent:g}%" if growth.percent is not None else "",
        human_bytes(growth.bytes) if growth.bytes is not None else "",
    ]
    return " or ".join(part for part in both if part)


# Where CI systems put the commit being built: GitHub Actions, GitLab CI, Jenkins' git plugin.
COMMIT_VARIABLES = ("GITHUB_SHA", "CI_COMMIT_SHA", "GIT_COMMIT")


def resolve_commit(workspace: Path, environ: Mapping[str, str]) -> str:
    """The full commit SHA: from the CI system's variable, else the workspace's HEAD."""
    for variable in COMMIT_VARIABLES:
        sha = environ.get(variable, "").strip().lower()
        if not sha:
            continue
        if not SHA_RE.fullmatch(sha):
            raise InputError(
                f"{variable} is '{sha[:80]}', not a full 40-character commit SHA",
                f"leave {variable} to the CI system, or set it to a full commit SHA",
            )
        return sha
    try:
        done = subprocess.run(
            ["git", "-C", str(workspace), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
            # The job's GIT_* settings (GIT_DIR, GIT_CONFIG_*, ...) would change what is read.
            env={k: v for k, v in environ.items() if k in ("PATH", "HOME", "LANG")},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(
            f"cannot run git to find the commit to tag ({exc})",
            "install git, or set GITHUB_SHA (or CI_COMMIT_SHA, GIT_COMMIT) to the commit being published",
        ) from exc
    sha = done.stdout.strip()
    if done.returncode != 0 or not SHA_RE.fullmatch(sha):
        raise InputError(
            f"cannot find the commit to tag: {workspace} is not a git checkout with a commit",
            "run in a checkout (actions/checkout), or set GITHUB_SHA (or CI_COMMIT_SHA, GIT_COMMIT)",
        )
    return sha


def make_plan(inputs: PublishInputs, environ: Mapping[str, str]) -> Plan:
    return Plan(inputs=inputs, commit=resolve_commit(inputs.workspace, environ), registry=inputs.registry)


@dataclass(frozen=True)
class Target:
    """Where the image goes, known once ECR has answered."""

    login: RegistryLogin
    registry: RegistryClient
    repository: Repository
    current: dict[str, Descriptor | None]
    # registry-inline: the image whose inline cache covers the most layers (cache.py).
    anchor: Descriptor | None = None
    # The ECR API of the login, for the scan gate.
    ecr: Ecr | None = None

    @property
    def place(self) -> tags.Place:
        return tags.Place(self.registry, self.repository, self.current)
