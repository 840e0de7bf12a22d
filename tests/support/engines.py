"""Newer Docker engines for the tests: Debian sid's Docker 28.5 (containerd 2.1, runc 1.3,
buildx 0.29), with the classic image store or the containerd image store, beside the host's
Debian 12 engine (20.10), which the rest of the suite uses.

scripts/stack.sh fetches sid's packages into .stack/engines/sid/root (nothing installed
system-wide). `sid_engine(store)` starts that dockerd, which starts sid's containerd itself:

    host (pytest, the action)                     namespace "lipe<hex>" (lo only)
      DOCKER_HOST=unix://<tmp>/docker.sock  --->  dockerd 28.5 + containerd 2.1 + runc 1.3
      127.0.0.1:<registry port>  <-- <tmp>/bridge/f<port>.sock <--  127.0.0.1:<port> (agent)
      127.0.0.1:<published port> --> <tmp>/bridge/e<port>.sock -->  127.0.0.1:<port> (agent)

Why a namespace of its own: a second dockerd in the host's would share the host engine's
docker0 and iptables chains, and dockerd deletes a docker0 it did not expect. Why unix
sockets: a unix socket on the file system is reachable from every network namespace, so the
engine's API needs no TLS and a port bridge needs no veth, routes or addresses. The bridge
keeps the address strings identical on both sides: the engine pushes to the very
`127.0.0.1:<port>` the tests and the action use (and Docker takes 127.0.0.0/8 registries for
plain HTTP), and the ports a smoke boot publishes on the engine's loopback are mirrored on
the host's, where the action probes them.

The engine is started with `nsenter --net=` (not `ip netns exec`, which remounts /sys and
hides the cgroup mounts dockerd needs), on a data root, exec root, pidfile, config file and
containerd namespaces of its own. The namespace's agent (`python -m tests.support.engines
agent DIR`) is one process that listens and connects inside the namespace on request; it
exits when its stdin closes, so it cannot outlive the test process.

Use, in a test module:

    from tests.support.engines import Engine, engine_fixture
    engine = engine_fixture()   # a fixture named `engine`: module scope, one per store, ids
                                # "classic" and "containerd"; skips, with why, without sid

    def test_x(engine: Engine, registry: Registry, busybox_base: str) -> None:
        engine.forward(registry.port)
        engine.load_image(busybox_base)
        run = publish(..., env=engine.env())

Outside pytest: `with sid_engine("containerd", forward=[port]) as engine: ...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import docker
import docker.errors
import pytest
import requests

from tests.support.stack import REPO_ROOT, STACK_DIR, docker_cli

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from docker import DockerClient

Store = Literal["classic", "containerd"]
STORES: tuple[Store, ...] = ("classic", "containerd")

SID_DIR = STACK_DIR / "engines" / "sid"
SID_ROOT = SID_DIR / "root"
SID_DOCKER = SID_ROOT / "usr" / "bin" / "docker"
SID_PLUGINS = SID_ROOT / "usr" / "libexec" / "docker" / "cli-plugins"
# dockerd looks up containerd, containerd-shim-runc-v2, runc (patched by scripts/stack.sh to
# load sid's libc), docker-init and docker-proxy on its PATH: sid's come first.
SID_PATH = (SID_ROOT / "usr" / "bin", SID_ROOT / "usr" / "sbin")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

START_TIMEOUT_S = 90.0
_CHUNK = 256 * 1024
# Ports a sid engine publishes on: see sid_engine.
ENGINE_PORTS = (20000, 28999)


def sid_versions() -> dict[str, str]:
    """Debian package -> version of what scripts/stack.sh fetched ({} when nothing was)."""
    path = SID_DIR / "versions"
    if not path.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return dict(pairs)


def unavailable_reason() -> str | None:
    """Why sid's engine cannot be started here, or None when it can."""
    if not (SID_DIR / "stamp").is_file():
        return "Debian sid's Docker engine is not here: `bash scripts/stack.sh up` fetches it (it could not)"
    if os.geteuid() != 0:
        return "starting a second Docker engine needs root"
    missing = [tool for tool in ("ip", "nsenter", "umount") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages iproute2, util-linux)"
    return None


# --------------------------------------------------------------------------- port bridge
# Each relayed connection is two threads, one per direction, so a 300 MB upload never waits
# on its response side and a slow reader only slows its own connection. A half-close is
# passed on as one (HTTP clients that shut their write side still get the answer); an error
# on either side aborts both, with a TCP reset where the peer is a TCP socket.


def _abort(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)


def _pump(source: socket.socket, sink: socket.socket, peer: socket.socket) -> None:
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    try:
        while received := source.recv_into(buffer):
            sink.sendall(view[:received])
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        _abort(source, peer)


def _splice(one: socket.socket, other: socket.socket) -> None:
    back = threading.Thread(target=_pump, args=(other, one, other), daemon=True)
    back.start()
    _pump(one, other, one)
    back.join()
    one.close()
    other.close()


class _Relay:
    """Accepts on `listener`; each connection is joined to a new one from `connect`."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket], name: str) -> None:
        self.listener = listener
        self.connect = connect
        self.name = name
        self.closed = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"relay {name}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                accepted, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(accepted,), daemon=True).start()

    def _serve(self, accepted: socket.socket) -> None:
        try:
            upstream = self.connect()
        except OSError:
            _abort(accepted)  # a reset, as the client would get from a closed port
            accepted.close()
            return
        with self._lock:
            if self.closed:
                _abort(accepted, upstream)
            self._open |= {accepted, upstream}
        try:
            _splice(accepted, upstream)
        finally:
            with self._lock:
                self._open -= {accepted, upstream}

    def close(self) -> None:
        self.closed = True
        # shutdown, not close: it wakes the thread blocked in accept().
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            _abort(*self._open)
        self._thread.join(timeout=5)


def _tcp_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _unix_listener(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _tcp_connector(port: int) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.settimeout(None)
        return sock

    return connect


def _unix_connector(path: Path) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return sock

    return connect


def _agent(folder: Path) -> None:
    """The namespace's side of the bridge (`python -m tests.support.engines agent DIR`, run
    with `nsenter --net=`). One command a line on stdin, one answer a line on stdout:
    `forward P` listens on 127.0.0.1:P here and joins each connection to DIR/fP.sock (served
    on the host); `expose P` serves DIR/eP.sock and joins each connection to 127.0.0.1:P here;
    `unexpose P` stops that. Exits when stdin closes."""
    relays: dict[str, _Relay] = {}
    for line in sys.stdin:
        verb, _, argument = line.strip().partition(" ")
        try:
            port = int(argument)
            key = f"{verb} {port}"
            if verb == "forward" and key not in relays:
                relays[key] = _Relay(_tcp_listener(port), _unix_connector(folder / f"f{port}.sock"), key)
            elif verb == "expose" and key not in relays:
                path = folder / f"e{port}.sock"
                relays[key] = _Relay(_unix_listener(path), _tcp_connector(port), key)
            elif verb == "unexpose":
                relay = relays.pop(f"expose {port}", None)
                if relay is not None:
                    relay.close()
            elif verb not in ("forward", "expose"):
                raise ValueError(f"unknown command {verb!r}")
        except (OSError, ValueError) as exc:
            print(f"error {exc}", flush=True)
        else:
            print("ok", flush=True)
    for relay in relays.values():
        relay.close()


class Bridge:
    """The host's side of the port bridge and the agent in the namespace."""

    def __init__(self, namespace: str, folder: Path, log: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._relays: dict[str, _Relay] = {}
        self._lock = threading.Lock()
        with log.open("ab") as stderr:
            self._agent = subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/{namespace}", sys.executable,
                 "-m", "tests.support.engines", "agent", str(folder)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=REPO_ROOT, text=True,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            )  # fmt: skip

    def _ask(self, command: str) -> None:
        agent = self._agent
        assert agent.stdin is not None and agent.stdout is not None
        agent.stdin.write(command + "\n")
        agent.stdin.flush()
        answer = agent.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"the engine's port bridge could not {command}: {answer or 'it exited'}")

    def forward(self, port: int) -> None:
        """The engine's 127.0.0.1:`port` reaches the host's 127.0.0.1:`port` (idempotent)."""
        key = f"forward {port}"
        with self._lock:
            if key in self._relays:
                return
            listener = _unix_listener(self.folder / f"f{port}.sock")
            self._relays[key] = _Relay(listener, _tcp_connector(port), key)
            self._ask(key)

    def expose(self, port: int) -> None:
        """The host's 127.0.0.1:`port` reaches the engine's 127.0.0.1:`port` (idempotent)."""
        key = f"expose {port}"
        with self._lock:
            if key in self._relays:
                return
            self._ask(key)
            try:
                listener = _tcp_listener(port)
            except OSError:
                self._ask(f"unexpose {port}")
                raise
            self._relays[key] = _Relay(listener, _unix_connector(self.folder / f"e{port}.sock"), key)

    def unexpose(self, port: int) -> None:
        with self._lock:
            relay = self._relays.pop(f"expose {port}", None)
            if relay is not None:
                relay.close()
                self._ask(f"unexpose {port}")

    def close(self) -> None:
        with self._lock:
            for relay in self._relays.values():
                relay.close()
            self._relays.clear()
        agent = self._agent
        if agent.stdin is not None:
            with contextlib.suppress(OSError):
                agent.stdin.close()
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()


# --------------------------------------------------------------------------- the engine


@dataclass
class Engine:
    """A running sid dockerd. `env()` is what the action (or the CLI) is given to use it."""

    store: Store
    namespace: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    bridge: Bridge | None = None
    mirrored: dict[str, list[int]] = field(default_factory=dict)  # container id -> host ports
    problems: list[str] = field(default_factory=list)  # what the published-port mirror could not do

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def cli_bin(self) -> Path:
        """A folder holding only sid's `docker`: first on PATH, it hides the host's CLI and
        nothing else (sid's containerd, runc and ctr stay off the action's PATH)."""
        return self.root / "bin"

    @property
    def docker_config(self) -> Path:
        """The Docker config folder of env(): no logins, only cli-plugins (buildx 0.29)."""
        return self.root / "docker-config"

    def make_docker_config(self, folder: Path) -> Path:
        """A Docker config folder whose CLI finds buildx 0.29: `cli-plugins` links to sid's.
        The CLI looks for plugins in $DOCKER_CONFIG/cli-plugins and in system folders only
        (never beside its binary), and the action keeps $DOCKER_CONFIG/cli-plugins when it
        makes its private config for the ECR login (entrypoint/build/cli_env.py)."""
        folder.mkdir(parents=True, exist_ok=True)
        plugins = folder / "cli-plugins"
        if not plugins.exists():
            plugins.symlink_to(SID_PLUGINS, target_is_directory=True)
        return folder

    def env(self) -> dict[str, str]:
        """The variables a test gives the action (or any docker CLI) to use this engine:
        the socket, sid's docker 28.5 CLI first on PATH, and a Docker config whose plugins
        are sid's buildx 0.29. PATH is the whole value (this process's PATH after sid's)."""
        return {
            "DOCKER_HOST": self.docker_host,
            "PATH": f"{self.cli_bin}{os.pathsep}{os.environ.get('PATH', SYSTEM_PATH)}",
            "DOCKER_CONFIG": str(self.docker_config),
        }

    def cli(
        self,
        *args: str,
        config: Path | None = None,
        input: str | bytes | None = None,
        timeout: float = 300,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """sid's `docker ARGS` against this engine (with `config` as DOCKER_CONFIG, which
        must hold cli-plugins for buildx: see make_docker_config)."""
        env = {**os.environ, **self.env()}
        if config is not None:
            env["DOCKER_CONFIG"] = str(config)
        done = subprocess.run(
            [str(SID_DOCKER), *args],
            input=input.decode() if isinstance(input, bytes) else input,
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            output = done.stdout + done.stderr
            raise RuntimeError(f"docker {' '.join(args)} exited {done.returncode}:\n{output}")
        return done

    def client(self, timeout: int = 300) -> DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout, version="auto")

    def forward(self, port: int) -> None:
        """Make the host's 127.0.0.1:`port` (a registry, a fault proxy) reachable from the
        engine at the same address; idempotent, callable at any time."""
        assert self.bridge is not None, "engine not started"
        self.bridge.forward(port)

    def expose(self, port: int) -> None:
        """Make the engine's 127.0.0.1:`port` reachable on the host's 127.0.0.1:`port`
        (done by itself for ports the engine publishes on its loopback)."""
        assert self.bridge is not None, "engine not started"
        self.bridge.expose(port)

    def load_image(self, name: str) -> str:
        """Copy `name` from the host engine (DOCKER_HOST of this process, else its default
        socket) into this one, streamed (`docker save | docker load`); no image can be
        pulled here. Does nothing when the engine has it."""
        with contextlib.closing(self.client()) as client, contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(name)
            return name
        with subprocess.Popen([docker_cli(), "save", name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) as save:  # fmt: skip
            load = subprocess.run(
                [str(SID_DOCKER), "load"], stdin=save.stdout, capture_output=True, check=False,
                env={**os.environ, **self.env()}, timeout=600,
            )  # fmt: skip
            assert save.stdout is not None and save.stderr is not None
            save.stdout.close()
            save_error = save.stderr.read()
        if save.returncode != 0 or load.returncode != 0:
            raise RuntimeError(
                f"copying {name} into the sid engine failed: save: {save_error.decode(errors='replace')}"
                f" load: {load.stderr.decode(errors='replace')}"
            )
        return name

    def info(self) -> dict[str, object]:
        with contextlib.closing(self.client()) as client:
            info: dict[str, object] = client.info()
        return info

    def log(self, chars: int = 6000) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _daemon_config(store: Store) -> dict[str, object]:
    # Nothing about networks: `default-address-pools` or `"bridge": "none"` make dockerd
    # delete the link named docker0 on a restart, harmless only in a namespace of its own.
    return {"features": {"containerd-snapshotter": store == "containerd"}}


def _start_dockerd(engine: Engine) -> subprocess.Popen[bytes]:
    config = engine.root / "daemon.json"
    config.write_text(json.dumps(_daemon_config(engine.store)) + "\n")
    path = os.pathsep.join([*(str(p) for p in SID_PATH), SYSTEM_PATH])
    with (engine.root / "dockerd.log").open("wb") as log:
        return subprocess.Popen(
            ["nsenter", f"--net=/var/run/netns/{engine.namespace}", str(SID_ROOT / "usr/sbin/dockerd"),
             "--config-file", str(config), "--data-root", str(engine.root / "data"),
             "--exec-root", str(engine.root / "exec"), "--pidfile", str(engine.root / "dockerd.pid"),
             "--host", engine.docker_host, "--containerd-namespace", engine.namespace,
             "--containerd-plugins-namespace", f"{engine.namespace}p"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={"PATH": path, "HOME": "/root", "LANG": "C.UTF-8"},
        )  # fmt: skip


def _wait_for_engine(engine: Engine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with (
            contextlib.suppress(docker.errors.DockerException, requests.RequestException),
            contextlib.closing(engine.client(timeout=5)) as client,
        ):
            client.ping()
            return
        process = engine.process
        if process is None or process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the sid test engine ({engine.store}) did not start:\n{engine.log()}")
        time.sleep(0.1)


def _published_on_loopback(ports: dict[str, list[dict[str, str]] | None]) -> list[int]:
    found = {
        int(binding["HostPort"])
        for bindings in ports.values()
        for binding in bindings or []
        if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", "")
    }
    return sorted(found)


def _mirror_published_ports(engine: Engine, stop: threading.Event) -> Callable[[], None]:
    """Follow the engine's container starts and expose what they publish on its loopback at
    the same port on the host's, where the action's smoke boot probes (it takes an engine on
    a unix socket for a local one). A start is seen a moment after it happened; the smoke
    boot keeps probing until its deadline, so that moment costs one probe at most."""
    client = engine.client(timeout=60)  # docker-py reads events without a timeout
    events = client.api.events(decode=True, filters={"type": "container", "event": ["start", "die"]})

    def follow() -> None:
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException, OSError):
            for event in events:
                if stop.is_set():
                    return
                _mirror(engine, client, event)

    def _mirror(engine: Engine, client: DockerClient, event: dict[str, object]) -> None:
        container = str(event.get("id", ""))
        assert engine.bridge is not None
        if event.get("status") == "die":
            for port in engine.mirrored.pop(container, []):
                engine.bridge.unexpose(port)
            return
        try:
            ports = client.api.inspect_container(container)["NetworkSettings"]["Ports"] or {}
        except docker.errors.DockerException as exc:
            engine.problems.append(f"{container[:12]}: {exc}")
            return
        for port in _published_on_loopback(ports):
            try:
                engine.bridge.expose(port)
            except (OSError, RuntimeError) as exc:
                engine.problems.append(f"{container[:12]}: port {port} not mirrored: {exc}")
            else:
                engine.mirrored.setdefault(container, []).append(port)

    thread = threading.Thread(target=follow, name=f"events {engine.namespace}", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        events.close()
        client.close()
        thread.join(timeout=5)

    return close


def _container_cgroups(engine: Engine) -> list[Path]:
    """The cgroups of the containers whose tasks containerd still has on disk (a dockerd
    that was killed): cgroupfs, dockerd's default parent /docker, in every hierarchy."""
    tasks = engine.root / "exec/containerd/daemon/io.containerd.runtime.v2.task" / engine.namespace
    ids = [task.name for task in tasks.iterdir()] if tasks.is_dir() else []
    cgroups = Path("/sys/fs/cgroup")
    return [path for id_ in ids for path in (*cgroups.glob(f"*/docker/{id_}"), cgroups / "docker" / id_)
            if path.is_dir()]  # fmt: skip


def _processes_of(engine: Engine, netns: tuple[int, int] | None, cgroups: list[Path]) -> set[int]:
    """Processes in the engine's namespace or naming its folder (containerd, shims, the
    agent), in its containers' cgroups, and their descendants: all started by this engine,
    none by anyone else."""
    ours: set[int] = set()
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int(entry.name)
            # The field after the command's closing parenthesis is the state, then the ppid.
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(pid)
            ns = (entry / "ns" / "net").stat()
            inside = netns is not None and (ns.st_dev, ns.st_ino) == netns
            if inside or str(engine.root).encode() in (entry / "cmdline").read_bytes():
                ours.add(pid)
    for cgroup in cgroups:
        with contextlib.suppress(OSError, ValueError):
            ours |= {int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()}
    pending = list(ours)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in ours:
                ours.add(child)
                pending.append(child)
    return ours


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = {pid for pid in pids if Path(f"/proc/{pid}").exists()}
        time.sleep(0.05)


def _mounts_under(root: Path) -> list[str]:
    prefix = f"{root}/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True)


def _kill_containers(engine: Engine) -> None:
    # dockerd stops running containers on its way down with SIGTERM and 10 s of grace;
    # a test's `sleep` as PID 1 ignores SIGTERM, so each would cost those 10 s.
    with (
        contextlib.suppress(docker.errors.DockerException, requests.RequestException),
        contextlib.closing(engine.client(timeout=10)) as client,
    ):
        for container in client.containers.list():
            with contextlib.suppress(docker.errors.DockerException):
                container.kill()


def _stop(engine: Engine, netns: tuple[int, int] | None) -> None:
    process = engine.process
    if process is not None and process.poll() is None:
        _kill_containers(engine)
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if engine.bridge is not None:
        engine.bridge.close()
    # A dockerd that was killed leaves its containerd and shims: end them by their ids.
    cgroups = _container_cgroups(engine)
    _kill(_processes_of(engine, netns, cgroups))
    for cgroup in cgroups:
        with contextlib.suppress(OSError):
            cgroup.rmdir()
    for folder in ("data", "exec"):
        subprocess.run(["umount", "-R", str(engine.root / folder)], capture_output=True, check=False)
    for mount in _mounts_under(engine.root):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


@contextlib.contextmanager
def sid_engine(
    store: Store = "classic", *, forward: Iterable[int] = (), mirror_ports: bool = True,
    timeout: float = START_TIMEOUT_S,
) -> Iterator[Engine]:  # fmt: skip
    """Start sid's dockerd with the `store` image store in a namespace of its own; stop it,
    unmount what it mounted, delete the namespace and its folder after, whatever happened.
    `forward`: host ports to bridge at once (see Engine.forward); `mirror_ports`: expose the
    ports its containers publish on its loopback on the host's (see Engine.expose)."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    namespace = f"lipe{os.urandom(3).hex()}"
    # Short: containerd's sockets live under the exec root, and socket paths are limited.
    root = Path(tempfile.mkdtemp(prefix="lipe-", dir="/tmp"))
    engine = Engine(store, namespace, root)
    netns: tuple[int, int] | None = None
    close_mirror: Callable[[], None] | None = None
    try:
        _run("ip", "netns", "add", namespace)
        stat = Path(f"/var/run/netns/{namespace}").stat()
        netns = (stat.st_dev, stat.st_ino)
        _run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        # The engine picks published ports from its namespace's ephemeral range, and each is
        # mirrored on the host's loopback: outside the host's own range (32768-60999), where
        # the host's client sockets and its engine's published ports live, so the two never
        # want the same port ("port 32768 not mirrored: Address already in use").
        port_range = f"echo '{ENGINE_PORTS[0]} {ENGINE_PORTS[1]}' > /proc/sys/net/ipv4/ip_local_port_range"
        _run("ip", "netns", "exec", namespace, "sh", "-c", port_range)
        engine.cli_bin.mkdir()
        (engine.cli_bin / "docker").symlink_to(SID_DOCKER)
        engine.make_docker_config(engine.docker_config)
        engine.process = _start_dockerd(engine)
        engine.bridge = Bridge(namespace, root / "bridge", root / "bridge.log")
        for port in forward:
            engine.forward(port)
        _wait_for_engine(engine, timeout)
        if mirror_ports:
            close_mirror = _mirror_published_ports(engine, threading.Event())
        yield engine
    finally:
        if close_mirror is not None:
            close_mirror()
        _stop(engine, netns)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def engine_fixture(scope: Literal["module", "session", "function"] = "module",
                   stores: Sequence[Store] = STORES) -> object:  # fmt: skip
    """A pytest fixture giving a started Engine, one per store in `stores` (its test ids are
    the store names); tests using it skip, with the reason, when sid's engine is not here.
    Assign it in a test module: `sid_engine = engine_fixture()`."""

    @pytest.fixture(scope=scope, params=list(stores), ids=list(stores))
    def fixture(request: pytest.FixtureRequest) -> Iterator[Engine]:
        reason = unavailable_reason()
        if reason and os.environ.get("CI"):
            # CI must run the engine matrix: a stack that could not fetch sid is a failure there.
            pytest.fail(reason, pytrace=False)
        if reason:
            pytest.skip(reason)
        with sid_engine(request.param) as engine:
            yield engine

    return fixture


if __name__ == "__main__":
    if sys.argv[1:2] == ["agent"] and len(sys.argv) == 3:
        _agent(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m tests.support.engines agent FOLDER")
