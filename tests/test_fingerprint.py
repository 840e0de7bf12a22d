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

from entrypoint.build.fingerprint import (
    TAG_PREFIX,
    Fingerprint,
    base_images,
    compute_fingerprint,
    hashed_paths,
    included_paths,
    included_paths_under,
)
from entrypoint.engine import resolve_with_engine
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
            "Dockerfile": "FROM python:3.12-slim\nCOPY . /app\n",
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
            "Dockerfile": "FROM python:3.12-slim\nCOPY . /app\n",
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


# --------------------------------------------------------------------------- which paths count

# A repository with the Dockerfile at its root: the context holds `.git/` and everything else.
REPO: dict[str, str | bytes] = {
    ".dockerignore": "*.log\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/objects/ab/cdef0123": b"\x78\x01",
    "requirements.txt": "fastapi==0.110\n",
    "app/main.py": "print('hello')\n",
    "app/util.py": "X = 1\n",
    "app/static/index.html": "<h1>hi</h1>\n",
    "a.txt": "a\n",
    "b.txt": "b\n",
    "notes.md": "notes\n",
    "debug.log": "noise\n",
    "docs/a.txt": "nested\n",
    "data/real.txt": "real\n",
    "scripts/build.sh": "echo build\n",
}
# Every path of the `repo` fixture that docker sends (not the Dockerfile, which each test writes).
SENT = {name for name in REPO if name != "debug.log"} | {
    "link.txt",
    "applink",
    ".git",
    ".git/objects",
    ".git/objects/ab",
    "app",
    "app/static",
    "docs",
    "data",
    "scripts",
}


def _under(*roots: str) -> set[str]:
    """The sent paths at or under `roots`, with their folders: what a referenced scope hashes."""
    found = {path for path in SENT if any(path == r or path.startswith(f"{r}/") for r in roots)}
    return found | {parent for path in found for parent in _folders(path)}


def _folders(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:depth]) for depth in range(1, len(parts))}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    _write(root, REPO)
    (root / "link.txt").symlink_to("data/real.txt")
    (root / "applink").symlink_to("app")
    return root


def _scope(root: Path, dockerfile: str, build_args: Sequence[tuple[str, str]] = ()) -> tuple[str, set[str]]:
    (root / "Dockerfile").write_text(dockerfile)
    return hashed_paths(root / "Dockerfile", root, build_args, PLATFORM)


EXAMPLE = "FROM python:3.12-slim\nWORKDIR /var/task\nCOPY requirements.txt ./\nCOPY app/ ./app/\n"
WHOLE = "whole context"

# (id, Dockerfile, build args, the paths hashed or WHOLE, what the scope says)
SCOPES: list[tuple[str, str, list[tuple[str, str]], set[str] | str, str]] = [
    ("the example's COPYs", EXAMPLE, [], _under("requirements.txt", "app"), "referenced paths"),
    ("no COPY at all", "FROM python:3.12-slim\nRUN pip install x\n", [], set(), "referenced paths"),
    (
        "JSON array form, several sources",
        'FROM scratch\nCOPY ["requirements.txt", "app/static", "/var/task/"]\n',
        [],
        _under("requirements.txt", "app/static"),
        "",
    ),
    (
        "flags before the sources",
        "FROM scratch\nCOPY --chown=1000:1000 --chmod=644 --link --parents --exclude=*.pyc a.txt app /x/\n",
        [],
        _under("a.txt", "app"),
        "",
    ),
    (
        "leading / and ./, .. stops at the root",
        "FROM scratch\nCOPY /requirements.txt ./data/ ../../b.txt /x/\n",
        [],
        _under("requirements.txt", "data", "b.txt"),
        "",
    ),
    (
        "wildcard: *.txt stays at the top",
        "FROM scratch\nCOPY *.txt /x/\n",
        [],
        _under("a.txt", "b.txt", "requirements.txt", "link.txt", "data/real.txt"),
        "",
    ),
    (
        "wildcard in a folder",
        "FROM scratch\nCOPY app/*.py /x/\n",
        [],
        _under("app/main.py", "app/util.py"),
        "",
    ),
    (
        "wildcard ? and a class",
        "FROM scratch\nCOPY ?.txt /x/\nCOPY [m-z]otes.* /y/\n",
        [],
        _under("a.txt", "b.txt", "notes.md"),
        "",
    ),
    ("negated class", "FROM scratch\nCOPY [^a].txt /x/\n", [], _under("b.txt"), ""),
    ("wildcard in a middle segment", "FROM scratch\nCOPY */a.txt /x/\n", [], _under("docs/a.txt"), ""),
    ("a wildcard matching a folder takes it whole", "FROM scratch\nCOPY ap? /x/\n", [], _under("app"), ""),
    ("* matches a leading dot: .git too", "FROM scratch\nCOPY *git /x/\n", [], _under(".git"), ""),
    (
        "** takes the folder it starts in",
        "FROM scratch\nCOPY --parents app/**/*.html /x/\n",
        [],
        _under("app"),
        "",
    ),
    (
        "quotes are removed",
        "FROM scratch\nCOPY \"requirements.txt\" 'a.txt' /x/\n",
        [],
        _under("requirements.txt", "a.txt"),
        "",
    ),
    (
        "a symlink source brings its target",
        "FROM scratch\nCOPY link.txt /x\n",
        [],
        {"link.txt", "data", "data/real.txt"},
        "",
    ),
    (
        "a symlinked folder on the way",
        "FROM scratch\nCOPY applink/main.py /x\n",
        [],
        {"applink", "app", "app/main.py"},
        "",
    ),
    (
        "COPY --from a stage or image reads no context",
        "FROM alpine:3.20 AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /out\n"
        "COPY --from=busybox:1.36 /bin/sh /sh\n",
        [],
        set(),
        "",
    ),
    (
        "heredoc sources",
        "FROM scratch\nCOPY <<EOF /etc/x\n.\nEOF\nCOPY <<-'A' <<B /etc/\n\tx\n\tA\ny\nB\n",
        [],
        set(),
        "",
    ),
    (
        "ADD of a URL reads no context, a local ADD does",
        "FROM scratch\nADD https://example.com/t.tgz a.txt /opt/\n",
        [],
        _under("a.txt"),
        "",
    ),
    (
        "bind mount from the context",
        "FROM busybox\nRUN --mount=type=bind,source=scripts,target=/s --mount=type=cache,target=/c "
        "--mount=type=bind,from=build,source=/,target=/b --mount=type=secret,id=x sh /s/build.sh\n",
        [],
        _under("scripts"),
        "",
    ),
    (
        "bind mount, src= and default type",
        "FROM busybox\nRUN --mount=src=data,target=/d ls /d\n",
        [],
        _under("data"),
        "",
    ),
    ("stage ARG", "FROM scratch\nARG SRC=app\nCOPY $SRC/ /x/\n", [], _under("app"), ""),
    (
        "stage ARG from a build arg",
        "FROM scratch\nARG SRC=app\nCOPY ${SRC} /x/\n",
        [("SRC", "data")],
        _under("data"),
        "",
    ),
    (
        "global ARG redeclared",
        "ARG SRC=data\nFROM scratch\nARG SRC\nCOPY ${SRC}/real.txt /x\n",
        [],
        _under("data/real.txt"),
        "",
    ),
    (
        "ENV, and ENV wins over ARG",
        "FROM scratch\nENV D=app\nARG D=data\nCOPY ${D:-x}/main.py /x\n",
        [],
        _under("app/main.py"),
        "",
    ),
    (
        "ENV inherited by a stage FROM it",
        'FROM scratch AS base\nENV D="scripts"\nFROM base\nCOPY $D /s\n',
        [],
        _under("scripts"),
        "",
    ),
    (
        "platform ARG declared in the stage",
        "FROM scratch\nARG TARGETARCH\nCOPY a.txt ${TARGETARCH}.txt /x/\n",
        [],
        _under("a.txt"),
        "",
    ),
    (
        "Docker's own frontend",
        "# syntax=docker/dockerfile:1.7-labs\nFROM scratch\nCOPY a.txt /x\n",
        [],
        _under("a.txt"),
        "",
    ),
    ("COPY . .", "FROM scratch\nCOPY . .\n", [], WHOLE, "whole context (COPY . reads the context root)"),
    ("a folder and its parent", "FROM scratch\nCOPY app/.. /x\n", [], WHOLE, "reads the context root"),
    (
        "bind mount without source",
        "FROM busybox\nRUN --mount=type=bind,target=/src make\n",
        [],
        WHOLE,
        "binds the context root",
    ),
    (
        "bind mount of .",
        "FROM busybox\nRUN --mount=type=bind,source=.,target=/src make\n",
        [],
        WHOLE,
        "reads the context root",
    ),
    (
        "global ARG not redeclared",
        "ARG SRC=app\nFROM scratch\nCOPY $SRC /x\n",
        [],
        WHOLE,
        "cannot expand $SRC",
    ),
    (
        "default of an unset variable",
        "FROM python:3.12\nCOPY ${APP:-app} /x\n",
        [],
        WHOLE,
        "cannot expand ${APP:-app}",
    ),
    (
        "a variable the base image may set",
        "FROM python:3.12\nCOPY $HOME/x /x\n",
        [],
        WHOLE,
        "cannot expand $HOME/x",
    ),
    ("backslash", "FROM scratch\nCOPY a\\*.txt /x\n", [], WHOLE, "backslash"),
    ("malformed class", "FROM scratch\nCOPY [a- /x\n", [], WHOLE, "not a valid pattern"),
    ("** at the top", "FROM scratch\nCOPY **/*.py /x\n", [], WHOLE, "may match any path"),
    (
        "another frontend",
        "# syntax=example.com/frontend:1\nFROM scratch\nCOPY a.txt /x\n",
        [],
        WHOLE,
        "frontend example.com/frontend:1",
    ),
]


@pytest.mark.parametrize(
    ("dockerfile", "build_args", "expected", "scope"), [pytest.param(*row[1:], id=row[0]) for row in SCOPES]
)
def test_hashed_paths(
    repo: Path, dockerfile: str, build_args: list[tuple[str, str]], expected: set[str] | str, scope: str
) -> None:
    said, paths = _scope(repo, dockerfile, build_args)
    if expected == WHOLE:
        assert said.startswith(f"{WHOLE} ("), said
        assert paths == included_paths(repo, repo / "Dockerfile")
    else:
        assert said == "referenced paths"
        assert paths == expected
    assert scope in said


def test_symlink_to_the_context_root_means_the_whole_context(repo: Path) -> None:
    (repo / "all").symlink_to(".")
    (repo / "loop").symlink_to("loop")
    assert _scope(repo, "FROM scratch\nCOPY all /x\n")[0].startswith(
        f"{WHOLE} (COPY all leads to the context root"
    )
    assert "too many symlinks" in _scope(repo, "FROM scratch\nCOPY loop /x\n")[0]


def test_git_and_unreferenced_changes_keep_the_value(repo: Path) -> None:
    (repo / "Dockerfile").write_text(EXAMPLE)
    before = fingerprint(repo)
    assert before.scope == "referenced paths"
    assert before.files == 4  # requirements.txt and app/'s three files
    # A new commit: .git changes throughout.
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    (repo / ".git" / "objects" / "cd").mkdir()
    (repo / ".git" / "objects" / "cd" / "0123").write_bytes(b"\x78\x02")
    (repo / ".git" / "index").write_bytes(os.urandom(64))
    _edit(repo / "notes.md")
    _edit(repo / "scripts" / "build.sh")
    (repo / "data" / "real.txt").chmod(0o600)
    (repo / "new.txt").write_text("new\n")
    (repo / ".dockerignore").write_text("*.log\n.venv\n")  # rules that change nothing here
    assert fingerprint(repo) == before


@pytest.mark.parametrize(
    ("dockerfile", "change"),
    [
        pytest.param(EXAMPLE, lambda root: _edit(root / "requirements.txt"), id="a referenced file"),
        pytest.param(
            EXAMPLE,
            lambda root: _edit(root / "app" / "static" / "index.html"),
            id="a file deep in a referenced folder",
        ),
        pytest.param(
            EXAMPLE,
            lambda root: (root / "app" / "new.py").write_text(""),
            id="a new file in a referenced folder",
        ),
        pytest.param(
            EXAMPLE, lambda root: (root / "app" / "main.py").chmod(0o755), id="a referenced file's mode"
        ),
        pytest.param(
            EXAMPLE, lambda root: (root / "requirements.txt").unlink(), id="a referenced file deleted"
        ),
        pytest.param(
            EXAMPLE,
            lambda root: (root / ".dockerignore").write_text("app/util.py\n"),
            id="ignoring a referenced file",
        ),
        pytest.param(
            "FROM scratch\nCOPY *.txt /x/\n",
            lambda root: _edit(root / "b.txt"),
            id="a file a wildcard matches",
        ),
        pytest.param(
            "FROM scratch\nCOPY *.txt /x/\n",
            lambda root: (root / "c.txt").write_text(""),
            id="a new file a wildcard matches",
        ),
        pytest.param(
            "FROM scratch\nCOPY link.txt /x\n",
            lambda root: _edit(root / "data" / "real.txt"),
            id="a symlink source's target",
        ),
        pytest.param(
            "FROM busybox\nRUN --mount=type=bind,source=scripts,target=/s sh /s/build.sh\n",
            lambda root: _edit(root / "scripts" / "build.sh"),
            id="a file a bind mount reads",
        ),
    ],
)
def test_change_in_a_referenced_path_changes_the_value(
    repo: Path, dockerfile: str, change: Callable[[Path], object]
) -> None:
    (repo / "Dockerfile").write_text(dockerfile)
    before = fingerprint(repo)
    change(repo)
    assert fingerprint(repo).value != before.value


def test_wildcard_does_not_reach_deeper(repo: Path) -> None:
    (repo / "Dockerfile").write_text("FROM scratch\nCOPY *.txt /x/\n")
    before = fingerprint(repo)
    _edit(repo / "docs" / "a.txt")
    (repo / "app" / "c.txt").write_text("")
    assert fingerprint(repo) == before


def test_copy_dot_hashes_the_whole_context_git_included_unless_ignored(repo: Path) -> None:
    (repo / "Dockerfile").write_text("FROM python:3.12-slim\nCOPY . .\n")
    before = fingerprint(repo)
    assert before.scope == "whole context (COPY . reads the context root)"
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/other\n")
    assert fingerprint(repo).value != before.value
    (repo / ".dockerignore").write_text("*.log\n.git\n")
    ignoring = fingerprint(repo)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/third\n")
    assert fingerprint(repo) == ignoring


def test_ignored_file_does_not_count_even_when_referenced(repo: Path) -> None:
    (repo / "Dockerfile").write_text("FROM scratch\nCOPY debug.log a.txt /x/\n")
    before = fingerprint(repo)
    assert before.files == 1
    _edit(repo / "debug.log")
    assert fingerprint(repo) == before


def test_stages_read_nothing_from_the_context(repo: Path) -> None:
    (repo / "Dockerfile").write_text(
        "FROM alpine:3.20 AS build\nRUN --mount=type=cache,target=/c make\n"
        "FROM scratch\nCOPY --from=build /out /out\nCOPY <<EOF /etc/motd\nhi\nEOF\n"
    )
    before = fingerprint(repo)
    assert (before.scope, before.files) == ("referenced paths", 0)
    for name in ("a.txt", "requirements.txt", "app/main.py", ".git/HEAD"):
        _edit(repo / name)
    assert fingerprint(repo) == before


def test_the_scope_mode_is_part_of_the_value(tmp_path: Path) -> None:
    # Same Dockerfile bytes, same (empty) paths: only the mode differs, with the frontend.
    _write(tmp_path, {"Dockerfile": "FROM scratch\n", ".dockerignore": "*\n!Dockerfile\n"})
    referenced = fingerprint(tmp_path)
    whole = fingerprint(tmp_path, build_args=[("BUILDKIT_SYNTAX", "example.com/frontend:1")])
    assert referenced.scope == "referenced paths"
    assert whole.scope.startswith(WHOLE)
    assert referenced.value != whole.value


@pytest.mark.parametrize(
    "roots",
    [
        ["app"],
        ["app/main.py", "docs"],
        ["pkg", "pkg/mod.py"],
        ["docs/keep.md", "docs/drop.md"],
        ["sub/a", "Build", "build/out"],
        ["node_modules", "missing/file", "app.log"],
        ["link"],
    ],
)
def test_included_paths_under_agrees_with_included_paths(tmp_path: Path, roots: list[str]) -> None:
    """Walking only the referenced subtrees yields what the whole walk yields there."""
    root = tmp_path / "ctx"
    _write(
        root,
        {
            "Dockerfile": "FROM scratch\n",
            ".dockerignore": (
                "*.log\n**/__pycache__\nnode_modules\ndocs/*\n!docs/keep.md\nbuild\nsub/**/deep.txt\n"
            ),
            "app/main.py": "x",
            "app.log": "x",
            "pkg/__pycache__/m.pyc": "x",
            "pkg/mod.py": "x",
            "node_modules/a/index.js": "x",
            "docs/keep.md": "x",
            "docs/drop.md": "x",
            "build/out": "x",
            "Build/kept": "x",
            "sub/a/b/deep.txt": "x",
            "sub/a/b/shallow.txt": "x",
        },
    )
    (root / "link").symlink_to("pkg")
    everything = included_paths(root, root / "Dockerfile")
    wanted = {path for path in everything if any(path == r or path.startswith(f"{r}/") for r in roots)}
    wanted |= {parent for path in wanted for parent in _folders(path)}
    assert included_paths_under(root, root / "Dockerfile", roots) == wanted


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


def test_hashed_paths_cover_what_buildkit_copies(
    docker_client: DockerClient, busybox_base: str, repo: Path, tmp_path: Path
) -> None:
    """Each COPY puts its sources at their own path in the image: every file BuildKit copied
    (a symlink source as its target's content) is among the paths the fingerprint hashed."""
    dockerfile = (
        f"FROM {busybox_base} AS mounted\n"
        "RUN --mount=type=bind,source=scripts,target=/s cp /s/build.sh /build.sh\n"
        "FROM scratch\n"
        "COPY requirements.txt /requirements.txt\n"
        "COPY app/ /app/\n"
        "COPY *.txt /\n"
        'COPY ["docs/a.txt", "/docs/a.txt"]\n'
        "COPY --from=mounted /build.sh /scripts/build.sh\n"
    )
    scope, hashed = _scope(repo, dockerfile)
    assert scope == "referenced paths"
    out = tmp_path / "out"
    done = subprocess.run(
        [docker_cli(), "build", "--output", f"type=local,dest={out}", str(repo)],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    copied = {path.relative_to(out).as_posix() for path in out.rglob("*")}
    assert copied <= hashed
    assert {"link.txt", "scripts/build.sh", "app/static/index.html"} <= copied
    # COPY followed the symlink: the image holds data/real.txt's bytes, which are hashed.
    assert not (out / "link.txt").is_symlink()
    assert (out / "link.txt").read_text() == REPO["data/real.txt"]
    assert "data/real.txt" in hashed
    assert not any(path.startswith(".git") for path in hashed)
