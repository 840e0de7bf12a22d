"""Helpers for the local test stack.

Nothing here talks to anything but 127.0.0.1 and the local Docker engine, except the
one-time ``debootstrap`` behind :func:`ensure_python_base` (Debian's package mirror).

* :class:`Registry` runs the CNCF distribution registry (Debian's ``docker-registry``)
  on a free loopback port, optionally behind htpasswd basic auth with the very
  credentials moto's ECR ``GetAuthorizationToken`` hands out, so a real
  ``docker login`` with an "ECR" token works against it.
* :class:`MotoServer` runs ``moto_server`` from the venv.
* ``ensure_*`` make base images without pulling anything (no registry but the local
  one is reachable): a busybox image, a Debian python image and a stand-in for the
  AWS Lambda Web Adapter image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker.errors
import requests

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from docker import DockerClient

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = Path(os.environ.get("STACK_DIR", str(REPO_ROOT / ".stack")))
CACHE_DIR = STACK_DIR / "cache"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# What moto's ECR GetAuthorizationToken returns (base64 of "AWS:<account>-auth-token").
ECR_USER = "AWS"
ECR_PASSWORD = "123456789012-auth-token"

BUSYBOX_BASE = "local/busybox-base:latest"
PYTHON_BASE = "local/python-base:bookworm"
ADAPTER_STANDIN = "local/lambda-adapter:stand-in"


def debian_mirror(apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources, else sources.list), so the
    repository names no package host; STACK_DEBIAN_MIRROR overrides it."""
    chosen = os.environ.get("STACK_DEBIAN_MIRROR")
    if chosen:
        return chosen
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "URIs" and "/debian" in value and "security" not in value:
                return value.split()[0]
    lists = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    for path in (p for p in lists if p.is_file()):
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            uri = next((w for w in words[1:] if "://" in w), "")
            if words and words[0] == "deb" and uri.rstrip("/").endswith("/debian"):
                return uri
    raise RuntimeError("no Debian mirror in /etc/apt: set STACK_DEBIAN_MIRROR to one")


MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_ACCEPT = ", ".join([MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX, MEDIA_DOCKER_LIST])

# Environment baked into the locally made base images. A TLS-intercepting proxy sits in
# front of PyPI here, so the host's CA bundle is copied in and every client pointed at it.
_CA_ENV = [
    f"SSL_CERT_FILE={HOST_CA_BUNDLE}",
    f"REQUESTS_CA_BUNDLE={HOST_CA_BUNDLE}",
    f"PIP_CERT={HOST_CA_BUNDLE}",
]
_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_cli() -> str:
    """The BuildKit-capable docker CLI that scripts/stack.sh linked, else ``docker``."""
    shim = STACK_DIR / "bin" / "docker"
    if shim.exists():
        return str(shim)
    found = shutil.which("docker")
    if found is None:
        raise RuntimeError("no docker CLI found: run `bash scripts/stack.sh` first")
    return found


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    timeout: float = 30.0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log) if log else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{tail}")
        if ready():
            return
        time.sleep(0.1)
    tail = _tail(log) if log else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{tail}")


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _http_ready(url: str, statuses: tuple[int, ...], verify: str | bool = True) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with requests.Session() as session:
                session.trust_env = verify is True  # a CA of its own must not be replaced
                return session.get(url, timeout=2, verify=verify).status_code in statuses
        except requests.RequestException:
            return False

    return check


# --------------------------------------------------------------------------- registry


def _launch(argv: list[str], log_path: Path, ready: Callable[[], bool], what: str) -> subprocess.Popen[bytes]:
    """Start a server in its own session, logging to `log_path`, and wait until it is ready;
    a server that never gets ready is stopped before the error is raised."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until(ready, what=what, proc=proc, log=log_path)
    except BaseException:
        _stop_process(proc)
        raise
    return proc


class RegistryError(RuntimeError):
    """An unexpected answer from the registry's HTTP API."""


class Registry:
    """A CNCF distribution registry (``docker-registry serve``) on 127.0.0.1.

    Plain HTTP: Docker treats 127.0.0.0/8 registries as insecure, so ``docker login``,
    ``push`` and BuildKit pushes work without TLS. With ``user`` set (the default) the
    registry wants basic auth from an htpasswd file (bcrypt), which is what a real
    ``docker login -u AWS -p <moto ECR token>`` sends. ``readonly=True`` turns on
    ``storage.maintenance.readonly`` so every push is rejected. Pass ``storage`` to
    share (and keep) a storage directory, e.g. a read-only view of another registry.
    ``notify_url`` turns on the registry's notifications: it POSTs an envelope of events
    for every manifest push to that URL (as ECR tells its own services; tests/support/ecrsync.py).
    """

    def __init__(
        self,
        user: str | None = ECR_USER,
        password: str | None = ECR_PASSWORD,
        *,
        readonly: bool = False,
        port: int | None = None,
        storage: Path | None = None,
        binary: str = "docker-registry",
        address: str = "127.0.0.1",
        tls: tuple[Path, Path, Path] | None = None,
        notify_url: str | None = None,
    ) -> None:
        """`address`: the address to listen on; `tls`: (certificate, key, CA that signed it)
        to serve HTTPS, as a registry on another host must for the engine to use it."""
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.user = user
        self.password = password
        self.readonly = readonly
        self.port = port or free_port()
        self.binary = binary
        self.address = address
        self.tls = tls
        self.notify_url = notify_url
        self._own_storage = storage is None
        self._storage = storage
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()
        if user is not None and password is not None:
            self.session.auth = (user, password)
        if tls is not None:
            self.session.verify = str(tls[2])
            self.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the test CA

    # -- lifecycle
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of an image reference."""
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def storage(self) -> Path:
        if self._storage is None:
            raise RuntimeError("registry not started")
        return self._storage

    @property
    def log_path(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("registry not started")
        return self._tmp / "registry.log"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _config(self, htpasswd: Path | None) -> dict[str, Any]:
        storage: dict[str, Any] = {
            "filesystem": {"rootdirectory": str(self.storage)},
            "delete": {"enabled": True},
            "maintenance": {
                "uploadpurging": {"enabled": False},
                "readonly": {"enabled": self.readonly},
            },
        }
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": storage,
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.tls is not None:
            config["http"]["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        if htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "basic-realm", "path": str(htpasswd)}}
        if self.notify_url is not None:
            config["notifications"] = {
                "endpoints": [
                    {
                        "name": "notify",
                        "url": self.notify_url,
                        "timeout": "5s",
                        "threshold": 3,
                        "backoff": "1s",
                        # Pushes of manifests only: not blob uploads, pulls, mounts or deletes.
                        "ignoredmediatypes": ["application/octet-stream"],
                        "ignore": {"actions": ["pull", "mount", "delete"]},
                    }
                ]
            }
        return config

    def start(self) -> Registry:
        if self._proc is not None:
            return self
        binary = shutil.which(self.binary)
        if binary is None:
            raise RuntimeError(
                f"{self.binary} not found (Debian package docker-registry): run `bash scripts/stack.sh`"
            )
        self._tmp = Path(tempfile.mkdtemp(prefix="registry-"))
        if self._storage is None:
            self._storage = self._tmp / "storage"
        self._storage.mkdir(parents=True, exist_ok=True)
        htpasswd: Path | None = None
        if self.user is not None and self.password is not None:
            htpasswd = self._tmp / "htpasswd"
            htpasswd.write_bytes(make_htpasswd(self.user, self.password))
        config_path = self._tmp / "config.yml"
        # JSON is YAML, and the registry reads YAML.
        config_path.write_text(json.dumps(self._config(htpasswd), indent=2))
        try:
            self._proc = _launch(
                [binary, "serve", str(config_path)],
                self.log_path,
                _http_ready(f"{self.url}/v2/", (200, 401), str(self.tls[2]) if self.tls else True),
                f"registry on {self.host}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        _stop_process(self._proc)
        self._proc = None
        self.session.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if self._own_storage:
            self._storage = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP API
    def _check(self, resp: requests.Response, *ok: int) -> requests.Response:
        if resp.status_code not in ok:
            raise RegistryError(f"{resp.request.method} {resp.url} -> {resp.status_code}: {resp.text[:500]}")
        return resp

    def manifest_raw(self, repo: str, ref: str) -> tuple[str, str, bytes]:
        """(digest, media type, body bytes) of a manifest, by tag or digest."""
        resp = self._check(
            self.session.get(
                f"{self.url}/v2/{repo}/manifests/{ref}",
                headers={"Accept": MANIFEST_ACCEPT},
                timeout=30,
            ),
            200,
        )
        body = resp.content
        digest = resp.headers.get("Docker-Content-Digest") or ("sha256:" + hashlib.sha256(body).hexdigest())
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return digest, media_type, body

    def manifest(self, repo: str, ref: str) -> tuple[str, str, dict[str, Any]]:
        """(digest, media type, parsed JSON) of a manifest, by tag or digest."""
        digest, media_type, body = self.manifest_raw(repo, ref)
        parsed: dict[str, Any] = json.loads(body)
        return digest, media_type, parsed

    def has_manifest(self, repo: str, ref: str) -> bool:
        resp = self.session.head(
            f"{self.url}/v2/{repo}/manifests/{ref}",
            headers={"Accept": MANIFEST_ACCEPT},
            timeout=30,
        )
        return self._check(resp, 200, 404).status_code == 200

    def tags(self, repo: str) -> list[str]:
        """Tags of a repository; [] when the repository does not exist (NAME_UNKNOWN)."""
        resp = self.session.get(f"{self.url}/v2/{repo}/tags/list", timeout=30)
        if resp.status_code == 404:
            codes = {e.get("code") for e in resp.json().get("errors", [])}
            if "NAME_UNKNOWN" in codes:
                return []
        self._check(resp, 200)
        return sorted(resp.json().get("tags") or [])

    def catalog(self) -> list[str]:
        resp = self._check(self.session.get(f"{self.url}/v2/_catalog", timeout=30), 200)
        return list(resp.json().get("repositories") or [])

    def blob(self, repo: str, digest: str) -> bytes:
        resp = self.session.get(f"{self.url}/v2/{repo}/blobs/{digest}", timeout=60)
        return self._check(resp, 200).content

    def put_blob(self, repo: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT with the whole body); returns the digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = self._check(self.session.post(f"{self.url}/v2/{repo}/blobs/uploads/", timeout=30), 202)
        location = requests.compat.urljoin(self.url + "/", start.headers["Location"])
        self._check(
            self.session.put(
                location,
                params={"digest": digest},
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=60,
            ),
            201,
        )
        return digest

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or digest; returns the registry's digest."""
        resp = self._check(
            self.session.put(
                f"{self.url}/v2/{repo}/manifests/{ref}",
                data=body,
                headers={"Content-Type": media_type},
                timeout=30,
            ),
            201,
        )
        return resp.headers.get("Docker-Content-Digest") or ("sha256:" + hashlib.sha256(body).hexdigest())

    def delete_manifest(self, repo: str, digest: str) -> None:
        resp = self.session.delete(f"{self.url}/v2/{repo}/manifests/{digest}", timeout=30)
        self._check(resp, 202)


def make_htpasswd(user: str, password: str) -> bytes:
    """One bcrypt htpasswd line (the registry accepts bcrypt only)."""
    if shutil.which("htpasswd") is None:
        raise RuntimeError("htpasswd not found (Debian package apache2-utils)")
    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True).stdout
    return out.strip() + b"\n"


# --------------------------------------------------------------------------- moto


class MotoServer:
    """``moto_server`` from this venv on 127.0.0.1 (all services, in memory)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        candidate = Path(sys.executable).parent / "moto_server"
        if candidate.exists():
            return str(candidate)
        found = shutil.which("moto_server")
        if found is None:
            raise RuntimeError("moto_server not found: pip install 'moto[server]'")
        return found

    @property
    def log_path(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("moto_server not started")
        return self._tmp / "moto.log"

    def start(self) -> MotoServer:
        if self._proc is not None:
            return self
        self._tmp = Path(tempfile.mkdtemp(prefix="moto-"))
        try:
            self._proc = _launch(
                [self.binary(), "-H", "127.0.0.1", "-p", str(self.port)],
                self.log_path,
                _http_ready(f"{self.endpoint}/moto-api/", (200,)),
                f"moto_server on port {self.port}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def reset(self) -> None:
        """Forget every resource (POST /moto-api/reset)."""
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=30).raise_for_status()

    def stop(self) -> None:
        _stop_process(self._proc)
        self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- images


def image_exists(client: DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _import(client: DockerClient, src: Path, name: str, changes: list[str]) -> str:
    repository, _, tag = name.rpartition(":")
    if not src.is_file():  # docker-py would take a missing path for a URL
        raise FileNotFoundError(src)
    client.api.import_image(src=str(src), repository=repository, tag=tag, changes=changes)
    if not image_exists(client, name):
        raise RuntimeError(f"docker import of {src} did not produce {name}")
    return name


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock, so two test runs don't build the same base at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tar_add(
    tar: tarfile.TarFile,
    name: str,
    *,
    data: bytes | None = None,
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    target: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0  # reproducible: same bytes, same layer digest
    info.mode = mode
    info.type = kind
    info.linkname = target
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def _static_busybox() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            head = candidate.read_bytes()[:8192]
            if b"ld-linux" in head or b"/lib/ld-" in head:
                raise RuntimeError(f"{candidate} is dynamically linked: install busybox-static")
            return candidate
    raise RuntimeError("busybox not found: install the Debian package busybox-static")


def ensure_busybox_base(client: DockerClient, name: str = BUSYBOX_BASE) -> str:
    """A ``FROM scratch``-style image: static busybox, its applets in /bin, CA bundle."""
    if image_exists(client, name):
        return name
    busybox = _static_busybox()
    applets = subprocess.run(
        [str(busybox), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tar_path = CACHE_DIR / "busybox-base.tar"
    with _locked(CACHE_DIR / "busybox-base.lock"):
        if image_exists(client, name):
            return name
        with tarfile.open(tar_path, "w") as tar:
            for d in ("bin", "etc", "etc/ssl", "etc/ssl/certs", "root", "usr", "usr/bin"):
                _tar_add(tar, d, mode=0o755, kind=tarfile.DIRTYPE)
            _tar_add(tar, "tmp", mode=0o1777, kind=tarfile.DIRTYPE)
            _tar_add(tar, "bin/busybox", data=busybox.read_bytes(), mode=0o755)
            for applet in sorted(set(applets) - {"busybox"}):
                _tar_add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, target="busybox")
            _tar_add(tar, "usr/bin/env", kind=tarfile.SYMTYPE, target="/bin/busybox")
            _tar_add(tar, "etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n")
            _tar_add(tar, "etc/group", data=b"root:x:0:\n")
            _tar_add(tar, str(HOST_CA_BUNDLE).lstrip("/"), data=HOST_CA_BUNDLE.read_bytes())
        changes = [
            f"ENV {_PATH_ENV}",
            *(f"ENV {e}" for e in _CA_ENV),
            'CMD ["/bin/sh"]',
            'LABEL org.opencontainers.image.description="local busybox base made by tests/support/stack.py"',
        ]
        return _import(client, tar_path, name, changes)


def _umount_under(root: Path) -> None:
    """Unmount anything a failed debootstrap left mounted below ``root``."""
    prefix = str(root.resolve())
    mounts = [
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if len(line.split()) > 1
    ]
    for mnt in sorted((m for m in mounts if m.startswith(prefix + "/")), reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)


def _remove_tree(root: Path) -> None:
    if root.exists():
        _umount_under(root)
        shutil.rmtree(root)


def build_python_rootfs_tar(tar_path: Path, suite: str = "bookworm", mirror: str | None = None) -> Path:
    """debootstrap a minbase Debian with python3, pip and venv into ``tar_path``."""
    mirror = mirror or debian_mirror()
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: run `bash scripts/stack.sh`")
    work = tar_path.parent / f"{tar_path.stem}.rootfs"
    log = tar_path.parent / f"{tar_path.stem}.debootstrap.log"
    _remove_tree(work)
    try:
        with log.open("wb") as fh:
            proc = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,python3-pip,ca-certificates",
                    suite,
                    str(work),
                    mirror,
                ],
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n{_tail(log)}")
        # The host's bundle (it trusts the TLS-intercepting proxy in front of PyPI).
        shutil.copyfile(HOST_CA_BUNDLE, work / str(HOST_CA_BUNDLE).lstrip("/"))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (work / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        (work / "var/task").mkdir(parents=True, exist_ok=True)
        partial = tar_path.with_suffix(".tar.partial")
        subprocess.run(
            ["tar", "-C", str(work), "--numeric-owner", "--exclude=./dev/*", "-cf", str(partial), "."],
            check=True,
        )
        partial.rename(tar_path)
    finally:
        _remove_tree(work)
    return tar_path


def ensure_python_base(client: DockerClient, name: str = PYTHON_BASE, suite: str = "bookworm") -> str:
    """Debian ``suite`` minbase with python3/pip/venv, imported as ``name``.

    The rootfs tarball is cached in .stack/cache, so only the first run on a machine
    pays for debootstrap (about a minute). ``pip install`` works system-wide in it
    (PIP_BREAK_SYSTEM_PACKAGES), as in the python images one would normally pull, and
    it has LAMBDA_TASK_ROOT=/var/task like the AWS Lambda python base images.
    """
    if image_exists(client, name):
        return name
    tar_path = CACHE_DIR / f"python-{suite}-rootfs.tar"
    with _locked(CACHE_DIR / f"python-{suite}.lock"):
        if image_exists(client, name):
            return name
        if not tar_path.is_file():
            build_python_rootfs_tar(tar_path, suite=suite)
        changes = [
            f"ENV {_PATH_ENV}",
            "ENV LANG=C.UTF-8",
            *(f"ENV {e}" for e in _CA_ENV),
            "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
            "ENV PIP_ROOT_USER_ACTION=ignore",
            "ENV PIP_DISABLE_PIP_VERSION_CHECK=1",
            "ENV LAMBDA_TASK_ROOT=/var/task",
            "WORKDIR /var/task",
            'CMD ["python3"]',
            "LABEL org.opencontainers.image.description="
            f'"local Debian {suite} python base made by tests/support/stack.py"',
        ]
        return _import(client, tar_path, name, changes)


# The real Lambda Web Adapter image (public.ecr.aws/awsguru/aws-lambda-adapter) cannot be
# pulled here: no registry other than the local one is reachable. Dockerfiles copy
# /lambda-adapter out of it (COPY --from=... /lambda-adapter /opt/extensions/...), and the
# extension only ever runs inside AWS Lambda, so a same-layout image with a script in
# its place is enough for building and pushing. Like the real one it is FROM scratch.
ADAPTER_SCRIPT = b"""#!/bin/sh
# Local stand-in for the AWS Lambda Web Adapter extension
# (public.ecr.aws/awsguru/aws-lambda-adapter), made by tests/support/stack.py because
# that image cannot be pulled on the test machine. The real adapter only runs inside
# AWS Lambda; this one only says what it is.
echo "lambda-adapter: local stand-in for the AWS Lambda Web Adapter extension" \\
  "(it only runs inside AWS Lambda)" >&2
exit 0
"""


def ensure_adapter_standin(client: DockerClient, name: str = ADAPTER_STANDIN) -> str:
    """An image holding only /lambda-adapter (a busybox-sh script), like the real one."""
    if image_exists(client, name):
        return name
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tar_path = CACHE_DIR / "lambda-adapter-standin.tar"
    with _locked(CACHE_DIR / "lambda-adapter-standin.lock"):
        if image_exists(client, name):
            return name
        with tarfile.open(tar_path, "w") as tar:
            _tar_add(tar, "lambda-adapter", data=ADAPTER_SCRIPT, mode=0o755)
        changes = [
            'ENTRYPOINT ["/lambda-adapter"]',
            "LABEL org.opencontainers.image.description="
            '"local stand-in for the AWS Lambda Web Adapter (cannot be pulled here)"',
        ]
        return _import(client, tar_path, name, changes)
