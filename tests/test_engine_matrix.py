"""The end-to-end publish on the engines runners ship today: Docker 28.5 with buildx 0.29,
with the classic image store and with the containerd image store (Docker 29's default), each
a sid dockerd of its own (tests/support/engines.py). The rest of the suite runs on the
host's Debian 12 engine (Docker 20.10), so every scenario here runs on all three.

On the containerd store an image's ID is its manifest's digest while buildx 0.29's --iidfile
holds the config's (with the --provenance=false the action builds with), a push reports its
digest only in a status line and can carry an index, and a reset mid-upload ends the
engine's push instead of being retried: each test fails on the store where one of those is
mishandled.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import TYPE_CHECKING

import pytest

from tests.support.engines import Engine, engine_fixture
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.run import publish as publish_in
from tests.support.stack import MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.run import Run
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

SKIPPED = "build skipped: nothing that goes into the image changed"

sid_engine = engine_fixture()


@pytest.fixture
def engine_env(
    sid_engine: Engine, registry: Registry, busybox_base: str, adapter_image: str, aws_env: dict[str, str]
) -> dict[str, str]:
    """What the action is given to use the sid engine, with the test registry reachable from it."""
    sid_engine.forward(int(registry.host.rsplit(":", 1)[1]))
    sid_engine.load_image(busybox_base)
    sid_engine.load_image(adapter_image)
    return sid_engine.env()


@pytest.fixture
def web_app(workspace: Workspace, busybox_base: str, adapter_image: str) -> Workspace:
    """A Lambda Web Adapter app that answers HTTP on 8080, for a smoke boot."""
    workspace.commit_files(
        {
            "Dockerfile": (
                f"FROM {busybox_base}\n"
                f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
                "COPY www/ /www/\n"
                'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
            ),
            "www/index.html": "v1\n",
            "docs/notes.txt": "notes\n",
            ".dockerignore": "docs/\n",
        },
        "web app",
    )
    return workspace


def _publish(ws: Workspace, host: str, tmp: Path, repo: str, env: dict[str, str], *args: str) -> Run:
    out = tmp / f"run-{time.monotonic_ns()}"
    out.mkdir()
    return publish_in(ws.path, host, out, *args, repository=repo, env=env)


def _single_amd64_manifest(registry: Registry, repo: str, digest: str) -> dict[str, object]:
    """What Lambda accepts: one image manifest, linux/amd64, no index, no attestation."""
    _, media_type, manifest = registry.manifest(repo, digest)
    assert media_type in (MEDIA_DOCKER_MANIFEST, MEDIA_OCI_MANIFEST), media_type
    assert "manifests" not in manifest
    config = json.loads(registry.blob(repo, manifest["config"]["digest"]))
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    return manifest


def test_publish_smoke_boot_skip_and_code_change(
    sid_engine: Engine, engine_env: dict[str, str], web_app: Workspace, registry: Registry,
    ecr_repository: MakeRepository, tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    first = _publish(web_app, registry.host, tmp_path, repo, engine_env, "--smoke", "8080/index.html")
    assert first.code == 0, first.log + sid_engine.log()
    assert "Traceback" not in first.log and "::notice::the engine pushed an image index" not in first.log
    digest = first.outputs["digest"]
    for tag in (web_app.head, "preprod", "latest"):
        assert registry.manifest(repo, tag)[0] == digest, tag
    _single_amd64_manifest(registry, repo, digest)
    assert "✔ smoke boot (GET :8080/index.html)" in first.stdout, first.stdout
    assert "GET :8080/index.html answered HTTP 200" in first.stdout

    # A commit that changes nothing the image is made of: no build, same digest.
    web_app.commit_files({"docs/notes.txt": "more notes\n"}, "docs only")
    again = _publish(web_app, registry.host, tmp_path, repo, engine_env)
    assert again.code == 0, again.log
    assert SKIPPED in again.stdout, again.stdout
    assert again.outputs["digest"] == digest
    assert registry.manifest(repo, web_app.head)[0] == digest

    # A code change on an emptied engine, as on a new runner: a new image, the step before the
    # change comes from the previous image's inline cache (on the containerd store its layers
    # are fetched and unpacked, and BuildKit does not mark it CACHED), and the environment tag
    # follows it.
    _empty(sid_engine, repo)
    web_app.commit_files({"www/index.html": "v2\n"}, "v2")
    changed = _publish(web_app, registry.host, tmp_path, repo, engine_env)
    assert changed.code == 0, changed.log
    from_cache = [line for line in changed.stdout.splitlines() if line.startswith("  from cache: ")]
    assert len(from_cache) == 1 and "COPY --from=" in from_cache[0], changed.stdout
    assert "COPY www/" not in from_cache[0]
    assert changed.outputs["digest"] != digest
    assert registry.manifest(repo, "preprod")[0] == changed.outputs["digest"]
    _single_amd64_manifest(registry, repo, changed.outputs["digest"])


def _empty(engine: Engine, repo: str) -> None:
    """The engine as a new runner has it: none of this repository's images, no build cache."""
    listed = engine.cli("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    ours = [name for name in listed if name.rpartition(":")[0].rpartition("/")[2] == repo]
    if ours:
        engine.cli("image", "rm", "--force", *ours)
    engine.cli("builder", "prune", "--all", "--force")


@pytest.mark.parametrize("mode", ["none", "registry", "local"])
def test_cache_modes_the_engine_supports(
    mode: str, sid_engine: Engine, engine_env: dict[str, str], app: Workspace, registry: Registry,
    ecr_repository: MakeRepository, tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    args = ["--cache", mode, *(["--cache-dir", "cache"] if mode == "local" else [])]
    run = _publish(app, registry.host, tmp_path, repo, engine_env, *args)
    if mode != "none" and sid_engine.store == "classic":
        # buildx's docker driver exports no cache on the classic store, and the
        # docker-container builder it would take cannot be pulled here: one line, before
        # anything was built or pushed.
        assert run.code == 1, run.log
        [line] = run.error_lines()
        assert "docker-container" in line, line
        assert registry.tags(repo) == []
        return
    assert run.code == 0, run.log + sid_engine.log()
    _single_amd64_manifest(registry, repo, run.outputs["digest"])
    if mode == "registry":
        # The cache manifest went to the registry next to the image.
        assert "buildcache-preprod" in registry.tags(repo)
    if mode == "local":
        assert any(app.path.joinpath("cache").rglob("index.json"))


def test_a_release_of_two_images(
    engine_env: dict[str, str], workspace: Workspace, busybox_base: str, registry: Registry,
    ecr_repository: MakeRepository, tmp_path: Path,
) -> None:  # fmt: skip
    prefix = f"t{secrets.token_hex(4)}"
    names = ("orders", "billing")
    for name in names:
        ecr_repository(f"{prefix}-preprod-{name}")
    files = {"lambdas.yml": "images:\n" + "".join(
        f"  - name: {name}\n    dockerfile: services/{name}/Dockerfile\n" for name in names
    )}  # fmt: skip
    for name in names:
        files[f"services/{name}/Dockerfile"] = (
            f'FROM {busybox_base}\nCOPY main.txt /main.txt\nCMD ["cat", "/main.txt"]\n'
        )
        files[f"services/{name}/main.txt"] = f"{name} v1\n"
    workspace.commit_files(files, "two services")
    out = tmp_path / "release"
    out.mkdir()
    run = publish_in(
        workspace.path, registry.host, out, "--config", "lambdas.yml", "--dockerfile", "",
        repository=f"{prefix}-{{env}}-{{name}}", env=engine_env,
    )  # fmt: skip
    assert run.code == 0, run.log
    images = json.loads(run.outputs["images"])
    assert set(images) == set(names)
    for name in names:
        repo = f"{prefix}-preprod-{name}"
        assert registry.manifest(repo, "preprod")[0] == images[name]["digest"]
        _single_amd64_manifest(registry, repo, images[name]["digest"])


def test_a_reset_mid_upload_is_ridden_out_and_a_refused_image_pushes_nothing(
    sid_engine: Engine, engine_env: dict[str, str], app: Workspace, registry: Registry,
    ecr_repository: MakeRepository, tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    # 3 MB of fresh random bytes: a layer the registry has nowhere, uploaded in several writes.
    app.path.joinpath("blob.bin").write_bytes(os.urandom(3 << 20))
    dockerfile = app.path.joinpath("Dockerfile").read_text()
    app.commit_files({"Dockerfile": dockerfile.replace("CMD", "COPY blob.bin /blob.bin\nCMD")}, "big")
    with FaultProxy(registry.host) as proxy:
        sid_engine.forward(int(proxy.host.rsplit(":", 1)[1]))
        # Any method: the classic store uploads a layer with PATCH, the containerd store with
        # one PUT.
        proxy.add(Fault("reset", path="/blobs/uploads/", after_bytes=256 << 10))
        run = _publish(app, proxy.host, tmp_path, repo, engine_env)
        assert run.code == 0, run.log + "\n".join(proxy.log)
        assert any("-> reset after" in line for line in proxy.log), proxy.log
    assert "Traceback" not in run.log
    if sid_engine.store == "containerd":
        # The classic store retries the upload itself; the containerd store gives up, and
        # the action asks for the push again.
        assert "::warning::the push of" in run.log and "broke off" in run.log, run.log
    for tag in (app.head, "preprod", "latest"):
        assert registry.manifest(repo, tag)[0] == run.outputs["digest"], tag

    # Lambda would refuse an image without ENTRYPOINT or CMD: refused before the push.
    app.commit_files({"Dockerfile": "FROM scratch\nCOPY app.txt /app.txt\n"}, "no CMD")
    refused = _publish(app, registry.host, tmp_path, repo, engine_env)
    assert refused.code == 1, refused.log
    [line] = refused.error_lines()
    assert "ENTRYPOINT or CMD must be set" in line
    assert app.head not in registry.tags(repo)
    assert registry.manifest(repo, "preprod")[0] == run.outputs["digest"]
