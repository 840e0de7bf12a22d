"""Dockerfile syntax, as BuildKit's frontend reads it: parser directives, instructions with
continuations and heredocs, words and flags, and variable expansion (`$VAR`, `${VAR:-x}`, ...)
with the ARG/ENV rules of each place. `dockerfile.read` walks the result once.

Our own reader, not the `dockerfile` package (BuildKit's Go parser behind a Python binding):
its wheels are built for x86_64 Linux only, so an arm64 runner would lose the fingerprint,
and it parses but does not expand or scope variables, which is most of the work here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections import ChainMap
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")
_HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])(.*))?", re.DOTALL)
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    rest: str


def parse(text: str) -> tuple[dict[str, str], list[Instruction]]:
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

    instructions: list[Instruction] = []
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
        instructions.append(Instruction(keyword, rest.strip()))
        current = ""
        if keyword in _HEREDOC_INSTRUCTIONS:
            for heredoc in _HEREDOC.finditer(rest):
                word = heredoc.group(2)
                while index < len(lines) and lines[index].lstrip("\t") != word:
                    index += 1
                index += 1
    if current.strip():
        keyword, _, rest = current.strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), rest.strip()))
    return directives, instructions


def expand(word: str, scope: Mapping[str, str | None], *, strict: bool = False) -> str | None:
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
        return value if present else expand(alternative or "", scope, strict=strict)
    if op.endswith("+"):
        return expand(alternative or "", scope, strict=strict) if present else ""
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


def platform_args(platform: str) -> dict[str, str | None]:
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


def declare(
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
            scope[name] = expand(default, scope)
        elif name not in scope:
            scope[name] = inherited.get(name)


def split_flags(rest: str) -> tuple[dict[str, list[str]], list[str]]:
    """Leading `--name=value` flags of an instruction, and the words after them."""
    words = rest.split()
    flags: dict[str, list[str]] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0)[2:].partition("=")
        flags.setdefault(name.lower(), []).append(value)
    return flags, words


def mount_from(value: str) -> str | None:
    for field in value.split(","):
        key, _, found = field.strip().partition("=")
        if key.strip().lower() == "from":
            return found.strip().strip("\"'")
    return None


def declare_in_stage(
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
            args[name] = expand(default, ChainMap(env, args), strict=True)
        else:
            args[name] = global_scope.get(name)


def copy_words(rest: str) -> tuple[dict[str, list[str]], list[str]]:
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


def mount_fields(value: str) -> dict[str, str]:
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


def env_pairs(rest: str) -> list[tuple[str, str]]:
    """`ENV A=1 B="x y"` or the legacy `ENV NAME the value`."""
    words = _split_words(rest)
    if not words:
        return []
    if "=" not in words[0]:
        name_value = rest.split(maxsplit=1)
        return [(name_value[0], name_value[1].strip())] if len(name_value) == 2 else []
    return [(name, value) for name, _, value in (word.partition("=") for word in words)]


def shell_word(word: str, scope: Mapping[str, str | None]) -> str | None:
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
                part = expand(word[index + 1 : end], scope, strict=True)
            index = end + 1
        else:
            end = min(
                (p for p in (word.find("'", index), word.find('"', index)) if p >= 0), default=len(word)
            )
            part = expand(word[index:end], scope, strict=True)
            index = end
        if part is None:
            return None
        out.append(part)
    return "".join(out)
