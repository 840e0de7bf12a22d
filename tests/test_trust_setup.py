"""The action's own set-up (scripts/action-python.sh, scripts/install.py) against what an
earlier step of the job, another user of a self-hosted runner, or the package index can
leave for it (issue 23): each test performs the attack for real and checks that no code of
the attacker's ran.

The set-up runs as action.yml runs it, on a copy of the action whose runtime lock is a
single small wheel (alpha), from a package index on loopback (tests/test_install.py's)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from scripts.install import Index as InstallIndex
from scripts.install import Pin, Refused
from tests.support.fakehttp import FakeHttp, Reply, Request
from tests.support.run import REPO_ROOT, read_github_file
from tests.support.wheels import locked_wheels
from tests.test_install import ALPHA, INSTALL, JSON_API, Index, _lock, _package, _served, _sha, _wheel
from tests.test_lock import _action_copy, _setup

if TYPE_CHECKING:
    from collections.abc import Callable

NOBODY = 65534  # another user of the machine
_NETWORK_VARIABLES = (
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY",
    "PIP_TIMEOUT",
)  # fmt: skip


@pytest.fixture(scope="module")
def setup_wheels() -> dict[str, bytes]:
    """lock/setup.txt's wheels (installer, packaging), by file name."""
    return locked_wheels(REPO_ROOT / "lock" / "setup.txt")


def _pth(marker: Path) -> str:
    """A .pth file's line that writes `marker` whenever a Python that has it starts."""
    return f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')\n"


def _fake_python(path: Path, marker: Path) -> None:
    """A python at `path` that writes `marker`, then runs as the real one."""
    path.write_text(f'#!/bin/sh\necho ran > {marker}\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)


def _marker_wheel(name: str, marker: Path) -> tuple[str, bytes]:
    return _wheel(name, "1.0", "py3-none-any", {f"{name}.pth": _pth(marker)})


def _small_action(tmp: Path) -> Path:
    """The action, its runtime lock reduced to alpha (a fast set-up that still runs it all)."""
    action = _action_copy(tmp)
    _lock(action / "lock", [("alpha", "1.0", "", [ALPHA[1]])])
    return action


def _html_index(wheels: dict[str, bytes]) -> Callable[[Request, FakeHttp], Reply]:
    """A PEP 503 (HTML only) index of `wheels`: the fast path hands it to pip."""

    def answer(request: Request, _: FakeHttp) -> Reply:
        if request.path.startswith("/simple/"):
            project = request.path.split("/")[2]
            links = "".join(
                f'<a href="/files/{name}#sha256={_sha(data)}">{name}</a>\n'
                for name, data in wheels.items()
                if name.split("-")[0].lower().replace("_", "-") == project
            )
            body = f"<!DOCTYPE html><html><body>\n{links}</body></html>".encode()
            return Reply(200, body, {"Content-Type": "text/html"})
        name = request.path.removeprefix("/files/")
        return Reply(200, wheels[name]) if name in wheels else Reply(404)

    return answer


def _python_runs(python: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The set-up's Python started as the action's next step starts it."""
    return subprocess.run(
        [python, "-I", "-c", "import alpha; print(alpha.VALUE)"],
        cwd=cwd, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


# --- A: pip's configuration files steer the fallback ------------------------------------------


@pytest.mark.parametrize(
    "config",
    ["home/.config/pip/pip.conf", "home/.pip/pip.conf", "xdg-dirs/pip/pip.conf"],
    ids=["user", "user-legacy", "global-xdg"],
)
def test_a_pip_conf_cannot_add_a_package_to_the_fallback(tmp_path: Path, config: str) -> None:
    """An earlier step writes a pip.conf naming a requirements file of its own, with its own
    hashes, and an index URL with credentials (so pip, not the fast path, installs). The
    requirement's wheel has a .pth file: had pip installed it, the set-up's own Python
    (which byte-compiles the venv) would have run it."""
    marker = tmp_path / "marker"
    evil = _marker_wheel("evil", marker)
    (tmp_path / "evil.txt").write_text(f"evil==1.0 --hash=sha256:{_sha(evil[1])}\n")
    action = _small_action(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    with FakeHttp(_html_index(dict([ALPHA, evil]))) as server:
        conf = tmp_path / config
        conf.parent.mkdir(parents=True)
        conf.write_text(
            f"[global]\nindex-url = http://ci:s3cret@{server.host}/simple/\n"
            f"[install]\nrequirement = {tmp_path / 'evil.txt'}\n"
        )
        home = tmp_path / "home"
        done = _setup(
            action, runner_temp,
            {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
             "XDG_CONFIG_DIRS": str(tmp_path / "xdg-dirs")},
        )  # fmt: skip
    assert not marker.exists(), "the pip.conf's package ran in the action's Python"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    said = "fast installer cannot be used here (fast install not used: the index URL carries credentials)"
    assert said in done.stdout
    fetched = sorted(r.path for r in server.requests if r.path.startswith("/files/"))
    # The index the pip.conf names is still the one used, with its credentials; evil is never fetched.
    assert fetched == [f"/files/{ALPHA[0]}"]
    assert all(r.headers.get("Authorization", "").startswith("Basic ") for r in server.requests)
    python = read_github_file(runner_temp / "output")["python"]
    ran = _python_runs(python, tmp_path)
    assert not marker.exists()
    assert ran.stdout.strip() == "alpha"


def test_only_the_network_settings_of_pip_s_configuration_reach_the_fallback(tmp_path: Path) -> None:
    """install.py --pip-environment: what pip install would take from its files and PIP_*
    variables, with pip's precedence ([global] < [install] < variables), network settings
    only; the set-up's pip gets these as its only configuration."""
    conf = tmp_path / "xdg-dirs" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "[global]\nindex-url = https://global.example/simple\ntimeout = 5\ntrusted-host = a.example\n"
        "find-links = /tmp/wheels\nno-index = true\ntarget = /tmp/elsewhere\nconstraint = /tmp/c.txt\n"
        "[install]\nindex-url = https://mirror.example/simple\nextra-index-url = https://x.example/simple\n"
        "  https://y.example/simple\nrequirement = /tmp/evil.txt\npre = true\n"
        "[download]\nproxy = http://download-only.example:3128\n"
    )
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path / "xdg-dirs"),
        "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt", "PIP_DEFAULT_TIMEOUT": "60",
        "PIP_REQUIREMENT": "/tmp/evil.txt", "PIP_SRC": "/tmp/src",
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-I", str(INSTALL), "--pip-environment"],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    shown = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert (
        shown.items()
        >= {
            "PIP_INDEX_URL": "https://mirror.example/simple",
            "PIP_EXTRA_INDEX_URL": "https://x.example/simple https://y.example/simple",
            "PIP_TRUSTED_HOST": "a.example",
            "PIP_TIMEOUT": "60",
            "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
        }.items()
    )
    # Nothing else: at most a proxy or client certificate of this machine's /etc/pip.conf,
    # which pip always reads (never the [download] section's).
    assert set(shown) <= {*_NETWORK_VARIABLES}
    assert "PIP_PROXY" not in shown or "download-only" not in shown["PIP_PROXY"]


# pip's own reading of its configuration (pip._internal.configuration), for the runner's
# pip: what install.py's reading must match without importing it.
_PIP_OWN_READING = """
import json, sys
from pip._internal.configuration import Configuration, get_configuration_files, kinds
sys.path.insert(0, sys.argv[1])
from install import NETWORK_OPTIONS, pip_configuration_files, pip_settings
import os
env = dict(os.environ)
config = Configuration(isolated=False)
config.load()
theirs = {}
for section in ("global", "install", ":env:"):
    for key, value in config.items():
        where, name = key.split(".", 1)
        if where == section and name in NETWORK_OPTIONS and isinstance(value, str) and value.strip():
            theirs[NETWORK_OPTIONS[name]] = value.strip()
places = get_configuration_files()
print(json.dumps({
    "ours": pip_settings(env), "theirs": theirs,
    "our_files": [str(p) for p in pip_configuration_files(env)],
    "their_files": [*places[kinds.GLOBAL], *places[kinds.USER], *places[kinds.SITE]],
}))
"""


def _pip_readings(tmp_path: Path, extra: dict[str, str]) -> dict[str, Any]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home"),
           "XDG_CONFIG_DIRS": f"{tmp_path / 'site-a'}:{tmp_path / 'site-b'}",
           "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"), **extra}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-I", "-c", _PIP_OWN_READING, str(INSTALL.parent)],
        env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _conf(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_pip_s_configuration_is_read_as_pip_reads_it_without_importing_pip_s_configuration(
    tmp_path: Path,
) -> None:
    """install.py reads pip's files itself (pip's configuration module takes a fifth of a
    second to import): the same files in the same order, and the same network settings, as
    the runner's pip for files in every place pip looks, aliases, underscores, [install] over
    [global], a later file over an earlier one, and variables over files."""
    _conf(
        tmp_path / "site-a" / "pip" / "pip.conf",
        "[global]\nindex-url = https://site-a.example/simple\ntimeout = 5\ncert = /site-a.pem\n",
    )
    _conf(
        tmp_path / "site-b" / "pip" / "pip.conf",
        "[DEFAULT]\nproxy = http://default.example:3128\n[global]\nindex_url = https://site-b.example/simple\n"
        "[install]\nextra-index-url = https://x.example/simple\n  https://y.example/simple\n",
    )
    _conf(tmp_path / "home" / ".pip" / "pip.conf", "[global]\ntrusted-host = legacy.example\n")
    _conf(
        tmp_path / "home" / ".config" / "pip" / "pip.conf",
        "[global]\ndefault-timeout = 9\ntrusted-host = xdg.example\n"
        "[install]\nindex-url = https://user.example/simple\n",
    )
    read = _pip_readings(tmp_path, {"PIP_CLIENT_CERT": "/client.pem"})
    assert read["our_files"] == read["their_files"]
    assert read["ours"] == read["theirs"]
    assert read["ours"]["index-url"] == "https://user.example/simple"
    assert read["ours"]["trusted-host"] == "xdg.example"
    assert read["ours"]["client-cert"] == "/client.pem"

    # PIP_CONFIG_FILE: read last, and the user's files are skipped when it exists.
    named = _conf(tmp_path / "named.conf", "[global]\ncert = /named.pem\n")
    read = _pip_readings(tmp_path, {"PIP_CONFIG_FILE": str(named)})
    assert read["ours"] == read["theirs"]
    assert read["ours"]["cert"] == "/named.pem"
    assert read["ours"]["index-url"] == "https://site-b.example/simple"  # the user's [install] is not read

    # os.devnull: no file at all, the variables alone.
    read = _pip_readings(
        tmp_path, {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "https://v.example/simple"}
    )
    assert read["ours"] == read["theirs"]
    assert read["ours"].get("index-url") == "https://v.example/simple"
    assert "cert" not in read["ours"] or read["ours"]["cert"] != "/site-a.pem"


# --- B: the index's JSON names where a wheel comes from and what it is called ------------------


def _json_index(files: dict[str, list[dict[str, object]]]) -> Callable[[Request, FakeHttp], Reply]:
    """A PEP 691 index whose pages list `files` as given (any filename, any URL), and that
    serves /files/<name> for each entry whose URL points there."""
    served = {str(e["url"]).rsplit("/", 1)[1]: e["data"] for entries in files.values() for e in entries}

    def answer(request: Request, _: FakeHttp) -> Reply:
        parts = request.path.strip("/").split("/")
        if parts[0] == "simple" and len(parts) == 2 and parts[1] in files:
            listed = [{k: v for k, v in e.items() if k != "data"} for e in files[parts[1]]]
            page = {"meta": {"api-version": "1.0"}, "name": parts[1], "files": listed}
            return Reply(200, json.dumps(page).encode(), {"Content-Type": JSON_API})
        data = served.get(parts[-1])
        return Reply(200, data) if parts[0] == "files" and isinstance(data, bytes) else Reply(404)

    return answer


def _entry(filename: str, url: str, data: bytes) -> dict[str, object]:
    return {"filename": filename, "url": url, "hashes": {"sha256": _sha(data)}, "data": data}


@pytest.mark.parametrize(
    ("filename", "url", "refusal"),
    [
        (ALPHA[0], "file://{local}", "only http or https URLs are fetched"),
        (ALPHA[0], "ftp://127.0.0.1:9/alpha.whl", "only http or https URLs are fetched"),
        (f"../../{ALPHA[0]}", f"/files/{ALPHA[0]}", "not its wheel"),
        ("beta-1.0-py3-none-any.whl", f"/files/{ALPHA[0]}", "not its wheel"),
        ("alpha-9.9-py3-none-any.whl", f"/files/{ALPHA[0]}", "not its wheel"),
    ],
    ids=["file-url", "ftp-url", "dotdot-name", "other-project-name", "other-version-name"],
)
def test_the_index_names_only_https_urls_and_plain_wheel_names(
    tmp_path: Path, setup_wheels: dict[str, bytes], filename: str, url: str, refusal: str
) -> None:
    """A hostile index (or a mirror in the middle) lists alpha's locked hash at a file:// URL
    on the runner (a copy of the right bytes, so only the scheme can stop it), at ftp://,
    or under a file name that is a path, another project's or another version's."""
    local = tmp_path / "elsewhere" / ALPHA[0]
    local.parent.mkdir()
    local.write_bytes(ALPHA[1])
    lock = _lock(tmp_path, [("alpha", "1.0", "", [ALPHA[1]])])
    files: dict[str, list[dict[str, object]]] = {
        project: [_entry(name, f"/files/{name}", data) for name, data, _ in entries]
        for project, entries in _served(setup_wheels).items()
    }
    files["alpha"] = [_entry(filename, url.format(local=local), ALPHA[1])]
    venv = tmp_path / "runner-temp" / "venv"
    venv.parent.mkdir()
    with FakeHttp(_json_index(files)) as server:
        done = subprocess.run(
            [sys.executable, "-I", str(INSTALL), str(venv), str(_package(tmp_path)), str(lock)],
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_INDEX_URL": f"http://{server.host}/simple"},
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert refusal in done.stderr
    assert not list(venv.glob("lib/python*/site-packages/alpha"))
    # Nothing was saved outside the downloads folder (which is gone).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "runner-temp", "runtime.txt", "src"]
    assert sorted(p.name for p in venv.parent.iterdir()) == ["venv"]


def test_an_https_index_gets_no_http_download() -> None:
    """Only an http index's own files may come over http: from an https index, an http URL
    is refused before anything is asked of it."""
    pin = Pin("alpha", "1.0", "", frozenset({_sha(ALPHA[1])}), "runtime.txt")
    index = InstallIndex("https://index.example/simple/", None)
    with pytest.raises(Refused, match="only https URLs are fetched"):
        index.download((ALPHA[0], "http://127.0.0.1:9/alpha.whl", _sha(ALPHA[1])), pin, REPO_ROOT)


# --- C: the venv's name is computable; its folder is reused ------------------------------------


def _planted_python(venv: Path, marker: Path) -> None:
    """A venv, as the set-up leaves one (.complete), whose python writes `marker`."""
    (venv / "bin").mkdir(parents=True)
    _fake_python(venv / "bin" / "python", marker)
    (venv / ".complete").write_text("")


def _venv_name(tmp: Path, action: Path, index: str) -> str:
    """The name the set-up gives the venv: computable by anyone with the action's files."""
    probe = tmp / "probe"
    probe.mkdir()
    done = _setup(action, probe, {"PIP_INDEX_URL": index, "HOME": str(tmp)})
    assert done.returncode == 0, done.stdout + done.stderr
    return read_github_file(probe / "output")["python"].split("/")[-3]


@pytest.mark.parametrize("mode", [0o1777, 0o777], ids=["sticky-like-tmp", "world-writable"])
def test_a_venv_planted_by_another_user_is_never_used(
    tmp_path: Path, setup_wheels: dict[str, bytes], mode: int
) -> None:
    """Another user of a self-hosted runner plants a venv under the name the set-up will
    compute, in a temp folder everyone can write to: sticky like /tmp (RUNNER_TEMP unset),
    or not even that. The set-up makes a private venv beside it, or uses /tmp instead."""
    if os.geteuid() != 0:
        pytest.skip("planting as another user needs root")
    action = _small_action(tmp_path)
    with FakeHttp(Index(_served(setup_wheels | dict([ALPHA])))) as server:
        index = f"http://{server.host}/simple"
        name = _venv_name(tmp_path, action, index)
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(mode)
        marker = tmp_path / "marker"
        planted = shared / name
        _planted_python(planted, marker)
        for path in [planted, *planted.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        planted.chmod(0o700)
        in_tmp = Path("/tmp") / name
        made_in_tmp = not in_tmp.exists()
        try:
            done = _setup(action, shared, {"PIP_INDEX_URL": index, "HOME": str(tmp_path)})
            assert done.returncode == 0, done.stdout + done.stderr
            python = read_github_file(shared / "output")["python"]
            ran = _python_runs(python, tmp_path)
        finally:
            if made_in_tmp:
                shutil.rmtree(in_tmp, ignore_errors=True)
    assert not marker.exists(), "the planted venv's python ran"
    assert ran.stdout.strip() == "alpha"
    if mode == 0o1777:
        assert python.startswith(f"{shared}/lambda-image-publish-private-")
    else:
        assert python == f"{in_tmp}/bin/python"
    assert (planted / "bin" / "python").exists()  # another user's folder is left alone


@pytest.mark.parametrize("tamper", ["pth-added", "python-replaced"])
def test_a_venv_changed_after_the_set_up_is_rebuilt(
    tmp_path: Path, setup_wheels: dict[str, bytes], tamper: str
) -> None:
    """A step between two uses of the action adds a .pth to the venv (a `pip install` into
    it, a left-over), or replaces its python; the second use must not run them."""
    action = _small_action(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    marker = tmp_path / "marker"
    with FakeHttp(Index(_served(setup_wheels | dict([ALPHA])))) as server:
        extra = {"PIP_INDEX_URL": f"http://{server.host}/simple", "HOME": str(tmp_path)}
        first = _setup(action, runner_temp, extra)
        assert first.returncode == 0, first.stdout + first.stderr
        python = read_github_file(runner_temp / "output")["python"]
        assert _python_runs(python, tmp_path).stdout.strip() == "alpha"
        (runner_temp / "output").write_text("")
        again = _setup(action, runner_temp, extra)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Set up" not in again.stdout  # untouched (and used): reused
        venv = runner_temp / python.split("/")[-3]
        if tamper == "pth-added":
            site = next(venv.glob("lib/python*/site-packages"))
            (site / "zz-left.pth").write_text(_pth(marker))
        else:
            (venv / "bin" / "python").unlink()
            _fake_python(venv / "bin" / "python", marker)
        (runner_temp / "output").write_text("")
        third = _setup(action, runner_temp, extra)
    assert third.returncode == 0, third.stdout + third.stderr
    python = read_github_file(runner_temp / "output")["python"]
    ran = _python_runs(python, tmp_path)
    assert not marker.exists(), "the changed venv's code ran"
    assert ran.stdout.strip() == "alpha"
    assert "Set up" in third.stdout  # rebuilt


def test_a_planted_venv_of_this_user_with_an_old_marker_is_rebuilt(
    tmp_path: Path, setup_wheels: dict[str, bytes]
) -> None:
    """A venv under the computable name, this user's (mode 0700, as the set-up makes them),
    with a .complete that is not the digest of what is in it: rebuilt, never run."""
    action = _small_action(tmp_path)
    marker = tmp_path / "marker"
    with FakeHttp(Index(_served(setup_wheels | dict([ALPHA])))) as server:
        index = f"http://{server.host}/simple"
        name = _venv_name(tmp_path, action, index)
        runner_temp = tmp_path / "runner-temp"
        runner_temp.mkdir()
        _planted_python(runner_temp / name, marker)
        (runner_temp / name).chmod(0o700)
        (runner_temp / name / ".complete").write_text(hashlib.sha256(b"anything").hexdigest() + "\n")
        done = _setup(action, runner_temp, {"PIP_INDEX_URL": index, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    python = read_github_file(runner_temp / "output")["python"]
    ran = _python_runs(python, tmp_path)
    assert not marker.exists(), "the planted venv's python ran"
    assert ran.stdout.strip() == "alpha"
    assert "Set up" in done.stdout
