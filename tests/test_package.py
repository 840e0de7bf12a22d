"""`pip install .` gives a package that works away from the checkout.

The action's own set-ups (scripts/action-python.sh, scripts/install.py, Dockerfile.action)
copy entrypoint/ and never build it, so nothing else would notice pyproject.toml leaving a
subpackage out of the wheel: inside the checkout the missing module is still found on disk.
Here the wheel is built the way `pip install .` builds it, installed into a venv of its
own, and run from a folder outside the checkout, isolated (-I) so neither the current
folder nor PYTHONPATH can supply a module the wheel lacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.run import REPO_ROOT

PACKAGE = "entrypoint"
# Folders of the checkout that hold Python packages the wheel must never carry.
NOT_SHIPPED = ("tests", "bench", "scripts", "examples")
# Not copied for the build: environments, caches, and earlier build output. A stale
# build/lib or *.egg-info/SOURCES.txt feeds setuptools files the configuration no longer
# names, which would hide exactly the omission this test is for.
NOT_COPIED = {".git", ".venv", ".stack", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _expected_modules() -> set[str]:
    """Every module of the package in the tree, so a new subpackage is covered unasked."""
    return {path.relative_to(REPO_ROOT).as_posix() for path in (REPO_ROOT / PACKAGE).rglob("*.py")}


def _skip_top_level(folder: str, names: list[str]) -> set[str]:
    if Path(folder) != REPO_ROOT:
        return set()
    return {name for name in names if name in NOT_COPIED or name.endswith(".egg-info")}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip install .` would install, built from a copy of the checkout.

    With build isolation, as `pip install .` does: the project's venv need not carry a
    setuptools new enough for [build-system] (a 3.12 venv has none at all), so pip fetches
    it from the configured index."""
    work = tmp_path_factory.mktemp("build")
    source = work / "source"
    # Copied so that setuptools writes build/ and *.egg-info into a throwaway tree, not the
    # checkout; __pycache__ folders stay, as in any used checkout.
    shutil.copytree(REPO_ROOT, source, ignore=_skip_top_level)
    dist = work / "dist"
    # An absolute path: a bare folder name would be read as a project name on the index.
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(source)],
        cwd=work,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("*.whl")
    return found


def test_wheel_holds_every_module_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = _expected_modules() - names
    assert not missing, f"modules of the tree missing from {wheel.name}: {sorted(missing)}"
    top_level = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {PACKAGE}, f"{wheel.name} ships more than {PACKAGE}/: {sorted(top_level)}"
    assert not any(name.startswith(tuple(f"{folder}/" for folder in NOT_SHIPPED)) for name in names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain venv with the wheel, and nothing of the checkout: its Python."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    # Away from the checkout, as on a user's machine.
    assert not venv.resolve().is_relative_to(REPO_ROOT), "--basetemp must be outside the checkout"
    # No pip in it (ensurepip alone takes seconds): the project's pip installs into it.
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv.parent)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    asked = _run([str(python), "-I", "-c", purelib], cwd=venv)
    assert asked.returncode == 0, asked.stderr
    site = Path(asked.stdout.strip())
    installing = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "--quiet", str(wheel)],
        cwd=venv.parent,
    )  # fmt: skip
    assert installing.returncode == 0, installing.stdout + installing.stderr
    # The dependencies (boto3, docker, actions-toolkit, ...) from the project's venv, by a
    # path entry placed after the venv's own site-packages. Python does not read .pth files
    # in a folder added this way, so the project's editable hook, which would map entrypoint
    # back to the checkout, stays out.
    dependencies = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "project-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(dependencies)))
    return python


def _clean_env(home: Path) -> dict[str, str]:
    # Off a runner (no GITHUB_ACTIONS), with no INPUT_*: output and exit code depend on
    # the arguments alone, in CI as on a laptop.
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C.UTF-8"}


def test_every_module_imports_from_the_venv(installed: Path, wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        modules = sorted(
            name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for name in archive.namelist()
            # __main__ runs the action when imported.
            if name.endswith(".py") and name != f"{PACKAGE}/__main__.py"
        )
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    print(importlib.import_module(name).__file__)\n"
    )
    imported = _run([str(installed), "-I", "-c", script, *modules], cwd=tmp_path, env=_clean_env(tmp_path))
    assert imported.returncode == 0, imported.stderr
    files = imported.stdout.splitlines()
    assert len(files) == len(modules)
    venv = installed.parent.parent
    outside = [file for file in files if not Path(file).resolve().is_relative_to(venv.resolve())]
    assert not outside, f"imported from outside {venv}: {outside}"


def test_help_names_the_commands(installed: Path, tmp_path: Path) -> None:
    shown = _run([str(installed), "-I", "-m", PACKAGE, "--help"], cwd=tmp_path, env=_clean_env(tmp_path))
    assert shown.returncode == 0, shown.stderr
    for command in ("publish", "verify", "promote", "rollback"):
        assert command in shown.stdout


def test_publish_reads_its_inputs(installed: Path, tmp_path: Path) -> None:
    """publish parses its inputs through entrypoint.inputs before touching Docker or AWS: a
    missing `env` is the one clear input error, not an import failure."""
    ran = _run([str(installed), "-I", "-m", PACKAGE, "publish"], cwd=tmp_path, env=_clean_env(tmp_path))
    output = ran.stdout + ran.stderr
    assert "ModuleNotFoundError" not in output
    assert "Traceback" not in output
    assert ran.returncode == 2, output
    assert ran.stderr.strip().splitlines()[-1] == (
        "error: input 'env' is required and was not given. "
        "Fix: set 'env' to preprod, prod or another environment name."
    )
