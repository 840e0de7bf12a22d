"""The set-up's installer (scripts/install.py) against a real HTTP index on loopback: it
installs exactly the locked wheels that suit this Python, takes no byte the lock does not
name, and hands what it cannot do to pip.

The index serves the real installer and packaging wheels of lock/setup.txt (fetched once
with pip from the package index) and small wheels made here for a lock of the test's own."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.fakehttp import FakeHttp, Reply, Request
from tests.support.run import REPO_ROOT
from tests.support.wheels import locked_wheels

INSTALL = REPO_ROOT / "scripts" / "install.py"
PYTHON_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
PLATFORM = sysconfig.get_platform().replace("-", "_").replace(".", "_")  # e.g. linux_x86_64
JSON_API = "application/vnd.pypi.simple.v1+json"


def _wheel(name: str, version: str, tag: str, files: dict[str, str]) -> tuple[str, bytes]:
    """A real wheel (METADATA, WHEEL, RECORD) named for `tag` (python-abi-platform)."""
    dist = f"{name}-{version}"
    purelib = "true" if tag.endswith("-none-any") else "false"
    contents = {
        **files,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n"
        ),
    }
    record = []
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in contents.items():
            data = text.encode()
            archive.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{dist}.dist-info/RECORD,,")
        archive.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")
    return f"{dist}-{tag}.whl", out.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def setup_wheels() -> dict[str, bytes]:
    """lock/setup.txt's wheels (installer, packaging), by file name."""
    return locked_wheels(REPO_ROOT / "lock" / "setup.txt")


class Index:
    """A PEP 691 index: `files` maps a project to [(file name, bytes served, sha256 listed)]."""

    def __init__(self, files: dict[str, list[tuple[str, bytes, str]]], content_type: str = JSON_API) -> None:
        self.files = files
        self.content_type = content_type

    def __call__(self, request: Request, _: FakeHttp) -> Reply:
        parts = request.path.strip("/").split("/")
        if parts[0] == "simple" and len(parts) == 2 and parts[1] in self.files:
            page = {"meta": {"api-version": "1.0"}, "name": parts[1],
                    "files": [{"filename": f, "url": f"/files/{parts[1]}/{f}", "hashes": {"sha256": sha}}
                              for f, _, sha in self.files[parts[1]]]}  # fmt: skip
            return Reply(200, json.dumps(page).encode(), {"Content-Type": self.content_type})
        if parts[0] == "files" and len(parts) == 3:
            for f, data, _ in self.files.get(parts[1], []):
                if f == parts[2]:
                    return Reply(200, data, {"Content-Type": "application/octet-stream"})
        return Reply(404)


def _served(wheels: dict[str, bytes]) -> dict[str, list[tuple[str, bytes, str]]]:
    by_project: dict[str, list[tuple[str, bytes, str]]] = {}
    for name, data in wheels.items():
        by_project.setdefault(name.split("-")[0].lower().replace("_", "-"), []).append(
            (name, data, _sha(data))
        )
    return by_project


ALPHA = _wheel("alpha", "1.0", "py3-none-any", {"alpha/__init__.py": "VALUE = 'alpha'\n"})
# beta has a compiled-for-this-platform wheel and a pure one: the platform's comes first, as pip picks.
BETA_HERE = _wheel(
    "beta", "2.0", f"{PYTHON_TAG}-{PYTHON_TAG}-{PLATFORM}", {"beta/__init__.py": "KIND = 'platform'\n"}
)
BETA_PURE = _wheel("beta", "2.0", "py3-none-any", {"beta/__init__.py": "KIND = 'pure'\n"})
GAMMA_WIN = _wheel("gamma", "3.0", "py3-none-any", {"gamma/__init__.py": ""})  # locked for Windows only
DELTA_OTHER = _wheel("delta", "4.0", "cp27-cp27m-win32", {"delta/__init__.py": ""})


def _lock(tmp: Path, pins: list[tuple[str, str, str, list[bytes]]]) -> Path:
    lock = tmp / "runtime.txt"
    lines = ["# test lock"]
    for name, version, marker, wheels in pins:
        hashes = "".join(f" \\\n    --hash=sha256:{_sha(w)}" for w in wheels)
        lines.append(f"{name}=={version}{' ; ' + marker if marker else ''}{hashes}")
    lock.write_text("\n".join(lines) + "\n")
    return lock


def _package(tmp: Path) -> Path:
    package = tmp / "src" / "ourpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("NAME = 'ours'\n")
    return package


def _install(tmp: Path, lock: Path, index: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    venv = tmp / "runner-temp" / "venv"
    venv.parent.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp), "PIP_INDEX_URL": index}
    done = subprocess.run(
        [sys.executable, "-I", str(INSTALL), str(venv), str(_package(tmp)), str(lock)],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    return done, venv


def _run(venv: Path, code: str) -> str:
    return subprocess.run(
        [venv / "bin" / "python", "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout


def test_exactly_the_locked_wheels_for_this_python_are_installed(
    tmp_path: Path, setup_wheels: dict[str, bytes]
) -> None:
    lock = _lock(tmp_path, [
        ("alpha", "1.0", "", [ALPHA[1]]),
        ("beta", "2.0", "", [BETA_HERE[1], BETA_PURE[1]]),
        ("gamma", "3.0", "sys_platform == 'win32'", [GAMMA_WIN[1]]),
    ])  # fmt: skip
    served = _served(setup_wheels | dict([ALPHA, BETA_HERE, BETA_PURE, GAMMA_WIN]))
    with FakeHttp(Index(served)) as server:
        done, venv = _install(tmp_path, lock, f"http://{server.host}/simple")
    assert done.returncode == 0, done.stderr
    assert _run(venv, "import alpha, beta, ourpkg; print(alpha.VALUE, beta.KIND, ourpkg.NAME)").split() == [
        "alpha",
        "platform",
        "ours",
    ]
    installed = _run(
        venv, "import importlib.metadata as m; print(sorted(d.metadata['Name'] for d in m.distributions()))"
    )
    assert installed.strip() == "['alpha', 'beta']"  # no installer, packaging or pip in the venv
    # Only what is needed was downloaded: no pure beta, nothing for Windows.
    fetched = sorted(r.path.rsplit("/", 1)[1] for r in server.requests if r.path.startswith("/files/"))
    assert fetched == sorted([ALPHA[0], BETA_HERE[0], *setup_wheels])
    assert all(r.headers["Accept"] == JSON_API for r in server.requests if r.path.startswith("/simple/"))
    # Byte-compiled at set-up, and the downloads are gone.
    site = Path(_run(venv, "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    assert list((site / "alpha" / "__pycache__").glob("__init__.*.pyc"))
    assert list((site / "ourpkg" / "__pycache__").glob("__init__.*.pyc"))
    assert not list(venv.parent.glob(".wheels-*"))


def test_bytes_that_are_not_in_the_lock_are_refused_without_falling_back(
    tmp_path: Path, setup_wheels: dict[str, bytes]
) -> None:
    lock = _lock(tmp_path, [("alpha", "1.0", "", [ALPHA[1]])])
    served = _served(setup_wheels)
    # The page lists the locked hash; the file served is other bytes: a tampered mirror.
    evil = _wheel("alpha", "1.0", "py3-none-any", {"alpha/__init__.py": "import os; os.system('id')\n"})[1]
    served["alpha"] = [(ALPHA[0], evil, _sha(ALPHA[1]))]
    with FakeHttp(Index(served)) as server:
        done, venv = _install(tmp_path, lock, f"http://{server.host}/simple")
    assert done.returncode == 2, done.stderr
    url = f"http://{server.host}/files/alpha/{ALPHA[0]}"
    assert f"the wheel at {url} does not match its sha256 hash in runtime.txt" in done.stderr
    assert not list(venv.parent.glob(".wheels-*"))


def test_a_lock_without_a_wheel_for_this_python_is_one_clear_refusal(
    tmp_path: Path, setup_wheels: dict[str, bytes]
) -> None:
    lock = _lock(tmp_path, [("delta", "4.0", "", [DELTA_OTHER[1]])])
    with FakeHttp(Index(_served(setup_wheels | dict([DELTA_OTHER])))) as server:
        done, _ = _install(tmp_path, lock, f"http://{server.host}/simple")
    assert done.returncode == 2, done.stderr
    assert "runtime.txt has no wheels of delta 4.0 for this runner's Python" in done.stderr
    assert not any(DELTA_OTHER[0] in r.path for r in server.requests)


def test_an_index_without_the_json_api_hands_over_to_pip(
    tmp_path: Path, setup_wheels: dict[str, bytes]
) -> None:
    lock = _lock(tmp_path, [("alpha", "1.0", "", [ALPHA[1]])])
    with FakeHttp(Index(_served(setup_wheels | dict([ALPHA])), content_type="text/html")) as server:
        done, _ = _install(tmp_path, lock, f"http://{server.host}/simple")
    assert done.returncode == 3, done.stderr
    assert "does not serve the JSON index API" in done.stderr
    assert not any(r.path.startswith("/files/") for r in server.requests)


def test_an_index_url_with_credentials_is_left_to_pip(tmp_path: Path) -> None:
    lock = _lock(tmp_path, [("alpha", "1.0", "", [ALPHA[1]])])
    done, _ = _install(tmp_path, lock, "https://user:secret@127.0.0.1:9/simple")
    assert done.returncode == 3
    assert "secret" not in done.stderr
    assert "credentials" in done.stderr


_CLIENT_MAKERS = {"client", "create_client", "client_creator", "_client_creator", "create_nested_client"}


def _clients_made(sources: list[str]) -> set[str]:
    """Every API name given as a string literal to a call that makes a boto3/botocore
    client (code only: ast leaves out the docstrings' examples)."""
    made = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in _CLIENT_MAKERS:
                made |= {
                    arg.value
                    for arg in node.args[:2]
                    if isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and re.fullmatch(r"[a-z0-9-]+", arg.value)
                }
    return made


def test_the_aws_apis_kept_are_every_one_the_action_and_botocore_make_clients_for() -> None:
    """Only AWS_APIS' models of the locked botocore are installed: this reads the locked
    wheel's own code (and ours) for every client it can make, so a botocore that adds a
    credential provider on another API fails here, not on a runner."""
    from scripts.install import AWS_APIS  # noqa: PLC0415

    wheels = locked_wheels(REPO_ROOT / "lock" / "runtime.txt")
    botocore = next(data for name, data in wheels.items() if name.startswith("botocore-"))
    with zipfile.ZipFile(io.BytesIO(botocore)) as archive:
        code = [
            archive.read(n).decode()
            for n in archive.namelist()
            if n.endswith(".py") and n.startswith("botocore/") and "/docs/" not in n and "/vendored/" not in n
        ]
        models = {
            n.split("/")[2] for n in archive.namelist() if n.count("/") > 3 and n.startswith("botocore/data/")
        }
    made = _clients_made(code)
    ours = _clients_made([p.read_text() for p in (REPO_ROOT / "entrypoint").rglob("*.py")])
    assert {"sts", "sso", "sso-oidc", "signin"} <= made  # the scan sees the credential chain's clients
    assert ours == {"ecr", "lambda"}
    assert made | ours <= AWS_APIS
    assert models >= AWS_APIS  # every API kept has a model in this botocore


def test_index_pages_are_asked_for_by_the_normalised_project_name(
    tmp_path: Path, setup_wheels: dict[str, bytes]
) -> None:
    dotted = _wheel("zope_like", "1.0", "py3-none-any", {"zope_like/__init__.py": "OK = True\n"})
    lock = _lock(tmp_path, [("Zope.Like", "1.0", "", [dotted[1]])])  # as a lock may spell it
    with FakeHttp(Index(_served(setup_wheels | dict([dotted])))) as server:
        done, venv = _install(tmp_path, lock, f"http://{server.host}/simple")
    assert done.returncode == 0, done.stderr
    assert "/simple/zope-like/" in [r.path for r in server.requests]
    assert _run(venv, "import zope_like; print(zope_like.OK)").strip() == "True"
