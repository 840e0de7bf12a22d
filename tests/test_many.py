"""Several functions from one config file: six real images built with BuildKit in one run,
pushed to a real registry, moved all or nothing, and read back over the registry's HTTP API."""

from __future__ import annotations

import json
import re
import secrets
import signal
import time
from typing import TYPE_CHECKING

import pytest

from tests.support.run import publish as publish_in
from tests.support.run import read_until, start_publish
from tests.test_republish import SKIPPED, empty_engine
from tests.test_verify import change, function, verify, write_plan

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.run import Run
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

NAMES = ("api", "orders", "billing", "worker", "reports", "cron")


def service_dockerfile(base: str, name: str) -> str:
    # A dependency layer before the code, as real services have.
    return (
        f"FROM {base}\n"
        "COPY deps.txt /deps.txt\n"
        "RUN cp /deps.txt /deps.installed\n"
        "COPY app/ /app/\n"
        f'LABEL service="{name}"\n'
        'CMD ["cat", "/app/main.txt"]\n'
    )


def config_text(names: tuple[str, ...] = NAMES, extra: dict[str, str] | None = None) -> str:
    lines = ["images:"]
    for name in names:
        lines += [f"  - name: {name}", f"    dockerfile: services/{name}/Dockerfile"]
        lines += [f"    {line}" for line in (extra or {}).get(name, "").splitlines()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def services(workspace: Workspace, busybox_base: str) -> Workspace:
    files = {"lambdas.yml": config_text()}
    for name in NAMES:
        files |= {
            f"services/{name}/Dockerfile": service_dockerfile(busybox_base, name),
            f"services/{name}/deps.txt": f"{name}-deps\n",
            f"services/{name}/app/main.txt": f"{name} v1\n",
        }
    workspace.commit_files(files, "six services")
    return workspace


@pytest.fixture
def prefix(ecr_repository: MakeRepository) -> str:
    """A fresh repository per service and environment: <prefix>-<env>-<name>."""
    prefix = f"t{secrets.token_hex(4)}"
    for env in ("preprod", "prod"):
        for name in NAMES:
            ecr_repository(f"{prefix}-{env}-{name}")
    return prefix


def release(
    ws: Workspace, registry: Registry, prefix: str, tmp: Path, *args: str, env: str = "preprod"
) -> Run:
    return publish_in(
        ws.path,
        registry.host,
        tmp,
        "--config",
        "lambdas.yml",
        "--dockerfile",
        "",
        *args,
        repository=f"{prefix}-{{env}}-{{name}}",
        environment=env,
    )


def digests(registry: Registry, prefix: str, tag: str, env: str = "preprod") -> dict[str, str | None]:
    return {
        name: registry.manifest(f"{prefix}-{env}-{name}", tag)[0]
        if registry.has_manifest(f"{prefix}-{env}-{name}", tag)
        else None
        for name in NAMES
    }


def test_six_images_publish_in_one_run_and_rerun_skips_all(
    services: Workspace, registry: Registry, prefix: str, docker_client: DockerClient, tmp_path: Path
) -> None:
    run = release(services, registry, prefix, tmp_path)
    assert run.code == 0, run.log
    images = json.loads(run.outputs["images"])
    assert sorted(images) == sorted(NAMES)
    commit = services.head
    for name in NAMES:
        repo = f"{prefix}-preprod-{name}"
        digest = images[name]["digest"]
        assert images[name]["repository"] == repo
        assert images[name]["image-uri"] == f"{registry.host}/{repo}@{digest}"
        # Every tag of every image names the image the output gives, and that image holds
        # its own service (the label), not a neighbour's.
        for tag in (commit, "preprod", "latest"):
            assert registry.manifest(repo, tag)[0] == digest
        config_digest = registry.manifest(repo, digest)[2]["config"]["digest"]
        assert json.loads(registry.blob(repo, config_digest))["config"]["Labels"]["service"] == name
    assert len({images[name]["digest"] for name in NAMES}) == len(NAMES)
    # One login, one folded group per image, and a summary row per image.
    assert run.log.count("▶ log in to Amazon ECR") == 1
    for name in NAMES:
        assert re.search(rf"^::group::{name}: built sha256:[0-9a-f]{{64}} \(", run.stdout, re.MULTILINE), name
        assert f"[{name}] " in run.stdout
        assert f"| {name} | " in run.summary
    # The single-image outputs are empty with several images; tags lists them all.
    assert run.outputs["image-uri"] == ""
    assert len(run.outputs["tags"].splitlines()) == 3 * len(NAMES)

    # A fresh runner: nothing of ours in the engine, no build cache. Nothing changed.
    for name in NAMES:
        empty_engine(docker_client, f"{prefix}-preprod-{name}")
    services.commit_files({"README.md": "docs only\n"}, "docs")
    again = release(services, registry, prefix, tmp_path)
    assert again.code == 0, again.log
    assert again.log.count(SKIPPED) == len(NAMES)
    assert "BuildKit build log" not in again.stdout
    assert json.loads(again.outputs["images"]) == images
    for name in NAMES:
        assert registry.manifest(f"{prefix}-preprod-{name}", services.head)[0] == images[name]["digest"]
        assert docker_client.images.list(name=f"{prefix}-preprod-{name}") == []


def test_one_changed_image_rebuilds_alone(
    services: Workspace, registry: Registry, prefix: str, tmp_path: Path
) -> None:
    first = release(services, registry, prefix, tmp_path)
    assert first.code == 0, first.log
    before = json.loads(first.outputs["images"])
    services.commit_files({"services/orders/app/main.txt": "orders v2\n"}, "orders v2")
    again = release(services, registry, prefix, tmp_path)
    assert again.code == 0, again.log
    after = json.loads(again.outputs["images"])
    assert again.log.count(SKIPPED) == len(NAMES) - 1
    assert re.search(r"^::group::orders: built ", again.stdout, re.MULTILINE)
    assert after["orders"]["digest"] != before["orders"]["digest"]
    assert {n: after[n]["digest"] for n in NAMES if n != "orders"} == {
        n: before[n]["digest"] for n in NAMES if n != "orders"
    }
    assert digests(registry, prefix, "preprod")["orders"] == after["orders"]["digest"]


def test_a_failing_image_moves_no_environment_tag_of_any_image(
    services: Workspace, registry: Registry, prefix: str, tmp_path: Path, busybox_base: str
) -> None:
    first = release(services, registry, prefix, tmp_path)
    assert first.code == 0, first.log
    env_before = digests(registry, prefix, "preprod")
    latest_before = digests(registry, prefix, "latest")

    # Every service changes; two of them break: one in its build, one at its smoke boot
    # (its CMD prints and exits, and the config asks for an HTTP answer).
    changes = {f"services/{name}/app/main.txt": f"{name} v2\n" for name in NAMES}
    changes["services/billing/Dockerfile"] = service_dockerfile(busybox_base, "billing") + "RUN exit 3\n"
    changes["lambdas.yml"] = config_text(extra={"cron": "smoke: 8080/health\nsmoke-timeout: 5"})
    services.commit_files(changes, "v2 with two broken services")
    broken = release(services, registry, prefix, tmp_path)

    assert broken.code != 0
    errors = broken.error_lines()
    assert len(errors) == 1, broken.log
    assert "2 of 6 images failed" in errors[0]
    assert "billing: " in errors[0]
    assert "cron: " in errors[0]
    assert "no environment tag, latest or extra tag of any image moved" in errors[0]
    assert digests(registry, prefix, "preprod") == env_before
    assert digests(registry, prefix, "latest") == latest_before
    # The four good images are pushed under the new commit, the two broken ones are not.
    pushed = digests(registry, prefix, services.head)
    assert {name for name, digest in pushed.items() if digest} == set(NAMES) - {"billing", "cron"}
    for name in ("billing", "cron"):
        assert re.search(rf"^::group::{name}: failed \(", broken.stdout, re.MULTILINE)
    # No history entry was written: no environment tag moved.
    for name in NAMES:
        assert not [t for t in registry.tags(f"{prefix}-preprod-{name}") if t.startswith("history-")]


def test_per_image_keys_and_defaults(
    services: Workspace, registry: Registry, prefix: str, tmp_path: Path, busybox_base: str
) -> None:
    """An image's own keys win over the inputs; build-args merge by key."""
    services.commit_files(
        {
            "services/api/Dockerfile": f"FROM {busybox_base}\nARG FLAVOUR\nARG SHARED\n"
            'LABEL flavour="${FLAVOUR}" shared="${SHARED}"\nCOPY app/ /app/\nCMD ["cat", "/app/main.txt"]\n',
            "lambdas.yml": config_text(
                ("api", "orders"),
                {"api": "build-args: {FLAVOUR: spicy}\ntags: [blue]", "orders": "context: services/orders"},
            ),
        },
        "keys",
    )
    args = ("--build-args", "SHARED=yes\nFLAVOUR=plain", "--config-tags", "blue")
    run = release(services, registry, prefix, tmp_path, *args)
    assert run.code == 0, run.log
    api = f"{prefix}-preprod-api"
    digest = json.loads(run.outputs["images"])["api"]["digest"]
    config_digest = registry.manifest(api, digest)[2]["config"]["digest"]
    labels = json.loads(registry.blob(api, config_digest))["config"]["Labels"]
    assert (labels["flavour"], labels["shared"]) == ("spicy", "yes")
    assert registry.manifest(api, "blue")[0] == digest
    assert not registry.has_manifest(f"{prefix}-preprod-orders", "blue")


def test_a_malformed_config_is_one_input_error_before_anything_happens(
    services: Workspace, registry: Registry, prefix: str, tmp_path: Path
) -> None:
    services.commit_files(
        {"lambdas.yml": config_text(("api", "orders")) + "    dockerfil: typo/Dockerfile\n"}, "typo"
    )
    run = release(services, registry, prefix, tmp_path)
    assert run.code == 2
    assert run.error_lines() == [
        "::error::lambdas.yml line 6: unknown key 'dockerfil'. Fix: use the keys name, dockerfile, "
        "context, repository, build-args, platform, tags, smoke, smoke-timeout, smoke-memory, "
        "invoke-mode, secrets."
    ]
    assert "log in to Amazon ECR" not in run.log
    assert all(not registry.tags(f"{prefix}-preprod-{name}") for name in NAMES)


def test_the_gate_passes_a_plan_of_the_releases_functions_and_stops_a_stale_one(
    services: Workspace, registry: Registry, prefix: str, tmp_path: Path
) -> None:
    run = release(services, registry, prefix, tmp_path)
    assert run.code == 0, run.log
    images = json.loads(run.outputs["images"])
    changes = [
        change(f"module.{name}.aws_lambda_function.this", ["update"], function(images[name]["image-uri"]))
        for name in NAMES
    ]
    write_plan(tmp_path / "plan.json", changes)
    gate = verify(tmp_path, "--plan", "plan.json", "--registry", registry.host)
    assert gate.code == 0, gate.log
    assert gate.outputs == {"checked": str(len(NAMES))}
    assert f"the plan creates or updates {len(NAMES)} Image function(s)" in gate.stdout

    # One function still names an image that was never published: the gate names it alone.
    never = "sha256:" + "0" * 64
    changes[2] = change(
        "module.billing.aws_lambda_function.this",
        ["update"],
        function(f"{registry.host}/{images['billing']['repository']}@{never}"),
    )
    write_plan(tmp_path / "plan.json", changes)
    stale = verify(tmp_path, "--plan", "plan.json", "--registry", registry.host)
    assert stale.code == 1
    (error,) = stale.error_lines()
    assert error.startswith(f"::error::1 of {len(NAMES)} image(s) must not be deployed: ")
    assert "module.billing.aws_lambda_function.this" in error
    assert "module.orders" not in error


def test_a_release_cancelled_while_its_images_build_stops_them_all_and_moves_nothing(
    services: Workspace,
    registry: Registry,
    prefix: str,
    docker_client: DockerClient,
    aws_env: dict[str, str],
    tmp_path: Path,
    busybox_base: str,
) -> None:
    first = release(services, registry, prefix, tmp_path)
    assert first.code == 0, first.log
    env_before = digests(registry, prefix, "preprod")
    # Every image now builds for a long time: the cancel lands while two of them build.
    slow = {
        f"services/{name}/Dockerfile": service_dockerfile(busybox_base, name) + "RUN sleep 120\n"
        for name in NAMES
    }
    services.commit_files(slow, "slow builds")
    temp = tmp_path / "cancelled"
    temp.mkdir()
    process = start_publish(
        services.path, registry.host, temp,
        "--config", "lambdas.yml", "--dockerfile", "", "--repository", f"{prefix}-{{env}}-{{name}}",
        env=aws_env,
    )  # fmt: skip
    try:
        read_until(process, "] ▶ build")
        time.sleep(3)  # the first two builds are in their RUN sleep; four wait for a slot
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        rest, _ = process.communicate(timeout=90)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, rest
    assert "cancelled by SIGTERM" in rest
    # Both running builds were told to stop: the run ends long before a sleep 120 would.
    assert took < 30, took
    assert digests(registry, prefix, "preprod") == env_before
    assert all(digest is None for digest in digests(registry, prefix, services.head).values())
    # No build is left running in the engine, and no temporary Docker config stays behind.
    running = docker_client.api.containers(filters={"label": "lambda-image-publish.purpose"})
    assert running == []
    assert not list(temp.glob("lambda-publish-*"))
