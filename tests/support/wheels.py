"""The wheels a lock file names, as the package index serves them, fetched once with pip."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.support.stack import STACK_DIR

if TYPE_CHECKING:
    from pathlib import Path


def locked_wheels(lock: Path) -> dict[str, bytes]:
    """{file name: bytes} of every wheel `lock` needs on this machine (pip picks them, hashes
    checked), kept under .stack/ by the lock's own sha256 so a run fetches them once."""
    folder = STACK_DIR / "wheels" / f"{lock.stem}-{hashlib.sha256(lock.read_bytes()).hexdigest()[:16]}"
    done = folder / ".complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--only-binary", ":all:", "--require-hashes", "-r", str(lock), "-d", str(folder)],
            check=True, timeout=600,
        )  # fmt: skip
        done.touch()
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.whl"))}
