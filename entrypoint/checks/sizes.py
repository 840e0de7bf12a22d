"""An image's anatomy (its layers, their sizes, the Dockerfile line that made each), how it
differs from the environment's previous image, and the size budget a publish holds it to.

Everything is read through the registry API without pulling: the manifest gives each
layer's compressed size, the config's history the instruction that made it, and a Range
request for a few bytes of each compressed layer its uncompressed size (what Lambda counts).
`diff` and `check_budget` are pure.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from entrypoint import github
from entrypoint.checks.imagefacts import made_by as instruction
from entrypoint.errors import CheckError, InputError, RegistryError, shown
from entrypoint.registry.reference import DIGEST_RE

if TYPE_CHECKING:
    from entrypoint.registry.client import Manifest, RegistryClient

# A config is read whole; real ones are a few kB, long histories a few hundred.
CONFIG_LIMIT = 8 * 1024 * 1024
# The most layers read at once: enough to hide the round trips, few enough for a small runner.
READ_THREADS = 4
# Read from the end of a gzip layer: its 8-byte trailer, and room to see an estargz footer.
GZIP_TAIL = 64
# A zstd frame header is at most 18 bytes: magic 4, descriptor 1, window 1, dictionary 4, size 8.
ZSTD_HEAD = 18
# A manifest's sizes beyond this (1 PB) are no real layer.
MAX_LAYER_BYTES = 10**15

# Layer annotations of the formats whose compressed stream is many gzip members or zstd
# frames, one per file: their trailer or first header tells only of one small part.
_CHUNKED_ANNOTATIONS = (
    "containerd.io/snapshot/stargz/toc.digest",
    "io.github.containers.zstd-chunked.manifest-checksum",
)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class LayerInfo:
    digest: str
    compressed: int  # the manifest's size for the layer
    uncompressed: int | None  # None when the registry could not tell
    made_by: str  # the Dockerfile instruction that made it, "" when unknown
    # The digest of its uncompressed tar (the config's rootfs.diff_ids): the classic image
    # store's push names layers by it.
    diff_id: str = ""


@dataclass(frozen=True)
class Anatomy:
    digest: str  # the image manifest's digest
    layers: tuple[LayerInfo, ...]

    @property
    def compressed(self) -> int:
        return sum(layer.compressed for layer in self.layers)

    @property
    def uncompressed(self) -> int | None:
        sizes = [layer.uncompressed for layer in self.layers]
        return None if None in sizes else sum(size or 0 for size in sizes)


# ------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _Layer:
    digest: str
    media_type: str
    size: int
    chunked: bool  # many members or frames (estargz, zstd:chunked)
    foreign: bool  # its blob may live outside the registry


def read_anatomy(registry: RegistryClient, repository: str, manifest: Manifest) -> Anatomy:
    """The image's layers with sizes and the instruction that made each, read from the
    registry: the config blob (for the history) and a few bytes of each compressed layer,
    read at once on a few threads, never a whole layer.

    Uncompressed sizes: a tar layer's is its size; a gzip layer's comes from its trailer
    (`_gzip_size`), a zstd layer's from its frame header when the header has it (`_zstd_size`);
    None for what cannot be told that way (estargz and zstd:chunked layers, foreign layers,
    a registry that will not serve a range)."""
    where = f"{registry.host}/{repository}@{manifest.digest}"
    layers, config_digest, config_size = _parse_manifest(manifest, where)
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="anatomy") as pool:
        config = pool.submit(registry.get_blob, repository, config_digest, limit=CONFIG_LIMIT)
        sizes = [pool.submit(_uncompressed, registry, repository, layer) for layer in layers]
        parsed = _config_json(config.result(), where, config_size)
        history, diff_ids = _history(parsed, len(layers)), _diff_ids(parsed, len(layers))
        return Anatomy(
            digest=manifest.digest,
            layers=tuple(
                LayerInfo(layer.digest, layer.size, size.result(), made, diff_id)
                for layer, size, made, diff_id in zip(layers, sizes, history, diff_ids, strict=True)
            ),
        )


def _unreadable(where: str, what: str) -> RegistryError:
    return RegistryError(
        f"the image manifest of {where} {what}",
        "push the image again with docker or buildx; if it repeats, check the registry",
    )


def _size(value: object) -> int | None:
    # bool is an int to Python, and JSON true is no size.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LAYER_BYTES:
        return None
    return value


def _parse_manifest(manifest: Manifest, where: str) -> tuple[list[_Layer], str, int]:
    """The layers and the config's (digest, size) of an image manifest, every value checked:
    they come from the registry and go into requests and sums."""
    if manifest.is_index:
        raise RegistryError(
            f"{where} is an image index, not an image manifest, so it has no layers of its own",
            "read the image manifest for the platform inside the index",
        )
    try:
        body = manifest.json()
    except ValueError as exc:
        raise _unreadable(where, "is not JSON") from exc
    config = body.get("config") if isinstance(body, dict) else None
    entries = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(config, dict) or not isinstance(entries, list):
        raise _unreadable(where, "has no config and layers")
    config_digest, config_size = config.get("digest"), _size(config.get("size"))
    if not isinstance(config_digest, str) or not DIGEST_RE.fullmatch(config_digest) or config_size is None:
        raise _unreadable(where, "names no valid config digest and size")
    if config_size > CONFIG_LIMIT:
        raise _unreadable(where, f"gives its config a size of {config_size} bytes, over {CONFIG_LIMIT}")
    layers = []
    for number, entry in enumerate(entries, 1):
        digest = entry.get("digest") if isinstance(entry, dict) else None
        size = _size(entry.get("size")) if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest) or size is None:
            raise _unreadable(where, f"names no valid digest and size for layer {number}")
        media_type = str(entry.get("mediaType", ""))
        annotations = entry.get("annotations")
        layers.append(
            _Layer(
                digest=digest,
                media_type=media_type,
                size=size,
                chunked=isinstance(annotations, dict) and any(a in annotations for a in _CHUNKED_ANNOTATIONS),
                foreign=bool(entry.get("urls"))
                or "foreign" in media_type
                or "nondistributable" in media_type,
            )
        )
    return layers, config_digest, config_size


def _config_json(raw: bytes, where: str, size: int) -> dict[str, Any]:
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise _unreadable(where, "has a config that is not JSON") from exc
    if not isinstance(config, dict) or len(raw) != size:
        raise _unreadable(where, "has a config that is not a JSON object of the size it names")
    return config


def _history(config: dict[str, Any], count: int) -> list[str]:
    """The instruction that made each of `count` layers: the config's history entries that
    made a layer, in order. A history that does not account for every layer (trimmed by a
    tool, or not there) cannot be matched to them, so every instruction is then unknown."""
    entries = config.get("history")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return [""] * count
    made = [instruction(str(e.get("created_by") or "")) for e in entries if e.get("empty_layer") is not True]
    return made if len(made) == count else [""] * count


def _diff_ids(config: dict[str, Any], count: int) -> list[str]:
    rootfs = config.get("rootfs")
    found = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(found, list) or len(found) != count:
        return [""] * count
    return [d if isinstance(d, str) and DIGEST_RE.fullmatch(d) else "" for d in found]


def _uncompressed(registry: RegistryClient, repository: str, layer: _Layer) -> int | None:
    kind = layer.media_type.lower()
    if kind.endswith("tar"):
        return layer.size
    if layer.foreign or layer.chunked or layer.size == 0:
        return None
    if kind.endswith(("+gzip", ".gzip")):
        start = max(0, layer.size - GZIP_TAIL)
        tail = registry.blob_range(repository, layer.digest, start, layer.size, layer.size)
        return _gzip_size(layer.size, tail) if tail is not None else None
    if kind.endswith(("+zstd", ".zstd")):
        head = registry.blob_range(repository, layer.digest, 0, min(ZSTD_HEAD, layer.size), layer.size)
        return _zstd_size(layer.size, head) if head is not None else None
    return None


def _least_uncompressed(compressed: int, header: int, block: int, per_block: int) -> int:
    """The fewest bytes a stream of `compressed` bytes can hold, for an encoder that never
    makes data bigger than storing it: its `header` bytes, and `per_block` bytes for each
    stored block of up to `block` bytes."""
    return max(0, compressed - header - per_block * (compressed // block + 1))


def _gzip_size(compressed: int, tail: bytes) -> int | None:
    """The uncompressed size of a one-member gzip layer from the trailer at the end of `tail`.

    The trailer's ISIZE is the size modulo 2**32, so a layer of 4 GiB or more wraps. The
    wrap is undone with the one bound that holds for the encoders that make layers (Go's
    compress/flate, zlib): they store data they cannot shrink, so the data is at least the
    compressed size less the gzip header and trailer (18 bytes) and 5 bytes for each
    65535-byte stored block. The answer is the smallest size with that ISIZE at or above
    the bound. It is exact unless the layer is more than 4 GiB bigger uncompressed than
    compressed, which its last bytes cannot tell apart: an image whose layers compress
    that well reads 4 GiB (or a multiple) smaller per such layer than it is.

    None for an estargz layer missed by its annotations: its last member is the empty
    footer the format names itself in."""
    if len(tail) < 8 or b"STARGZ" in tail:
        return None
    isize = int.from_bytes(tail[-4:], "little")
    least = _least_uncompressed(compressed, header=18, block=65535, per_block=5)
    wraps = max(0, -(-(least - isize) // 2**32))
    return isize + wraps * 2**32


def _zstd_size(compressed: int, head: bytes) -> int | None:
    """The frame content size in a zstd frame header (RFC 8878 3.1.1.1), when the encoder
    wrote it (streaming encoders, BuildKit's among them, do not).

    It is the size of the first frame only, and a layer may be several frames: a size that
    a stream this long could not hold (less than it, less raw block overhead, 3 bytes for
    each 128 KiB block) shows there are more, and is not given."""
    if len(head) < 6 or head[:4] != _ZSTD_MAGIC:
        return None
    descriptor = head[4]
    size_flag, single_segment, dictionary_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    width = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if width == 0:
        return None
    at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary_flag]
    if len(head) < at + width:
        return None
    size = int.from_bytes(head[at : at + width], "little") + (256 if width == 2 else 0)
    least = _least_uncompressed(compressed, header=at + width + 4, block=128 * 1024, per_block=3)
    return size if size >= least else None


# ------------------------------------------------------------------------ diff

LayerStatus = Literal["reused", "rebuilt", "new"]


@dataclass(frozen=True)
class LayerChange:
    layer: LayerInfo
    # reused: the previous image has this very layer; rebuilt: an instruction the previous
    # image also has (same made_by) made a different layer; new: the instruction is new.
    status: LayerStatus
    previous: LayerInfo | None  # for rebuilt: the layer it replaces


@dataclass(frozen=True)
class SizeDiff:
    current: Anatomy
    previous: Anatomy | None  # the environment's previous image; None on a first publish
    changes: tuple[LayerChange, ...]  # one per current layer, in order
    removed: tuple[LayerInfo, ...]  # previous layers with no counterpart now

    def count(self, status: LayerStatus) -> int:
        """How many of the current layers have `status`."""
        return sum(1 for change in self.changes if change.status == status)

    @property
    def compared_uncompressed(self) -> bool:
        """Whether `growth` compares uncompressed sizes (else compressed)."""
        return (
            self.previous is not None
            and self.current.uncompressed is not None
            and self.previous.uncompressed is not None
        )

    def _sizes(self) -> tuple[int, int] | None:
        """(current, previous) in uncompressed bytes, or compressed when either is unknown: two
        numbers of one kind, never one of each."""
        if self.previous is None:
            return None
        if self.compared_uncompressed:
            return self.current.uncompressed or 0, self.previous.uncompressed or 0
        return self.current.compressed, self.previous.compressed

    @property
    def growth(self) -> int | None:
        """Bytes the image grew by (negative: shrank), uncompressed unless either side's
        uncompressed size is unknown; None without a previous image."""
        sizes = self._sizes()
        return None if sizes is None else sizes[0] - sizes[1]

    @property
    def growth_percent(self) -> float | None:
        sizes = self._sizes()
        if sizes is None or sizes[1] == 0:
            return None
        return (sizes[0] - sizes[1]) * 100 / sizes[1]


def diff(previous: Anatomy | None, current: Anatomy) -> SizeDiff:
    """Each current layer against the previous image: the same layer (reused), a layer made
    again by an instruction the previous image has too (rebuilt, matched in order, each
    previous layer to one current layer at most), or a new one. The previous layers left
    unmatched are the removed ones."""
    if previous is None:
        return SizeDiff(current, None, tuple(LayerChange(layer, "new", None) for layer in current.layers), ())
    by_digest = {layer.digest: index for index, layer in enumerate(previous.layers)}
    # Reuse is settled first: a layer the current image still has is not free to be the
    # counterpart of a rebuilt one.
    matched = {by_digest[layer.digest] for layer in current.layers if layer.digest in by_digest}
    changes: list[LayerChange] = []
    for layer in current.layers:
        if layer.digest in by_digest:
            changes.append(LayerChange(layer, "reused", None))
            continue
        counterpart = next(
            (
                index
                for index, old in enumerate(previous.layers)
                if index not in matched and layer.made_by and old.made_by == layer.made_by
            ),
            None,
        )
        if counterpart is None:
            changes.append(LayerChange(layer, "new", None))
        else:
            matched.add(counterpart)
            changes.append(LayerChange(layer, "rebuilt", previous.layers[counterpart]))
    removed = tuple(old for index, old in enumerate(previous.layers) if index not in matched)
    return SizeDiff(current, previous, tuple(changes), removed)


# ------------------------------------------------------------------------ budget


@dataclass(frozen=True)
class Growth:
    bytes: int | None = None
    percent: float | None = None


@dataclass(frozen=True)
class SizeBudget:
    limit: int | None = None  # fail above (uncompressed bytes, what Lambda counts; compressed when unknown)
    warn: int | None = None  # warn above
    growth_limit: Growth | None = None  # fail when the image grows more than this against the env's previous
    growth_warn: Growth | None = None

    @property
    def empty(self) -> bool:
        return (
            self.limit is None
            and self.warn is None
            and self.growth_limit is None
            and self.growth_warn is None
        )


_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"(\d{1,15}(?:\.\d{1,9})?)\s*([a-z]{0,3})", re.IGNORECASE)
_PERCENT_RE = re.compile(r"(\d{1,6}(?:\.\d{1,6})?)\s*%")
_SIZE_FORMS = "800MB, 1.5GB, 750MiB, 2GiB or a number of bytes (kB, MB, GB are 1000s; KiB, MiB, GiB 1024s)"


def parse_size(text: str, input_name: str) -> int | None:
    """A size input in bytes: `1.5GB`, `800MB`, `750MiB`, `2G`, `123456`; None when empty."""
    value = text.strip()
    if not value:
        return None
    matched = _SIZE_RE.fullmatch(value)
    unit = _UNITS.get(matched.group(2).lower()) if matched else None
    if matched is None or unit is None:
        raise InputError(
            f"input '{input_name}' is '{shown(value, 60)}', not a size", f"write it as {_SIZE_FORMS}"
        )
    return int(Decimal(matched.group(1)) * unit)


def parse_growth(text: str, input_name: str) -> Growth | None:
    """A growth input: a percentage of the previous image (`10%`) or a size (`200MB`); None
    when empty."""
    value = text.strip()
    if not value:
        return None
    percent = _PERCENT_RE.fullmatch(value)
    if percent:
        return Growth(percent=float(percent.group(1)))
    if _SIZE_RE.fullmatch(value) is None or "%" in value:
        raise InputError(
            f"input '{input_name}' is '{shown(value, 60)}', neither a percentage nor a size",
            f"write it as a percentage of the previous image (10%) or as a size: {_SIZE_FORMS}",
        )
    return Growth(bytes=parse_size(value, input_name))


def human_bytes(n: int) -> str:
    """A size for people, in decimal units with three significant digits: 812 B, 4.00 kB,
    812 MB, 1.23 GB (negative for a shrink)."""
    sign, n = ("-" if n < 0 else ""), abs(n)
    if n < 1000:
        return f"{sign}{n} B"
    for unit, scale in (("kB", 10**3), ("MB", 10**6), ("GB", 10**9), ("TB", 10**12)):
        value = n / scale
        text = f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f}"
        # 999.6 kB shows as 1.00 MB, not 1000 kB.
        if float(text) < 1000 or unit == "TB":
            return f"{sign}{text} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


Level = Literal["fail", "warn"]


@dataclass(frozen=True)
class BudgetFinding:
    level: Level
    message: str  # one line: what exceeded what, and the layers that grew most
    bound: str = ""  # the input it broke


# How many layers a finding names.
_NAMED_LAYERS = 3


def _layer_name(layer: LayerInfo) -> str:
    return f"'{shown(layer.made_by, 80)}'" if layer.made_by else f"layer {layer.digest[:19]}"


def _layer_size(layer: LayerInfo, uncompressed: bool) -> int:
    return layer.uncompressed if uncompressed and layer.uncompressed is not None else layer.compressed


def _pair_sizes(now: LayerInfo, before: LayerInfo, uncompressed: bool) -> tuple[int, int]:
    if uncompressed and now.uncompressed is not None and before.uncompressed is not None:
        return now.uncompressed, before.uncompressed
    return now.compressed, before.compressed


def _culprits(diff: SizeDiff, uncompressed: bool) -> str:
    """The layers that grew most against the previous image, or without one the largest."""
    grown: list[tuple[int, str]] = []
    for change in diff.changes if diff.previous is not None else ():
        now = _layer_size(change.layer, uncompressed)
        if change.status == "new":
            grown.append((now, f"{_layer_name(change.layer)} new, {human_bytes(now)}"))
        elif change.status == "rebuilt" and change.previous is not None:
            now, before = _pair_sizes(change.layer, change.previous, uncompressed)
            was = f"({human_bytes(before)} to {human_bytes(now)})"
            grown.append((now - before, f"{_layer_name(change.layer)} {_signed(now - before)} {was}"))
    grown = sorted((g for g in grown if g[0] > 0), key=lambda g: g[0], reverse=True)[:_NAMED_LAYERS]
    if grown:
        return "; grew most: " + ", ".join(text for _, text in grown)
    largest = sorted(diff.current.layers, key=lambda layer: _layer_size(layer, uncompressed), reverse=True)
    named = ", ".join(
        f"{_layer_name(layer)} {human_bytes(_layer_size(layer, uncompressed))}"
        for layer in largest[:_NAMED_LAYERS]
    )
    return f"; largest layers: {named}" if named else ""


def _signed(n: int) -> str:
    return f"+{human_bytes(n)}" if n >= 0 else human_bytes(n)


def _over(growth: int, percent: float | None, bound: Growth) -> str | None:
    """The bound `growth` exceeds, as words; None when within it."""
    if bound.bytes is not None and growth > bound.bytes:
        return human_bytes(bound.bytes)
    if bound.percent is not None and percent is not None and percent > bound.percent:
        return f"{bound.percent:g}%"
    return None


def check_budget(diff: SizeDiff, budget: SizeBudget) -> tuple[BudgetFinding, ...]:
    """Every way the image breaks its budget, fails first: its size against the limit (else
    the warning), its growth against the growth limit (else the growth warning). Each finding
    names the input it broke."""
    findings: list[BudgetFinding] = []
    total = diff.current.uncompressed
    size = total if total is not None else diff.current.compressed
    kind = "uncompressed" if total is not None else "compressed (its uncompressed size, unknown, is larger)"
    sized: tuple[tuple[Level, int | None, str], ...] = (
        ("fail", budget.limit, "size-limit"),
        ("warn", budget.warn, "size-warn"),
    )
    for level, limit, name in sized:
        if limit is not None and size > limit:
            over = f"over {name} {human_bytes(limit)}"
            culprits = _culprits(diff, total is not None)
            findings.append(
                BudgetFinding(level, f"the image is {human_bytes(size)} {kind}, {over}{culprits}", name)
            )
            break
    growth, percent = diff.growth, diff.growth_percent
    if growth is None or diff.previous is None:
        return tuple(findings)
    grew = (
        f"the image grew by {human_bytes(growth)}"
        + (f" ({percent:+.1f}%)" if percent is not None else "")
        + f" {'uncompressed' if diff.compared_uncompressed else 'compressed'} against the "
        f"environment's previous image {diff.previous.digest[:19]}"
    )
    grown: tuple[tuple[Level, Growth | None, str], ...] = (
        ("fail", budget.growth_limit, "size-growth-limit"),
        ("warn", budget.growth_warn, "size-growth-warn"),
    )
    for level, bound, name in grown:
        exceeded = _over(growth, percent, bound) if bound is not None else None
        if exceeded is not None:
            culprits = _culprits(diff, diff.compared_uncompressed)
            findings.append(BudgetFinding(level, f"{grew}, more than {name} {exceeded}{culprits}", name))
            break
    return tuple(sorted(findings, key=lambda f: f.level != "fail"))


def require_within_budget(diff: SizeDiff, budget: SizeBudget, reference: str) -> None:
    """A warning for each warn finding; one `CheckError` with the first fail's message when
    any fails."""
    findings = check_budget(diff, budget)
    for finding in findings:
        if finding.level == "warn":
            github.warning(f"{reference}: {finding.message}")
    failed = next((f for f in findings if f.level == "fail"), None)
    if failed is not None:
        raise CheckError(
            f"{reference} breaks its size budget: {failed.message}",
            "make the layers that grew smaller (a multi-stage build, a slimmer base, a .dockerignore "
            "that keeps data out of the context), "
            f"or raise {failed.bound or 'the limit'} if the growth is meant",
        )
