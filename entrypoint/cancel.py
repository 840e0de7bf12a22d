"""Cancellation as an exception, so that every `with` and `finally` on the way out runs.

A runner cancels a step with SIGINT, then SIGTERM after a grace period, then SIGKILL; a
CI system or a terminal sends one of the first two. Python's default would end the
process at once on SIGTERM, leaving the private Docker config with the ECR token on disk,
the smoke container running and half-moved tags. Here the first signal raises `Cancelled`
where the action happens to be; later signals are ignored so that the clean-up it set off
can finish before the SIGKILL.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

from entrypoint.errors import ActionError

if TYPE_CHECKING:
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


def _raise(signum: int, _frame: FrameType | None) -> None:
    for handled in _EXIT_CODES:
        signal.signal(handled, signal.SIG_IGN)
    raise Cancelled(signum)


def install() -> None:
    """Turn SIGINT and SIGTERM into `Cancelled` (main thread only, as Python requires)."""
    for signum in _EXIT_CODES:
        signal.signal(signum, _raise)
