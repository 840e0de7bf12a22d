"""GitHub's side of the action: log commands, masks, groups, step outputs and the job summary.

On a runner (`GITHUB_ACTIONS=true`) this speaks workflow commands through actions-toolkit;
elsewhere it prints plain text, so the same entrypoint reads well in a terminal.

Everything else the action prints relays text it does not control: build output, registry
messages, plan addresses, container logs. The runner executes any line of its log that
starts with `::` (and splits lines on CR too), so a `RUN` printing `::add-mask::...` could
mask digests or `::stop-commands::` hide errors. On a runner the whole run is therefore
inside a `::stop-commands::<random token>` block (`commands_stopped`); only this module's
own commands resume it for one line, with a token no build can know.
"""

from __future__ import annotations

import html
import os
import re
import secrets
import sys
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from actions_toolkit import core

from entrypoint.errors import ActionError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence


def on_runner() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


# Per process: a build cannot see it, so it cannot end the block early.
_STOP_TOKEN = secrets.token_hex(16)
_stopped = False
# One writer at a time: while one of our commands has resumed command processing, no relayed
# line of another thread (a build of another image) may reach the runner.
_out = threading.RLock()


@dataclass
class ImageLog:
    """What one image's work printed, kept for one folded group per image: builds of several
    images run at once, and their lines would otherwise interleave."""

    name: str
    lines: list[str] = field(default_factory=list)


_image_log: ContextVar[ImageLog | None] = ContextVar("image_log", default=None)


@dataclass(frozen=True)
class Stage:
    """One stage as it ran, for the job summary's timeline."""

    name: str
    image: str  # the image whose log it is in; "" for the run's own stages
    started: float  # seconds since the epoch
    seconds: float
    ok: bool


_stages: list[Stage] = []
_stages_lock = threading.Lock()


def stages() -> tuple[Stage, ...]:
    """Every stage ended so far in this process, in the order they started."""
    with _stages_lock:
        return tuple(sorted(_stages, key=lambda stage: stage.started))


@contextmanager
def image_log(name: str) -> Iterator[ImageLog]:
    """Collect this thread's output for the image `name`; stage lines still show live."""
    log = ImageLog(name)
    token = _image_log.set(log)
    try:
        yield log
    finally:
        _image_log.reset(token)


def show_image_log(log: ImageLog, title: str) -> None:
    """Print a collected log as one folded group, each line prefixed with the image."""
    with _out, group(title):
        for line in log.lines:
            info(f"[{log.name}] {line}")


@contextmanager
def commands_stopped() -> Iterator[None]:
    """Run the action with the runner's command processing off for everything relayed."""
    global _stopped  # noqa: PLW0603 - one block per process, like the runner's own state
    if not on_runner() or _stopped:
        yield
        return
    sys.stdout.write(f"::stop-commands::{_STOP_TOKEN}\n")
    sys.stdout.flush()
    _stopped = True
    try:
        yield
    finally:
        sys.stdout.flush()
        _stopped = False
        sys.stdout.write(f"::{_STOP_TOKEN}::\n")
        sys.stdout.flush()


@contextmanager
def _command() -> Iterator[None]:
    """Resume command processing for one of our own commands, then stop it again."""
    with _out:
        sys.stdout.flush()
        if _stopped:
            sys.stdout.write(f"::{_STOP_TOKEN}::\n")
        try:
            yield
        finally:
            sys.stdout.flush()
            if _stopped:
                sys.stdout.write(f"::stop-commands::{_STOP_TOKEN}\n")
            sys.stdout.flush()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%H:%M:%S")


def info(message: str) -> None:
    log = _image_log.get()
    if log is not None:
        log.lines.append(message)
        return
    with _out:
        print(message, flush=True)


def _about_image(message: str) -> str:
    """An annotation raised during one image's work names the image. It is shown at once,
    not kept for the image's group: the runner lists it with the job either way."""
    log = _image_log.get()
    return message if log is None else f"{log.name}: {message}"


def mask(secret: str) -> None:
    """Register a secret with the runner at once, before anything could print it.

    Outside a runner `::add-mask::` would itself print the secret, so nothing is written.
    """
    if secret and on_runner():
        with _command():
            core.set_secret(secret)


def warning(message: str) -> None:
    message = _about_image(message)
    if on_runner():
        with _command():
            core.warning(message)
    else:
        with _out:
            print(f"warning: {message}", file=sys.stderr, flush=True)


def notice(message: str) -> None:
    message = _about_image(message)
    if on_runner():
        with _command():
            core.notice(message)
    else:
        with _out:
            print(f"note: {message}", flush=True)


def error(message: str) -> None:
    if on_runner():
        with _command():
            core.error(message)
    else:
        sys.stdout.flush()
        print(f"error: {message}", file=sys.stderr, flush=True)


@contextmanager
def group(title: str) -> Iterator[None]:
    """Fold long output (build logs, push progress) on a runner. Within an image's log
    (itself one group: the runner does not nest them) a heading line instead."""
    if _image_log.get() is not None:
        info(f"── {title}")
        yield
    elif on_runner():
        with _command():
            core.start_group(title)
        try:
            yield
        finally:
            with _command():
                core.end_group()
    else:
        yield


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A timestamped start line and, on the way out, the stage's duration. Within an image's
    log the start line also shows at once, so a long build of several is seen to progress."""
    log = _image_log.get()
    if log is not None:
        with _out:
            print(f"[{_now()}] [{log.name}] ▶ {name}", flush=True)
    info(f"[{_now()}] ▶ {name}")
    started, wall = time.monotonic(), time.time()
    ok = False
    try:
        yield
        ok = True
    finally:
        took = time.monotonic() - started
        info(f"[{_now()}] {'✔' if ok else '✘'} {name} ({took:.1f} s)")
        with _stages_lock:
            _stages.append(Stage(name, log.name if log is not None else "", wall, took, ok))


def set_outputs(outputs: Mapping[str, str]) -> None:
    """Write step outputs to GITHUB_OUTPUT, or print them for a terminal user.

    Multi-line values use the same `name<<DELIMITER` form the runner reads, so the
    printed block can be pasted into a GITHUB_OUTPUT file as it is.
    """
    path = os.environ.get("GITHUB_OUTPUT")
    if path:
        _require_runner_file("GITHUB_OUTPUT", path)
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
        _require_runner_file("GITHUB_STEP_SUMMARY", path)
        with Path(path).open("a", encoding="utf-8") as summary:
            summary.write(markdown.rstrip("\n") + "\n")


def check_runner_files() -> None:
    """Before any side effect: the files the outputs and summary go to must be writable, so
    a run does not push an image and then fail to say where it is."""
    for variable in ("GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        path = os.environ.get(variable)
        if path:
            _require_runner_file(variable, path)


def _require_runner_file(variable: str, path: str) -> None:
    """The runner creates these files for each step; one that is missing or not writable is
    a broken runner or a variable set by hand, and deserves one line, not a traceback."""
    target = Path(path)
    if not target.is_file() or not os.access(target, os.W_OK):
        raise ActionError(
            f"{variable} names {path}, which is {'not writable' if target.is_file() else 'not a file'}",
            f"leave {variable} to the runner (it creates the file for each step), or unset it "
            "outside GitHub Actions to have the values printed",
        )


# The Markdown and HTML that could break out of a cell: as numeric character references
# these render as themselves and start no code span, link, image, tag or table cell.
# (Underscores stay: intraword they emphasise nothing, and addresses are full of them.)
_MARKDOWN_ACTIVE = re.compile(r"[\\`*\[\]<>|!&]")


def markdown_text(value: str) -> str:
    """Text from anywhere (registry messages, plan addresses) as inert Markdown."""
    text = _MARKDOWN_ACTIVE.sub(lambda m: f"&#{ord(m.group())};", value)
    # Control characters would end the line or table row; show them instead.
    text = "".join(ch if ch.isprintable() or ch == "\n" else f"&#{ord(ch)};" for ch in text)
    return text.replace("\n", "<br>")


def markdown_code(value: str) -> str:
    """A value shown as code: an HTML code element, since a code span ends at any backtick."""
    return f"<code>{markdown_text(value)}</code>" if value else ""


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table whose cells are already Markdown (made with markdown_text/markdown_code)."""
    lines = ["| " + " | ".join(html.escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
