"""A fingerprint of everything that decides the image, computed before building.

Two runs with the same fingerprint would build the same image, so the second can reuse
the first one's (published under `Fingerprint.tag`). The fingerprint covers:

* a scheme version, bumped whenever what goes in here changes;
* the target platform and the build arguments (last value per key, as the CLI applies them);
* the Dockerfile's bytes;
* every path of the build context that the ignore file lets through, chosen by docker-py's
  own `.dockerignore` implementation: type, permission bits, size and sha256 of regular
  files, symlink targets, directories (an empty directory still lands in the image);
* the identity of each external image the Dockerfile reads (`FROM`, `COPY --from`,
  `RUN --mount=from=`, the `# syntax=` frontend), asked of a resolver callback, so a new
  base image under the same tag changes the fingerprint.

Left out on purpose: modification times (a fresh checkout sets them all to "now", and
BuildKit's own cache keys ignore them too), owners (COPY writes 0:0 unless --chown says
otherwise), and whatever a `RUN` step downloads — that is the Dockerfile's business to pin.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
import requests
from docker.utils.build import Pattern, PatternMatcher
from docker.utils.fnmatch import translate

from entrypoint.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from docker import DockerClient

# Bump when the fingerprint's inputs or their encoding change, so old `src-` tags stop matching.
SCHEME = "lambda-image-publish/fingerprint/v1"
TAG_PREFIX = "src-"
# 160 bits: no accidental collision in any repository's lifetime, and a tag that fits a
# console column. Tags may be 128 characters, so the full 64 would fit too.
TAG_HEX_CHARS = 40
_CHUNK = 1 << 20
_SCRATCH = "scratch"


@dataclass(frozen=True)
class Fingerprint:
    value: str  # sha256 hex
    files: int  # regular files hashed from the build context
    bytes: int  # their total size
    bases: tuple[tuple[str, str], ...]  # (image reference, identity); identity "" if unresolved
    warnings: tuple[str, ...]

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self.value[:TAG_HEX_CHARS]}"


def compute_fingerprint(
    dockerfile: Path,
    context: Path,
    build_args: Sequence[tuple[str, str]],
    platform: str,
    resolve: Callable[[str], str | None],
) -> Fingerprint:
    try:
        dockerfile_bytes = dockerfile.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the Dockerfile {dockerfile}: {exc.strerror or exc}",
            "check the 'dockerfile' input and the file's permissions",
        ) from exc
    args = dict(build_args)  # repeated keys: the last one wins, as in `build_environment`
    refs, warnings = _external_images(_decode(dockerfile_bytes), args, platform)

    digest = hashlib.sha256()
    _record(digest, "scheme", SCHEME)
    _record(digest, "platform", platform)
    for key in sorted(args):
        _record(digest, "arg", f"{key}={args[key]}")
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

    files = total = 0
    for entry in _context_entries(context, dockerfile):
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
    )


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
    ignore = ignore_file(context, dockerfile)
    patterns = ignore_patterns(ignore) if ignore else []
    try:
        relative = dockerfile.resolve().relative_to(context.resolve()).as_posix()
    except ValueError:
        # Outside the context, the Dockerfile is sent on its own, under another name.
        relative = ".dockerfile-outside-context"
    # docker.utils.build.exclude_paths, reading as docker always sends the Dockerfile, but
    # with the case-sensitive matcher. (exclude_paths also appends to the caller's list.)
    paths = set(_Matcher([*patterns, f"!{relative}"]).walk(str(context)))
    # A file let through from an ignored folder (`*` then `!src/app.py`) brings its
    # folders along; docker-py leaves them out of the list.
    for path in list(paths):
        parent = path.rpartition(os.sep)[0]
        while parent and parent not in paths:
            paths.add(parent)
            parent = parent.rpartition(os.sep)[0]
    return paths


def _context_entries(context: Path, dockerfile: Path) -> Iterator[_Entry]:
    try:
        paths = included_paths(context, dockerfile)
        for path in sorted(paths):
            yield _entry(context, path)
    except OSError as exc:
        where = exc.filename or context
        raise InputError(
            f"cannot read {where} in the build context {context}: {exc.strerror or exc}",
            "make it readable by the runner's user, or list it in .dockerignore",
        ) from exc


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


def _expand(word: str, scope: Mapping[str, str | None]) -> str | None:
    """Dockerfile variable substitution: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-d}`,
    `${VAR:+alt}`, `${VAR+alt}`. None for forms it does not know (`${VAR#x}`, ...) or a
    `${VAR:?}` that would fail the build: the caller then keeps the unexpanded text."""
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
            value = _substitute(match.group(1), match.group(2), match.group(3), scope)
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
        out.append(scope.get(name.group()) or "")
        i = name.end()
    return "".join(out)


def _substitute(
    name: str, op: str | None, alternative: str | None, scope: Mapping[str, str | None]
) -> str | None:
    value = scope.get(name)
    if op is None:
        return value or ""
    is_set = value is not None
    # With the colon, an empty value counts as unset (POSIX shell rules, as BuildKit's).
    present = bool(value) if op.startswith(":") else is_set
    if op.endswith("-"):
        return value if present else _expand(alternative or "", scope)
    if op.endswith("+"):
        return _expand(alternative or "", scope) if present else ""
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


def _declare(
    rest: str,
    scope: dict[str, str | None],
    build_args: Mapping[str, str],
    inherited: Mapping[str, str | None],
) -> None:
    """`ARG A=1 B`: a build arg beats the default, a default may use earlier ARGs, and an ARG
    without either takes the global value (inside a stage) or stays unset."""
    try:
        words = shlex.split(rest, comments=False, posix=True)
    except ValueError:
        words = rest.split()
    for word in words:
        name, has_default, default = word.partition("=")
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
