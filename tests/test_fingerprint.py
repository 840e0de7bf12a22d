"""The source fingerprint: real trees in tmp dirs, a table of Dockerfiles for the base images,
and the real engine for image identities and for what BuildKit actually sends."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import tarfile
from typing import TYPE_CHECKING

import pytest
from docker.utils.build import exclude_paths

from entrypoint.fingerprint import (
    TAG_PREFIX,
    Fingerprint,
    base_images,
    compute_fingerprint,
    included_paths,
    resolve_with_engine,
)
from tests.support.stack import Registry, docker_cli

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from docker import DockerClient

PLATFORM = "linux/amd64"
IDENTITIES = {"python:3.12-slim": "sha256:" + "1" * 64}


class Recorder:
    """A resolver that remembers what it was asked."""

    def __init__(self, known: dict[str, str] | None = None) -> None:
        self.known = known if known is not None else {}
        self.asked: list[str] = []

    def __call__(self, ref: str) -> str | None:
        self.asked.append(ref)
        return self.known.get(ref, f"id-of-{ref}")


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    _write(
        root,
        {
            "Dockerfile": "FROM python:3.12-slim\nCOPY . /var/task\n",
            ".dockerignore": "# local junk\n.venv\n**/__pycache__\n*.log\ntests/\n",
            "app/main.py": "print('hello')\n",
            "app/static/index.html": "<h1>hi</h1>\n",
            "requirements.txt": "fastapi==0.110\n",
            "debug.log": "noise\n",
            "tests/test_main.py": "def test(): pass\n",
            ".venv/bin/python": "not really\n",
            "app/__pycache__/main.cpython-312.pyc": b"\x00\x01",
        },
    )
    return root


def fingerprint(
    root: Path,
    *,
    build_args: Sequence[tuple[str, str]] = (),
    platform: str = PLATFORM,
    resolve: Callable[[str], str | None] | None = None,
    dockerfile: str = "Dockerfile",
) -> Fingerprint:
    return compute_fingerprint(root / dockerfile, root, build_args, platform, resolve or Recorder(IDENTITIES))


# --------------------------------------------------------------------------- the tree


def test_same_tree_same_value(tree: Path, tmp_path: Path) -> None:
    first = fingerprint(tree)
    assert first == fingerprint(tree)
    # Another checkout of the same tree, elsewhere, written later (other mtimes).
    copy = tmp_path / "elsewhere" / "app"
    shutil.copytree(tree, copy, symlinks=True)
    os.utime(copy / "app" / "main.py", (1, 1))
    assert fingerprint(copy) == first
    assert len(first.value) == 64
    assert first.tag == TAG_PREFIX + first.value[:40]
    assert first.bases == (("python:3.12-slim", IDENTITIES["python:3.12-slim"]),)
    assert first.warnings == ()


def test_counts_only_what_docker_sends(tree: Path) -> None:
    result = fingerprint(tree)
    sent = {"Dockerfile", ".dockerignore", "app/main.py", "app/static/index.html", "requirements.txt"}
    assert result.files == len(sent)
    assert result.bytes == sum((tree / name).stat().st_size for name in sent)
    assert included_paths(tree, tree / "Dockerfile") == sent | {"app", "app/static"}


@pytest.mark.parametrize(
    "ignored", ["debug.log", "tests/test_main.py", ".venv/bin/python", "app/__pycache__/main.cpython-312.pyc"]
)
def test_change_in_an_ignored_file_keeps_the_value(tree: Path, ignored: str) -> None:
    before = fingerprint(tree)
    (tree / ignored).write_text("changed\n")
    (tree / ignored).chmod(0o755)
    (tree / ignored).with_name("new-" + (tree / ignored).name).write_text("new\n")
    assert fingerprint(tree) == before


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "# edited\n")


def _same_size_edit(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-2] + b"!\n")


@pytest.mark.parametrize(
    ("change", "what"),
    [
        pytest.param(change, what, id=what)
        for change, what in [
            (lambda root: _edit(root / "app" / "main.py"), "an included file's content"),
            (lambda root: _same_size_edit(root / "app" / "main.py"), "content at the same size"),
            (lambda root: (root / "app" / "main.py").chmod(0o755), "a file mode (chmod +x)"),
            (lambda root: (root / "app" / "static").chmod(0o700), "a directory mode"),
            (lambda root: (root / "app" / "empty").mkdir(), "a new empty directory"),
            (lambda root: (root / "app" / "new.py").write_text(""), "a new empty file"),
            (lambda root: (root / "app" / "main.py").rename(root / "app" / "app.py"), "a rename"),
            (lambda root: (root / "requirements.txt").unlink(), "a deleted file"),
            (lambda root: _edit(root / "Dockerfile"), "the Dockerfile"),
            (lambda root: (root / ".dockerignore").write_text(".venv\n"), "the ignore rules"),
        ]
    ],
)
def test_change_in_what_docker_sends_changes_the_value(
    tree: Path, change: Callable[[Path], object], what: str
) -> None:
    before = fingerprint(tree)
    change(tree)
    assert fingerprint(tree).value != before.value, what


def test_build_args_and_platform(tree: Path) -> None:
    base = fingerprint(tree, build_args=[("A", "1"), ("B", "2")])
    assert fingerprint(tree, build_args=[("B", "2"), ("A", "1")]) == base  # order is irrelevant
    assert fingerprint(tree, build_args=[("A", "1"), ("B", "3")]).value != base.value
    assert fingerprint(tree, build_args=[("A", "1")]).value != base.value
    assert fingerprint(tree, build_args=[("A", "1"), ("B", "2"), ("C", "")]).value != base.value
    # The CLI applies the last of repeated keys; so does the fingerprint.
    assert fingerprint(tree, build_args=[("B", "0"), ("A", "1"), ("B", "2")]) == base
    assert fingerprint(tree, build_args=[("A", "1"), ("B", "2")], platform="linux/arm64").value != base.value


def test_no_field_can_spill_into_the_next(tree: Path) -> None:
    # "A=1,B=2" as one value must not hash like two args.
    assert (
        fingerprint(tree, build_args=[("A", "1\x00B=2")]).value
        != fingerprint(tree, build_args=[("A", "1"), ("B", "2")]).value
    )


def test_base_image_identity_is_part_of_the_value(tree: Path) -> None:
    before = fingerprint(tree)
    moved = fingerprint(tree, resolve=Recorder({"python:3.12-slim": "sha256:" + "2" * 64}))
    assert moved.value != before.value
    unknown = fingerprint(tree, resolve=lambda ref: None)
    assert unknown.value not in (before.value, moved.value)
    assert unknown.bases == (("python:3.12-slim", ""),)
    assert len(unknown.warnings) == 1
    assert "python:3.12-slim" in unknown.warnings[0]
    assert "will not trigger a rebuild" in unknown.warnings[0]


def test_symlinks_are_hashed_by_target_and_not_followed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("one\n")
    before = fingerprint(tree)
    (tree / "app" / "config.py").symlink_to("main.py")
    (tree / "app" / "shared").symlink_to(outside)
    with_links = fingerprint(tree)
    assert with_links.value != before.value
    assert with_links.files == before.files  # links are not regular files
    # What the links point at, outside the context, is not sent: no change.
    (outside / "secret.txt").write_text("two\n")
    (outside / "more.txt").write_text("three\n")
    assert fingerprint(tree) == with_links
    assert "app/shared/secret.txt" not in included_paths(tree, tree / "Dockerfile")
    # A link's target is what docker sends.
    (tree / "app" / "config.py").unlink()
    (tree / "app" / "config.py").symlink_to("static/index.html")
    retargeted = fingerprint(tree)
    assert retargeted.value != with_links.value
    # A regular file with the target's content is not the same thing as the link.
    (tree / "app" / "config.py").unlink()
    shutil.copy(tree / "app" / "static" / "index.html", tree / "app" / "config.py")
    assert fingerprint(tree).value not in (with_links.value, retargeted.value)


def test_dangling_symlink_and_fifo_do_not_break_or_block(tree: Path) -> None:
    (tree / "app" / "dangling").symlink_to("does-not-exist")
    os.mkfifo(tree / "app" / "pipe")
    before = fingerprint(tree)  # reading a FIFO would hang here
    assert {"app/dangling", "app/pipe"} <= included_paths(tree, tree / "Dockerfile")
    (tree / "app" / "pipe").unlink()
    assert fingerprint(tree).value != before.value


def test_dockerfile_and_ignore_file_are_sent_even_if_ignored(tree: Path) -> None:
    (tree / ".dockerignore").write_text("Dockerfile\n.dockerignore\n*.txt\n")
    paths = included_paths(tree, tree / "Dockerfile")
    assert {"Dockerfile", ".dockerignore"} <= paths
    assert "requirements.txt" not in paths


def test_dockerfile_in_a_subfolder_is_kept_by_its_own_path(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _write(
        root,
        {
            "docker/lambda.Dockerfile": "FROM python:3.12-slim\n",
            ".dockerignore": "docker\n",
            "docker/other.txt": "x",
            "src/app.py": "x",
        },
    )
    paths = included_paths(root, root / "docker" / "lambda.Dockerfile")
    assert "docker/lambda.Dockerfile" in paths
    assert "docker/other.txt" not in paths


def test_dockerfile_outside_the_context(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _write(root, {"src/app.py": "x", "Dockerfile": "stale\n", ".dockerignore": "Dockerfile\n"})
    _write(tmp_path, {"build/Dockerfile": "FROM python:3.12-slim\n"})
    paths = included_paths(root, tmp_path / "build" / "Dockerfile")
    assert "Dockerfile" not in paths  # ignored, and it is not the Dockerfile of this build
    result = compute_fingerprint(tmp_path / "build" / "Dockerfile", root, (), PLATFORM, Recorder())
    _edit(tmp_path / "build" / "Dockerfile")
    assert compute_fingerprint(tmp_path / "build" / "Dockerfile", root, (), PLATFORM, Recorder()) != result


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _write(
        root,
        {
            "app.Dockerfile": "FROM python:3.12-slim\n",
            "app.Dockerfile.dockerignore": "docs\n",
            ".dockerignore": "src\n",
            "src/app.py": "x",
            "docs/index.md": "x",
        },
    )
    paths = included_paths(root, root / "app.Dockerfile")
    assert "src/app.py" in paths
    assert "docs/index.md" not in paths


def test_exception_brings_its_folders_along(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    _write(
        root,
        {
            "Dockerfile": "FROM python:3.12-slim\n",
            ".dockerignore": "*\n!src/app.py\n",
            "src/app.py": "x",
            "src/other.py": "x",
            "README.md": "x",
        },
    )
    paths = included_paths(root, root / "Dockerfile")
    assert paths == {"Dockerfile", ".dockerignore", "src", "src/app.py"}
    before = fingerprint(root)
    _edit(root / "src" / "other.py")
    assert fingerprint(root) == before
    _edit(root / "src" / "app.py")
    assert fingerprint(root).value != before.value


def test_ignore_rules_are_case_sensitive_unlike_docker_py(tmp_path: Path) -> None:
    """docker-py's fnmatch lower-cases both sides; docker and BuildKit do not. `Build/` is
    sent by docker when .dockerignore says `build`, so its changes must count."""
    root = tmp_path / "ctx"
    _write(
        root,
        {
            "Dockerfile": "FROM python:3.12-slim\n",
            ".dockerignore": "build\n",
            "Build/x.py": "1",
            "build/y": "1",
        },
    )
    assert "Build/x.py" not in exclude_paths(str(root), ["build"])  # the docker-py pitfall
    paths = included_paths(root, root / "Dockerfile")
    assert "Build/x.py" in paths
    assert "build/y" not in paths
    before = fingerprint(root)
    _edit(root / "Build" / "x.py")
    assert fingerprint(root).value != before.value


def test_large_file_is_streamed(tree: Path) -> None:
    big = tree / "model.bin"
    big.write_bytes(os.urandom(3 << 20))
    before = fingerprint(tree)
    assert before.bytes >= 3 << 20
    with big.open("r+b") as handle:
        handle.seek((3 << 20) - 1)
        handle.write(b"\xff" if handle.read(1) != b"\xff" else b"\x00")
    assert fingerprint(tree).value != before.value


# --------------------------------------------------------------------------- base images

ADAPTER = "public.ecr.aws/awsguru/aws-lambda-adapter:0.8.4"

# (id, Dockerfile, build args, platform, expected refs in order, expected warning fragment)
BASES: list[tuple[str, str, list[tuple[str, str]], str, list[str], str]] = [
    ("plain", "FROM python:3.12-slim\n", [], PLATFORM, ["python:3.12-slim"], ""),
    ("scratch", "FROM scratch\nCOPY app /app\n", [], PLATFORM, [], ""),
    (
        "platform flag, stage name, COPY --from stage",
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nRUN go build\n"
        "FROM scratch\nCOPY --from=build /out /app\n",
        [],
        PLATFORM,
        ["golang:1.22"],
        "",
    ),
    (
        "stages chained, case-insensitive AS",
        "FROM python:3.12 as Base\nFROM base AS test\nRUN pytest\nFROM base\n",
        [],
        PLATFORM,
        ["python:3.12"],
        "",
    ),
    (
        "COPY --from an external image (Lambda Web Adapter)",
        f"FROM public.ecr.aws/lambda/python:3.12\nCOPY --from={ADAPTER} /lambda-adapter /opt/extensions/\n",
        [],
        PLATFORM,
        ["public.ecr.aws/lambda/python:3.12", ADAPTER],
        "",
    ),
    (
        "COPY --from a stage index and a later stage",
        "FROM alpine:3.20 AS a\nCOPY --from=0 /x /x\nCOPY --from=later /y /y\nFROM busybox:1.36 AS later\n",
        [],
        PLATFORM,
        ["alpine:3.20", "busybox:1.36"],
        "",
    ),
    (
        "RUN --mount=from= an image, cache mounts ignored",
        "FROM python:3.12-slim\n"
        "RUN --mount=type=bind,from=ghcr.io/astral-sh/uv:0.4.20,source=/uv,target=/bin/uv "
        "--mount=type=cache,target=/root/.cache uv pip install .\n",
        [],
        PLATFORM,
        ["python:3.12-slim", "ghcr.io/astral-sh/uv:0.4.20"],
        "",
    ),
    ("ARG default", "ARG BASE=python:3.11\nFROM ${BASE}\n", [], PLATFORM, ["python:3.11"], ""),
    (
        "ARG default overridden by a build arg",
        "ARG BASE=python:3.11\nFROM $BASE\n",
        [("BASE", "python:3.13")],
        PLATFORM,
        ["python:3.13"],
        "",
    ),
    (
        "${VAR:-default} unset",
        "ARG PY\nFROM python:${PY:-3.12}-slim\n",
        [],
        PLATFORM,
        ["python:3.12-slim"],
        "",
    ),
    (
        "${VAR:-default} set",
        "ARG PY\nFROM python:${PY:-3.12}-slim\n",
        [("PY", "3.13")],
        PLATFORM,
        ["python:3.13-slim"],
        "",
    ),
    (
        "ARG defaults built from earlier ARGs",
        "ARG REG=public.ecr.aws\nARG IMG=$REG/lambda/python:3.12\nFROM $IMG AS base\n",
        [("REG", "123456789012.dkr.ecr.eu-west-2.amazonaws.com")],
        PLATFORM,
        ["123456789012.dkr.ecr.eu-west-2.amazonaws.com/lambda/python:3.12"],
        "",
    ),
    (
        "build arg without ARG is not visible to FROM",
        "FROM python:${PY:-3.12}\n",
        [("PY", "3.9")],
        PLATFORM,
        ["python:3.12"],
        "",
    ),
    (
        "ARG inside a stage is not visible to the next FROM",
        "FROM alpine:3.20 AS a\nARG V=1.35\nFROM busybox:${V:-1.36}\n",
        [],
        PLATFORM,
        ["alpine:3.20", "busybox:1.36"],
        "",
    ),
    (
        "automatic platform ARGs",
        "FROM example.com/base-${TARGETARCH}:${TARGETOS}\n",
        [],
        "linux/arm64",
        ["example.com/base-arm64:linux"],
        "",
    ),
    (
        "syntax directive is the frontend image",
        "# syntax=docker/dockerfile:1.7\nFROM alpine:3.20\n",
        [],
        PLATFORM,
        ["docker/dockerfile:1.7", "alpine:3.20"],
        "",
    ),
    (
        "continuation lines and comments",
        "FROM \\\n  # the base\n  python:3.12 \\\n  AS base\nFROM base\n",
        [],
        PLATFORM,
        ["python:3.12"],
        "",
    ),
    ("escape directive", "# escape=`\nFROM `\n  alpine:3.20\n", [], PLATFORM, ["alpine:3.20"], ""),
    (
        "heredoc body is not an instruction",
        "FROM alpine:3.20\nRUN <<EOF\nFROM evil:latest\nEOF\nCOPY <<-'END' /x\n\tFROM evil2\n\tEND\n",
        [],
        PLATFORM,
        ["alpine:3.20"],
        "",
    ),
    (
        "unsupported substitution is kept as text, with a warning",
        "ARG V=python:3.12\nFROM ${V%-slim}\n",
        [],
        PLATFORM,
        ["${V%-slim}"],
        "cannot expand '${V%-slim}'",
    ),
    (
        "ADD of a URL is flagged",
        "FROM alpine:3.20\nADD https://example.com/tool.tgz /opt/\n",
        [],
        PLATFORM,
        ["alpine:3.20"],
        "fetches remote content",
    ),
    (
        "the repository's example Dockerfile",
        "ARG PYTHON_VERSION=3.12\n"
        "FROM public.ecr.aws/awsguru/aws-lambda-adapter:0.8.4 AS adapter\n"
        "FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}\n"
        "COPY --from=adapter /lambda-adapter /opt/extensions/lambda-adapter\n",
        [],
        PLATFORM,
        ["public.ecr.aws/awsguru/aws-lambda-adapter:0.8.4", "public.ecr.aws/lambda/python:3.12"],
        "",
    ),
]


@pytest.mark.parametrize(
    ("dockerfile", "build_args", "platform", "expected", "warning"),
    [pytest.param(*row[1:], id=row[0]) for row in BASES],
)
def test_base_images(
    tmp_path: Path,
    dockerfile: str,
    build_args: list[tuple[str, str]],
    platform: str,
    expected: list[str],
    warning: str,
) -> None:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    recorder = Recorder()
    result = compute_fingerprint(tmp_path / "Dockerfile", tmp_path, build_args, platform, recorder)
    assert recorder.asked == expected
    assert base_images(dockerfile, build_args, platform) == tuple(expected)
    assert [ref for ref, _ in result.bases] == expected
    if warning:
        assert any(warning in w for w in result.warnings), result.warnings
    else:
        assert result.warnings == ()


def test_unresolved_base_is_hashed_by_name(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.12-slim\n")
    one = compute_fingerprint(tmp_path / "Dockerfile", tmp_path, (), PLATFORM, lambda ref: None)
    assert one == compute_fingerprint(tmp_path / "Dockerfile", tmp_path, (), PLATFORM, lambda ref: None)
    (tmp_path / "Dockerfile").write_text("FROM python:3.13-slim\n")
    assert compute_fingerprint(tmp_path / "Dockerfile", tmp_path, (), PLATFORM, lambda ref: None) != one


# --------------------------------------------------------------------------- real engine


def _tiny_tar(path: Path, content: bytes) -> Path:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    return path


@pytest.fixture
def own_image(docker_client: DockerClient) -> Iterator[str]:
    """A throw-away image tag of this test's own (never a shared base's tag)."""
    name = f"local/fingerprint-test-{secrets.token_hex(4)}"
    yield f"{name}:latest"
    for image in docker_client.images.list(name=name):
        docker_client.api.remove_image(image.id, force=True)


def _import(docker_client: DockerClient, ref: str, tar: Path) -> str:
    repository, _, tag = ref.rpartition(":")
    docker_client.api.import_image(src=str(tar), repository=repository, tag=tag)
    return str(docker_client.api.inspect_image(ref)["Id"])


def test_resolve_with_engine_gives_the_local_image_id(docker_client: DockerClient, busybox_base: str) -> None:
    resolve = resolve_with_engine(docker_client)
    # No registry has local/busybox-base: the engine's own image ID stands in.
    assert resolve(busybox_base) == docker_client.api.inspect_image(busybox_base)["Id"]
    assert resolve(f"local/absent-{secrets.token_hex(4)}:latest") is None
    pinned = "python@sha256:" + "a" * 64
    assert resolve(pinned) == "sha256:" + "a" * 64


def test_reimported_base_changes_the_fingerprint(
    docker_client: DockerClient, own_image: str, tmp_path: Path
) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {own_image}\nCOPY . /app\n")
    first_id = _import(docker_client, own_image, _tiny_tar(tmp_path / "one.tar", b"one\n"))

    def run() -> Fingerprint:
        return compute_fingerprint(
            context / "Dockerfile", context, (), PLATFORM, resolve_with_engine(docker_client)
        )

    first = run()
    assert first.bases == ((own_image, first_id),)
    assert first.warnings == ()
    assert run() == first

    second_id = _import(docker_client, own_image, _tiny_tar(tmp_path / "two.tar", b"two\n"))
    assert second_id != first_id
    second = run()
    assert second.bases == ((own_image, second_id),)
    assert second.value != first.value


def test_resolve_with_engine_prefers_the_registry_digest(
    docker_client: DockerClient, own_image: str, tmp_path: Path
) -> None:
    image_id = _import(docker_client, own_image, _tiny_tar(tmp_path / "one.tar", b"one\n"))
    with Registry(user=None, password=None) as registry:
        remote = f"{registry.host}/fingerprint/base"
        docker_client.api.tag(image_id, remote, "1")
        try:
            for event in docker_client.api.push(remote, "1", stream=True, decode=True):
                assert "error" not in event, event
            digest, _, _ = registry.manifest("fingerprint/base", "1")
            assert resolve_with_engine(docker_client)(f"{remote}:1") == digest
            assert digest != image_id
        finally:
            docker_client.api.remove_image(f"{remote}:1", force=True)


def test_included_paths_match_what_buildkit_copies(docker_client: DockerClient, tmp_path: Path) -> None:
    """Build `FROM scratch; COPY . /` with the real BuildKit and export the result: the
    files it copied are exactly the ones the fingerprint hashed."""
    context = tmp_path / "ctx"
    _write(
        context,
        {
            "Dockerfile": "FROM scratch\nCOPY . /\n",
            ".dockerignore": (
                "# comment\n*.log\n**/__pycache__\nnode_modules\ndocs/*\n!docs/keep.md\n"
                "build\n/abs.txt\nsub/**/deep.txt\n  spaced.txt  \n"
            ),
            "app.py": "x",
            "app.log": "x",
            "pkg/__pycache__/m.pyc": "x",
            "pkg/mod.py": "x",
            "pkg/mod.log": "x",
            "node_modules/a/index.js": "x",
            "docs/keep.md": "x",
            "docs/drop.md": "x",
            "build/out": "x",
            "Build/kept": "x",
            "abs.txt": "x",
            "sub/a/b/deep.txt": "x",
            "sub/a/b/shallow.txt": "x",
            "spaced.txt": "x",
        },
    )
    (context / "empty").mkdir()
    (context / "pkg" / "link").symlink_to("mod.py")
    out = tmp_path / "out"
    done = subprocess.run(
        [docker_cli(), "build", "--output", f"type=local,dest={out}", str(context)],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    copied = {path.relative_to(out).as_posix() for path in out.rglob("*")}
    assert copied == included_paths(context, context / "Dockerfile")


@pytest.mark.parametrize(
    ("ignore", "files", "only_ours"),
    [
        # docker sends the Dockerfile and the ignore file even when listed; BuildKit's COPY
        # leaves them out. Hashing them anyway costs a rebuild at worst, never a stale skip.
        (
            "Dockerfile\n.dockerignore\n**.txt\n",
            ["a/b.txt", "c.txt", "d.py"],
            {"Dockerfile", ".dockerignore"},
        ),
        ("*\n!src\nsrc/*.tmp\n", ["src/a.py", "src/b.tmp", "top.py"], {"Dockerfile", ".dockerignore"}),
    ],
)
def test_included_paths_cover_what_buildkit_copies(
    docker_client: DockerClient, tmp_path: Path, ignore: str, files: list[str], only_ours: set[str]
) -> None:
    context = tmp_path / "ctx"
    _write(
        context,
        {"Dockerfile": "FROM scratch\nCOPY . /\n", ".dockerignore": ignore, **dict.fromkeys(files, "x")},
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [docker_cli(), "build", "--output", f"type=local,dest={out}", str(context)],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    copied = {path.relative_to(out).as_posix() for path in out.rglob("*")}
    ours = included_paths(context, context / "Dockerfile")
    assert ours - copied == only_ours
    assert copied <= ours
