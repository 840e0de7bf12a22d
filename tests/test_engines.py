"""The engine-matrix infrastructure (tests/support/engines.py): Debian sid's Docker 28.5 with
containerd 2.1 and buildx 0.29, started beside the host's 20.10 with the classic image store
and with the containerd image store. Each store's engine runs a container from a base copied
over from the host engine, builds with BuildKit through buildx 0.29 and pushes through the
port bridge to the registry on the host's loopback. What the two stores write to --iidfile
and report at the end of a push differs, and the product reads both: the tests below pin
those facts down, so a change in sid's engine shows here first.

Skipped, with the reason, where scripts/stack.sh could not fetch sid's packages."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from entrypoint.build import cli_env
from tests.support.engines import (
    ENGINE_PORTS,
    Engine,
    engine_fixture,
    sid_engine,
    sid_versions,
    unavailable_reason,
)
from tests.support.stack import ECR_PASSWORD, ECR_USER, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.stack import Registry

engine = engine_fixture()

DIGEST_LINE = re.compile(r"^(?P<tag>\S+): digest: (?P<digest>sha256:[0-9a-f]{64}) size: \d+$")


@pytest.fixture(scope="module")
def loaded(engine: Engine, busybox_base: str) -> str:
    return engine.load_image(busybox_base)


def test_sid_reports_docker_28_5_containerd_2_1_and_buildx_0_29(engine: Engine) -> None:
    version = json.loads(engine.cli("version", "--format", "{{json .}}").stdout)
    assert version["Client"]["Version"].startswith("28.5.")
    assert version["Server"]["Version"].startswith("28.5.")
    components = {c["Name"]: c["Version"] for c in version["Server"]["Components"]}
    # sid's own containerd, started by dockerd from its PATH (the host's is 1.6).
    assert components["containerd"].startswith("2.1."), components
    assert components["runc"].startswith("1.3."), components
    buildx = engine.cli("buildx", "version").stdout
    assert re.search(r"github.com/docker/buildx v?0\.29\.", buildx), buildx
    assert sid_versions()["docker.io"].startswith("28.5.")


def test_the_image_store_is_the_one_asked_for(engine: Engine) -> None:
    info = engine.info()
    if engine.store == "containerd":
        assert info["Driver"] == "overlayfs"
        assert ["driver-type", "io.containerd.snapshotter.v1"] in info["DriverStatus"]  # type: ignore[operator]
    else:
        assert info["Driver"] == "overlay2"
        assert not any(row[0] == "driver-type" for row in info["DriverStatus"])  # type: ignore[attr-defined]


def test_a_base_from_the_host_engine_runs(engine: Engine, loaded: str) -> None:
    run = engine.cli("run", "--rm", loaded, "echo", "ok")
    assert run.stdout == "ok\n"


def test_env_gives_any_docker_on_path_the_engine_and_buildx_also_through_the_actions_config(
    engine: Engine,
) -> None:
    env = os.environ | engine.env()
    version = subprocess.run(
        ["docker", "version", "--format", "{{.Client.Version}} {{.Server.Version}}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert version.stdout.split() == [version.stdout.split()[0]] * 2
    assert version.stdout.startswith("28.5.")
    # The action hands the CLI a private DOCKER_CONFIG of its own for the ECR login.
    with cli_env.registry_credentials("127.0.0.1:5000", "AWS", "token", env) as private:
        buildx = subprocess.run(
            ["docker", "buildx", "version"], env=env | {"DOCKER_CONFIG": private},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert buildx.returncode == 0, buildx.stderr
    assert "0.29." in buildx.stdout


def _push_events(engine: Engine, repository: str, tag: str) -> list[dict[str, Any]]:
    client = engine.client()
    try:
        auth = {"username": ECR_USER, "password": ECR_PASSWORD}
        return list(client.api.push(repository, tag, stream=True, decode=True, auth_config=auth))
    finally:
        client.close()


def test_buildx_builds_on_the_base_and_pushes_through_the_bridge(
    engine: Engine, loaded: str, registry: Registry, tmp_path: Path
) -> None:
    """buildx 0.29's default `docker` driver, and what each store reports: on the classic
    store --iidfile and the image ID are the config digest, and the push ends in a status
    line and an aux {Tag, Digest, Size}; on the containerd store (buildx adds a provenance
    attestation, so the image is an OCI index) both are the index digest, which is what is
    pushed, and the push ends in the status line only: no aux."""
    engine.forward(registry.port)
    config = engine.make_docker_config(tmp_path / "docker-config")
    login = engine.cli("login", registry.host, "-u", ECR_USER, "--password-stdin", input=ECR_PASSWORD,
                       config=config)  # fmt: skip
    assert "Login Succeeded" in login.stdout
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text(f"FROM {loaded}\nRUN echo built > /built\n")
    repository = f"{registry.host}/engines-{engine.store}"
    iidfile = tmp_path / "iid"
    context = tmp_path / "context"
    build = engine.cli("build", "-t", f"{repository}:one", "--iidfile", str(iidfile), str(context),
                       config=config)  # fmt: skip
    assert "naming to" in build.stderr + build.stdout
    image_id = engine.cli("image", "inspect", f"{repository}:one", "--format", "{{.Id}}").stdout.strip()
    assert iidfile.read_text() == image_id
    assert engine.cli("run", "--rm", f"{repository}:one", "cat", "/built").stdout == "built\n"

    pushed = engine.cli("push", f"{repository}:one", config=config).stdout.strip().splitlines()[-1]
    line = DIGEST_LINE.match(pushed)
    assert line, pushed
    digest, media_type, manifest = registry.manifest(f"engines-{engine.store}", "one")
    assert line["digest"] == digest

    events = _push_events(engine, repository, "one")
    statuses = [DIGEST_LINE.match(str(e.get("status", ""))) for e in events]
    assert [m["digest"] for m in statuses if m] == [digest]
    aux = [e["aux"] for e in events if "aux" in e]
    if engine.store == "classic":
        assert media_type == MEDIA_DOCKER_MANIFEST
        assert manifest["config"]["digest"] == image_id
        assert aux == [{"Tag": "one", "Digest": digest, "Size": aux[0]["Size"]}]
    else:
        assert media_type == MEDIA_OCI_INDEX
        assert image_id == digest
        platforms = [m["platform"] for m in manifest["manifests"]]
        assert {"architecture": "unknown", "os": "unknown"} in platforms  # the attestation
        assert aux == []


# --------------------------------------------------------------------------- the bridge
# The agent's client side, run in the engine's namespace: CONNECTIONS uploads at once of
# SIZE bytes each (a repeated random block), each reading back the server's sha256.
_CLIENT = """
import hashlib, os, socket, sys, threading
port, size, connections = map(int, sys.argv[1:4])
block = os.urandom(1 << 20)
answers = []
def upload():
    with socket.create_connection(("127.0.0.1", port)) as sock:
        digest, left = hashlib.sha256(), size
        while left:
            chunk = block[: min(left, len(block))]
            sock.sendall(chunk)
            digest.update(chunk)
            left -= len(chunk)
        sock.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: sock.recv(4096), b"")).decode()
        answers.append(answer == f"{digest.hexdigest()} {size}")
threads = [threading.Thread(target=upload) for _ in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(answers), len(answers))
"""


class _DigestServer:
    """Reads each connection to its end and answers `<sha256> <bytes>` (host side)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            digest, count, buffer = hashlib.sha256(), 0, bytearray(1 << 18)
            while received := conn.recv_into(buffer):
                digest.update(memoryview(buffer)[:received])
                count += received
            conn.sendall(f"{digest.hexdigest()} {count}".encode())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def digest_server() -> Iterator[_DigestServer]:
    server = _DigestServer()
    yield server
    server.close()


def _in_namespace(engine: Engine, script: str, *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{engine.namespace}", sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_port_forwarded_at_run_time_carries_300_mb_and_many_connections_at_once(
    engine: Engine, digest_server: _DigestServer
) -> None:
    engine.forward(digest_server.port)
    engine.forward(digest_server.port)  # idempotent
    started = time.monotonic()
    assert _in_namespace(engine, _CLIENT, str(digest_server.port), str(300 << 20), "1").split() == ["1", "1"]
    big = time.monotonic() - started
    assert _in_namespace(engine, _CLIENT, str(digest_server.port), str(1 << 20), "48").split() == ["48", "48"]
    assert big < 60, f"300 MB took {big:.1f} s through the bridge"


def test_a_port_published_on_the_engines_loopback_is_reached_on_the_hosts(
    engine: Engine, loaded: str
) -> None:
    container = engine.cli("run", "-d", "-p", "127.0.0.1::8080", loaded,
                           "httpd", "-f", "-p", "8080", "-h", "/etc").stdout.strip()  # fmt: skip
    try:
        port = int(engine.cli("port", container, "8080/tcp").stdout.split(":")[-1])
        # Outside the host's ephemeral range, which the host's own sockets take from.
        assert ENGINE_PORTS[0] <= port <= ENGINE_PORTS[1]
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/passwd", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, engine.problems
                time.sleep(0.1)
        assert answer.status_code == 200
        assert answer.text.startswith("root:")
    finally:
        engine.cli("rm", "-f", container)
    deadline = time.monotonic() + 10
    while port in {p for ports in engine.mirrored.values() for p in ports}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/passwd", timeout=2)


# --------------------------------------------------------------------------- clean-up


def _netns_names() -> set[str]:
    folder = Path("/var/run/netns")
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _fail_with_a_running_container(base: str, seen: list[Engine]) -> None:
    with sid_engine("containerd") as started:
        seen.append(started)
        started.load_image(base)
        started.cli("run", "-d", base, "sleep", "600")
        raise RuntimeError("the test failed")


@pytest.mark.skipif(bool(unavailable_reason()), reason=unavailable_reason() or "")
def test_a_failing_test_leaves_no_engine_namespace_mount_or_process_behind(busybox_base: str) -> None:
    seen: list[Engine] = []
    with pytest.raises(RuntimeError, match="the test failed"):
        _fail_with_a_running_container(busybox_base, seen)
    root, namespace = seen[0].root, seen[0].namespace
    assert not root.exists()
    assert namespace not in _netns_names()
    assert str(root) not in Path("/proc/self/mounts").read_text()
    leftovers = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    leftovers.append(entry.name)
            except OSError:
                continue
    assert leftovers == []


def test_without_provenance_the_containerd_stores_iidfile_is_the_config_not_the_image_id(
    engine: Engine, loaded: str, registry: Registry, tmp_path: Path
) -> None:
    """`--provenance=false` (one image manifest, what Lambda takes): on the classic store
    --iidfile, the image ID and the pushed manifest's config are one digest; on the containerd
    store --iidfile still holds the config digest while the image ID is the manifest's digest,
    which is what the push stores (and reports in its status line only)."""
    engine.forward(registry.port)
    config = engine.make_docker_config(tmp_path / "docker-config")
    engine.cli("login", registry.host, "-u", ECR_USER, "--password-stdin", input=ECR_PASSWORD, config=config)
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "Dockerfile").write_text(f"FROM {loaded}\nRUN echo plain > /plain\n")
    name = f"engines-{engine.store}-plain"
    reference = f"{registry.host}/{name}:one"
    iidfile = tmp_path / "iid"
    engine.cli("build", "--provenance=false", "-t", reference, "--iidfile", str(iidfile),
               str(tmp_path / "context"), config=config)  # fmt: skip
    image_id = engine.cli("image", "inspect", reference, "--format", "{{.Id}}").stdout.strip()
    events = _push_events(engine, f"{registry.host}/{name}", "one")
    digest, media_type, manifest = registry.manifest(name, "one")
    assert media_type == MEDIA_DOCKER_MANIFEST
    assert manifest["config"]["digest"] == iidfile.read_text()
    reported = [m["digest"] for m in (DIGEST_LINE.match(str(e.get("status", ""))) for e in events) if m]
    assert reported == [digest]
    aux = [e["aux"] for e in events if "aux" in e]
    if engine.store == "classic":
        assert image_id == iidfile.read_text()
        assert [a["Digest"] for a in aux] == [digest]
    else:
        assert image_id == digest != iidfile.read_text()
        assert aux == []
