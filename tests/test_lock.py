"""The lock is what the action installs: it agrees with pyproject.toml, and a wheel that does
not match its hash stops the set-up with one clear line."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from scripts.install import AWS_APIS
from scripts.lock import NO_DEPS, SETUP_TOOLS, dependencies, dependencies_sha256, name_of, ssh_dependencies
from tests.support.act import runner_path
from tests.support.fakehttp import FakeHttp, Reply, Request
from tests.support.run import REPO_ROOT, read_github_file
from tests.support.wheels import locked_wheels

if TYPE_CHECKING:
    from pathlib import Path

LOCK = REPO_ROOT / "lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", re.MULTILINE)


def pins(text: str) -> dict[str, str]:
    return {name.lower(): version for name, version in _PIN.findall(text)}


def test_the_lock_was_made_from_the_current_dependencies() -> None:
    header = (LOCK / "runtime.txt").read_text().splitlines()[1]
    assert header == f"# pyproject-dependencies-sha256: {dependencies_sha256(dependencies())}", (
        "lock/runtime.txt is stale: run `python scripts/lock.py`"
    )
    header = (LOCK / "setup.txt").read_text().splitlines()[1]
    assert header == f"# setup-tools-sha256: {dependencies_sha256(SETUP_TOOLS)}", (
        "lock/setup.txt is stale: run `python scripts/lock.py`"
    )
    header = (LOCK / "ssh.txt").read_text().splitlines()[1]
    assert header == f"# pyproject-ssh-sha256: {dependencies_sha256(ssh_dependencies())}", (
        "lock/ssh.txt is stale: run `python scripts/lock.py`"
    )


def test_every_dependency_is_locked_at_a_version_it_allows() -> None:
    locked = pins((LOCK / "runtime.txt").read_text())
    for line in dependencies():
        requirement = Requirement(line)
        name = name_of(line)
        assert name in locked, f"{name} is in pyproject.toml but not in lock/runtime.txt"
        assert Version(locked[name]) in requirement.specifier, f"{name}=={locked[name]} breaks {line}"


def test_every_locked_package_has_hashes_and_nothing_unused_is_installed() -> None:
    text = (LOCK / "runtime.txt").read_text()
    blocks = re.split(r"\n(?=[A-Za-z])", text.split("\n", 2)[2])
    for block in blocks:
        assert "--hash=sha256:" in block, block
    locked = pins(text)
    # actions-toolkit's own dependencies that the action never imports stay out.
    assert not {"pygithub", "pyjwt", "pynacl", "cryptography"} & set(locked)
    assert set(NO_DEPS) <= set(locked)
    # The set-up's own tools: pure-Python wheels (install.py imports them from the files).
    setup = (LOCK / "setup.txt").read_text()
    assert sorted(pins(setup)) == ["installer", "packaging"]
    for block in re.split(r"\n(?=[A-Za-z])", setup.split("\n", 2)[2]):
        assert "--hash=sha256:" in block, block
    ssh = (LOCK / "ssh.txt").read_text()
    for block in re.split(r"\n(?=[A-Za-z])", ssh.split("\n", 2)[2]):
        assert "--hash=sha256:" in block, block
    assert "paramiko" in pins(ssh)
    # Nothing of the runtime lock again, at another version.
    assert not set(pins(ssh)) & set(locked)


def test_the_dev_extra_can_run_the_lock_script() -> None:
    dev = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(name_of(d) == "uv" for d in dev)


def _action_copy(tmp: Path) -> Path:
    """The action as a runner checks it out: the files the set-up reads."""
    copy = tmp / "action"
    copy.mkdir()
    for name in ("lock", "entrypoint", "scripts"):
        shutil.copytree(REPO_ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _setup(
    action: Path, runner_temp: Path, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "VIRTUAL_ENV", "DOCKER_"))}
    env |= {"ACTION_PATH": str(action), "RUNNER_TEMP": str(runner_temp)} | (extra or {})
    env["GITHUB_OUTPUT"] = str(runner_temp / "output")
    env["PATH"] = runner_path(env["PATH"])
    return subprocess.run(
        ["bash", str(action / "scripts" / "action-python.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_a_tampered_hash_fails_the_install_with_one_clear_line(tmp_path: Path) -> None:
    action = _action_copy(tmp_path)
    lock = action / "lock" / "runtime.txt"
    text = lock.read_text()
    # Every hash of six (a small, pure-Python wheel) replaced: whatever wheel is chosen mismatches.
    six = re.search(r"^six==.*?(?=^\S)", text, re.MULTILINE | re.DOTALL)
    assert six is not None
    tampered = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, six.group(0))
    lock.write_text(text.replace(six.group(0), tampered))
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    done = _setup(action, runner_temp)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stdout.splitlines() if line.startswith("::error::")]
    assert len(errors) == 1, done.stdout
    assert "does not match its sha256 in the lock" in errors[0]
    assert "installing the locked dependencies (lock/runtime.txt) failed" in errors[0]
    # Nothing half-made is left to be mistaken for a ready environment.
    assert not list(runner_temp.glob("lambda-image-publish-[0-9a-f]*/.complete"))
    assert not (runner_temp / "output").exists() or "python=" not in (runner_temp / "output").read_text()


def test_the_set_up_installs_exactly_the_lock_and_reuses_it(tmp_path: Path) -> None:
    action = _action_copy(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    first = _setup(action, runner_temp)
    assert first.returncode == 0, first.stdout + first.stderr
    python = read_github_file(runner_temp / "output")["python"]
    frozen = subprocess.run(
        [python, "-I", "-c", "import importlib.metadata as m; print('\\n'.join(sorted("
         "f\"{d.metadata['Name'].lower()}=={d.version}\" for d in m.distributions())))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    locked = pins((action / "lock" / "runtime.txt").read_text())
    locked.pop("pywin32")  # Windows only
    assert sorted(frozen) == sorted(f"{n}=={v}" for n, v in locked.items())
    # botocore holds the models of the APIs the action can call, and they all load.
    models = subprocess.run(
        [python, "-I", "-c", "import boto3, botocore, os, sys\n"
         "for api in sys.argv[1:]: boto3.client(api, region_name='eu-west-2')\n"
         "data = os.path.join(os.path.dirname(botocore.__file__), 'data')\n"
         "print(' '.join(sorted(n for n in os.listdir(data) if os.path.isdir(os.path.join(data, n)))))",
         *AWS_APIS],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert models == sorted(AWS_APIS)
    (runner_temp / "output").write_text("")
    again = _setup(action, runner_temp)
    assert again.returncode == 0
    assert "Set up" not in again.stdout  # reused, not reinstalled
    assert read_github_file(runner_temp / "output")["python"] == python


def _installed(python: str) -> dict[str, str]:
    listed = subprocess.run(
        [python, "-I", "-c", "import importlib.metadata as m; print('\\n'.join("
         "f\"{d.metadata['Name'].lower()}=={d.version}\" for d in m.distributions()))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return dict(line.split("==", 1) for line in listed)


def test_the_ssh_extra_is_installed_only_for_an_engine_reached_over_ssh(tmp_path: Path) -> None:
    action = _action_copy(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    done = _setup(action, runner_temp, {"DOCKER_HOST": "ssh://builder@build-1.internal"})
    assert done.returncode == 0, done.stdout + done.stderr
    over_ssh = read_github_file(runner_temp / "output")["python"]
    installed = _installed(over_ssh)
    ssh_pins = pins((action / "lock" / "ssh.txt").read_text())
    assert installed["paramiko"] == ssh_pins["paramiko"]
    assert installed["cryptography"] == ssh_pins["cryptography"]
    # A Docker context whose host is ssh:// counts as well (the same environment, reused).
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text("{}")
    subprocess.run(
        ["docker", "context", "create", "far", "--docker", "host=ssh://builder@build-1.internal"],
        env={**os.environ, "DOCKER_CONFIG": str(config)}, check=True, capture_output=True,
    )  # fmt: skip
    (config / "config.json").write_text('{"currentContext": "far"}')
    (runner_temp / "output").write_text("")
    done = _setup(action, runner_temp, {"DOCKER_CONFIG": str(config)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_github_file(runner_temp / "output")["python"] == over_ssh
    # So does the builder input naming that context, whatever DOCKER_HOST says.
    (config / "config.json").write_text("{}")
    (runner_temp / "output").write_text("")
    done = _setup(
        action, runner_temp,
        {"DOCKER_CONFIG": str(config), "DOCKER_HOST": "unix:///var/run/docker.sock", "BUILDER_INPUT": "far"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_github_file(runner_temp / "output")["python"] == over_ssh
    # A tcp:// engine gets no ssh support, in an environment of its own.
    (runner_temp / "output").write_text("")
    done = _setup(action, runner_temp, {"DOCKER_HOST": "tcp://build-1.internal:2376"})
    assert done.returncode == 0, done.stdout + done.stderr
    over_tcp = read_github_file(runner_temp / "output")["python"]
    assert over_tcp != over_ssh
    assert "paramiko" not in _installed(over_tcp)


def test_an_index_that_needs_credentials_is_left_to_pip_with_the_same_hashes(tmp_path: Path) -> None:
    """A private index whose URL carries credentials (CodeArtifact, Artifactory): the fast
    path hands it to the runner's pip, which installs the same locked bytes."""
    wheels = locked_wheels(LOCK / "runtime.txt")

    def html_index(request: Request, _: FakeHttp) -> Reply:
        if request.path.startswith("/simple/"):
            project = request.path.split("/")[2]
            links = "".join(
                f'<a href="/files/{name}#sha256={hashlib.sha256(data).hexdigest()}">{name}</a>\n'
                for name, data in wheels.items()
                if re.sub(r"[-_.]+", "-", name.split("-")[0]).lower() == project
            )
            return Reply(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode(),
                         {"Content-Type": "text/html"})  # fmt: skip
        name = request.path.removeprefix("/files/")
        return Reply(200, wheels[name]) if name in wheels else Reply(404)

    action = _action_copy(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    with FakeHttp(html_index) as server:
        # HOME: this machine's own pip.conf (find-links, extra indexes) stays out of the test.
        index = f"http://ci:s3cret@{server.host}/simple/"
        done = _setup(action, runner_temp, {"PIP_INDEX_URL": index, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    python = read_github_file(runner_temp / "output")["python"]
    locked = pins((LOCK / "runtime.txt").read_text())
    locked.pop("pywin32")  # Windows only
    assert _installed(python) == locked
    imports = "import boto3, docker, yaml, entrypoint.commands.release"
    subprocess.run([python, "-I", "-c", imports], check=True)
    # pip, not the fast path, fetched them: with the credentials, every wheel once.
    fetched = [r for r in server.requests if r.path.startswith("/files/")]
    assert sorted(r.path.removeprefix("/files/") for r in fetched) == sorted(wheels)
    assert all(r.headers.get("Authorization", "").startswith("Basic ") for r in server.requests)
