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
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from entrypoint.build import context as buildcontext
from entrypoint.build import dockerfile
from entrypoint.build.context import included_paths, included_paths_under
from entrypoint.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "Fingerprint",
    "base_images",
    "compute_fingerprint",
    "hashed_paths",
    "included_paths",
    "included_paths_under",
]

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
    dockerfile_path: Path,
    context: Path,
    build_args: Sequence[tuple[str, str]],
    platform: str,
    resolve: Callable[[str], str | None],
    *,
    secret_ids: Sequence[str] = (),
) -> Fingerprint:
    dockerfile_bytes = _read_dockerfile(dockerfile_path)
    args = dict(build_args)  # repeated keys: the last one wins, as in `build_environment`
    model = dockerfile.read(_decode(dockerfile_bytes), args, platform)
    warnings = list(model.warnings)

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
    for ref in model.images:
        identity = resolve(ref)
        if identity is None:
            warnings.append(
                f"cannot find base image {ref} in its registry or in the engine: the fingerprint "
                "holds its name only, so an update of that image will not trigger a rebuild"
            )
        _record(digest, "base", ref, identity or "")
        bases.append((ref, identity or ""))

    scope, paths = _hashed_paths(context, dockerfile_path, model)
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
    dockerfile_path: Path, context: Path, build_args: Sequence[tuple[str, str]], platform: str
) -> tuple[str, set[str]]:
    """The fingerprint's scope and the relative context paths it hashes."""
    model = dockerfile.read(_decode(_read_dockerfile(dockerfile_path)), dict(build_args), platform)
    return _hashed_paths(context, dockerfile_path, model)


def base_images(
    dockerfile_text: str, build_args: Sequence[tuple[str, str]], platform: str
) -> tuple[str, ...]:
    """The external image references a Dockerfile reads, as the fingerprint resolves them."""
    return dockerfile.read(dockerfile_text, dict(build_args), platform).images


def _read_dockerfile(dockerfile: Path) -> bytes:
    try:
        return dockerfile.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read the Dockerfile {dockerfile}: {exc.strerror or exc}",
            "check the 'dockerfile' input and the file's permissions",
        ) from exc


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


def _hashed_paths(context: Path, dockerfile_path: Path, model: dockerfile.Dockerfile) -> tuple[str, set[str]]:
    """The scope and the paths to hash: the sent paths the Dockerfile's sources reach, or
    all sent paths when a source may be anything."""
    try:
        reason = model.whole_context
        if reason is None:
            roots, reason = buildcontext.referenced_roots(context, model.sources)
        if reason is not None:
            return f"{SCOPE_WHOLE} ({reason})", included_paths(context, dockerfile_path)
        return SCOPE_REFERENCED, included_paths_under(context, dockerfile_path, roots)
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
