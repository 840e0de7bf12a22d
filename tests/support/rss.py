"""Run a command and write its peak resident memory to a file, in kB:

    python -m tests.support.rss OUT -- CMD [ARG ...]

The command is this process's only child, so the kernel's figure for this process's
children is the command's own peak (and that of anything it waited for).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    out, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: python -m tests.support.rss OUT -- CMD [ARG ...]")
    code = subprocess.call(command)
    Path(out).write_text(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
