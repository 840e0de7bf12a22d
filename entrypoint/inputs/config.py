"""The `config` file of a release: several images published from one step.

Every value is read as the text written: pyyaml's base loader resolves nothing implicitly,
where YAML 1.1 would build `3.10` as 3.1, `0755` as 493, `12:30` as 750 and `on` as true,
and the image would be built with those. No tag but text, list and mapping is read, so no
object is ever made (a checkout's YAML is untrusted), and merge keys (`<<`) are refused
rather than half-supported (an image overriding a merged key would be a key given twice).
The line of every key is kept, so that each error names the file, the line and the key.
Each image's keys become the same raw strings the action's inputs are, and `inputs` parses
them with the same rules; the action's inputs are every image's defaults.

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
from typing import TYPE_CHECKING, Any, NoReturn

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
# The gates too: they are the workflow's rules, and the file is the checkout's, which a pull
# request can change (a file that could set `scan: false` would lift the gate it is under).
RUN_KEYS = (
    "env", "region", "registry", "push", "cache", "cache-dir", "force-build", "parallel", "builder",
    "size-limit", "size-warn", "size-growth-limit", "size-growth-warn",
    "scan", "scan-fail-on", "scan-ignore", "scan-timeout",
)  # fmt: skip
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


_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"


class _Refused(yaml.MarkedYAMLError):
    """YAML that parses but that this file does not take (a tag, a merge key): not a syntax
    error, so it is shown as what it is, with its own fix in `note`."""


class _Loader(yaml.BaseLoader):
    """pyyaml's base loader (no implicit resolvers: every scalar is text), keeping key lines
    and refusing a key given twice (YAML allows it and keeps the last, so a pasted block
    would silently win), any explicit tag but text, list and mapping, and merge keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(None, None, "a mapping was expected", node.start_mark)
        mapping = _Located()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                raise _Refused(
                    None, None, "a merge key (<<) is not read", key_node.start_mark,
                    "write the keys out in each image (an alias such as *args still works); "
                    "settings every image shares can be the action's inputs, every image's defaults",
                )  # fmt: skip
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

    def read_text(self, node: yaml.ScalarNode) -> str:
        return self.construct_scalar(node)

    def read_list(self, node: yaml.SequenceNode) -> list[Any]:
        return self.construct_sequence(node)

    def refuse_tag(self, node: yaml.Node) -> NoReturn:
        # Standard types (!!int, !!bool, !!timestamp) would bring back the typed values this
        # loader exists to avoid, and anything else (!!python/object/apply) runs code.
        tag = str(node.tag)
        shown = "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag
        raise _Refused(
            None, None, f"the tag '{shown}' is not read", node.start_mark,
            "remove it: every value is read as the text written, so none needs a tag or quotes",
        )  # fmt: skip


# `<<` keeps its merge tag only so that construct_mapping can refuse it by name; anywhere but
# a key (`tags: [<<]`) it is the text written.
_Loader.add_implicit_resolver(_MERGE_TAG, re.compile(r"^<<$"), ["<"])
_Loader.add_constructor(_MERGE_TAG, _Loader.read_text)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SCALAR_TAG, _Loader.read_text)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _Loader.read_list)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)
# Without this, the base loader reads any other tag as text; refusing names the line instead.
_Loader.add_constructor(None, _Loader.refuse_tag)


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
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise InputError(f"{shown} line {line}: {exc.problem}", exc.note or "fix the YAML") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(
            f"{shown}{where} is not valid YAML: {exc.problem or exc.context}",
            "fix the YAML (a linter such as yamllint shows the spot)",
        ) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{shown} is not valid YAML: {exc}", "fix the YAML") from exc
    finally:
        loader.dispose()


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


def _text(value: str | list[Any] | _Located, key: str, shown: str, line: int) -> str:
    """A value as the raw text of the input of the same name: mappings as KEY=VALUE lines
    (build-args, secrets), lists as lines (tags), text as written. The loader makes every
    scalar text, so nothing is converted: `3.10` reaches the build as 3.10."""
    if isinstance(value, _Located):
        if key not in MERGED_KEYS:
            raise InputError(f"{shown} line {line}: '{key}' is a mapping", f"give '{key}' one value")
        pairs = []
        for name, item in value.items():
            if not isinstance(item, str):
                raise InputError(
                    f"{shown} line {value.key_lines[name]}: '{key}' gives {name} no single value",
                    f"write {name}: followed by one value",
                )
            pairs.append(f"{name}={_one_line(item, key, shown, value.key_lines[name])}")
        return "\n".join(pairs)
    if isinstance(value, list):
        if key != "tags" and key not in MERGED_KEYS:
            raise InputError(f"{shown} line {line}: '{key}' is a list", f"give '{key}' one value")
        if not all(isinstance(item, str) for item in value):
            raise InputError(f"{shown} line {line}: '{key}' holds a nested list or mapping",
                             "give one value per list item")  # fmt: skip
        return "\n".join(_one_line(item, key, shown, line) for item in value)
    if not value.strip():
        # An empty key would mean neither the input nor the documented default (an empty
        # `platform` is linux/amd64, not the platform input): leaving the key out says which.
        raise InputError(f"{shown} line {line}: '{key}' has no value", f"give '{key}' a value or remove it")
    return value


def _one_line(item: str, key: str, shown: str, line: int) -> str:
    # The input's text is one entry a line: a value of two lines would become two tags, or
    # smuggle a second build arg in (`"x\nPROXY=y"`).
    if len(item.splitlines()) > 1:
        raise InputError(
            f"{shown} line {line}: '{key}' has a value of several lines",
            "give each value on one line",
        )
    return item


def merged(defaults: str, own: str) -> str:
    """Two KEY=VALUE texts as one, the image's own entries replacing the input's by key."""
    entries: dict[str, str] = {}
    for line in (*defaults.splitlines(), *own.splitlines()):
        if line.strip():
            entries[line.strip().partition("=")[0].strip()] = line.strip()
    return "\n".join(entries.values())
