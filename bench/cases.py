"""The situations a publish meets, played on a git copy of the example SSE Lambda."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.workspace import Workspace

if TYPE_CHECKING:
    from collections.abc import Callable

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sse-streaming-lambda"
_NOT_SOURCES = shutil.ignore_patterns(
    "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".terraform", "*.tfstate*"
)


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    # True: the repository already holds the previous publish of the same approach (untimed).
    previous: bool
    # Makes the commit that is published and timed; None publishes the first commit.
    change: Callable[[Workspace, str], str] | None
    what: str
    # More changes of the same kind before the last, each published on an emptied engine and
    # all timed together: where a cache chain that breaks shows.
    history: int = 0


def example_workspace(path: Path, example: Path = EXAMPLE) -> Workspace:
    """A git repository holding the example at its root, committed, like a checkout."""
    ws = Workspace(path)
    ws.init()
    shutil.copytree(example, path, dirs_exist_ok=True, ignore=_NOT_SOURCES)
    ws.commit("example SSE streaming Lambda")
    return ws


def _no_change(ws: Workspace, marker: str) -> str:
    # A new commit (new SHA, so a new commit tag) that changes no file at all.
    return ws.commit(f"bench: no source change ({marker})")


def _code_change(ws: Workspace, marker: str) -> str:
    main = ws.path / "app" / "main.py"
    return ws.commit_files({"app/main.py": main.read_text() + f"# bench: code change {marker}\n"})


def _dependency_change(ws: Workspace, marker: str) -> str:
    # A comment line is a change to requirements.txt, so its COPY layer and the
    # `pip install -r requirements.txt` step after it run again, but pip resolves and
    # downloads exactly the same pinned packages: nothing new is fetched, and what is
    # measured is the cost of rerunning the dependency step, not of a bigger download.
    requirements = ws.path / "requirements.txt"
    return ws.commit_files(
        {"requirements.txt": requirements.read_text() + f"# bench: dependency change {marker}\n"}
    )


CASES: tuple[Case, ...] = (
    Case("clean", "clean", previous=False, change=None, what="first publish into a new, empty repository"),
    Case(
        "no-change",
        "no change",
        previous=True,
        change=_no_change,
        what="an empty commit after a publish of the previous one",
    ),
    Case(
        "code",
        "code changed",
        previous=True,
        change=_code_change,
        what="a comment line added to app/main.py",
    ),
    Case(
        "chain",
        "three successive code changes",
        previous=True,
        change=_code_change,
        what="three successive code-only changes, each published on an emptied engine; the time is "
        "the three publishes together, and the pip step counts as cached only if all three reused it",
        history=2,
    ),
    Case(
        "deps",
        "dependencies changed",
        previous=True,
        change=_dependency_change,
        what="a comment line added to requirements.txt (same pinned packages, pip reruns)",
    ),
)
CASE_KEYS = tuple(c.key for c in CASES)
