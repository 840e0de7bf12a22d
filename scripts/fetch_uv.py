"""Fetches the locked uv binary from the package index: `python -I fetch_uv.py LOCK TARGET`.

The set-up's fast path. `pip install uv` spends about a second starting pip, resolving and
unpacking; the binary itself is one 18 MB download. This reads the index's JSON page
(PEP 691), takes the wheel for this machine whose sha256 is in lock/uv.txt, checks it, and
unpacks only `bin/uv` into TARGET. Standard library only, because it runs before any
dependency exists.

The index is the one the runner's pip would use (UV_DEFAULT_INDEX, UV_INDEX_URL,
PIP_INDEX_URL, then pip's configuration files, then pip's own default index). Anything this does not handle
(no JSON API, a platform without a plain wheel, an index that needs pip's credentials)
exits 3 and the caller falls back to pip, which reads the same lock with the same hashes.
A wheel whose bytes are not in the lock exits 2: no fallback fetches different bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import ssl
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

TIMEOUT = 15.0
FALL_BACK = 3
MISMATCH = 2


class FallBack(Exception):
    """This path cannot fetch uv here; pip can."""


def read_lock(lock: Path) -> tuple[str, set[str]]:
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^uv==(\S+)(.*)$", text, re.MULTILINE)
    if not match:
        raise FallBack(f"{lock} names no uv==VERSION")
    hashes = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", match.group(2)))
    if not hashes:
        raise FallBack(f"{lock} has no hashes for uv")
    return match.group(1), hashes


def pip_settings() -> dict[str, str]:
    """pip's own reading of its configuration files and PIP_* variables, and its default
    index as `index-url` when they name none. Without pip, the caller falls back."""
    try:
        # pip may be missing, and its import is a tenth of a second: once, only when asked.
        from pip._internal.configuration import Configuration  # noqa: PLC0415
        from pip._internal.models.index import PyPI  # noqa: PLC0415

        config = Configuration(isolated=False)
        config.load()
        settings = {key.split(".", 1)[1]: value for key, value in config.items()}
    except Exception as error:  # noqa: BLE001 - pip's internals moved or pip is absent
        raise FallBack(f"pip's settings cannot be read here ({type(error).__name__})") from None
    return {"index-url": PyPI.simple_url, **settings}


def index_and_cafile(env: dict[str, str]) -> tuple[str, str | None]:
    variables = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")
    named = next((env[name] for name in variables if env.get(name)), "")
    try:
        settings = pip_settings()  # read once: the index and the certificate both come from it
    except FallBack:
        if not named:
            raise
        settings = {}
    index = (named or settings["index-url"]).split()[0]
    cafile = env.get("PIP_CERT") or settings.get("cert") or None
    if urllib.parse.urlsplit(index).username:
        raise FallBack("the index URL carries credentials")
    if not index.endswith("/"):
        index += "/"
    return index, cafile


def wanted_platform() -> tuple[str, str]:
    """(platform word in the wheel name, machine) for the wheels uv publishes."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        return "manylinux", machine
    if sys.platform == "darwin":
        return "macosx", {"aarch64": "arm64"}.get(machine, machine)
    raise FallBack(f"no fast path for {sys.platform}/{machine}")


def choose(files: list[dict[str, object]], version: str, hashes: set[str]) -> tuple[str, str]:
    word, machine = wanted_platform()
    for entry in files:
        name = str(entry.get("filename", ""))
        digest = entry.get("hashes", {})
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if (
            name.startswith(f"uv-{version}-")
            and name.endswith(".whl")
            and word in name
            and re.search(rf"[_.]{re.escape(machine)}(\.|$)", name.removesuffix(".whl"))
            and sha in hashes
        ):
            return str(entry["url"]), str(sha)
    raise FallBack(f"the index lists no locked uv {version} wheel for {word}/{machine}")


def get(url: str, context: ssl.SSLContext, accept: str | None = None) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise FallBack(f"{url} is not HTTP")
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:  # noqa: S310
            data: bytes = response.read()
            if accept and "json" not in response.headers.get("Content-Type", ""):
                raise FallBack(f"{url} does not serve the JSON index API")
            return data
    except FallBack:
        raise
    except Exception as error:  # noqa: BLE001 - pip retries with its own network settings
        raise FallBack(f"GET {url}: {error}") from None


def fetch(lock: Path, target: Path, env: dict[str, str]) -> str:
    version, hashes = read_lock(lock)
    index, cafile = index_and_cafile(env)
    context = ssl.create_default_context(cafile=cafile)
    page_url = urllib.parse.urljoin(index, "uv/")
    page = json.loads(get(page_url, context, "application/vnd.pypi.simple.v1+json"))
    url, sha = choose(page.get("files", []), version, hashes)
    url = urllib.parse.urljoin(page_url, url)
    wheel = get(url, context)
    if hashlib.sha256(wheel).hexdigest() != sha:
        raise ValueError(f"the wheel at {url} does not match its sha256 hash in {lock.name}")
    staging = Path(tempfile.mkdtemp(prefix=".uv-", dir=target.parent))
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
            member = f"uv-{version}.data/scripts/uv"
            if member not in archive.namelist():
                raise FallBack(f"the wheel has no {member}")
            (staging / "bin").mkdir()
            with archive.open(member) as source, (staging / "bin" / "uv").open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        (staging / "bin" / "uv").chmod(0o755)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return url


def main(argv: list[str]) -> int:
    lock, target = Path(argv[0]), Path(argv[1])
    try:
        url = fetch(lock, target, dict(os.environ))
    except FallBack as why:
        print(f"fast fetch of uv not used: {why}", file=sys.stderr)
        return FALL_BACK
    except ValueError as error:
        print(f"fetching uv failed: {error}", file=sys.stderr)
        return MISMATCH
    print(f"fetched uv from {url}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
