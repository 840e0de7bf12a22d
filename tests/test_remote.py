"""Builds on a Docker engine on another host: a second dockerd in a network namespace the
test makes, serving TCP with mutual TLS (certificates made by openssl here), and a registry
with TLS that both hosts reach. The build, the smoke boot, the push and an unchanged
republish all run against the remote engine; nothing is built on the local one."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import docker.errors
import pytest

from entrypoint.engine.endpoint import find_endpoint
from entrypoint.errors import EngineError
from tests.support.remote import remote_host, trust_registry
from tests.support.run import publish as publish_in
from tests.support.stack import STACK_DIR, Registry
from tests.test_republish import SKIPPED

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.remote import RemoteHost
    from tests.support.workspace import Workspace

# Only busybox, and no symlinks to its applets: no curl, wget, python or node for the smoke
# boot to probe from inside, so it must reach the published port on the engine's host.
DOCKERFILE = (
    "FROM scratch\n"
    "COPY busybox /bin/busybox\n"
    "COPY www/ /www/\n"
    'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n'
)


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteHost]:
    with remote_host() as host:
        yield host


@pytest.fixture(scope="module")
def tls_registry(remote: RemoteHost) -> Iterator[Registry]:
    """A registry on the runner's end of the veth pair, serving HTTPS with a certificate of
    the test CA, which both engines trust; the action is told of the CA by SSL_CERT_FILE."""
    cert, key = remote.pki.issue("registry", ip=remote.runner_ip)
    with (
        Registry(address=remote.runner_ip, tls=(cert, key, remote.pki.ca)) as registry,
        trust_registry(registry.host, remote.pki.ca),
    ):
        yield registry


@pytest.fixture
def site(workspace: Workspace) -> Workspace:
    shutil.copy("/bin/busybox", workspace.path / "busybox")
    files = {"Dockerfile": DOCKERFILE, ".dockerignore": ".git\n", "www/index.html": "hello from far away\n"}
    workspace.commit_files(files, "site")
    return workspace


def trusting(remote: RemoteHost) -> dict[str, str]:
    """The registry's CA for the action's own registry calls, through OpenSSL's variable (the
    requests ones, which this machine sets to its system bundle, emptied so it applies)."""
    return {"SSL_CERT_FILE": str(remote.pki.ca), "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""}


def images_named(client: DockerClient, repo: str) -> list[str]:
    return [tag for image in client.images.list() for tag in image.tags if repo in tag]


def _has_buildx() -> bool:
    return subprocess.run(["docker", "buildx", "version"], capture_output=True, check=False).returncode == 0


def test_a_remote_tls_engine_builds_boots_and_pushes_and_a_rerun_skips(
    site: Workspace,
    remote: RemoteHost,
    tls_registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    env = remote.env() | trusting(remote)
    args = ("--smoke", "8080/index.html")
    run = publish_in(site.path, tls_registry.host, tmp_path, *args, repository=repo, env=env)
    assert run.code == 0, run.log + remote.log()
    assert f"engine: tcp://{remote.remote_ip}:2376 (DOCKER_HOST, TLS, remote)" in run.log
    # The smoke boot reached the app where the remote engine published it.
    assert f"probing through a port published on {remote.remote_ip}" in run.log
    assert "answered HTTP 200" in run.log
    digest = run.outputs["digest"]
    for tag in (site.head, "preprod", "latest"):
        assert tls_registry.manifest(repo, tag)[0] == digest
    assert tls_registry.url.startswith("https://")
    # Built over there (the build's own tag stays in that engine), nothing here.
    remote_client = remote.client()
    assert images_named(remote_client, repo) == [f"{repo}:{site.head}"]
    assert images_named(docker_client, repo) == []
    assert docker_client.images.list(filters={"label": "lambda-image-publish.purpose"}) == []

    # A fresh remote engine: its build cache and images gone. Nothing changed: skipped.
    for image in remote_client.images.list():
        with contextlib.suppress(docker.errors.APIError):
            remote_client.images.remove(image.id, force=True)
    remote_client.api.prune_builds()
    site.commit_files({"README.md": "docs only\n"}, "docs")
    started = time.monotonic()
    again = publish_in(site.path, tls_registry.host, tmp_path, *args, repository=repo, env=env)
    assert again.code == 0, again.log
    assert SKIPPED in again.log
    assert again.outputs["digest"] == digest
    assert tls_registry.manifest(repo, site.head)[0] == digest
    print(
        f"remote publish {run.seconds:.2f} s, remote unchanged republish {time.monotonic() - started:.2f} s"
    )


def test_the_same_app_on_the_local_engine_for_comparison(
    site: Workspace,
    remote: RemoteHost,
    tls_registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    """The local engine publishes the same app to the same TLS registry (the reference the
    remote publish is compared with in the closing note; no timing is asserted)."""
    repo = ecr_repository()
    env = trusting(remote)
    run = publish_in(
        site.path, tls_registry.host, tmp_path, "--smoke", "8080/index.html", repository=repo, env=env
    )
    assert run.code == 0, run.log
    assert "engine: unix:///var/run/docker.sock (default socket)" in run.log
    assert "probing through a port published on 127.0.0.1" in run.log
    print(f"local publish {run.seconds:.2f} s")


def test_an_untrusted_registry_certificate_is_one_line_naming_the_ca_settings(
    site: Workspace,
    remote: RemoteHost,
    tls_registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    run = publish_in(site.path, tls_registry.host, tmp_path, repository=repo, env=remote.env())
    assert run.code == 1
    (error,) = run.error_lines()
    assert (
        f"registry {tls_registry.host}'s TLS certificate is not trusted here: certificate verify failed"
        in error
    )
    assert "set SSL_CERT_FILE or REQUESTS_CA_BUNDLE" in error
    # Refused at once, not retried for the registry's retry budget.
    assert run.seconds < 15
    assert tls_registry.tags(repo) == []


def test_the_engine_is_found_as_the_docker_cli_finds_it(tmp_path: Path, remote: RemoteHost) -> None:
    tcp = find_endpoint(remote.env())
    assert (tcp.url, tcp.remote, tcp.host, tcp.tls is not None) == (
        remote.docker_host,
        True,
        remote.remote_ip,
        True,
    )
    assert tcp.client(timeout=10).ping()
    assert find_endpoint({}).describe() == "unix:///var/run/docker.sock (default socket)"
    ssh = find_endpoint({"DOCKER_HOST": "ssh://builder@build-1.internal"})
    assert (ssh.remote, ssh.host, ssh.tls) == (True, "build-1.internal", None)
    # A context as `docker context create` writes it (no config.json beside it), chosen by
    # DOCKER_CONTEXT, with the engine's TLS material.
    certs = remote.client_certs
    subprocess.run(
        ["docker", "context", "create", "far", "--docker",
         f"host={remote.docker_host},ca={certs / 'ca.pem'},cert={certs / 'cert.pem'},"
         f"key={certs / 'key.pem'}"],
        check=True, capture_output=True, env=os.environ | {"DOCKER_CONFIG": str(tmp_path)},
    )  # fmt: skip
    assert not (tmp_path / "config.json").exists()
    found = find_endpoint({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "far"})
    assert (found.url, found.source, found.remote, found.host) == (
        remote.docker_host, "context far", True, remote.remote_ip,
    )  # fmt: skip
    assert found.tls is not None
    assert found.client(timeout=10).ping()
    # The config's current context chooses it too; a missing one is one line.
    (tmp_path / "config.json").write_text('{"currentContext": "far"}')
    assert find_endpoint({"DOCKER_CONFIG": str(tmp_path)}).source == "context far"
    with pytest.raises(EngineError, match="the Docker context 'near' does not exist"):
        find_endpoint({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "near"})


@pytest.mark.skipif(_has_buildx(), reason="this CLI has buildx; the named-builder case below covers it")
def test_a_named_builder_without_buildx_is_one_line_before_anything_is_built(
    site: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    run = publish_in(site.path, registry.host, tmp_path, "--builder", "far-buildkit", repository=repo)
    assert run.code == 1
    (error,) = run.error_lines()
    assert "input 'builder' names the buildx builder 'far-buildkit', and this runner's docker CLI" in error
    assert "has no buildx plugin" in error
    assert "BuildKit build log" not in run.log
    assert registry.tags(repo) == []


@pytest.fixture
def buildx_env(tmp_path: Path) -> dict[str, str]:
    """Variables under which `docker buildx` works: none where the CLI has the plugin
    (Debian 13's docker-buildx), else a Docker config folder whose cli-plugins is the stack's
    copy of Debian 13's plugin (scripts/stack.sh, on Debian 12), as a job that installed
    buildx into its own ~/.docker would have."""
    if _has_buildx():
        return {}
    plugins = STACK_DIR / "buildx" / "cli-plugins"
    if not (plugins / "docker-buildx").is_file():
        pytest.skip("needs the docker-buildx plugin: scripts/stack.sh up fetches it (it could not here)")
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "cli-plugins").symlink_to(plugins)
    return {"DOCKER_CONFIG": str(config)}


def test_a_named_builder_builds_on_the_engine_it_names(
    site: Workspace,
    remote: RemoteHost,
    tls_registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    buildx_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """buildx lists a builder (docker driver) for every Docker context: a context for the
    remote engine is a builder the action can be given by name, and that engine then takes
    the build, the checks, the smoke boot and the push, whatever DOCKER_HOST says."""
    context = f"far-{remote.namespace}"
    certs = remote.client_certs
    cli_env = os.environ | buildx_env
    subprocess.run(
        ["docker", "context", "create", context, "--docker",
         f"host={remote.docker_host},ca={certs / 'ca.pem'},cert={certs / 'cert.pem'},"
         f"key={certs / 'key.pem'}"],
        check=True, capture_output=True, env=cli_env,
    )  # fmt: skip
    try:
        repo = ecr_repository()
        missing = publish_in(
            site.path, tls_registry.host, tmp_path, "--builder", "no-such-builder",
            repository=repo, env=trusting(remote) | buildx_env,
        )  # fmt: skip
        assert missing.code == 1
        assert "the buildx builder 'no-such-builder' (input 'builder') does not exist here" in missing.log
        assert tls_registry.tags(repo) == []
        # The image is loaded where the checks run: the engine of DOCKER_HOST, here the remote one.
        # DOCKER_HOST names another engine (the local one): the builder's context wins.
        env = {"DOCKER_HOST": "unix:///var/run/docker.sock"} | trusting(remote) | buildx_env
        run = publish_in(
            site.path, tls_registry.host, tmp_path, "--builder", context, repository=repo, env=env
        )
        assert run.code == 0, run.log
        assert f"builder '{context}' (input 'builder', used as it is)" in run.log
        # A docker-driver builder is its context's engine: the checks and the push use it too.
        assert f"engine: {remote.docker_host} (context {context}, TLS, remote)" in run.log
        assert tls_registry.manifest(repo, site.head)[0] == run.outputs["digest"]
        assert images_named(docker_client, repo) == []
        listed = subprocess.run(
            ["docker", "buildx", "ls"], capture_output=True, text=True, check=True, env=cli_env
        ).stdout
        assert context in listed
        assert "lambda-image-publish" not in listed  # no builder of ours was made
    finally:
        subprocess.run(
            ["docker", "context", "rm", "--force", context], capture_output=True, check=False, env=cli_env
        )


def test_an_ssh_engine_builds_boots_and_pushes(
    site: Workspace,
    remote: RemoteHost,
    tls_registry: Registry,
    ecr_repository: MakeRepository,
    docker_client: DockerClient,
    tmp_path: Path,
) -> None:
    """DOCKER_HOST=ssh://: the CLI and docker-py reach the engine through `ssh` (a stand-in
    here, see RemoteHost.ssh_standin), and the smoke boot reaches the host the URL names."""
    repo = ecr_repository()
    path = f"{remote.ssh_standin(tmp_path / 'bin')}:{os.environ['PATH']}"
    env = {"DOCKER_HOST": f"ssh://root@{remote.remote_ip}", "PATH": path} | trusting(remote)
    run = publish_in(
        site.path, tls_registry.host, tmp_path, "--smoke", "8080/index.html", repository=repo, env=env
    )
    assert run.code == 0, run.log
    assert f"engine: ssh://root@{remote.remote_ip} (DOCKER_HOST, remote)" in run.log
    assert f"probing through a port published on {remote.remote_ip}" in run.log
    assert "answered HTTP 200" in run.log
    assert tls_registry.manifest(repo, site.head)[0] == run.outputs["digest"]
    assert images_named(remote.client(), repo) == [f"{repo}:{site.head}"]
    assert images_named(docker_client, repo) == []
