"""A fingerprint of everything that decides the image, computed before building.

Two runs with the same fingerprint would build the same image, so the second can reuse
the first one's (published under `Fingerprint.tag`). The fingerprint covers:

* a scheme version, bumped whenever what goes in here changes;
* the target platform and the build arguments (last value per key, as the CLI applies them);
* the Dockerfile's bytes;
* the paths of the build context the build can read, among those the ignore file lets
  through (docker-py's own `.dockerignore` implementation decides): type, permission bits,
  size and sha256 of regular files, symlink targets, directories (an empty directory still
  lands in the image). BuildKit reads only what `COPY`/`ADD` (without `--from`) and
  `RUN --mount=type=bind` (without `from=`) name, so only those paths count, matched as
  BuildKit's copy matches them; a file nothing names (say under `.git/`) cannot change the
  image. When a source is the context root (`COPY . .`), cannot be known from the
  Dockerfile (a variable that only the base image might set), or the frontend is not
  Docker's, every path counts, as before. `Fingerprint.scope` says which applied;
* the identity of each external image the Dockerfile reads (`FROM`, `COPY --from`,
  `RUN --mount=from=`, the `# syntax=` frontend), asked of a resolver callback, so a new
  base image under the same tag changes the fingerprint.

Left out on purpose: modification times (a fresh checkout sets them all to "now", and
BuildKit's own cache keys ignore them too), owners (COPY writes 0:0 unless --chown says
otherwise), and whatever a `RUN` step downloads — that is the Dockerfile's business to pin.

Not seen: `ONBUILD` triggers of a base image (the resolver gives its identity, not its
config). Builds on a base whose triggers copy context files (the retired `*-onbuild`
images) need `force-build: true`.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import stat
from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
import requests
from docker.utils.build import Pattern, PatternMatcher, normalize_slashes
from docker.utils.fnmatch import translate

from entrypoint.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from docker import DockerClient

# Bump when the fingerprint's inputs or their encoding change, so old `src-` tags stop matching.
SCHEME = "lambda-image-publish/fingerprint/v3"
TAG_PREFIX = "src-"
# 160 bits: no accidental collision in any repository's lifetime, and a tag that fits a
# console column. Tags may be 128 characters, so the full 64 would fit too.
TAG_HEX_CHARS = 40
_CHUNK = 1 << 20
_SCRATCH = "scratch"
SCOPE_REFERENCED = "referenced paths"
SCOPE_WHOLE = "whole context"


@dataclass(frozen=True)
class Fingerprint:
    value: str  # sha256 hex
    files: int  # regular files hashed from the build context
    bytes: int  # their total size
    bases: tuple[tuple[str, str], ...]  # (image reference, identity); identity "" if unresolved
    warnings: tuple[str, ...]
    # Which context paths were hashed: SCOPE_REFERENCED, or SCOPE_WHOLE with the reason in
    # parentheses ("whole context (COPY . /var/task reads the context root)").
    scope: str

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self.value[:TAG_HEX_CHARS]}"


def compute_fingerprint(
    dockerfile: Path,
    context: Path,
    build_args: Sequence[tuple[str, str]],
    platform: str,
    resolve: Callable[[str], str | None],
    *,
    secret_ids: Sequence[str] = (),
) -> Fingerprint:
    dockerfile_bytes = _read_dockerfile(dockerfile)
    args = dict(build_args)  # repeated keys: the last one wins, as in `build_environment`
    text = _decode(dockerfile_bytes)
    refs, warnings = _external_images(text, args, platform)

    digest = hashlib.sha256()
    _record(digest, "scheme", SCHEME)
    _record(digest, "platform", platform)
    _record(digest, "args", *sorted(args), _stretched(args))
    for secret_id in sorted(secret_ids):
        # The id only: a secret's value must not shape a public tag, and by BuildKit's
        # contract it leaves no trace in the image.
        _record(digest, "secret", secret_id)
    _record(digest, "dockerfile", dockerfile_bytes)

    bases: list[tuple[str, str]] = []
    for ref in refs:
        identity = resolve(ref)
        if identity is None:
            warnings.append(
                f"cannot find base image {ref} in its registry or in the engine: the fingerprint "
                "holds its name only, so an update of that image will not trigger a rebuild"
            )
        _record(digest, "base", ref, identity or "")
        bases.append((ref, identity or ""))

    scope, paths = _hashed_paths(context, dockerfile, text, args, platform)
    # The mode, not the reason's wording: the same paths hashed in either mode differ.
    _record(digest, "scope", SCOPE_WHOLE if scope.startswith(SCOPE_WHOLE) else SCOPE_REFERENCED)
    files = total = 0
    for entry in _context_entries(context, paths):
        _record(digest, *entry.fields)
        if entry.kind == "f":
            files += 1
            total += entry.size
    return Fingerprint(
        value=digest.hexdigest(),
        files=files,
        bytes=total,
        bases=tuple(bases),
        warnings=tuple(warnings),
        scope=scope,
    )


def _stretched(args: Mapping[str, str]) -> bytes:
    """The build args' values as they enter the fingerprint: through scrypt, because the
    fingerprint is a public tag and a short value (a PIN, a word someone mistook for a build
    arg rather than a secret) would otherwise be one sha256 guess away. A guess now costs
    about 40 ms and 16 MiB, and one call covers them all, so the publish pays that once.
    Values that must stay secret belong in `secrets`."""
    if not args:
        return b""
    values = json.dumps(sorted(args.items())).encode()
    return hashlib.scrypt(
        values, salt=f"{SCHEME}/args".encode(), n=1 << 14, r=8, p=1, maxmem=64 << 20, dklen=32
    )


def hashed_paths(
    dockerfile: Path, context: Path, build_args: Sequence[tuple[str, str]], platform: str
) -> tuple[str, set[str]]:
    """The fingerprint's scope and the relative context paths it hashes."""
    text = _decode(_read_dockerfile(dockerfile))
    return _hashed_paths(context, dockerfile, text, dict(build_args), platform)


def _read_dockerfile(dockerfile: Path) -> bytes:
    try:
        return dockerfile.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the Dockerfile {dockerfile}: {exc.strerror or exc}",
            "check the 'dockerfile' input and the file's permissions",
        ) from exc


def resolve_with_engine(client: DockerClient) -> Callable[[str], str | None]:
    """A resolver asking the Docker engine: the registry's manifest digest first, else the
    local image ID. For the registry, the engine uses the credentials docker-py sends: those
    of the docker CLI config (DOCKER_CONFIG) as it was when `client` was made.

    The registry digest is what a fresh runner's build pulls. A builder with the `docker`
    driver would use a local image of that name instead, without pulling; the digest still
    moves when the registry's image does, which is the update worth rebuilding for.
    """
    known: dict[str, str | None] = {}

    def resolve(ref: str) -> str | None:
        if ref not in known:
            known[ref] = _identity(client, ref)
        return known[ref]

    return resolve


def _identity(client: DockerClient, ref: str) -> str | None:
    # A digest-pinned reference is its own identity: no need to ask anyone.
    pinned = re.search(r"@(sha256:[0-9a-f]{64})$", ref)
    if pinned:
        return pinned.group(1)
    try:
        found = client.api.inspect_distribution(ref)
        digest = (found.get("Descriptor") or {}).get("digest")
        if digest:
            return str(digest)
    except (docker.errors.DockerException, requests.RequestException):
        pass  # no registry, no credentials, or no such image there: try the engine's own
    try:
        image_id = client.api.inspect_image(ref).get("Id")
    except (docker.errors.DockerException, requests.RequestException):
        return None
    return str(image_id) if image_id else None


def _record(digest: hashlib._Hash, *fields: str | bytes | int) -> None:
    # Length-prefixed fields: no separator inside a path or a build arg can make two
    # different inputs hash the same stream.
    for value in fields:
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        digest.update(b"%d:" % len(data))
        digest.update(data)
    digest.update(b";")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace").removeprefix("\ufeff")


# --------------------------------------------------------------------------- context


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


@dataclass(frozen=True)
class _Entry:
    path: str
    kind: str  # f file, d directory, l symlink, p fifo, c/b device, s socket
    mode: int = 0
    size: int = 0
    sha256: str = ""
    target: str = ""

    @property
    def fields(self) -> tuple[str | int, ...]:
        if self.kind == "f":
            return (self.kind, self.path, self.mode, self.size, self.sha256)
        if self.kind == "l":
            # A symlink's own permission bits mean nothing on Linux and differ on macOS.
            return (self.kind, self.path, self.target)
        return (self.kind, self.path, self.mode)


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
    text = _decode(path.read_bytes())
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


def _hashed_paths(
    context: Path, dockerfile: Path, text: str, build_args: Mapping[str, str], platform: str
) -> tuple[str, set[str]]:
    """The scope and the paths to hash: the sent paths the Dockerfile's sources reach, or
    all sent paths when a source may be anything."""
    try:
        sources, reason = _context_sources(text, build_args, platform)
        if reason is None:
            roots, reason = _referenced_roots(context, sources)
        if reason is not None:
            return f"{SCOPE_WHOLE} ({reason})", included_paths(context, dockerfile)
        return SCOPE_REFERENCED, included_paths_under(context, dockerfile, roots)
    except OSError as exc:
        raise _unreadable(context, exc) from exc


def _context_entries(context: Path, paths: Iterable[str]) -> Iterator[_Entry]:
    try:
        for path in sorted(paths):
            yield _entry(context, path)
    except OSError as exc:
        raise _unreadable(context, exc) from exc


def _unreadable(context: Path, exc: OSError) -> InputError:
    where = exc.filename or context
    return InputError(
        f"cannot read {where} in the build context {context}: {exc.strerror or exc}",
        "make it readable by the runner's user, or list it in .dockerignore",
    )


def _entry(context: Path, path: str) -> _Entry:
    full = f"{context}{os.sep}{path}"  # plain strings: this runs once per context file
    info = os.lstat(full)
    posix = Path(path).as_posix()
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISREG(info.st_mode):
        return _Entry(posix, "f", mode, info.st_size, _file_sha256(full, info.st_size))
    if stat.S_ISDIR(info.st_mode):
        return _Entry(posix, "d", mode)
    if stat.S_ISLNK(info.st_mode):
        return _Entry(posix, "l", target=str(Path(full).readlink()))
    # FIFOs, devices, sockets: record the kind, never open them (a FIFO would block).
    kind = "p" if stat.S_ISFIFO(info.st_mode) else "s" if stat.S_ISSOCK(info.st_mode) else "c"
    return _Entry(posix, kind, mode)


def _file_sha256(path: str, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:  # noqa: PTH123  # a str path from the walk, hot loop
        if size <= _CHUNK:
            digest.update(handle.read())
        else:
            buffer = bytearray(_CHUNK)
            view = memoryview(buffer)
            while count := handle.readinto(buffer):
                digest.update(view[:count])
    return digest.hexdigest()


# --------------------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class _Instruction:
    keyword: str
    rest: str


_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")
_HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])(.*))?", re.DOTALL)
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) of every instruction, continuations joined, heredoc bodies skipped."""
    return [(i.keyword, i.rest) for i in _parse(text)[1]]


def _parse(text: str) -> tuple[dict[str, str], list[_Instruction]]:
    """Parser directives and instructions, with continuation lines joined, comments and
    heredoc bodies (which may hold anything, even a line starting with FROM) skipped."""
    lines = text.splitlines()
    directives: dict[str, str] = {}
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.match(lines[index])
        if not match or match.group(1).lower() in directives:
            break
        directives[match.group(1).lower()] = match.group(2)
        index += 1
    escape = directives.get("escape", "\\")[:1] or "\\"

    instructions: list[_Instruction] = []
    current = ""
    while index < len(lines):
        line = lines[index]
        index += 1
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and (not stripped or stripped.startswith("#")):
            continue  # comments and blank lines inside a continuation are dropped
        body = line.rstrip()
        if body.endswith(escape):
            current += body[: -len(escape)] + " "
            continue
        current += line
        keyword, _, rest = current.strip().partition(" ")
        keyword = keyword.upper()
        instructions.append(_Instruction(keyword, rest.strip()))
        current = ""
        if keyword in _HEREDOC_INSTRUCTIONS:
            for heredoc in _HEREDOC.finditer(rest):
                word = heredoc.group(2)
                while index < len(lines) and lines[index].lstrip("\t") != word:
                    index += 1
                index += 1
    if current.strip():
        keyword, _, rest = current.strip().partition(" ")
        instructions.append(_Instruction(keyword.upper(), rest.strip()))
    return directives, instructions


def _expand(word: str, scope: Mapping[str, str | None], *, strict: bool = False) -> str | None:
    """Dockerfile variable substitution: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-d}`,
    `${VAR:+alt}`, `${VAR+alt}`. None for forms it does not know (`${VAR#x}`, ...) or a
    `${VAR:?}` that would fail the build: the caller then keeps the unexpanded text.
    `strict`: None also for any variable without a value in `scope`, which inside a stage
    the base image's environment may still set."""
    out: list[str] = []
    i = 0
    while i < len(word):
        char = word[i]
        if char == "\\" and word[i + 1 : i + 2] == "$":
            out.append("$")
            i += 2
            continue
        if char != "$":
            out.append(char)
            i += 1
            continue
        if word[i + 1 : i + 2] == "{":
            end = _closing_brace(word, i + 1)
            if end < 0:
                return None
            match = _BRACED.fullmatch(word[i + 2 : end])
            if not match:
                return None
            value = _substitute(match.group(1), match.group(2), match.group(3), scope, strict)
            if value is None:
                return None
            out.append(value)
            i = end + 1
            continue
        name = _NAME.match(word, i + 1)
        if not name:
            out.append("$")
            i += 1
            continue
        value = scope.get(name.group())
        if value is None and strict:
            return None
        out.append(value or "")
        i = name.end()
    return "".join(out)


def _substitute(
    name: str, op: str | None, alternative: str | None, scope: Mapping[str, str | None], strict: bool
) -> str | None:
    value = scope.get(name)
    if value is None and strict:
        return None
    if op is None:
        return value or ""
    is_set = value is not None
    # With the colon, an empty value counts as unset (POSIX shell rules, as BuildKit's).
    present = bool(value) if op.startswith(":") else is_set
    if op.endswith("-"):
        return value if present else _expand(alternative or "", scope, strict=strict)
    if op.endswith("+"):
        return _expand(alternative or "", scope, strict=strict) if present else ""
    return value if present else None  # `?`: BuildKit fails the build; don't guess


def _closing_brace(word: str, start: int) -> int:
    depth = 0
    for position in range(start, len(word)):
        if word[position] == "{":
            depth += 1
        elif word[position] == "}":
            depth -= 1
            if depth == 0:
                return position
    return -1


def _platform_args(platform: str) -> dict[str, str | None]:
    """BuildKit's automatic platform ARGs, which FROM lines may use undeclared."""
    target_os, _, rest = platform.partition("/")
    target_arch, _, target_variant = rest.partition("/")
    machine = os.uname().machine
    build_arch = _ARCHES.get(machine, machine)
    return {
        "TARGETPLATFORM": platform,
        "TARGETOS": target_os,
        "TARGETARCH": target_arch,
        "TARGETVARIANT": target_variant,
        "BUILDPLATFORM": f"linux/{build_arch}",
        "BUILDOS": "linux",
        "BUILDARCH": build_arch,
        "BUILDVARIANT": "",
    }


def _arg_words(rest: str) -> list[tuple[str, str, str]]:
    """`ARG A=1 B` as (name, "=" or "", default) per word, quotes resolved as the shell would."""
    try:
        words = shlex.split(rest, comments=False, posix=True)
    except ValueError:
        words = rest.split()
    return [word.partition("=") for word in words]


def _declare(
    rest: str,
    scope: dict[str, str | None],
    build_args: Mapping[str, str],
    inherited: Mapping[str, str | None],
) -> None:
    """`ARG A=1 B`: a build arg beats the default, a default may use earlier ARGs, and an ARG
    without either takes the global value (inside a stage) or stays unset."""
    for name, has_default, default in _arg_words(rest):
        if name in build_args:
            scope[name] = build_args[name]
        elif has_default:
            scope[name] = _expand(default, scope)
        elif name not in scope:
            scope[name] = inherited.get(name)


def _flags(rest: str) -> tuple[dict[str, list[str]], list[str]]:
    """Leading `--name=value` flags of an instruction, and the words after them."""
    words = rest.split()
    flags: dict[str, list[str]] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags.setdefault(name.lower(), []).append(value)
    return flags, words


def _mount_from(value: str) -> str | None:
    for field in value.split(","):
        key, _, found = field.strip().partition("=")
        if key.strip().lower() == "from":
            return found.strip().strip("\"'")
    return None


def _external_images(text: str, build_args: Mapping[str, str], platform: str) -> tuple[list[str], list[str]]:
    """The external images the Dockerfile reads, in order of first use, and warnings.

    Follows BuildKit's dockerfile2llb: FROM is expanded with the global ARGs (and the
    automatic platform ARGs) and may name an earlier stage; COPY --from is never expanded
    and may name any stage or a stage index; anything else there is an image.
    """
    directives, instructions = _parse(text)
    stage_names = set()
    for ins in instructions:
        words = _flags(ins.rest)[1] if ins.keyword == "FROM" else []
        if len(words) >= 3 and words[1].lower() == "as":
            stage_names.add(words[2].lower())
    refs: list[str] = []
    warnings: list[str] = []

    def use(ref: str) -> None:
        if ref and ref != _SCRATCH and ref not in refs:
            refs.append(ref)

    def expanded(word: str, scope: Mapping[str, str | None], where: str) -> str:
        value = _expand(word, scope)
        if value is None:
            warnings.append(
                f"cannot expand '{word}' in {where}: the fingerprint holds that text as it is, "
                "so updates of the image behind it are not detected"
            )
            return word
        return value

    # BUILDKIT_SYNTAX overrides the directive, as in BuildKit; the frontend image decides
    # how the Dockerfile is read, so it counts as an input.
    use(build_args.get("BUILDKIT_SYNTAX") or directives.get("syntax", ""))

    global_scope: dict[str, str | None] = _platform_args(platform)
    stage_scope: dict[str, str | None] = {}
    earlier_stages: set[str] = set()
    in_stage = False
    for ins in instructions:
        if ins.keyword == "ARG":
            if in_stage:
                _declare(ins.rest, stage_scope, build_args, global_scope)
            else:
                _declare(ins.rest, global_scope, build_args, {})
        elif ins.keyword == "FROM":
            _, words = _flags(ins.rest)
            if words:
                image = expanded(words[0], global_scope, f"FROM {ins.rest}")
                if image.lower() not in earlier_stages:
                    use(image)
                if len(words) >= 3 and words[1].lower() == "as":
                    earlier_stages.add(words[2].lower())
            in_stage = True
            stage_scope = {}
        elif ins.keyword == "COPY":
            for source in _flags(ins.rest)[0].get("from", []):
                if source.lower() not in stage_names and not source.isdigit():
                    use(source)
        elif ins.keyword == "RUN":
            for mount in _flags(ins.rest)[0].get("mount", []):
                raw = _mount_from(mount)
                if raw is None:
                    continue
                source = expanded(raw, stage_scope, f"RUN --mount={mount}")
                if source.lower() not in stage_names and not source.isdigit():
                    use(source)
        elif ins.keyword == "ADD":
            words = _flags(ins.rest)[1]
            if any(re.match(r"^(https?|git)://|^git@", word) for word in words[:-1]):
                warnings.append(
                    f"ADD {' '.join(words)} fetches remote content, which the fingerprint cannot "
                    "see change: pin it (ADD --checksum=sha256:...) or fetch it in a versioned RUN step"
                )
    return refs, warnings


def base_images(
    dockerfile_text: str, build_args: Sequence[tuple[str, str]], platform: str
) -> tuple[str, ...]:
    """The external image references a Dockerfile reads, as the fingerprint resolves them."""
    return tuple(_external_images(dockerfile_text, dict(build_args), platform)[0])


# --------------------------------------------------------------------------- context sources

# Docker's own Dockerfile frontends, which read the context only as COPY, ADD and RUN
# --mount say. Any other `# syntax=` image may read whatever it likes.
_DOCKERFILE_FRONTEND = re.compile(
    r"^(?:(?:docker\.io|registry-1\.docker\.io)/)?docker/dockerfile(?:-upstream)?"
    r"(?::[\w][\w.-]*)?(?:@sha256:[0-9a-f]{64})?$"
)
_REMOTE = re.compile(r"^(?:https?|git)://|^git@")
_WILDCARD = re.compile(r"[*?\[]")  # fsutil's containsWildcards (backslashes are refused earlier)
_MAX_LINKS = 255  # symlinks followed for one source before calling it a loop


class _SymlinkLoop(Exception):
    pass


@dataclass(frozen=True)
class _Source:
    path: str  # relative to the context root, cleaned; a pattern unless literal
    label: str  # the instruction text it came from, for the scope's reason
    literal: bool = False  # a bind mount's source, which BuildKit does not match


def _context_sources(
    text: str, build_args: Mapping[str, str], platform: str
) -> tuple[list[_Source], str | None]:
    """The context paths the Dockerfile's instructions name, each cleaned (relative to the
    context root, may hold wildcards) with the text it came from; or why any path may count.

    Every stage counts, built or not. Sources are expanded as BuildKit's dispatcher does:
    with the stage's ARGs (a build arg beats the default; a bare `ARG` takes the global
    value) and ENVs (which win over ARGs), a stage FROM an earlier one starting with its
    ENVs. A variable none of these sets may come from the base image, so it widens the scope.
    """
    directives, instructions = _parse(text)
    frontend = build_args.get("BUILDKIT_SYNTAX") or directives.get("syntax", "")
    if frontend and not _DOCKERFILE_FRONTEND.match(frontend):
        return [], f"the frontend {frontend} may read any path"

    global_scope: dict[str, str | None] = _platform_args(platform)
    stage_envs: dict[str, dict[str, str | None]] = {}
    env: dict[str, str | None] = {}
    args: dict[str, str | None] = {}
    in_stage = False
    sources: list[_Source] = []

    def source(word: str, label: str, *, literal: bool = False) -> str | None:
        """Adds a source; says why not when it stops the Dockerfile naming paths."""
        if "\\" in word:
            return f"{label}: backslash escapes are not interpreted here"
        value = _shell_word(word, ChainMap(env, args))
        if value is None:
            return f"{label}: cannot expand {word}"
        cleaned = posixpath.normpath("/" + value).lstrip("/")
        if not cleaned or cleaned == ".":
            return f"{label} reads the context root"
        sources.append(_Source(cleaned, label, literal))
        return None

    for ins in instructions:
        keyword = ins.keyword
        if keyword == "ARG":
            if in_stage:
                _declare_in_stage(ins.rest, args, env, build_args, global_scope)
            else:
                _declare(ins.rest, global_scope, build_args, {})
        elif keyword == "FROM":
            words = _flags(ins.rest)[1]
            image = (_expand(words[0], global_scope) or "") if words else ""
            env = dict(stage_envs.get(image.lower(), {}))
            args = {}
            if len(words) >= 3 and words[1].lower() == "as":
                stage_envs[words[2].lower()] = env
            in_stage = True
        elif not in_stage:
            continue
        elif keyword == "ENV":
            scope = ChainMap(env, args)  # every value sees the variables from before the line
            env.update([(name, _shell_word(value, scope)) for name, value in _env_pairs(ins.rest)])
        elif keyword in ("COPY", "ADD"):
            flags, words = _copy_words(ins.rest)
            if "from" in flags:
                continue
            heredoc = False
            for word in words[:-1]:  # the last one is the destination
                if heredoc or word.startswith("<<"):  # a heredoc, not a context file
                    heredoc = word in ("<<", "<<-")  # `<< EOF`: the name is the next word
                    continue
                if keyword == "ADD" and _REMOTE.match(word):
                    continue  # fetched, not read from the context; flagged by _external_images
                reason = source(word, f"{keyword} {word}")
                if reason:
                    return [], reason
        elif keyword == "RUN":
            for mount in _flags(ins.rest)[0].get("mount", []):
                fields = _mount_fields(mount)
                if fields.get("type", "bind") != "bind" or "from" in fields:
                    continue  # cache, tmpfs, secret, ssh; or a bind of another stage or image
                label = f"RUN --mount={mount}"
                path = fields.get("source", fields.get("src", ""))
                reason = source(path, label, literal=True) if path else f"{label} binds the context root"
                if reason:
                    return [], reason
    return sources, None


def _declare_in_stage(
    rest: str,
    args: dict[str, str | None],
    env: dict[str, str | None],
    build_args: Mapping[str, str],
    global_scope: Mapping[str, str | None],
) -> None:
    """`ARG` inside a stage, into `args`: as `_declare`, with defaults expanded strictly
    against the stage's ENVs and ARGs."""
    for name, has_default, default in _arg_words(rest):
        if name in build_args:
            args[name] = build_args[name]
        elif has_default:
            args[name] = _expand(default, ChainMap(env, args), strict=True)
        else:
            args[name] = global_scope.get(name)


def _copy_words(rest: str) -> tuple[dict[str, list[str]], list[str]]:
    """The flags of COPY/ADD and its sources and destination: a JSON array of strings, or
    else words split at whitespace (quotes are dealt with later, as BuildKit does)."""
    flags: dict[str, list[str]] = {}
    remainder = rest.strip()
    while match := re.match(r"--(\S*)\s*", remainder):
        name, _, value = match.group(1).partition("=")
        flags.setdefault(name.lower(), []).append(value)
        remainder = remainder[match.end() :]
    if remainder.startswith("["):
        try:
            parsed = json.loads(remainder)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
            return flags, parsed
    return flags, remainder.split()


def _mount_fields(value: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for field in value.split(","):
        key, has_value, found = field.strip().partition("=")
        if has_value:
            fields[key.strip().lower()] = found.strip().strip("\"'")
    return fields


def _split_words(text: str) -> list[str]:
    """Words separated by whitespace outside quotes, quotes kept (BuildKit's parseWords)."""
    words: list[str] = []
    current = ""
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and quote != "'":
            current += text[index : index + 2]
            index += 2
            continue
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char.isspace():
            if current:
                words.append(current)
            current = ""
            index += 1
            continue
        current += char
        index += 1
    if current:
        words.append(current)
    return words


def _env_pairs(rest: str) -> list[tuple[str, str]]:
    """`ENV A=1 B="x y"` or the legacy `ENV NAME the value`."""
    words = _split_words(rest)
    if not words:
        return []
    if "=" not in words[0]:
        name_value = rest.split(maxsplit=1)
        return [(name_value[0], name_value[1].strip())] if len(name_value) == 2 else []
    return [(name, value) for name, _, value in (word.partition("=") for word in words)]


def _shell_word(word: str, scope: Mapping[str, str | None]) -> str | None:
    """One word as BuildKit's shell lexer reads it: quotes removed, variables expanded
    (strictly), nothing inside single quotes. None if that cannot be known here."""
    if "\\" in word:
        return None
    out: list[str] = []
    index = 0
    while index < len(word):
        char = word[index]
        if char in "'\"":
            end = word.find(char, index + 1)
            if end < 0:
                return None
            part: str | None = word[index + 1 : end]
            if char == '"':
                part = _expand(word[index + 1 : end], scope, strict=True)
            index = end + 1
        else:
            end = min(
                (p for p in (word.find("'", index), word.find('"', index)) if p >= 0), default=len(word)
            )
            part = _expand(word[index:end], scope, strict=True)
            index = end
        if part is None:
            return None
        out.append(part)
    return "".join(out)


def _referenced_roots(context: Path, sources: Sequence[_Source]) -> tuple[set[str], str | None]:
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
        except _SymlinkLoop:
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
            raise _SymlinkLoop(candidate)
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
    size = len(pattern)
    while index < size:
        char = pattern[index]
        index += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char != "[":
            out.append(re.escape(char))
        else:
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
                out.append(f"[{'^' if negated else ''}{''.join(ranges)}]")
            else:
                out.append(r"[\s\S]" if negated else "(?!)")
    return re.compile("".join(out), re.DOTALL)
