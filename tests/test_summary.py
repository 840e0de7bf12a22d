"""The job summary and the size budget, end to end: real images built with BuildKit, pushed to
the local registry, measured from it, and the summary rendered as GitHub renders it."""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.ecrsync import basic_finding
from tests.support.render import render_summary
from tests.support.run import EXAMPLE, REPO_ROOT, example_build_args
from tests.support.run import publish as publish_in

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.ecrsync import EcrSync
    from tests.support.run import Run
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

SCREENSHOT = REPO_ROOT / "docs" / "summary.png"


def dockerfile(base: str) -> str:
    # Dependencies before the code, as the SSE example installs its requirements first.
    return (
        f"FROM {base}\n"
        "COPY deps.txt /deps/deps.txt\n"
        "RUN mkdir -p /deps/site && for d in $(cat /deps/deps.txt); do "
        "head -c 400000 /dev/urandom > /deps/site/$d; done\n"
        "COPY app/ /app/\n"
        'CMD ["cat", "/app/main.txt"]\n'
    )


@pytest.fixture
def service(workspace: Workspace, busybox_base: str) -> Workspace:
    workspace.commit_files(
        {
            "Dockerfile": dockerfile(busybox_base),
            ".dockerignore": ".git\n",
            "deps.txt": "alpha\nbeta\n",
            "app/main.txt": "v1\n",
        },
        "service",
    )
    return workspace


def publish(ws: Workspace, registry: Registry, repo: str, tmp: Path, *args: str, ok: bool = True) -> Run:
    run = publish_in(ws.path, registry.host, tmp, *args, repository=repo)
    if ok:
        assert run.code == 0, run.log
    return run


def report(run: Run) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.outputs["report"])
    return data


def by_line(image: dict[str, Any], fragment: str) -> dict[str, Any]:
    found = [layer for layer in image["layers"] if fragment in layer["made_by"]]
    assert len(found) == 1, [layer["made_by"] for layer in image["layers"]]
    return found[0]


def test_a_code_change_publish_shows_each_layer_against_the_previous_image(
    service: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    first = publish(service, registry, repo, tmp_path)
    first_image = report(first)["images"][0]
    assert first_image["size"]["previous_digest"] is None
    assert "first image under this environment tag" in first.summary
    assert {layer["status"] for layer in first_image["layers"]} == {"new"}

    service.write("app/main.txt", "v2 with a longer body\n")
    service.commit("code change")
    second = publish(service, registry, repo, tmp_path)
    image = report(second)["images"][0]

    # Sizes and layers as the registry has them.
    _, _, manifest = registry.manifest(repo, image["digest"])
    assert [layer["digest"] for layer in image["layers"]] == [m["digest"] for m in manifest["layers"]]
    assert [layer["compressed"] for layer in image["layers"]] == [m["size"] for m in manifest["layers"]]
    assert image["size"]["compressed"] == sum(m["size"] for m in manifest["layers"])
    assert image["size"]["previous_digest"] == first_image["digest"]

    # Only the code layer changed; the dependency layer came from the cache and was not pushed.
    code = by_line(image, "COPY app/ /app/")
    deps = by_line(image, "RUN mkdir -p /deps/site")
    assert code["status"] == "rebuilt"
    assert code["previous_digest"] == by_line(first_image, "COPY app/ /app/")["digest"]
    assert deps["status"] == "reused"
    assert 800_000 <= deps["uncompressed"] <= 900_000  # two files of 400000 bytes, tar headers
    assert [layer["pushed"] for layer in image["layers"]] == [
        layer["status"] != "reused" for layer in image["layers"]
    ]
    assert image["pushed_bytes"] == code["compressed"]
    assert image["size"]["growth"] == image["size"]["uncompressed"] - first_image["size"]["uncompressed"]
    assert image["cache"]["cached"] >= 2
    assert any("RUN mkdir" in step for step in image["cache"]["cached_steps"])

    # The timeline has the run's stages, in the order they ran.
    names = [stage["name"] for stage in report(second)["stages"]]
    assert names[0] == "plan"
    assert "build" in names
    assert names.index("build") < names.index("move preprod, latest") < names.index("verify the registry")
    # No gate: the sizes were read while the tags moved, and reported after.
    assert not any(name.startswith("measure the image") for name in names)
    assert re.search(r"size: [\d.]+ MB uncompressed, [\d.]+ MB compressed, 4 layers; \+", second.log)

    summary = second.summary
    assert "🔁 rebuilt" in summary
    assert f"against {'preprod'}'s previous image" in summary
    assert summary.count("```mermaid") == 2
    assert "of Lambda's 10 GB" in summary

    # As GitHub draws it: both charts render, and the table's text is there.
    png = tmp_path / "summary.png"
    (tmp_path / "summary.md").write_text(summary)
    rendered = render_summary(summary, png=png)
    assert rendered.errors == ()
    assert (rendered.charts, rendered.drawn) == (2, 2)
    assert "COPY app/ /app/" in rendered.text
    assert png.stat().st_size > 10_000


def test_the_examples_code_change_summary_as_github_draws_it(
    workspace: Workspace,
    python_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    """The SSE example published, its code changed, published again: the summary README shows."""
    workspace.add_tree(EXAMPLE, "service", "example service")
    repo = ecr_repository()
    args = (*example_build_args(python_base, adapter_image), "--dockerfile", "service/Dockerfile")
    publish(workspace, registry, repo, tmp_path, *args)
    main = workspace.path / "service" / "app" / "main.py"
    workspace.write("service/app/main.py", main.read_text() + "\n# a code-only change\n")
    workspace.commit("code change")
    run = publish(workspace, registry, repo, tmp_path, *args)

    image = report(run)["images"][0]
    assert by_line(image, "RUN python3 -m venv /opt/venv")["status"] == "reused"
    assert by_line(image, "COPY app/ ./app/")["status"] == "rebuilt"
    assert image["pushed_bytes"] == by_line(image, "COPY app/ ./app/")["compressed"]
    png = tmp_path / "summary.png"
    rendered = render_summary(run.summary, png=png)
    assert rendered.errors == ()
    assert (rendered.charts, rendered.drawn) == (2, 2)
    assert "RUN python3 -m venv /opt/venv" in rendered.text
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        # README's picture is this test's: `UPDATE_SCREENSHOTS=1 pytest tests/test_summary.py`.
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(png.read_bytes())


def test_growth_over_the_limit_is_refused_before_any_tag_moves(
    service: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    first = publish(service, registry, repo, tmp_path)
    before = first.outputs["digest"]

    service.write("deps.txt", "alpha\nbeta\ngamma\ndelta\n")  # the dependency layer doubles
    service.commit("two more dependencies")
    run = publish(service, registry, repo, tmp_path, "--size-growth-limit", "10%", ok=False)

    assert run.code != 0
    errors = run.error_lines()
    assert len(errors) == 1, run.log
    assert "size-growth-limit" in errors[0]
    assert "RUN mkdir -p /deps/site" in errors[0]  # the line that made the layer that grew
    # Nothing moved: the environment tag and latest still name the first image.
    for tag in ("preprod", "latest"):
        assert registry.manifest(repo, tag)[0] == before
    assert "not deployed" in run.summary
    assert "No environment tag moved" in run.summary
    assert "▶ measure the image" in run.log  # a gate: measured before anything moves
    (refused,) = report(run)["images"]
    assert "size-growth-limit" in refused["refused"]
    assert by_line(refused, "RUN mkdir -p /deps/site")["status"] == "rebuilt"
    assert refused["references"] == [f"{registry.host}/{repo}:{service.head}"]  # the commit tag only
    assert "<code>preprod</code>" not in run.summary

    # A warning alone lets it through.
    warned = publish(service, registry, repo, tmp_path, "--size-growth-warn", "10%")
    assert any("size-growth-warn" in line for line in warned.log.splitlines() if "warning" in line)
    assert registry.manifest(repo, "preprod")[0] == warned.outputs["digest"] != before


def test_a_size_limit_names_the_biggest_layers(
    service: Workspace, registry: Registry, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    repo = ecr_repository()
    run = publish(service, registry, repo, tmp_path, "--size-limit", "500kB", ok=False)
    assert run.code != 0
    (error,) = run.error_lines()
    assert "size-limit" in error
    assert "RUN mkdir -p /deps/site" in error
    assert re.search(r"\b8\d\d kB\b", error), error  # the dependency layer's size, in words
    assert "preprod" not in registry.tags(repo)
    assert "not deployed" in run.summary


def test_the_summary_escapes_what_it_relays(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    tmp_path: Path,
) -> None:
    """A Dockerfile line is the checkout's text: in the summary it is shown, never interpreted."""
    workspace.commit_files(
        {
            "Dockerfile": (
                f"FROM {busybox_base}\n"
                "RUN echo '<img src=x onerror=alert(1)> | [link](https://evil.example) ```' > /note\n"
                'CMD ["cat", "/note"]\n'
            ),
        },
        "hostile",
    )
    repo = ecr_repository()
    run = publish(workspace, registry, repo, tmp_path)
    assert "<img" not in run.summary
    assert "](https://evil.example)" not in run.summary
    rendered = render_summary(run.summary)
    assert rendered.errors == ()
    assert rendered.drawn == rendered.charts == 2
    assert "<img src=x onerror=alert(1)>" in rendered.text  # shown as text
    assert "<img" not in rendered.html


def test_the_scan_gate_refuses_before_the_environment_tag_moves(
    service: Workspace, ecr_sync: EcrSync, ecr_repository: MakeRepository, tmp_path: Path
) -> None:
    registry = ecr_sync.registry
    repo = ecr_repository()
    first = publish(service, registry, repo, tmp_path)
    service.write("app/main.txt", "v2\n")
    service.commit("code change")
    # Whatever image of the repository ECR scans from now on has these findings.
    ecr_sync.set_findings(
        repo,
        "",
        findings=[
            basic_finding("CVE-2026-1111", "CRITICAL", "openssl", "3.0.1"),
            basic_finding("CVE-2026-2222", "LOW", "bash", "5.2"),
        ],
    )

    run = publish(service, registry, repo, tmp_path, "--scan", "true", ok=False)
    assert run.code != 0
    (error,) = run.error_lines()
    assert "CVE-2026-1111 (CRITICAL, openssl 3.0.1)" in error
    assert "CVE-2026-2222" not in error  # below the gate's severity
    assert registry.manifest(repo, "preprod")[0] == first.outputs["digest"]
    assert "not deployed" in run.summary
    assert "CVE-2026-1111" in run.summary
    (refused,) = report(run)["images"]
    assert [f["name"] for f in refused["scan"]["blocking"]] == ["CVE-2026-1111"]

    # The team accepts the finding: the rebuilt image (its scan has the same finding) passes,
    # and the environment tag moves to it.
    ecr_sync.set_findings(repo, "", findings=[basic_finding("CVE-2026-1111", "CRITICAL", "openssl", "3.0.1")])
    again = publish(service, registry, repo, tmp_path, "--scan", "true", "--scan-ignore", "CVE-2026-1111")
    assert registry.manifest(repo, "preprod")[0] == again.outputs["digest"]
    assert "passed (1 accepted)" in again.summary
    assert report(again)["images"][0]["scan"]["ignored"][0]["name"] == "CVE-2026-1111"
