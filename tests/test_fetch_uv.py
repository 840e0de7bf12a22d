"""The set-up's fast path for uv (scripts/fetch_uv.py) against a real HTTP index on loopback:
it installs only bytes whose sha256 is in the lock, and hands anything it cannot do to pip."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import zipfile
from typing import TYPE_CHECKING

import pytest

from tests.support.fakehttp import FakeHttp, Reply, Request
from tests.support.run import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

VERSION = "0.0.7"
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
WHEEL_NAME = f"uv-{VERSION}-py3-none-manylinux_2_17_{MACHINE}.manylinux2014_{MACHINE}.whl"

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="the fast path's Linux wheels"
)


def _wheel(script: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(f"uv-{VERSION}.data/scripts/uv", script)
        archive.writestr(f"uv-{VERSION}.dist-info/METADATA", f"Name: uv\nVersion: {VERSION}\n")
    return out.getvalue()


GOOD = _wheel(b"#!/bin/sh\necho uv " + VERSION.encode() + b"\n")
OTHER = _wheel(b"#!/bin/sh\necho not the locked uv\n")


def _lock(tmp: Path, *wheels: bytes) -> Path:
    lock = tmp / "uv.txt"
    hashes = "".join(f" \\\n    --hash=sha256:{hashlib.sha256(w).hexdigest()}" for w in wheels)
    lock.write_text(f"# test lock\nuv=={VERSION}{hashes}\n")
    return lock


def _index(served: bytes, listed: bytes, content_type: str = "application/vnd.pypi.simple.v1+json"):  # type: ignore[no-untyped-def]
    """An index whose JSON page lists `listed`'s hash and whose file URL serves `served`."""
    others = [
        {"filename": f"uv-{VERSION}-py3-none-musllinux_1_1_{MACHINE}.whl", "url": "/files/musl.whl",
         "hashes": {"sha256": hashlib.sha256(b"musl").hexdigest()}},
        {"filename": WHEEL_NAME, "url": "/files/uv.whl",
         "hashes": {"sha256": hashlib.sha256(listed).hexdigest()}},
    ]  # fmt: skip

    def answer(request: Request, _: FakeHttp) -> Reply:
        if request.path == "/simple/uv/":
            page = json.dumps({"meta": {"api-version": "1.0"}, "name": "uv", "files": others}).encode()
            return Reply(200, page, {"Content-Type": content_type})
        if request.path == "/files/uv.whl":
            return Reply(200, served, {"Content-Type": "application/octet-stream"})
        return Reply(404)

    return answer


def _fetch(
    tmp: Path, lock: Path, server: FakeHttp | None, **index: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """fetch_uv.py against `server`'s index (PIP_INDEX_URL), or the index variables given."""
    target = tmp / "uv-home"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp)}
    env |= index or {"PIP_INDEX_URL": f"http://{server.host}/simple" if server else ""}
    done = subprocess.run(
        [sys.executable, "-I", str(REPO_ROOT / "scripts" / "fetch_uv.py"), str(lock), str(target)],
        env=env, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return done, target


def test_the_locked_wheel_is_fetched_from_the_index_and_only_uv_is_unpacked(tmp_path: Path) -> None:
    lock = _lock(tmp_path, GOOD)
    with FakeHttp(_index(GOOD, GOOD)) as server:
        done, target = _fetch(tmp_path, lock, server)
    assert done.returncode == 0, done.stderr
    assert f"fetched uv from http://{server.host}/files/uv.whl" in done.stderr
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["bin", "bin/uv"]
    assert (
        subprocess.run([target / "bin" / "uv"], capture_output=True, text=True, check=True).stdout
        == f"uv {VERSION}\n"
    )
    # The page was asked for with the JSON API, once; the musl wheel was not fetched.
    assert [r.path for r in server.requests] == ["/simple/uv/", "/files/uv.whl"]
    assert server.requests[0].headers["Accept"] == "application/vnd.pypi.simple.v1+json"


def test_bytes_that_are_not_in_the_lock_are_refused_without_falling_back(tmp_path: Path) -> None:
    # The index lists the locked hash but serves other bytes: a tampered mirror.
    lock = _lock(tmp_path, GOOD)
    with FakeHttp(_index(OTHER, GOOD)) as server:
        done, target = _fetch(tmp_path, lock, server)
    assert done.returncode == 2, done.stderr
    assert "does not match its sha256 hash in uv.txt" in done.stderr
    assert not target.exists()
    assert not list(tmp_path.glob(".uv-*"))  # no half-unpacked staging folder left


def test_an_index_listing_only_unlocked_wheels_hands_over_to_pip(tmp_path: Path) -> None:
    lock = _lock(tmp_path, GOOD)
    with FakeHttp(_index(OTHER, OTHER)) as server:
        done, target = _fetch(tmp_path, lock, server)
    assert done.returncode == 3, done.stderr
    assert "lists no locked uv 0.0.7 wheel" in done.stderr
    assert [r.path for r in server.requests] == ["/simple/uv/"]  # nothing unlocked downloaded
    assert not target.exists()


def test_an_index_without_the_json_api_hands_over_to_pip(tmp_path: Path) -> None:
    lock = _lock(tmp_path, GOOD)
    with FakeHttp(_index(GOOD, GOOD, content_type="text/html")) as server:
        done, target = _fetch(tmp_path, lock, server)
    assert done.returncode == 3, done.stderr
    assert "does not serve the JSON index API" in done.stderr
    assert not target.exists()


def test_an_index_url_with_credentials_is_left_to_pip(tmp_path: Path) -> None:
    lock = _lock(tmp_path, GOOD)
    done, _ = _fetch(tmp_path, lock, None, UV_DEFAULT_INDEX="https://user:secret@127.0.0.1:9/simple")
    assert done.returncode == 3
    assert "secret" not in done.stderr
    assert "credentials" in done.stderr
