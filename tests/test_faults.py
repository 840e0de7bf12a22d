"""Faults between the runner and the registry, made by a proxy in front of the test registry
(tests/support/faultproxy.py): bursts of 503, a connection reset in the middle of a layer
upload, a stalled upload, a slow registry, two publishes at once, a cancel and a rerun. Each
ends in success or in one clear line within 90 s, with the tags consistent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import pytest

from tests.support.faultproxy import Fault, FaultProxy
from tests.support.run import REGION, Run, read_until, run_entrypoint, start_publish
from tests.support.run import publish as publish_in
from tests.support.stack import ECR_PASSWORD, ECR_USER, Registry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.workspace import Workspace


@pytest.fixture
def proxy(registry: Registry) -> Iterator[FaultProxy]:
    with FaultProxy(registry.host) as made:
        yield made


@pytest.fixture
def big_app(app: Workspace) -> Workspace:
    """The app with 3 MB of fresh random bytes: a layer no registry holds, so the push must
    upload it (no cross-repository mount), in more than one write."""
    dockerfile = (
        app.path.joinpath("Dockerfile")
        .read_text()
        .replace("COPY app.txt /app.txt", "COPY app.txt /app.txt\nCOPY blob.bin /blob.bin")
    )
    app.path.joinpath("blob.bin").write_bytes(os.urandom(3 << 20))
    app.commit_files({"Dockerfile": dockerfile}, "big app")
    return app


def _publish(ws: Workspace, proxy: FaultProxy, tmp: Path, repo: str, *args: str) -> Run:
    out = tmp / f"run-{time.monotonic_ns()}"
    out.mkdir()
    return publish_in(ws.path, proxy.host, out, "--force-build", "true", *args, repository=repo)


def _consistent(registry: Registry, repo: str, commit: str, digest: str) -> None:
    for tag in (commit, "preprod", "latest"):
        assert registry.manifest(repo, tag)[0] == digest, tag


def test_a_burst_of_503_is_retried_and_the_publish_succeeds(
    big_app: Workspace, registry: Registry, proxy: FaultProxy, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    proxy.add(Fault("503", path="/v2/", times=4))
    run = _publish(big_app, proxy, tmp_path, repo)
    assert run.code == 0, run.log
    assert sum("-> 503 (fault)" in line for line in proxy.log) == 4
    _consistent(registry, repo, big_app.head, run.outputs["digest"])


def test_a_reset_in_the_middle_of_a_layer_upload_is_retried(
    big_app: Workspace, registry: Registry, proxy: FaultProxy, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    proxy.add(Fault("reset", method="PATCH", path="/blobs/uploads/", after_bytes=256 << 10))
    started = time.monotonic()
    run = _publish(big_app, proxy, tmp_path, repo)
    took = time.monotonic() - started
    assert run.code == 0, run.log
    assert any("-> reset after" in line for line in proxy.log), proxy.log
    assert took < 90
    assert "Traceback" not in run.log
    _consistent(registry, repo, big_app.head, run.outputs["digest"])


def test_a_stalled_upload_is_flagged_and_completes_when_the_registry_recovers(
    big_app: Workspace, registry: Registry, proxy: FaultProxy, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    # Stops reading the layer after 256 kB for 45 s: longer than the 20 s stall limit.
    proxy.add(Fault("stall", method="PATCH", path="/blobs/uploads/", after_bytes=256 << 10, seconds=45))
    started = time.monotonic()
    run = _publish(big_app, proxy, tmp_path, repo)
    took = time.monotonic() - started
    assert run.code == 0, run.log
    assert any("-> stalled" in line for line in proxy.log), proxy.log
    warnings = [line for line in run.log.splitlines() if line.startswith("::warning::the push")]
    assert warnings, run.log + "\n".join(proxy.log)
    assert "for 20 s at layer" in warnings[0] and "asking the engine again (2/3)" in warnings[0]
    # The engine keeps its upload in flight (a new push joins it), so the push completes
    # once the registry reads again, 45 s in, within the second try's 20 s stall limit.
    assert took < 75
    _consistent(registry, repo, big_app.head, run.outputs["digest"])


def test_a_registry_that_never_takes_the_layer_ends_in_one_line_within_90_s(
    big_app: Workspace, registry: Registry, proxy: FaultProxy, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    before = _publish(big_app, proxy, tmp_path, repo)
    assert before.code == 0, before.log
    before_head = big_app.head
    big_app.path.joinpath("blob.bin").write_bytes(os.urandom(3 << 20))
    big_app.commit("new blob")
    proxy.add(
        Fault("stall", method="PATCH", path="/blobs/uploads/", after_bytes=256 << 10, seconds=120, times=0)
    )
    started = time.monotonic()
    run = _publish(big_app, proxy, tmp_path, repo)
    took = time.monotonic() - started
    assert run.code == 1, run.log
    [line] = run.error_lines()
    assert f"pushing {proxy.host}/{repo}:{big_app.head} to {proxy.host} did not finish" in line
    assert "no environment tag was moved" in line and "check the network path" in line
    assert "Traceback" not in run.log and "internal error" not in run.log
    assert took < 90, took
    proxy.clear()
    # No moving tag was touched, and the commit tag was never written.
    _consistent(registry, repo, before_head, before.outputs["digest"])
    assert big_app.head not in registry.tags(repo)


def test_two_publishes_to_one_environment_at_once_end_consistent(
    big_app: Workspace, registry: Registry, proxy: FaultProxy, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    other = big_app.path.parent / "other"
    subprocess.run(["git", "clone", "-q", str(big_app.path), str(other)], check=True)
    other.joinpath("app.txt").write_text("from the other run\n")
    subprocess.run(["git", "-C", str(other), "commit", "-qam", "other"], check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})  # fmt: skip
    other_head = subprocess.run(["git", "-C", str(other), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
    # Every tag write takes a second: the two runs' moves interleave.
    proxy.add(Fault("slow", method="PUT", path="/manifests/", seconds=1.0, times=0))
    results: dict[str, Run] = {}

    def go(name: str, path: Path) -> None:
        out = tmp_path / name
        out.mkdir()
        results[name] = publish_in(path, proxy.host, out, "--force-build", "true", repository=repo)

    threads = [threading.Thread(target=go, args=a) for a in (("one", big_app.path), ("two", other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    proxy.clear()
    one, two = results["one"], results["two"]
    digests = {big_app.head: one.outputs.get("digest"), other_head: two.outputs.get("digest")}
    # Each commit tag names its own run's image, whatever happened to the moving tags.
    for commit, run in ((big_app.head, one), (other_head, two)):
        assert commit in registry.tags(repo), run.log
    env = registry.manifest(repo, "preprod")[0]
    assert registry.manifest(repo, "latest")[0] == env
    winners = [run for run in (one, two) if run.code == 0]
    assert winners, one.log + two.log
    assert env in {run.outputs["digest"] for run in winners}
    for run in (one, two):
        if run.code != 0:
            [line] = run.error_lines()
            assert "another run moved" in line and "concurrency" in line, line
    assert all(d is None or registry.manifest(repo, c)[0] == d for c, d in digests.items())


@pytest.mark.parametrize("stage", ["▶ build", "▶ push", "▶ move preprod, latest"])
def test_a_run_cancelled_at_any_stage_is_completed_by_a_rerun(
    stage: str, big_app: Workspace, registry: Registry, proxy: FaultProxy,
    ecr_repository: MakeRepository, aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    repo = ecr_repository()
    first = _publish(big_app, proxy, tmp_path, repo)
    assert first.code == 0, first.log
    big_app.path.joinpath("blob.bin").write_bytes(os.urandom(3 << 20))
    big_app.commit("next")
    # Slow enough that the cancel lands inside the stage it names.
    proxy.add(Fault("slow", method="PUT", path="/manifests/", seconds=2.0, times=0))
    proxy.add(Fault("slow", method="PATCH", path="/blobs/uploads/", seconds=2.0, times=0))
    temp = tmp_path / "cancelled"
    temp.mkdir()
    process = start_publish(big_app.path, proxy.host, temp, "--repository", repo, "--force-build", "true",
                            env=aws_env)  # fmt: skip
    try:
        read_until(process, stage)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode in (0, 143), rest
    # Cancelled: the environment is whole, at the old image or (if the moves had finished) the new.
    env, latest = registry.manifest(repo, "preprod")[0], registry.manifest(repo, "latest")[0]
    assert env == latest
    proxy.clear()
    shutil.rmtree(temp)
    rerun = _publish(big_app, proxy, tmp_path, repo)
    assert rerun.code == 0, rerun.log
    _consistent(registry, repo, big_app.head, rerun.outputs["digest"])


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # The registry never saw the rest of the PATCH.
        ("reset", "sending it again (2/3)"),
        # The registry stored what arrived, but the answer never came back: the upload's
        # state token is lost with it (the CNCF registry refuses a status query without the
        # current one), so the blob goes up again in a new upload.
        ("cut", "sending it again (2/3)"),
    ],
)
def test_promote_resumes_or_resends_a_layer_after_a_reset_mid_copy(
    kind: str, expected: str,
    big_app: Workspace, registry: Registry, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    source_repo = ecr_repository()
    published = publish_in(big_app.path, registry.host, tmp_path, repository=source_repo)
    assert published.code == 0, published.log
    digest = published.outputs["digest"]
    target = ecr_repository()
    with Registry(user=ECR_USER, password=ECR_PASSWORD) as prod, FaultProxy(prod.host) as proxy:
        proxy.add(Fault(kind, method="PATCH", path="/blobs/uploads/", after_bytes=256 << 10))  # type: ignore[arg-type]
        run = run_entrypoint(
            ["promote", "--region", REGION, "--source", f"{registry.host}/{source_repo}@{digest}",
             "--env", "prod", "--repository", target, "--registry", proxy.host],
            cwd=tmp_path, tmp=tmp_path, env={"GITHUB_SHA": big_app.head},
        )  # fmt: skip
        assert run.code == 0, run.log
        assert any(f"-> {kind} after" in line for line in proxy.log), "\n".join(proxy.log) + run.log
        [warning] = [line for line in run.log.splitlines() if line.startswith("::warning::")]
        assert "failed" in warning and expected in warning, warning
        assert prod.manifest_raw(target, digest) == registry.manifest_raw(source_repo, digest)
        assert prod.manifest(target, "prod")[0] == digest


def _verify_through(proxy: FaultProxy, app: Workspace, registry: Registry, repo: str, tmp: Path) -> list[str]:
    """The verify command for an image published straight to the registry, read through the proxy."""
    published = publish_in(app.path, registry.host, tmp, repository=repo)
    assert published.code == 0, published.log
    uri = f"{proxy.host}/{repo}@{published.outputs['digest']}"
    return ["verify", "--region", REGION, "--registry", proxy.host, "--image-uris", uri]


def test_verify_rides_out_a_burst_of_503(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path, proxy: FaultProxy,
) -> None:  # fmt: skip
    verify = _verify_through(proxy, app, registry, ecr_repository(), tmp_path)
    proxy.add(Fault("503", path="/v2/", times=3))
    run = run_entrypoint(verify, cwd=tmp_path, tmp=tmp_path)
    assert run.code == 0, run.log
    assert run.outputs == {"checked": "1"}
    assert sum("-> 503 (fault)" in line for line in proxy.log) == 3


def test_a_registry_asking_to_retry_after_n_seconds_is_waited_out_within_the_budget(
    app: Workspace, registry: Registry, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path, proxy: FaultProxy,
) -> None:  # fmt: skip
    verify = _verify_through(proxy, app, registry, ecr_repository(), tmp_path)

    # Throttled twice with Retry-After: 3, longer than the backoff's own 0.5 s and 1 s.
    proxy.add(Fault("429", path="/v2/", times=2, seconds=3))
    run = run_entrypoint(verify, cwd=tmp_path, tmp=tmp_path)
    assert run.code == 0, run.log
    assert run.outputs == {"checked": "1"}
    stamps = proxy.stamps
    throttled = [n for n, (_, line) in enumerate(stamps) if line.endswith("-> 429 (fault)")]
    assert len(throttled) == 2, proxy.log
    for n in throttled:
        assert stamps[n + 1][0] - stamps[n][0] >= 3.0, proxy.log

    # A wait longer than the step's retry budget is not sat out: one line says so at once.
    proxy.clear()
    proxy.add(Fault("503", path="/v2/", times=0, seconds=120))
    refused = run_entrypoint(verify, cwd=tmp_path, tmp=tmp_path)
    assert refused.code == 1, refused.log
    [line] = refused.error_lines()
    assert f"registry {proxy.host} is throttling requests" in line, line
    assert "asked to retry after 120 s, past the 20 s this step waits" in line, line
    assert "Fix: rerun later" in line and "Traceback" not in refused.log
    assert refused.seconds < 30, refused.seconds
