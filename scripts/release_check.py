"""`python scripts/release_check.py vX.Y.Z`: may this tag be released?

The tag must be vMAJOR.MINOR.PATCH, equal pyproject.toml's version, and have a section in
CHANGELOG.md; prints the section (the release notes) on success, one error line otherwise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
TAG_RE = re.compile(r"v(\d+)\.(\d+)\.(\d+)")


def release_notes(tag: str, root: Path = ROOT) -> str:
    """The CHANGELOG section of `tag`; ValueError naming what is wrong."""
    if not TAG_RE.fullmatch(tag):
        raise ValueError(f"tag '{tag}' is not vMAJOR.MINOR.PATCH")
    version = tag[1:]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    if declared != version:
        raise ValueError(
            f"tag {tag} but pyproject.toml says version {declared}: bump it in the release commit"
        )
    changelog = (root / "CHANGELOG.md").read_text()
    match = re.search(rf"^## \[{re.escape(version)}\][^\n]*\n(.*?)(?=^## \[|\Z)", changelog, re.M | re.S)
    if not match or not match.group(1).strip():
        raise ValueError(f"CHANGELOG.md has no section '## [{version}]' with notes")
    return match.group(1).strip() + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/release_check.py vX.Y.Z", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(release_notes(argv[0]))
    except ValueError as exc:
        print(f"::error::{exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
