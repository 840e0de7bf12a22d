"""What a Dockerfile reads, found in one walk over its instructions: the external images
(FROM, COPY --from, RUN --mount=from=, the `# syntax=` frontend) and the build-context paths
(COPY/ADD sources, RUN --mount=type=bind sources), with the warnings a reader should see.

The walk follows BuildKit's dockerfile2llb and dispatcher, each in its own scope:

* images: FROM expands with the global ARGs (and the automatic platform ARGs) and may name
  an earlier stage; COPY --from is never expanded and may name any stage or a stage index;
  RUN --mount=from= expands with the stage's ARGs;
* context paths: expanded with the stage's ARGs (a build arg beats the default; a bare ARG
  takes the global value) and ENVs (which win over ARGs), a stage FROM an earlier one
  starting with its ENVs. A variable none of these sets may come from the base image, so it
  widens the scope to the whole context, as does a source that is the context root or a
  frontend other than Docker's.

Syntax (lines, words, flags, expansion) is `dockerfile_syntax`'s.
"""

from __future__ import annotations

import posixpath
import re
from collections import ChainMap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from entrypoint.build import dockerfile_syntax as syntax

if TYPE_CHECKING:
    from collections.abc import Mapping

SCRATCH = "scratch"
# Docker's own Dockerfile frontends, which read the context only as COPY, ADD and RUN
# --mount say. Any other `# syntax=` image may read whatever it likes.
_DOCKERFILE_FRONTEND = re.compile(
    r"^(?:(?:docker\.io|registry-1\.docker\.io)/)?docker/dockerfile(?:-upstream)?"
    r"(?::[\w][\w.-]*)?(?:@sha256:[0-9a-f]{64})?$"
)
_REMOTE = re.compile(r"^(?:https?|git)://|^git@")


@dataclass(frozen=True)
class Source:
    path: str  # relative to the context root, cleaned; a pattern unless literal
    label: str  # the instruction text it came from, for the scope's reason
    literal: bool = False  # a bind mount's source, which BuildKit does not match


@dataclass(frozen=True)
class Dockerfile:
    images: tuple[str, ...]  # external images, in order of first use
    sources: tuple[Source, ...]  # context paths the instructions name
    whole_context: str | None  # why any context path may count, when one may
    warnings: tuple[str, ...]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, rest) of every instruction, continuations joined, heredoc bodies skipped."""
    return [(i.keyword, i.rest) for i in syntax.parse(text)[1]]


def read(text: str, build_args: Mapping[str, str], platform: str) -> Dockerfile:
    directives, parsed = syntax.parse(text)
    walk = _Walk(build_args, platform, _stage_names(parsed))
    frontend = build_args.get("BUILDKIT_SYNTAX") or directives.get("syntax", "")
    # The frontend image decides how the Dockerfile is read, so it counts as an input.
    walk.use(frontend)
    if frontend and not _DOCKERFILE_FRONTEND.match(frontend):
        walk.whole_context = f"the frontend {frontend} may read any path"
    for ins in parsed:
        walk.step(ins.keyword, ins.rest)
    return Dockerfile(
        images=tuple(walk.images),
        sources=tuple(walk.sources) if walk.whole_context is None else (),
        whole_context=walk.whole_context,
        warnings=tuple(walk.warnings),
    )


def _stage_names(parsed: list[syntax.Instruction]) -> set[str]:
    names = set()
    for ins in parsed:
        words = syntax.split_flags(ins.rest)[1] if ins.keyword == "FROM" else []
        if len(words) >= 3 and words[1].lower() == "as":
            names.add(words[2].lower())
    return names


@dataclass
class _Walk:
    build_args: Mapping[str, str]
    platform: str
    stage_names: set[str]
    images: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    whole_context: str | None = None
    in_stage: bool = False
    global_scope: dict[str, str | None] = field(default_factory=dict)
    image_args: dict[str, str | None] = field(default_factory=dict)  # the stage's, for images
    args: dict[str, str | None] = field(default_factory=dict)  # the stage's, for paths
    env: dict[str, str | None] = field(default_factory=dict)
    stage_envs: dict[str, dict[str, str | None]] = field(default_factory=dict)
    earlier_stages: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.global_scope = syntax.platform_args(self.platform)

    def use(self, ref: str) -> None:
        if ref and ref != SCRATCH and ref not in self.images:
            self.images.append(ref)

    def step(self, keyword: str, rest: str) -> None:
        if keyword == "ARG":
            self._arg(rest)
        elif keyword == "FROM":
            self._from(rest)
        elif not self.in_stage:
            return
        elif keyword == "ENV":
            scope = ChainMap(self.env, self.args)  # every value sees the variables from before
            self.env.update(
                [(name, syntax.shell_word(value, scope)) for name, value in syntax.env_pairs(rest)]
            )
        elif keyword in ("COPY", "ADD"):
            self._copy(keyword, rest)
        elif keyword == "RUN":
            self._run(rest)

    def _arg(self, rest: str) -> None:
        if not self.in_stage:
            syntax.declare(rest, self.global_scope, self.build_args, {})
            return
        syntax.declare(rest, self.image_args, self.build_args, self.global_scope)
        syntax.declare_in_stage(rest, self.args, self.env, self.build_args, self.global_scope)

    def _from(self, rest: str) -> None:
        words = syntax.split_flags(rest)[1]
        if words:
            image = self._expanded(words[0], self.global_scope, f"FROM {rest}")
            if image.lower() not in self.earlier_stages:
                self.use(image)
            # A stage FROM an earlier one starts with its ENVs (an unexpandable name is none).
            self.env = dict(self.stage_envs.get(image.lower(), {}))
            if len(words) >= 3 and words[1].lower() == "as":
                self.earlier_stages.add(words[2].lower())
                self.stage_envs[words[2].lower()] = self.env
        else:
            self.env = {}
        self.in_stage = True
        self.image_args = {}
        self.args = {}

    def _copy(self, keyword: str, rest: str) -> None:
        flags, words = syntax.copy_words(rest)
        if keyword == "COPY":
            for source in syntax.split_flags(rest)[0].get("from", []):
                self._image_from_stage_or_registry(source)
        else:
            plain = syntax.split_flags(rest)[1]
            if any(_REMOTE.match(word) for word in plain[:-1]):
                self.warnings.append(
                    f"ADD {' '.join(plain)} fetches remote content, which the "
                    "fingerprint cannot see change: pin it (ADD --checksum=sha256:...) or fetch it "
                    "in a versioned RUN step"
                )
        if "from" in flags:
            return
        heredoc = False
        for word in words[:-1]:  # the last one is the destination
            if heredoc or word.startswith("<<"):  # a heredoc, not a context file
                heredoc = word in ("<<", "<<-")  # `<< EOF`: the name is the next word
                continue
            if keyword == "ADD" and _REMOTE.match(word):
                continue  # fetched, not read from the context
            self._source(word, f"{keyword} {word}")

    def _run(self, rest: str) -> None:
        for mount in syntax.split_flags(rest)[0].get("mount", []):
            raw = syntax.mount_from(mount)
            if raw is not None:
                image = self._expanded(raw, self.image_args, f"RUN --mount={mount}")
                self._image_from_stage_or_registry(image)
            fields = syntax.mount_fields(mount)
            if fields.get("type", "bind") != "bind" or "from" in fields:
                continue  # cache, tmpfs, secret, ssh; or a bind of another stage or image
            label = f"RUN --mount={mount}"
            path = fields.get("source", fields.get("src", ""))
            if path:
                self._source(path, label, literal=True)
            else:
                self._widen(f"{label} binds the context root")

    def _image_from_stage_or_registry(self, source: str) -> None:
        if source.lower() not in self.stage_names and not source.isdigit():
            self.use(source)

    def _expanded(self, word: str, scope: Mapping[str, str | None], where: str) -> str:
        value = syntax.expand(word, scope)
        if value is None:
            self.warnings.append(
                f"cannot expand '{word}' in {where}: the fingerprint holds that text as it is, "
                "so updates of the image behind it are not detected"
            )
            return word
        return value

    def _source(self, word: str, label: str, *, literal: bool = False) -> None:
        if self.whole_context is not None:
            return
        if "\\" in word:
            self._widen(f"{label}: backslash escapes are not interpreted here")
            return
        value = syntax.shell_word(word, ChainMap(self.env, self.args))
        if value is None:
            self._widen(f"{label}: cannot expand {word}")
            return
        cleaned = posixpath.normpath("/" + value).lstrip("/")
        if not cleaned or cleaned == ".":
            self._widen(f"{label} reads the context root")
            return
        self.sources.append(Source(cleaned, label, literal))

    def _widen(self, reason: str) -> None:
        if self.whole_context is None:
            self.whole_context = reason
