"""BuildKit's plain progress log, read as it streams: its numbered steps, their output and
status, and, when the build fails, the one line that names the failing step and the fix.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from entrypoint import github
from entrypoint.errors import BuildError

if TYPE_CHECKING:
    from pathlib import Path


@dataclass
class StepLog:
    name: str
    marked_cached: bool = False  # BuildKit printed CACHED
    imported: bool = False  # layers were fetched or unpacked for it: a result from the cache
    ran: bool = False  # its process printed output
    error: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def cached(self) -> bool:
        """Whether the step's result came from a cache. On the containerd image store a step
        found in an imported cache is not marked CACHED: BuildKit fetches and unpacks its
        layers under the step's own number (`#13 sha256:… done`, `#13 extracting sha256:…`)
        and runs nothing. A FROM fetches layers too, and is no cache hit."""
        if self.marked_cached:
            return True
        return self.imported and not self.ran and not self.error and " FROM " not in f" {self.name}"


_HEADER = re.compile(r"^#(\d+) (?!\d+\.\d+ )(?!DONE\b)(?!CACHED\b)(?!ERROR\b)(.+)$")
_OUTPUT = re.compile(r"^#(\d+) \d+\.\d+ (.*)$")
_STATUS = re.compile(r"^#(\d+) (CACHED|ERROR:?)\s*(.*)$")
# A layer fetched or unpacked for a step: `#13 sha256:7e91… 12.90MB / 12.90MB 0.2s done`,
# `#13 extracting sha256:7e91…`, `#13 pulling sha256:7e91…` (the classic store's wording).
_LAYER = re.compile(r"^#(\d+) (?:extracting |pulling )?sha256:[0-9a-f]{12,}\b")


class LogReader:
    """Follows BuildKit's plain progress: numbered vertices, their output and status."""

    def __init__(self) -> None:
        self.steps: dict[str, StepLog] = {}
        self.failed: StepLog | None = None
        self.tail: deque[str] = deque(maxlen=20)

    def feed(self, line: str) -> None:
        self.tail.append(line)
        status = _STATUS.match(line)
        if status:
            step = self.steps.setdefault(status.group(1), StepLog(name=f"#{status.group(1)}"))
            if status.group(2) == "CACHED":
                step.marked_cached = True
            else:
                step.error = status.group(3)
                self.failed = self.failed or step
            return
        output = _OUTPUT.match(line)
        if output:
            step = self.steps.setdefault(output.group(1), StepLog(name=f"#{output.group(1)}"))
            step.ran = True
            step.tail.append(output.group(2))
            return
        layer = _LAYER.match(line)
        if layer:
            self.steps.setdefault(layer.group(1), StepLog(name=f"#{layer.group(1)}")).imported = True
            return
        header = _HEADER.match(line)
        if header and header.group(1) not in self.steps:
            self.steps[header.group(1)] = StepLog(name=header.group(2).strip())


def build_failure(reader: LogReader, dockerfile: Path, context: Path) -> BuildError:
    reproduce = f"docker build -f {dockerfile} {context}"
    failed = reader.failed
    if failed and failed.name.startswith("["):
        github.info(f"Last lines of the failed step {failed.name}:")
        for line in failed.tail or ["(the step printed nothing)"]:
            github.info(f"  | {line}")
        return BuildError(
            f"the image build failed at step {failed.name}: {failed.error or 'see the log'}",
            f"fix that Dockerfile step (its last output lines are above); reproduce with `{reproduce}`",
        )
    final = next(
        (line for line in reversed(reader.tail) if re.match(r"^(ERROR|error)\b|failed to solve", line)),
        failed.error if failed else (reader.tail[-1] if reader.tail else "no output"),
    )
    if failed:
        github.info(f"Last lines of {failed.name}:")
        for line in failed.tail:
            github.info(f"  | {line}")
    return BuildError(
        f"the image build failed: {final.removeprefix('ERROR: ').removeprefix('error: ')}",
        f"fix the Dockerfile or the build context as the message says; reproduce with `{reproduce}`",
    )
