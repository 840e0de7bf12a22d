"""A throw-away git repository, like the checkout a GitHub Actions job works in."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


class Workspace:
    """A git repository in ``path`` with one commit after :meth:`init`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def git(self, *args: str) -> str:
        env = {**os.environ, **_GIT_ENV}
        out = subprocess.run(
            ["git", "-C", str(self.path), *args],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return out.stdout.strip()

    def init(self) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "commit.gpgsign", "false")
        self.write("README.md", "test workspace\n")
        return self.commit("Initial commit")

    def write(self, relpath: str, content: str | bytes, *, mode: int | None = None) -> Path:
        """Write a file (parents made); ``mode`` e.g. 0o755."""
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        if mode is not None:
            target.chmod(mode)
        return target

    def commit(self, message: str = "Update") -> str:
        """Stage everything and commit (empty commits allowed); returns the HEAD SHA."""
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.head

    def commit_files(self, files: Mapping[str, str | bytes], message: str = "Update") -> str:
        """Write ``files`` ({relpath: content}) and commit them; returns the HEAD SHA."""
        for relpath, content in files.items():
            self.write(relpath, content)
        return self.commit(message)

    def add_tree(self, source: Path, folder: str, message: str = "Add tree") -> str:
        """Copy a folder of the repository (e.g. the example service) in and commit it."""
        shutil.copytree(source, self.path / folder, ignore=shutil.ignore_patterns("__pycache__"))
        return self.commit(message)

    @property
    def head(self) -> str:
        return self.git("rev-parse", "HEAD")
