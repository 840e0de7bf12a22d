"""Cancellation as an exception, so that every `with` and `finally` on the way out runs.

A runner cancels a step with SIGINT, then SIGTERM after a grace period, then SIGKILL; a
CI system or a terminal sends one of the first two. Python's default would end the
process at once on SIGTERM, leaving the private Docker config with the ECR token on disk,
the smoke container running and half-moved tags. Here the first signal raises `Cancelled`
where the action happens to be; later signals are ignored so that the clean-up it set off
can finish before the SIGKILL.

Work running in other threads (builds of several images at once) cannot receive the
exception: the signal also sets `requested()` and runs the registered stoppers (a build's
CLI is told to stop), and those threads end with `Cancelled` themselves.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING

from entrypoint.errors import ActionError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import FrameType

# The shell's convention: 128 + the signal number.
_EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Cancelled(ActionError):
    """The job was cancelled (SIGINT or SIGTERM) while the action ran."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"cancelled by {name}; the build was stopped, temporary credentials and "
            "containers removed, and no environment tag moved",
            "rerun the job when it should publish",
        )
        self.exit_code = _EXIT_CODES.get(signal.Signals(signum), 128 + signum)


_signum: list[int] = []
_stoppers: dict[int, Callable[[], None]] = {}
# Re-entrant: the handler runs on the main thread, which may be holding it.
_lock = threading.RLock()


def requested() -> bool:
    return bool(_signum)


def raise_if_requested() -> None:
    """In a worker thread: end with `Cancelled` once the job has been cancelled."""
    if _signum:
        raise Cancelled(_signum[0])


@contextlib.contextmanager
def stopper(stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, a cancel calls `stop` (from the main thread, at once)."""
    with _lock:
        key = id(stop)
        _stoppers[key] = stop
    try:
        yield
    finally:
        with _lock:
            _stoppers.pop(key, None)


def _raise(signum: int, _frame: FrameType | None) -> None:
    for handled in _EXIT_CODES:
        signal.signal(handled, signal.SIG_IGN)
    _signum.append(signum)
    with _lock:
        stops = list(_stoppers.values())
    for stop in stops:
        with contextlib.suppress(Exception):
            stop()
    raise Cancelled(signum)


def install() -> None:
    """Turn SIGINT and SIGTERM into `Cancelled` (main thread only, as Python requires)."""
    for signum in _EXIT_CODES:
        signal.signal(signum, _raise)
