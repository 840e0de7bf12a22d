"""The `config` file of a release: several images published from one step.

Read with pyyaml's safe loader (no tags, no objects: a checkout's YAML is untrusted), with
the line of every key kept, so that each error names the file, the line and the key. Each
image's keys become the same raw strings the action's inputs are, and `inputs` parses them
with the same rules; the action's inputs are every image's defaults.

    images:
      - name: orders                       # key in the outputs; [a-z0-9-]
        dockerfile: services/orders/Dockerfile
        context: services/orders           # default: the Dockerfile's folder
        repository: "{env}-orders"         # default: "{env}-{name}"
        build-args: {BASE_IMAGE: python:3.12-slim}
        platform: linux/arm64
        smoke: 8080/health
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from entrypoint.errors import InputError

if TYPE_CHECKING:
    from pathlib import Path

NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
MAX_IMAGES = 50
MAX_BYTES = 256 * 1024
# Per-image keys: the publish inputs that can differ from one image to the next.
IMAGE_KEYS = (
    "name",
    "dockerfile",
    "context",
    "repository",
    "build-args",
    "platform",
    "tags",
    "smoke",
    "smoke-timeout",
    "smoke-memory",
    "invoke-mode",
    "secrets",
)
# Inputs that hold for the whole run: one login, one registry, one cache mode, one decision.
RUN_KEYS = ("env", "region", "registry", "push", "cache", "cache-dir", "force-build", "parallel", "builder")
# Keys whose mapping merges over the input's (an image adds to or overrides single entries).
MERGED_KEYS = ("build-args", "secrets")


@dataclass(frozen=True)
class ImageEntry:
    """One image of the file: its name, the raw values it sets, and where each one is."""

    name: str
    raw: dict[str, str]
    line: int
    lines: dict[str, int]

    def where(self, key: str | None = None) -> str:
        line = self.lines.get(key, self.line) if key else self.line
        return f"line {line}, image '{self.name}'"


class _Located(dict[str, Any]):
    """A mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """The safe loader, keeping key lines and refusing a key given twice (YAML allows it and
    keeps the last, so a pasted block would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        mapping = _Located()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise yaml.MarkedYAMLError(
                    "while reading a mapping", node.start_mark, f"the key {key!r} is not text",
                    key_node.start_mark,
                )  # fmt: skip
            if key in mapping:
                raise yaml.MarkedYAMLError(
                    "while reading a mapping", node.start_mark, f"the key '{key}' is given twice",
                    key_node.start_mark,
                )  # fmt: skip
            mapping[key] = self.construct_object(value_node, deep=deep)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def read_config(path: Path, shown: str) -> tuple[ImageEntry, ...]:
    """The images of the file at `path` (`shown`: its name as the workflow gave it)."""
    data = _load(path, shown)
    if not isinstance(data, _Located) or "images" not in data:
        raise InputError(
            f"{shown} has no 'images' list at its top level",
            "write images: followed by one '- name: ...' entry per image (see the README's "
            "'Many functions' section)",
        )
    unknown = [key for key in data if key != "images"]
    if unknown:
        raise InputError(
            f"{shown} line {data.key_lines[unknown[0]]}: unknown key '{unknown[0]}' at the top level",
            "the file has one top-level key, images; settings for every image are the action's inputs",
        )
    images = data["images"]
    if not isinstance(images, list) or not images:
        raise InputError(
            f"{shown} line {data.key_lines['images']}: 'images' is not a list of images",
            "give each image as a list item: '- name: orders' with its keys indented below",
        )
    if len(images) > MAX_IMAGES:
        raise InputError(
            f"{shown} lists {len(images)} images, more than {MAX_IMAGES}",
            "split the release across several steps or jobs",
        )
    entries: list[ImageEntry] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(images, 1):
        entry = _entry(item, number, shown, data.key_lines["images"])
        if entry.name in seen:
            raise InputError(
                f"{shown} line {entry.lines['name']}: the name '{entry.name}' is already used by "
                f"the image on line {seen[entry.name]}",
                "give each image its own name; it keys the 'images' output",
            )
        seen[entry.name] = entry.lines["name"]
        entries.append(entry)
    return tuple(entries)


def _load(path: Path, shown: str) -> Any:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InputError(
                f"{shown} is larger than {MAX_BYTES // 1024} KB, which no image list needs",
                "check that 'config' names the release file",
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {shown}: {exc}", "check the 'config' input") from exc
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(
            f"{shown}{where} is not valid YAML: {exc.problem or exc.context}",
            "fix the YAML (a linter such as yamllint shows the spot)",
        ) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{shown} is not valid YAML: {exc}", "fix the YAML") from exc


def _entry(item: Any, number: int, shown: str, list_line: int) -> ImageEntry:
    if not isinstance(item, _Located):
        raise InputError(
            f"{shown}: image {number} of the list (from line {list_line}) is not a mapping of keys",
            "write each image as '- name: ...' with its keys (dockerfile, context, ...) below",
        )
    for key, line in item.key_lines.items():
        if key in RUN_KEYS:
            raise InputError(
                f"{shown} line {line}: '{key}' is set for one image, but it holds for the whole run",
                f"set '{key}' as the action's input",
            )
        if key not in IMAGE_KEYS:
            raise InputError(
                f"{shown} line {line}: unknown key '{key}'",
                f"use the keys {', '.join(IMAGE_KEYS)}",
            )
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        line = item.key_lines.get("name", item.line)
        raise InputError(
            f"{shown} line {line}: image {number} has "
            + (f"the name '{str(name)[:60]}', which" if "name" in item else "no name, which")
            + " must be lower-case letters, digits and hyphens",
            "give each image a name like orders or billing-worker (at most 40 characters)",
        )
    if "dockerfile" not in item:
        raise InputError(
            f"{shown} line {item.line}: image '{name}' has no dockerfile",
            "give its Dockerfile's path relative to the workspace, e.g. "
            "dockerfile: services/orders/Dockerfile",
        )
    raw = {key: _text(item[key], key, shown, item.key_lines[key]) for key in item if key != "name"}
    return ImageEntry(name=name, raw=raw, line=item.line, lines=dict(item.key_lines))


def _text(value: Any, key: str, shown: str, line: int) -> str:
    """A value as the raw text of the input of the same name: mappings as KEY=VALUE lines
    (build-args, secrets), lists as lines (tags), scalars as written."""
    if isinstance(value, _Located):
        if key not in MERGED_KEYS:
            raise InputError(f"{shown} line {line}: '{key}' is a mapping", f"give '{key}' one value")
        pairs = []
        for name, item in value.items():
            if isinstance(item, (dict, list)) or item is None:
                raise InputError(
                    f"{shown} line {value.key_lines[name]}: '{key}' gives {name} no single value",
                    f"write {name}: followed by one value",
                )
            pairs.append(f"{name}={_scalar(item)}")
        return "\n".join(pairs)
    if isinstance(value, list):
        if key != "tags" and key not in MERGED_KEYS:
            raise InputError(f"{shown} line {line}: '{key}' is a list", f"give '{key}' one value")
        if any(isinstance(item, (dict, list)) for item in value):
            raise InputError(f"{shown} line {line}: '{key}' holds a nested list or mapping",
                             "give one value per list item")  # fmt: skip
        return "\n".join(_scalar(item) for item in value)
    if value is None:
        raise InputError(f"{shown} line {line}: '{key}' has no value", f"give '{key}' a value or remove it")
    return _scalar(value)


def _scalar(value: Any) -> str:
    # YAML reads `true` and `1.0` as bool and float; the inputs they stand for are text.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def merged(defaults: str, own: str) -> str:
    """Two KEY=VALUE texts as one, the image's own entries replacing the input's by key."""
    entries: dict[str, str] = {}
    for line in (*defaults.splitlines(), *own.splitlines()):
        if line.strip():
            entries[line.strip().partition("=")[0].strip()] = line.strip()
    return "\n".join(entries.values())
