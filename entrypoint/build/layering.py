"""A hint for Dockerfiles whose layer order defeats the cache: the whole build context copied
before the dependency install means every code change reinstalls every dependency, on every
fresh runner, whatever cache mode is chosen.

Read with the fingerprint's Dockerfile reader (one reader for the whole action), per stage.
"""

from __future__ import annotations

import re

from entrypoint.build.dockerfile import instructions as dockerfile_instructions

# Dependency installs, and the files that decide what they install.
_INSTALLS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bpip3?\s+install\b.*?(?:-r|--requirement)[=\s]+(\S+)"), "{0}"),
    (re.compile(r"\buv\s+pip\s+install\b.*?(?:-r|--requirement)[=\s]+(\S+)"), "{0}"),
    (re.compile(r"\b(?:pip3?|uv\s+pip)\s+install\b.*\s\.(?:\s|$|\[)"), "pyproject.toml"),
    (
        re.compile(r"\b(?:poetry\s+install|uv\s+sync|pdm\s+install|pipenv\s+install)\b"),
        "pyproject.toml and its lock file",
    ),
    (re.compile(r"\bnpm\s+(?:ci|install|i)\b"), "package.json package-lock.json"),
    (re.compile(r"\byarn(?:\s+install)?\b"), "package.json yarn.lock"),
    (re.compile(r"\bpnpm\s+install\b"), "package.json pnpm-lock.yaml"),
    (re.compile(r"\bgo\s+mod\s+download\b"), "go.mod go.sum"),
    (re.compile(r"\bbundle\s+install\b"), "Gemfile Gemfile.lock"),
    (re.compile(r"\bcomposer\s+install\b"), "composer.json composer.lock"),
)


def cache_hostile_hint(text: str) -> str | None:
    """The reordering to suggest, or None when the install comes before the code."""
    copied: str | None = None
    for keyword, rest in dockerfile_instructions(text):
        if keyword == "FROM":
            copied = None
        elif keyword in ("COPY", "ADD") and copied is None and _copies_whole_context(rest):
            copied = f"{keyword} {rest}"
        elif keyword == "RUN" and copied is not None:
            manifest = _manifest(rest)
            if manifest:
                install = rest if len(rest) <= 120 else rest[:117] + "..."
                return (
                    f"the Dockerfile copies the whole build context ({copied}) before installing "
                    f"dependencies (RUN {install}): every code change reinstalls all of them, on every "
                    f"fresh runner, whatever the cache. Copy the dependency files first:\n"
                    f"  COPY {manifest} ./\n  RUN {install}\n  {copied}"
                )
    return None


def _copies_whole_context(rest: str) -> bool:
    words = [w for w in rest.split() if not w.startswith("--")]
    if any(w.startswith("--from") for w in rest.split()) or len(words) < 2:
        return False
    # ".", "./" and "/" all name the context's root.
    return any(source.rstrip("/") in ("", ".") for source in words[:-1])


def _manifest(command: str) -> str | None:
    for pattern, files in _INSTALLS:
        match = pattern.search(command)
        if match:
            return files.format(*match.groups()) if match.groups() else files
    return None
