"""A second host for the tests: a network namespace joined to this one by a veth pair, a
Docker engine inside it serving TCP with mutual TLS, and certificates made by openssl.

    runner (this host)  10.x.y.1  <-- veth -->  10.x.y.2  "remote" (netns): dockerd :2376

Only the two test addresses are involved; nothing is routed anywhere else. The engine is
started with `nsenter --net=` (not `ip netns exec`, which remounts /sys and hides the cgroup
mounts dockerd needs), on a data root of its own, with a config file of its own (so the
host's /etc/docker/daemon.json does not apply). A registry's CA is trusted by both engines
through /etc/docker/certs.d/<host:port>/ca.crt, which `trust_registry` writes and removes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors
import docker.tls
import requests

if TYPE_CHECKING:
    from collections.abc import Iterator

CERTS_D = Path("/etc/docker/certs.d")
ENGINE_PORT = 2376


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Pki:
    """A CA and the certificates it signs (openssl, elliptic curve keys, valid one day)."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def make_ca(self) -> Pki:
        self.folder.mkdir(parents=True, exist_ok=True)
        _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(self.folder / "ca-key.pem"), "-out", str(self.ca), "-days", "1",
             "-subj", "/CN=lambda-image-publish test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
        return self

    def issue(self, name: str, *, ip: str | None = None, client: bool = False) -> tuple[Path, Path]:
        """(certificate, key) for a server at `ip`, or a client certificate."""
        key, csr, cert = (self.folder / f"{name}{suffix}" for suffix in ("-key.pem", ".csr", ".pem"))
        _run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")  # fmt: skip
        extensions = self.folder / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
        lines.append("extendedKeyUsage=clientAuth" if client else "extendedKeyUsage=serverAuth")
        if ip:
            lines.append(f"subjectAltName=IP:{ip}")
        extensions.write_text("\n".join(lines) + "\n")
        _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca),
             "-CAkey", str(self.folder / "ca-key.pem"), "-CAcreateserial", "-out", str(cert),
             "-days", "1", "-extfile", str(extensions))  # fmt: skip
        key.chmod(0o600)
        return cert, key


@dataclass
class RemoteHost:
    """The namespace, its addresses and its engine. `env()` is what a workflow sets to use it."""

    namespace: str
    runner_ip: str
    remote_ip: str
    root: Path
    pki: Pki
    client_certs: Path  # ca.pem, cert.pem, key.pem: what DOCKER_CERT_PATH names
    process: subprocess.Popen[bytes] | None = None

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.remote_ip}:{ENGINE_PORT}"

    @property
    def socket(self) -> Path:
        """The engine's socket on "its" host, for what sshd would run there (`ssh_standin`)."""
        return self.root / "docker.sock"

    def ssh_standin(self, folder: Path) -> Path:
        """An `ssh` for PATH that does what sshd on the remote host would for the docker CLI
        and docker-py (`ssh ... -- HOST docker system dial-stdio`): refuse any other host or
        command, and run `docker system dial-stdio` against the engine there. The network
        path to the engine is a unix socket then, not the veth; everything else about an
        ssh:// engine (the CLI's and docker-py's ssh handling, the smoke boot reaching the
        host named in DOCKER_HOST) is real."""
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "ssh"
        script.write_text(
            "#!/bin/sh\n"
            f'case " $* " in *" {self.remote_ip} "*"docker system dial-stdio"*) ;; '
            '*) echo "ssh stand-in: not the test host or not dial-stdio: $*" >&2; exit 255;; esac\n'
            f"exec {shutil.which('docker') or '/usr/bin/docker'} -H unix://{self.socket} system dial-stdio\n"
        )
        script.chmod(0o755)
        return folder

    def env(self) -> dict[str, str]:
        return {
            "DOCKER_HOST": self.docker_host,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.client_certs),
        }

    def client(self, timeout: int = 120) -> docker.DockerClient:
        tls = docker.tls.TLSConfig(
            client_cert=(str(self.client_certs / "cert.pem"), str(self.client_certs / "key.pem")),
            ca_cert=str(self.client_certs / "ca.pem"),
            verify=True,
        )
        # A fixed API version (every engine since Docker 20.10 speaks it): docker-py would ask
        # for the engine's before REQUESTS_CA_BUNDLE (which replaces the test CA) is turned off.
        client = docker.DockerClient(base_url=self.docker_host, tls=tls, timeout=timeout, version="1.41")
        client.api.trust_env = False
        return client

    def log(self) -> str:
        path = self.root / "dockerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _free_subnet() -> ipaddress.IPv4Network:
    used = _run("ip", "-4", "-o", "addr", "show")
    for _ in range(100):
        subnet = ipaddress.IPv4Network((f"10.213.{random.randrange(256)}.{random.randrange(64) * 4}", 30))
        if not any(f" {address}/" in used for address in subnet):
            return subnet
    raise RuntimeError("no free /30 in 10.213.0.0/16 for the test host")


@contextlib.contextmanager
def remote_host() -> Iterator[RemoteHost]:
    """Make the namespace, the veth pair, the certificates and the engine; undo it all after."""
    tag = os.urandom(3).hex()
    namespace, outside, inside = f"lipr{tag}", f"lipo{tag}", f"lipi{tag}"
    subnet = _free_subnet()
    runner_ip, remote_ip = (str(address) for address in subnet.hosts())
    # Short: containerd's sockets live under the exec root, and socket paths are limited.
    root = Path(tempfile.mkdtemp(prefix="lipr-", dir="/tmp"))
    pki = Pki(root / "pki").make_ca()
    host = RemoteHost(namespace, runner_ip, remote_ip, root, pki, root / "client")
    try:
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", namespace)
        _run("ip", "addr", "add", f"{runner_ip}/30", "dev", outside)
        _run("ip", "link", "set", outside, "up")
        for argv in (
            ("ip", "addr", "add", f"{remote_ip}/30", "dev", inside),
            ("ip", "link", "set", inside, "up"),
            ("ip", "link", "set", "lo", "up"),
        ):
            _run("ip", "netns", "exec", namespace, *argv)
        server_cert, server_key = pki.issue("remote-engine", ip=remote_ip)
        client_cert, client_key = pki.issue("runner", client=True)
        host.client_certs.mkdir()
        shutil.copy(pki.ca, host.client_certs / "ca.pem")
        shutil.copy(client_cert, host.client_certs / "cert.pem")
        shutil.copy(client_key, host.client_certs / "key.pem")
        host.process = _start_engine(host, server_cert, server_key)
        yield host
    finally:
        _stop_engine(host)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", outside], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _start_engine(host: RemoteHost, cert: Path, key: Path) -> subprocess.Popen[bytes]:
    config = host.root / "daemon.json"
    config.write_text("{}\n")
    log = (host.root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{host.namespace}", "dockerd",
         "--config-file", str(config), "--data-root", str(host.root / "data"),
         "--exec-root", str(host.root / "exec"), "--pidfile", str(host.root / "dockerd.pid"),
         "--host", host.docker_host, "--host", f"unix://{host.socket}",
         "--tlsverify", "--tlscacert", str(host.pki.ca), "--tlscert", str(cert), "--tlskey", str(key),
         "--containerd-namespace", host.namespace, "--containerd-plugins-namespace", f"{host.namespace}p"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
            host.client(timeout=5).ping()
            return process
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the remote test engine did not start:\n{host.log()}")
        time.sleep(0.3)


def _stop_engine(host: RemoteHost) -> None:
    process = host.process
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    subprocess.run(["umount", "-R", str(host.root / "data")], capture_output=True, check=False)
    subprocess.run(["umount", "-R", str(host.root / "exec")], capture_output=True, check=False)


@contextlib.contextmanager
def trust_registry(host: str, ca: Path) -> Iterator[None]:
    """Both engines trust the registry at `host` (host:port) through the CA that signed it."""
    folder = CERTS_D / host
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca, folder / "ca.crt")
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)
