"""Tests of the local test stack itself: registry + moto ECR login, BuildKit, HTTP API."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from typing import TYPE_CHECKING

import boto3
import pytest

from tests.support.stack import (
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    Registry,
    RegistryError,
    docker_cli,
)

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.workspace import Workspace


def _docker(
    *args: str, config: Path, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "1"}
    return subprocess.run(
        [docker_cli(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
        check=False,
    )


def _ecr_login(registry: Registry, config: Path) -> subprocess.CompletedProcess[str]:
    token = boto3.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
    return _docker(
        "login", "--username", user, "--password-stdin", registry.host, config=config, stdin=password
    )


def test_registry_accepts_moto_ecr_login(registry: Registry, aws_env: dict[str, str], tmp_path: Path) -> None:
    result = _ecr_login(registry, tmp_path / "docker-config")
    assert result.returncode == 0, result.stderr
    assert "Login Succeeded" in result.stdout

    wrong = _docker(
        "login",
        "--username",
        "AWS",
        "--password-stdin",
        registry.host,
        config=tmp_path / "other-config",
        stdin="not-the-token",
    )
    assert wrong.returncode != 0


def test_buildkit_build_from_local_bases_and_push(
    docker_client: DockerClient,
    busybox_base: str,
    adapter_image: str,
    registry: Registry,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "RUN echo built-by-buildkit > /hello.txt\n"
    )
    image = f"{registry.host}/stack-test/buildkit:v1"
    config = tmp_path / "docker-config"
    built = _docker("build", "--progress=plain", "-t", image, ".", config=config, cwd=context)
    assert built.returncode == 0, built.stderr
    # BuildKit's plain progress output numbers its steps (#1 ...); the classic builder does not.
    assert "#1 " in built.stderr + built.stdout

    out = docker_client.containers.run(image, ["cat", "/hello.txt"], remove=True)
    assert out == b"built-by-buildkit\n"
    adapter = docker_client.containers.run(
        image, ["/opt/extensions/lambda-adapter"], remove=True, stderr=True
    )
    assert b"local stand-in" in adapter

    assert _ecr_login(registry, config).returncode == 0
    pushed = _docker("push", image, config=config)
    assert pushed.returncode == 0, pushed.stderr
    assert registry.tags("stack-test/buildkit") == ["v1"]
    digest, media_type, manifest = registry.manifest("stack-test/buildkit", "v1")
    assert digest.startswith("sha256:")
    assert media_type.endswith("json")
    assert manifest["schemaVersion"] == 2
    docker_client.images.remove(image, force=True)


def _layer() -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"hello from a hand-made layer\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    return gzip.compress(raw.getvalue(), mtime=0), diff_id


def test_put_blob_put_manifest_round_trip(registry: Registry) -> None:
    repo = "stack-test/handmade"
    assert registry.tags(repo) == []

    layer, diff_id = _layer()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    config_digest = registry.put_blob(repo, config)
    layer_digest = registry.put_blob(repo, layer)
    assert registry.blob(repo, layer_digest) == layer

    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": len(layer),
            }
        ],
    }
    body = json.dumps(manifest).encode()
    digest = registry.put_manifest(repo, "v1", body, MEDIA_OCI_MANIFEST)
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()

    got_digest, media_type, got = registry.manifest(repo, "v1")
    assert (got_digest, media_type, got) == (digest, MEDIA_OCI_MANIFEST, manifest)
    assert registry.manifest(repo, digest)[0] == digest
    assert registry.tags(repo) == ["v1"]

    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_OCI_MANIFEST,
                "digest": digest,
                "size": len(body),
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    index_digest = registry.put_manifest(repo, "multi", json.dumps(index).encode(), MEDIA_OCI_INDEX)
    assert registry.manifest(repo, "multi")[:2] == (index_digest, MEDIA_OCI_INDEX)
    assert registry.tags(repo) == ["multi", "v1"]

    registry.delete_manifest(repo, index_digest)
    assert not registry.has_manifest(repo, "multi")


def test_readonly_registry_rejects_pushes() -> None:
    with Registry(readonly=True) as ro:
        with pytest.raises(RegistryError):
            ro.put_blob("stack-test/ro", b"nope")
        assert ro.tags("stack-test/ro") == []


def test_registry_wants_credentials(registry: Registry) -> None:
    anonymous = Registry(user=None, password=None, port=registry.port)
    with pytest.raises(RegistryError, match="401"):
        anonymous.tags("stack-test/handmade")


def test_ecr_repository_factory(ecr_repository: MakeRepository) -> None:
    mutable = ecr_repository()
    immutable = ecr_repository(mutability="IMMUTABLE")
    assert mutable.endswith("-sse-streaming-lambda")
    repos = boto3.client("ecr").describe_repositories(repositoryNames=[mutable, immutable])
    got = {r["repositoryName"]: r["imageTagMutability"] for r in repos["repositories"]}
    assert got == {mutable: "MUTABLE", immutable: "IMMUTABLE"}


def test_workspace_commits(workspace: Workspace) -> None:
    first = workspace.head
    sha = workspace.commit_files({"app/main.py": "print('hi')\n"}, "Add app")
    assert sha != first
    assert len(sha) == 40
    assert workspace.git("log", "--format=%s", "-1") == "Add app"


@pytest.mark.timeout(900)
def test_python_base_pip_installs_through_the_proxy(
    docker_client: DockerClient, python_base: str, tmp_path: Path
) -> None:
    """pip inside a BuildKit build reaches PyPI (CA bundle baked into the base)."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {python_base}\n"
        "RUN python3 -m pip install --no-cache-dir --target /var/task six==1.16.0\n"
        "RUN python3 -c 'import six, sys; print(six.__version__, sys.version)'\n"
    )
    built = _docker(
        "build",
        "--progress=plain",
        "-t",
        "stack-test/python-pip:latest",
        ".",
        config=tmp_path / "docker-config",
        cwd=context,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    assert "1.16.0" in built.stderr + built.stdout
    docker_client.images.remove("stack-test/python-pip:latest", force=True)
