"""Releases: a tag is released only when pyproject.toml and CHANGELOG.md agree with it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import tomllib
import yaml

from scripts.release_check import release_notes
from tests.support.run import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_current_version_has_release_notes() -> None:
    notes = release_notes(f"v{VERSION}")
    assert notes.strip()
    assert "## [" not in notes  # one section, not the rest of the file


@pytest.mark.parametrize(
    ("tag", "message"),
    [("v0.0.1", "pyproject.toml says version"), ("1.0.0", "not vMAJOR.MINOR.PATCH"), ("v1.0", "not vMAJOR")],
)
def test_a_tag_that_disagrees_is_refused(tag: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "release_check.py"), tag],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.startswith("::error::") and message in done.stdout


def test_a_version_without_a_changelog_section_is_refused(tmp_path: Path) -> None:
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "CHANGELOG.md").write_text("# Changelog\n\n## [0.9.0] - 2026-01-01\n\n- old\n")
    with pytest.raises(ValueError, match=rf"no section '## \[{VERSION}\]'"):
        release_notes(f"v{VERSION}", tmp_path)


def test_the_release_workflow_checks_tests_then_publishes() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "release.yml").read_text())
    # PyYAML reads the key `on` as True.
    assert workflow[True]["push"]["tags"] == ["v[0-9]+.[0-9]+.[0-9]+"]
    jobs = workflow["jobs"]
    test_steps = [s.get("run", "") for s in jobs["test"]["steps"]]
    assert 'python3 scripts/release_check.py "$GITHUB_REF_NAME"' in test_steps
    assert "bash scripts/test.sh" in test_steps
    assert jobs["image"]["needs"] == "test"
    assert jobs["release"]["needs"] == ["test", "image"]
    build = "\n".join(s.get("run", "") for s in jobs["image"]["steps"])
    assert "--provenance=false" in build and "containerimage.digest" in build
    script = "\n".join(s.get("run", "") for s in jobs["release"]["steps"])
    assert "gh release create" in script
    assert 'git push --force origin "refs/tags/$major"' in script
    # Who may write what: tests/test_trust_supply.py.
    assert workflow["permissions"] == {}


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert "bash scripts/test.sh" in [s.get("run") for s in workflow["jobs"]["test"]["steps"]]
    assert "bash scripts/test.sh" in (REPO_ROOT / ".ci" / "run").read_text()
