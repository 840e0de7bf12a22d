"""The build context as BuildKit sees it: which paths the ignore file lets through (docker-py's
own `.dockerignore` rules, matched case-sensitively as the CLI and BuildKit do), and which of
them a Dockerfile's sources reach (COPY's wildcard matching and symlink following, inside
the context). Reading the files' bytes is the fingerprint's business.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from docker.utils.build import Pattern, PatternMatcher, normalize_slashes
from docker.utils.fnmatch import translate

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from entrypoint.build.dockerfile import Source

_WILDCARD = re.compile(r"[*?\[]")  # fsutil's containsWildcards (backslashes are refused earlier)
_MAX_LINKS = 255  # symlinks followed for one source before calling it a loop


class SymlinkLoop(Exception):
    pass


class _Pattern(Pattern):  # type: ignore[misc]  # docker-py has no type hints
    """docker-py's pattern, matched case-sensitively.

    docker-py's bundled `fnmatch` lower-cases name and pattern, but the docker CLI and
    BuildKit match case-sensitively on Linux: with docker-py's rules, `build` in
    .dockerignore would also drop `Build/`, which docker sends, and a change there would
    go unnoticed. Everything else (normalisation, `**`, exceptions) is docker-py's.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self._regex = re.compile(translate(self.cleaned_pattern))

    def match(self, filepath: str) -> bool:
        return self._regex.match(filepath) is not None


class _Matcher(PatternMatcher):  # type: ignore[misc]
    def __init__(self, patterns: Iterable[str]) -> None:
        # As PatternMatcher.__init__, with the case-sensitive pattern; docker always sends
        # the ignore file itself.
        self.patterns = [p for p in map(_Pattern, patterns) if p.dirs]
        self.patterns.append(_Pattern("!.dockerignore"))

    def walk_under(self, root: str, start: str) -> Iterator[str]:
        """What `walk(root)` yields at or under `start`, a relative path whose folders are
        real directories, without walking the rest of the tree."""
        parts = start.split("/")  # paths here use "/": the action runs on Linux only
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            full = f"{root}/{folder}"
            if not self._enters(folder, self.matches(folder), is_dir=_is_real_dir(full)):
                return
        full = f"{root}/{start}"
        if not os.path.lexists(full):
            return
        match = self.matches(start)
        if not match:
            yield start
        if self._enters(start, match, is_dir=_is_real_dir(full)):
            yield from self._walk_from(root, start)

    def _walk_from(self, root: str, current: str) -> Iterator[str]:
        # PatternMatcher.walk's rec_walk, from a folder of the caller's choice.
        with os.scandir(f"{root}/{current}") as listing:
            entries = [(entry.name, entry.is_dir() and not entry.is_symlink()) for entry in listing]
        for name, is_dir in entries:
            fpath = f"{current}/{name}"
            match = self.matches(fpath)
            if not match:
                yield fpath
            if self._enters(fpath, match, is_dir=is_dir):
                yield from self._walk_from(root, fpath)

    def _enters(self, fpath: str, match: bool, *, is_dir: bool) -> bool:
        # rec_walk descends into real directories (not symlinks to one), and into ignored
        # ones only when an exception pattern starts with their path.
        return is_dir and (
            not match
            or any(
                p.exclusion and p.cleaned_pattern.startswith(normalize_slashes(fpath)) for p in self.patterns
            )
        )


def _is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def ignore_file(context: Path, dockerfile: Path) -> Path | None:
    """The ignore file BuildKit applies: `<Dockerfile>.dockerignore` beside the Dockerfile
    if there is one (it replaces the context's), else the context's `.dockerignore`."""
    for candidate in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            return candidate
    return None


def ignore_patterns(path: Path) -> list[str]:
    """The patterns of an ignore file, read as BuildKit reads them (a `#` in the first
    column starts a comment, blank lines are skipped, the rest is trimmed)."""
    text = path.read_bytes().decode("utf-8", "replace").removeprefix("\ufeff")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def included_paths(context: Path, dockerfile: Path) -> set[str]:
    """Relative paths (files and directories) of the context that docker sends."""
    return _with_folders(set(_matcher(context, dockerfile).walk(str(context))))


def included_paths_under(context: Path, dockerfile: Path, roots: Iterable[str]) -> set[str]:
    """The paths of `included_paths` at or under one of `roots` (relative paths with real
    directories on the way), with their folders; walks only those subtrees."""
    matcher = _matcher(context, dockerfile)
    paths: set[str] = set()
    kept: list[str] = []
    for root in sorted(set(roots)):  # a folder sorts before what is under it
        if not any(root.startswith(f"{other}/") for other in kept):
            kept.append(root)
            paths.update(matcher.walk_under(str(context), root))
    return _with_folders(paths)


def _matcher(context: Path, dockerfile: Path) -> _Matcher:
    ignore = ignore_file(context, dockerfile)
    patterns = ignore_patterns(ignore) if ignore else []
    try:
        relative = dockerfile.resolve().relative_to(context.resolve()).as_posix()
    except ValueError:
        # Outside the context, the Dockerfile is sent on its own, under another name.
        relative = ".dockerfile-outside-context"
    # docker.utils.build.exclude_paths, reading as docker always sends the Dockerfile, but
    # with the case-sensitive matcher. (exclude_paths also appends to the caller's list.)
    return _Matcher([*patterns, f"!{relative}"])


def _with_folders(paths: set[str]) -> set[str]:
    # A file let through from an ignored folder (`*` then `!src/app.py`) brings its
    # folders along; docker-py leaves them out of the list.
    for path in list(paths):
        parent = path.rpartition(os.sep)[0]
        while parent and parent not in paths:
            paths.add(parent)
            parent = parent.rpartition(os.sep)[0]
    return paths


def referenced_roots(context: Path, sources: Sequence[Source]) -> tuple[set[str], str | None]:
    """The context paths the sources reach, each standing for itself and all under it, or
    why the whole context counts. A wildcard source is matched as BuildKit's copy matches
    it (fsutil's ResolveWildcards: Go's filepath.Match against paths under the part before
    the first wildcard); a symlink on the way or matched is followed inside the context
    (absolute targets start at its root) and counts too, as COPY follows it."""
    root = str(context)
    roots: set[str] = set()
    for source in sources:
        label = source.label
        parts = source.path.split("/")
        # `**` is `*` to filepath.Match, but COPY --parents treats it as any depth: take
        # the folder it starts in whole, which covers both.
        deep = next((i for i, part in enumerate(parts) if "**" in part), None)
        if deep is not None and not source.literal:
            if deep == 0:
                return roots, f"{label} may match any path"
            parts = parts[:deep]
        first = next((i for i, part in enumerate(parts) if _WILDCARD.search(part)), len(parts))
        if source.literal:
            first = len(parts)
        links: set[str] = set()
        try:
            base = _resolve(root, parts[:first], links)
            if first == len(parts):
                found = [base]
            else:
                rest = "/".join(parts[first:])
                regex = _go_pattern(rest)
                if regex is None:
                    return roots, f"{label}: not a valid pattern"
                found = [
                    _resolve(root, [*filter(None, base.split("/")), *match.split("/")], links)
                    for match in _glob(root, base, rest, regex)
                ]
        except SymlinkLoop:
            return roots, f"{label}: too many symlinks"
        if "" in found:
            return roots, f"{label} leads to the context root through a symlink"
        roots.update(found)
        roots.update(links)
    return roots, None


def _resolve(root: str, parts: Sequence[str], links: set[str]) -> str:
    """The path `parts` leads to, each symlink on the way followed as continuity's RootPath
    does (an absolute target starts at the context root, `..` stops there); the symlinks
    passed are added to `links`. A missing part ends the resolution: what follows is kept."""
    pending = list(reversed(parts))
    current: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = "/".join([*current, part])
        full = f"{root}/{candidate}"
        try:
            info = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            current.append(part)
            continue
        if not stat.S_ISLNK(info.st_mode):
            current.append(part)
            continue
        hops += 1
        if hops > _MAX_LINKS:
            raise SymlinkLoop(candidate)
        links.add(candidate)
        target = str(Path(full).readlink())
        if target.startswith("/"):
            current = []
        pending.extend(reversed(target.split("/")))
    return "/".join(current)


def _glob(root: str, base: str, pattern: str, regex: re.Pattern[str]) -> Iterator[str]:
    """Paths under `base` (relative to it) that `regex` matches, without descending into a
    match or into a symlink, as filepath.Walk in fsutil's resolveWildcards. `*` and `?` stop
    at `/` and a bracket class matches at most one, so nothing deeper can match."""
    depth_limit = pattern.count("/") + pattern.count("[") + 1

    def walk(folder: str, depth: int) -> Iterator[str]:
        try:
            with os.scandir(f"{root}/{base}/{folder}") as entries:
                listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            # Missing: nothing matches. Unreadable: docker cannot send it either, so the
            # ignore file drops it or the build fails before anything is published.
            return
        for name, is_dir in listed:
            path = f"{folder}/{name}" if folder else name
            if regex.fullmatch(path):
                yield path
            elif is_dir and depth < depth_limit:
                yield from walk(path, depth + 1)

    yield from walk("", 1)


def _go_pattern(pattern: str) -> re.Pattern[str] | None:
    """Go's filepath.Match as a regex (without backslash escapes): `*` and `?` do not match
    `/`, a bracket class (negated by `^`) may. None for a pattern Go rejects as malformed."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char != "[":
            out.append(re.escape(char))
        else:
            found = _bracket_class(pattern, index)
            if found is None:
                return None
            regex, index = found
            out.append(regex)
    return re.compile("".join(out), re.DOTALL)


def _bracket_class(pattern: str, index: int) -> tuple[str, int] | None:
    """The class that starts after a `[` at `index`, as a regex, and where it ends."""
    size = len(pattern)
    negated = index < size and pattern[index] == "^"
    if negated:
        index += 1
    ranges: list[str] = []
    count = 0
    while not (index < size and pattern[index] == "]" and count):
        # Go's getEsc: a bound may not be `-` or `]`, and the class must go on after it.
        if index >= size or pattern[index] in "-]" or index + 1 >= size:
            return None
        low = high = pattern[index]
        index += 1
        if pattern[index] == "-":
            if index + 1 >= size or pattern[index + 1] in "-]" or index + 2 >= size:
                return None
            high = pattern[index + 1]
            index += 2
        count += 1
        if low <= high:
            ranges.append(re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}")
    index += 1  # the closing `]`
    if ranges:
        return f"[{'^' if negated else ''}{''.join(ranges)}]", index
    return (r"[\s\S]" if negated else "(?!)"), index
