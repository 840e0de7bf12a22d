"""Installs the action's locked environment: `python -I install.py VENV PACKAGE LOCK [LOCK...]`.

The set-up's fast path (scripts/action-python.sh). On a fresh runner it makes VENV with the
standard library's venv (no pip in it), asks the package index's JSON API (PEP 691) for
every locked package at once, downloads the one wheel of each that suits this Python,
checks it against its sha256 in the lock, installs it with pypa/installer (botocore
without the models of APIs the action never calls), copies the action's PACKAGE in, and
byte-compiles what has landed in a second process while the largest wheels are still
arriving. uv did the same in two seconds and a half, most of it spent fetching and
unpacking its own 18 MB binary before installing anything.

installer (which unpacks a wheel as the wheel spec says: RECORD, .data, scripts) and
packaging (which orders wheel tags as pip does, and reads the lock's environment markers)
are locked in lock/setup.txt. They are pure-Python wheels, fetched and checked like the
rest and imported straight from the downloaded files: nothing is installed into the
runner's Python. Standard library only until then.

The index is the one the runner's pip would use (UV_DEFAULT_INDEX, UV_INDEX_URL,
PIP_INDEX_URL, then pip's configuration files, then pip's own default). Exit 3 where this
path cannot work (an index without the JSON API, an index URL with credentials, an index
that does not answer): the caller falls back to pip, which reads the same locks with the
same hashes. Exit 2 for bytes that are not in a lock, or a lock with no wheel for this
Python: nothing falls back to fetch something else.

`python -I install.py --pip-environment` prints, one `PIP_NAME=value` a line, the network
settings (NETWORK_OPTIONS) that pip's configuration files and PIP_* variables give `pip
install`, for that fallback: it reads no configuration file, as a pip.conf can also add
requirements, a target or find-links, and takes only these back from here.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import json
import locale
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
import venv
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

TIMEOUT = 15.0
FALL_BACK = 3
REFUSED = 2
# Downloads at once: the index's pages and wheels are fetched together, and the largest
# wheel (botocore, 17 MB) is the one everything waits for.
CONNECTIONS = 8
SETUP_LOCK = Path(__file__).resolve().parent.parent / "lock" / "setup.txt"
JSON_API = "application/vnd.pypi.simple.v1+json"


class FallBack(Exception):
    """This path cannot install here; pip can."""


class Refused(Exception):
    """The index offered bytes the lock does not allow."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    marker: str  # an environment marker, "" for every platform
    hashes: frozenset[str]
    lock: str  # the lock file's name, for messages


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;([^\\\n]*?))?\s*((?:--hash=\S+\s*)*)$")


def read_pins(lock: Path) -> list[Pin]:
    """`name==version ; marker --hash=sha256:...` lines, as scripts/lock.py writes them."""
    text = lock.read_text(encoding="utf-8").replace("\\\n", " ")
    pins = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        hashes = (
            frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", match.group(4))) if match else frozenset()
        )
        if not match or not hashes:
            raise Refused(f"{lock.name}: a line that is not name==version with sha256 hashes: {line[:80]}")
        pins.append(Pin(match.group(1), match.group(2), (match.group(3) or "").strip(), hashes, lock.name))
    return pins


# pip's configuration keys (and their aliases) that only say where and how to download: the
# one part of pip's settings the set-up takes. The rest (requirement, constraint, target,
# find-links, no-index, pre, src...) would change what is installed or where.
NETWORK_OPTIONS = {
    "index-url": "index-url",
    "pypi-url": "index-url",
    "extra-index-url": "extra-index-url",
    "trusted-host": "trusted-host",
    "cert": "cert",
    "client-cert": "client-cert",
    "proxy": "proxy",
    "timeout": "timeout",
    "default-timeout": "timeout",
}
# pip splits these on whitespace into several values; the others are one value each.
MANY_VALUES = frozenset({"extra-index-url", "trusted-host"})


def pip_configuration_files(env: dict[str, str]) -> list[Path]:
    """The files `pip install` reads its configuration from, in pip's order (a later one's
    value wins): site-wide, the user's (legacy, then XDG; not when PIP_CONFIG_FILE names a
    file that exists), the Python's own, then PIP_CONFIG_FILE's; none when that is
    os.devnull. The places are pip's own (its platformdirs), the rule pip's
    Configuration.iter_config_files, whose module is not imported here: it loads pip's
    console and network stack, a fifth of a second (a third on a fresh runner's cold disk).
    tests/test_trust_setup.py holds this reading to pip's."""
    named = env.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    from pip._internal.utils import appdirs  # noqa: PLC0415 - the runner's pip, once

    name = "pip.conf"
    files = [Path(folder) / name for folder in appdirs.site_config_dirs("pip")]
    if not (named and Path(named).exists()):
        files += [Path("~/.pip").expanduser() / name, Path(appdirs.user_config_dir("pip")) / name]
    files.append(Path(sys.prefix) / name)
    return [*files, *([Path(named)] if named else [])]


def pip_settings(env: dict[str, str]) -> dict[str, str]:
    """The network settings `pip install` would take from pip's configuration files and
    PIP_* variables, with pip's precedence ([global], then [install], then the variables; a
    later file over an earlier one), each file read as pip reads it (RawConfigParser, keys
    lower-case with `-` for `_`). Without pip, or with a file pip could not read, the caller
    needs a variable that names the index, or falls back."""
    merged: dict[tuple[str, str], str] = {}  # (section, key): value
    try:
        for path in pip_configuration_files(env):
            if not path.exists():
                continue
            parser = configparser.RawConfigParser()
            parser.read(path, encoding=locale.getpreferredencoding(False))
            for section in parser.sections():
                for key, value in parser.items(section):
                    merged[section, key.lower().replace("_", "-").removeprefix("--")] = value
    except Exception as error:  # noqa: BLE001 - no pip, its internals moved, or its files do not parse
        raise FallBack(f"pip's settings cannot be read here ({type(error).__name__})") from None
    settings: dict[str, str] = {}
    for section in ("global", "install"):
        for (where, key), value in merged.items():
            if where == section and key in NETWORK_OPTIONS and value.strip():
                settings[NETWORK_OPTIONS[key]] = value.strip()
    return settings | variable_settings(env)


def variable_settings(env: dict[str, str]) -> dict[str, str]:
    """The network settings of the PIP_* variables alone, as pip reads them, for a pip whose
    configuration cannot be read here."""
    settings: dict[str, str] = {}
    for name, value in env.items():
        key = name.removeprefix("PIP_").lower().replace("_", "-")
        if name.startswith("PIP_") and key in NETWORK_OPTIONS and value.strip():
            settings[NETWORK_OPTIONS[key]] = value.strip()
    return settings


def pip_environment(settings: dict[str, str]) -> list[str]:
    """`settings` as the PIP_* variables that give them to pip. Variables, not options: an
    index URL often carries a token, and a command line is readable by every user of the
    machine. A single value over several lines cannot be one line of the list: left out, as
    it could not have been a working path or URL either."""
    variables = []
    for key, value in settings.items():
        one = " ".join(value.split()) if key in MANY_VALUES else value
        if "\n" not in one and "\r" not in one:
            variables.append(f"PIP_{key.upper().replace('-', '_')}={one}")
    return variables


def _pip_default_index() -> str:
    """The index pip itself uses when nothing names one, as pip says it (no host is written
    here); without pip the caller falls back."""
    try:
        from pip._internal.models.index import PyPI  # noqa: PLC0415 - only when nothing names an index
    except Exception as error:  # noqa: BLE001 - no pip, or its internals moved
        why = type(error).__name__
        raise FallBack(f"no index is named and pip's default cannot be read ({why})") from None
    return str(PyPI.simple_url)


def index_and_cafile(env: dict[str, str]) -> tuple[str, str | None]:
    """The index and CA file of pip's settings: this path uses nothing else of them."""
    variables = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")
    named = next((env[name] for name in variables if env.get(name)), "")
    settings: dict[str, str] = {}
    if not (named and env.get("PIP_CERT")):  # else pip's files could add nothing used here
        try:
            settings = pip_settings(env)
        except FallBack:
            if not named:
                raise
    index = (named or settings.get("index-url") or _pip_default_index()).split()[0]
    cafile = env.get("PIP_CERT") or settings.get("cert") or None
    if urllib.parse.urlsplit(index).username:
        raise FallBack("the index URL carries credentials")
    if urllib.parse.urlsplit(index).scheme not in ("https", "http"):
        raise FallBack(f"{index} is not an HTTP index")
    return index.rstrip("/") + "/", cafile


class Index:
    """The package index's JSON API: a page per project, and its files."""

    def __init__(self, url: str, cafile: str | None) -> None:
        self.url = url
        # Files are fetched over https, or http from an http index: never another scheme a
        # page names (file:// would read this runner's files, ftp:// reach other hosts); the
        # hashes make the host irrelevant. urlopen's opener also handles file, ftp and data
        # URLs, which a redirect could reach too: this one has only HTTP's handlers.
        self.schemes = frozenset({"https", urllib.parse.urlsplit(url).scheme})
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.UnknownHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPRedirectHandler(),
            urllib.request.HTTPErrorProcessor(),
        ):
            self._opener.add_handler(handler)

    def _get(self, url: str, accept: str | None = None) -> bytes:
        request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})  # noqa: S310 - http(s) only, checked above
        try:
            with self._opener.open(request, timeout=TIMEOUT) as response:
                if accept and "json" not in response.headers.get("Content-Type", ""):
                    raise FallBack(f"{url} does not serve the JSON index API")
                data: bytes = response.read()
                return data
        except FallBack:
            raise
        except Exception as error:  # noqa: BLE001 - pip retries with its own network settings
            raise FallBack(f"GET {url}: {error}") from None

    def files(self, name: str) -> list[tuple[str, str, str]]:
        """(filename, absolute URL, sha256) of each file the index lists for `name`."""
        page_url = urllib.parse.urljoin(self.url, normalised(name, "-") + "/")
        try:
            page = json.loads(self._get(page_url, JSON_API))
        except ValueError:
            raise FallBack(f"{page_url} is not a JSON index page") from None
        found = []
        for entry in page.get("files", []) if isinstance(page, dict) else []:
            digests = entry.get("hashes") if isinstance(entry, dict) else None
            sha = digests.get("sha256") if isinstance(digests, dict) else None
            if (
                isinstance(sha, str)
                and isinstance(entry.get("filename"), str)
                and isinstance(entry.get("url"), str)
            ):
                found.append((entry["filename"], urllib.parse.urljoin(page_url, entry["url"]), sha))
        return found

    def download(self, wheel: tuple[str, str, str], pin: Pin, folder: Path) -> Path:
        filename, url, sha = wheel
        if urllib.parse.urlsplit(url).scheme not in self.schemes:
            raise Refused(
                f"the index names {url} for {filename}: only {' or '.join(sorted(self.schemes))} URLs "
                "are fetched"
            )
        path = folder / plain_wheel_name(filename, pin)
        data = self._get(url)
        if hashlib.sha256(data).hexdigest() != sha:
            raise Refused(f"the wheel at {url} does not match its sha256 hash in {pin.lock}")
        path.write_bytes(data)
        return path


_WHEEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]*\.whl")


def plain_wheel_name(filename: str, pin: Pin) -> str:
    """The name a wheel of `pin` is saved under: the index's `filename` (not the URL's last
    segment, which says nothing), and only a plain wheel file name of that project, with no
    folder or `..` in it. installer reads the project and version from this name;
    pinned_wheel_tags checks the version once packaging is there."""
    project = filename.split("-", 1)[0]
    if (
        not _WHEEL_NAME.fullmatch(filename)
        or ".." in filename
        or normalised(project, "_") != normalised(pin.name, "_")
    ):
        raise Refused(not_a_wheel_of(filename, pin))
    return filename


def not_a_wheel_of(filename: str, pin: Pin) -> str:
    return f"the index names the file {filename!r} for {pin.name} {pin.version} in {pin.lock}: not its wheel"


def pinned_wheel_tags(filename: str, pin: Pin) -> frozenset[Any]:
    """The tags of a wheel file name that packaging parses to `pin`'s project and version."""
    from packaging.utils import canonicalize_name, parse_wheel_filename  # noqa: PLC0415 - from its wheel
    from packaging.version import Version  # noqa: PLC0415

    try:
        name, version, _, tags = parse_wheel_filename(filename)
        pinned = name == canonicalize_name(pin.name) and version == Version(pin.version)
    except ValueError:  # InvalidWheelFilename, InvalidVersion
        pinned = False
    if not pinned:
        raise Refused(not_a_wheel_of(filename, pin))
    return tags


def normalised(name: str, separator: str) -> str:
    """A project name as PEP 503 pages ("-") and wheel file names ("_") spell it."""
    return re.sub(r"[-_.]+", separator, name).lower()


def locked_wheels(pin: Pin, files: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The wheels of the page whose sha256 the lock names (a hash names one file)."""
    return [f for f in files if f[0].endswith(".whl") and f[2] in pin.hashes]


def is_pure(filename: str) -> bool:
    """A wheel for any Python 3 on any platform (`-py3-none-any`, `-py2.py3-none-any`)."""
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) not in (5, 6):  # not a wheel's name: ranked_wheel refuses it
        return False
    python, abi, platform = parts[-3:]
    return abi == "none" and platform == "any" and "py3" in python.split(".")


def pure_wheel(pin: Pin, files: list[tuple[str, str, str]]) -> tuple[str, str, str] | None:
    """The wheel to take before packaging is there: only when every locked wheel is pure
    (where a package has compiled wheels as well, the ranking below picks as pip would)."""
    wheels = locked_wheels(pin, files)
    if wheels and not pin.marker and all(is_pure(w[0]) for w in wheels):
        return wheels[0]
    return None


def ranked_wheel(pin: Pin, files: list[tuple[str, str, str]], rank: dict[Any, int]) -> tuple[str, str, str]:
    """The locked wheel whose tags come first in this Python's order (packaging.tags)."""
    locked = locked_wheels(pin, files)
    best: tuple[int, tuple[str, str, str]] | None = None
    for wheel in locked:
        ranks = [rank[tag] for tag in pinned_wheel_tags(wheel[0], pin) if tag in rank]
        if ranks and (best is None or min(ranks) < best[0]):
            best = (min(ranks), wheel)
    if not locked:
        project = normalised(pin.name, "_")
        if any(
            f[0].endswith(".whl") and f[0].lower().split("-")[:2] == [project, pin.version] for f in files
        ):
            raise Refused(
                f"the index's wheels of {pin.name} {pin.version} do not match its sha256 hashes in {pin.lock}"
            )
        raise Refused(f"the index lists no wheel of {pin.name} {pin.version} that {pin.lock} names")
    if best is None:
        python = ".".join(map(str, sys.version_info[:2]))
        raise Refused(
            f"{pin.lock} has no wheels of {pin.name} {pin.version} for this runner's Python "
            f"({python}, {sys.platform})"
        )
    return best[1]


def make_venv(path: Path) -> dict[str, str]:
    """A venv without pip; its own install paths, as its Python reports them."""
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(path)
    python = path / "bin" / "python"
    reported = subprocess.run(
        [python, "-I", "-c", "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    paths: dict[str, str] = json.loads(reported)
    return {**paths, "python": str(python)}


class Compiler:
    """Byte-compiles installed files in background processes: one at a time while wheels are
    still arriving, each taking whatever landed since the last one started, then the rest
    split over every core. Bytecode written now spares the action's first start from
    compiling what it imports (0.6 s on one core). (A process per core from the start was
    no faster: the installs here need the other core.)"""

    BATCH = 24  # files: a process start costs as much as compiling a few dozen

    def __init__(self, python: str) -> None:
        self._python = python
        self._pending: list[str] = []
        self._running: list[subprocess.Popen[bytes]] = []

    def add(self, files: Iterable[Path]) -> None:
        self._pending.extend(str(f) for f in files)
        if len(self._pending) < self.BATCH:
            return
        self._running = [p for p in self._running if p.poll() is None]
        if not self._running:
            self._start(self._pending)
            self._pending = []

    def _start(self, files: list[str]) -> None:
        if not files:
            return
        # -qq: a file that does not compile (a Python 2 example in a wheel) fails only if
        # it is ever imported, as it would without this step.
        process = subprocess.Popen(
            [self._python, "-I", "-m", "compileall", "-qq", "-i", "-"], stdin=subprocess.PIPE
        )
        assert process.stdin is not None
        process.stdin.write("\n".join(files).encode() + b"\n")
        process.stdin.close()
        self._running.append(process)

    def finish(self) -> None:
        cores = max(1, min(4, os.cpu_count() or 1))
        for part in range(cores):
            self._start(self._pending[part::cores])
        self._pending = []
        for process in self._running:
            process.wait()
        self._running = []

    def stop(self) -> None:
        """After a failure: the venv is about to be removed."""
        for process in self._running:
            if process.poll() is None:
                process.kill()
            process.wait()


def wheel_destination(scheme: dict[str, str], compiler: Compiler) -> Any:
    """installer's destination for the venv's own paths, handing each module to `compiler`
    as it is written: botocore's modules compile while its two thousand data files are
    still being unpacked."""
    from installer.destinations import SchemeDictionaryDestination  # noqa: PLC0415

    class Compiling(SchemeDictionaryDestination):  # type: ignore[misc]
        def write_file(self, scheme: Any, path: Any, stream: Any, is_executable: bool) -> Any:
            entry = super().write_file(scheme, path, stream, is_executable)
            if str(path).endswith(".py") and scheme in ("purelib", "platlib"):
                compiler.add([Path(self.scheme_dict[scheme]) / path])
            return entry

    return Compiling(
        {"purelib": scheme["purelib"], "platlib": scheme["platlib"], "headers": scheme["include"],
         "scripts": scheme["scripts"], "data": scheme["data"]},
        interpreter=scheme["python"], script_kind="posix",
    )  # fmt: skip


# The AWS APIs the action's process can call: its own (ECR; Lambda for the deployed check),
# and those botocore's credential
# chain makes clients for (web identity and assume-role: STS; SSO profiles: SSO and
# SSO OIDC; `aws login` profiles: Sign-In). tests/test_install.py reads botocore's source to
# keep this list whole when the lock moves botocore on.
AWS_APIS = frozenset({"ecr", "lambda", "sts", "sso", "sso-oidc", "signin"})
_MODEL = re.compile(r"^botocore/data/([^/]+)/")


def unused_models_left_out(source: Any) -> Any:
    """botocore's wheel carries the models of all 449 AWS APIs, two thousand files that are
    most of its unpacking time; only AWS_APIS' are installed (with every file at the top of
    botocore/data: endpoints, partitions, retry rules). installer writes RECORD from what it
    installs, so the record stays true."""
    if source.distribution != "botocore":
        return source
    contents = source.get_contents

    def kept() -> Any:
        for item in contents():
            model = _MODEL.match(item[0][0])
            if model is None or model.group(1) in AWS_APIS:
                yield item

    source.get_contents = kept
    return source


class Ranking:
    """This Python's wheel tags in pip's order and its marker environment, from packaging:
    set once packaging's own wheel is in, awaited by the downloads that need it."""

    def __init__(self) -> None:
        self._ready: Future[tuple[dict[Any, int], Any]] = Future()

    def load(self) -> None:
        try:
            from packaging.markers import Marker  # noqa: PLC0415 - imported from its wheel
            from packaging.tags import sys_tags  # noqa: PLC0415

            ranking = ({tag: i for i, tag in enumerate(sys_tags())}, Marker)
        except Exception as error:  # noqa: BLE001 - pip installs the same locks instead
            self._settle(FallBack(f"packaging could not be loaded ({type(error).__name__})"))
        else:
            with contextlib.suppress(InvalidStateError):  # the install already failed
                self._ready.set_result(ranking)

    def fail(self) -> None:
        """Releases the downloads that wait on the ranking, if the install ends before it
        loads (a no-op once it has)."""
        self._settle(FallBack("packaging could not be loaded"))

    def _settle(self, error: FallBack) -> None:
        with contextlib.suppress(InvalidStateError):  # settled by the other thread first
            self._ready.set_exception(error)

    def wheel(self, pin: Pin, files: list[tuple[str, str, str]]) -> tuple[str, str, str] | None:
        """The wheel `pin` needs here, None where its marker excludes this platform."""
        rank, marker = self._ready.result()
        if pin.marker and not marker(pin.marker).evaluate():
            return None
        return ranked_wheel(pin, files, rank)


def install(venv_path: Path, package: Path, locks: list[Path], env: dict[str, str]) -> list[str]:
    boot, pins = read_pins(SETUP_LOCK), [pin for lock in locks for pin in read_pins(lock)]
    downloads = Path(tempfile.mkdtemp(prefix=".wheels-", dir=venv_path.parent))
    ranking = Ranking()
    compiler: Compiler | None = None
    loading: threading.Thread | None = None
    installed: list[str] = []
    pool = ThreadPoolExecutor(CONNECTIONS)
    try:
        made = pool.submit(make_venv, venv_path)  # while pip's settings are read
        index = Index(*index_and_cafile(env))
        # Tasks start in the order they are queued: every page before any download that
        # waits on one, packaging's and installer's downloads before those that wait on
        # packaging, so no task waits for one that no worker has taken.
        pages = {pin.name: pool.submit(index.files, pin.name) for pin in [*boot, *pins]}

        def boot_wheel(pin: Pin) -> Path:
            wheel = pure_wheel(pin, pages[pin.name].result())
            if wheel is None:
                raise Refused(f"{pin.lock} has no pure-Python wheel of {pin.name} {pin.version}")
            return index.download(wheel, pin, downloads)

        def fetch(pin: Pin) -> Path | None:
            # Pure wheels need no tag ranking: botocore's 17 MB start at once.
            files = pages[pin.name].result()
            wheel = pure_wheel(pin, files) or ranking.wheel(pin, files)
            return None if wheel is None else index.download(wheel, pin, downloads)

        tools = {pool.submit(boot_wheel, pin): pin for pin in boot}
        wanted = {pool.submit(fetch, pin): pin for pin in pins}
        sys.path[:0] = [str(f.result()) for f in tools]
        # Their bytes are the lock's (hash-checked), so importing them before this is safe.
        for tool, pin in tools.items():
            pinned_wheel_tags(tool.result().name, pin)
        # packaging's tags and markers take a quarter of a second to load (compiled from the
        # wheel's sources, beside the downloads): only the few compiled wheels wait for them,
        # the pure ones install meanwhile.
        loading = threading.Thread(target=ranking.load, name="ranking")
        loading.start()
        from installer import install as install_wheel  # noqa: PLC0415 - imported from its wheel
        from installer.sources import WheelFile  # noqa: PLC0415

        scheme = made.result()
        site = Path(scheme["purelib"])
        compiler = Compiler(scheme["python"])
        shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
        compiler.add((site / package.name).rglob("*.py"))
        destination = wheel_destination(scheme, compiler)
        for done in as_completed(wanted):
            wheel = done.result()
            if wheel is None:
                continue
            pinned_wheel_tags(wheel.name, wanted[done])
            with WheelFile.open(wheel) as source:
                install_wheel(
                    unused_models_left_out(source), destination, {"INSTALLER": b"lambda-image-publish\n"}
                )
            installed.append(wheel.name)
        compiler.finish()
        # actions-toolkit's wheel ships its tests as a top-level package.
        shutil.rmtree(site / "tests", ignore_errors=True)
    finally:
        ranking.fail()
        if loading is not None:
            loading.join()
        pool.shutdown(wait=True, cancel_futures=True)
        if compiler is not None:
            compiler.stop()
        shutil.rmtree(downloads, ignore_errors=True)
    return installed


def print_pip_environment(env: dict[str, str]) -> int:
    try:
        settings = pip_settings(env)
    except FallBack:
        settings = variable_settings(env)  # the fallback's pip fails, or reads these alone
    print("".join(f"{variable}\n" for variable in pip_environment(settings)), end="")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--pip-environment"]:
        return print_pip_environment(dict(os.environ))
    if len(argv) < 3:
        print("usage: install.py VENV PACKAGE LOCK [LOCK...] | install.py --pip-environment", file=sys.stderr)
        return 64
    venv_path, package, locks = Path(argv[0]), Path(argv[1]), [Path(a) for a in argv[2:]]
    try:
        installed = install(venv_path, package, locks, dict(os.environ))
    except FallBack as why:
        print(f"fast install not used: {why}", file=sys.stderr)
        return FALL_BACK
    except Refused as error:
        print(f"install refused: {error}", file=sys.stderr)
        return REFUSED
    print(f"installed {len(installed)} locked wheels: {', '.join(sorted(installed))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
