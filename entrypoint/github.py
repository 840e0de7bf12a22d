"""GitHub's side of the action: log commands, masks, groups, step outputs and the job summary.

On a runner (`GITHUB_ACTIONS=true`) this speaks workflow commands through actions-toolkit;
elsewhere it prints plain text, so the same entrypoint reads well in a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from actions_toolkit import core

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence


def on_runner() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%H:%M:%S")


def info(message: str) -> None:
    print(message, flush=True)


def mask(secret: str) -> None:
    """Register a secret with the runner at once, before anything could print it.

    Outside a runner `::add-mask::` would itself print the secret, so nothing is written.
    """
    if secret and on_runner():
        core.set_secret(secret)
        sys.stdout.flush()


def warning(message: str) -> None:
    if on_runner():
        core.warning(message)
        sys.stdout.flush()
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def notice(message: str) -> None:
    if on_runner():
        core.notice(message)
        sys.stdout.flush()
    else:
        print(f"note: {message}", flush=True)


def error(message: str) -> None:
    if on_runner():
        sys.stdout.flush()
        core.error(message)
        sys.stdout.flush()
    else:
        sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr, flush=True)


@contextmanager
def group(title: str) -> Iterator[None]:
    """Fold long output (build logs, push progress) on a runner."""
    if on_runner():
        sys.stdout.flush()
        core.start_group(title)
        sys.stdout.flush()
        try:
            yield
        finally:
            sys.stdout.flush()
            core.end_group()
            sys.stdout.flush()
    else:
        yield


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A timestamped start line and, on the way out, the stage's duration."""
    info(f"[{_now()}] ▶ {name}")
    started = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        took = time.monotonic() - started
        info(f"[{_now()}] {'✔' if ok else '✘'} {name} ({took:.1f} s)")


def set_outputs(outputs: Mapping[str, str]) -> None:
    """Write step outputs to GITHUB_OUTPUT, or print them for a terminal user.

    Multi-line values use the same `name<<DELIMITER` form the runner reads, so the
    printed block can be pasted into a GITHUB_OUTPUT file as it is.
    """
    if os.environ.get("GITHUB_OUTPUT"):
        for name, value in outputs.items():
            core.set_output(name, value)
        return
    for name, value in outputs.items():
        if "\n" in value:
            print(f"{name}<<EOF\n{value}\nEOF", flush=True)
        else:
            print(f"{name}={value}", flush=True)


def write_summary(markdown: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with Path(path).open("a", encoding="utf-8") as summary:
            summary.write(markdown.rstrip("\n") + "\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(value: str) -> str:
        return value.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
