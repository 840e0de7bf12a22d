"""Moving tags in one repository, shared by publish, promote and rollback.

The order is the product's promise: refuse up front when an immutable tag would have to
move; record where the environment tag pointed before it moves (the history rollback reads);
move the tags, putting back what moved if a later one fails; then read every tag back.

The history is kept by the registry itself: `history-<env>-<UTC time>` names the image the
environment tag left. Tags sort by time; the newest is where `<env>` pointed before its last
move. They are new tags each time, so immutable repositories take them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, NoReturn

from entrypoint import github
from entrypoint.cancel import Cancelled
from entrypoint.errors import IMMUTABLE_TAGS_FIX, PushRejectedError, RegistryError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from entrypoint.registry.client import Descriptor, Manifest, RegistryClient
    from entrypoint.registry.ecr import Repository

HISTORY_PREFIX = "history-"
_STAMP = "%Y%m%d-%H%M%S-%f"
_STAMP_RE = r"\d{8}-\d{6}-\d{6}"


@dataclass(frozen=True)
class Place:
    """A repository on a registry, with what its tags named when the run began."""

    registry: RegistryClient
    repository: Repository
    current: dict[str, Descriptor | None]

    @property
    def name(self) -> str:
        return self.repository.name

    def reference(self, tag: str) -> str:
        return f"{self.registry.host}/{self.name}:{tag}"


def look_up(registry: RegistryClient, repository: Repository, tags: Iterable[str]) -> Place:
    current = {tag: registry.head_manifest(repository.name, tag) for tag in dict.fromkeys(tags)}
    for tag, found in current.items():
        if found:
            github.info(f"  {tag} is now {found.digest}")
    return Place(registry, repository, current)


def history_tag(env: str, now: datetime | None = None) -> str:
    return f"{HISTORY_PREFIX}{env}-{(now or datetime.now(timezone.utc)).strftime(_STAMP)}"


# How far ahead of this runner's clock a history tag's time may be. Every run that writes
# one has just signed AWS requests, which AWS refuses from a clock more than 5 minutes off
# its own, so two such clocks are within 10 minutes of each other.
CLOCK_SKEW = timedelta(minutes=10)


def history(place: Place, env: str, now: datetime | None = None) -> list[str]:
    """The environment's history tags, newest first.

    Anyone who may push to the repository can add a tag, and the name is all there is to
    order by: neither the registry API nor ECR records when a tag was written (ECR's
    imagePushedAt is the image's first push, and a history tag names an older image by
    design). So the name must be exactly what `history_tag` writes (a real UTC time, the
    environment's prefix) and its time no later than now: a tag dated in the future would
    otherwise stay the newest and choose every rollback to come, whatever publishes after
    it. Those are left out with a warning naming them, for someone to delete."""
    now = now or datetime.now(timezone.utc)
    prefix = f"{HISTORY_PREFIX}{env}-"
    pattern = re.compile(rf"{re.escape(prefix)}({_STAMP_RE})")
    dated: list[tuple[datetime, str]] = []
    future: list[str] = []
    for tag in place.registry.tags(place.name):
        matched = pattern.fullmatch(tag)
        if matched is None:
            continue
        try:
            when = datetime.strptime(matched.group(1), _STAMP).replace(tzinfo=timezone.utc)
        except ValueError:
            continue  # digits that are no time (month 13): not a tag this action wrote
        if when > now + CLOCK_SKEW:
            future.append(tag)
            continue
        dated.append((when, tag))
    if future:
        github.warning(
            f"rollback ignores {', '.join(sorted(future))} in {place.name}: dated after now "
            f"({now.strftime(_STAMP)} UTC), so not written by this action when {env} moved; "
            "whoever can push to the repository could have planted it to choose the rollback. "
            "Delete it, and check who may push to the repository"
        )
    return [tag for _, tag in sorted(dated, reverse=True)]


def require_movable(place: Place, moving: Iterable[str], *, stays: str | None = None, nothing: str) -> None:
    """Refuse before anything is written when an immutable tag would have to move. `stays`:
    a tag (the commit tag) that is fine where it is if it already names the new image."""
    repository = place.repository
    existing = place.current.get(stays) if stays else None
    destination = existing.digest if existing and repository.tag_is_immutable(stays or "") else None
    stuck = [
        f"{tag} (at {found.digest[:19]}…)"
        for tag in moving
        if (found := place.current.get(tag))
        and repository.tag_is_immutable(tag)
        and found.digest != destination
    ]
    if stuck:
        raise PushRejectedError(
            f"repository {repository.name} has immutable tags ({repository.mutability}) and "
            f"{', '.join(stuck)} cannot move to a new image; {nothing}",
            IMMUTABLE_TAGS_FIX,
        )


def put(place: Place, tag: str, manifest: Manifest) -> None:
    """Point `tag` at `manifest`, unless it already does."""
    current = place.current.get(tag) or place.registry.head_manifest(place.name, tag)
    if current and current.digest == manifest.digest:
        github.info(f"  {tag} already points at {manifest.digest}")
        return
    place.registry.put_manifest(place.name, tag, manifest)
    github.info(f"  {tag} -> {manifest.digest}")


Moved = list[tuple[str, "Manifest"]]


def move(place: Place, moving: Iterable[str], manifest: Manifest, *, env: str) -> Moved:
    """Move each tag to `manifest`; the environment tag's old image goes into the history
    first. On failure or cancel, tags that already moved are put back. Returns the tags
    that moved with their old images, for `undo` when a release fails elsewhere."""
    registry, name = place.registry, place.name
    moved: Moved = []
    try:
        for tag in moving:
            before = place.current.get(tag)
            if before and before.digest == manifest.digest:
                github.info(f"  {tag} already points at {manifest.digest}")
                continue
            previous = registry.get_manifest(name, before.digest) if before else None
            if previous and tag == env:
                recorded = history_tag(env)
                registry.put_manifest(name, recorded, previous)
                github.info(f"  {recorded} -> {previous.digest} (where {env} was, for rollback)")
            registry.put_manifest(name, tag, manifest)
            github.info(f"  {tag} -> {manifest.digest}" + (f" (was {before.digest})" if before else ""))
            if previous:
                moved.append((tag, previous))
    except (RegistryError, Cancelled):
        undo(place, moved)
        raise
    return moved


def undo(place: Place, moved: Moved) -> None:
    """Put tags back where they were (a tag that named nothing before stays: the registry
    API has no untag, and it names a complete, checked image)."""
    for tag, previous in reversed(moved):
        try:
            place.registry.put_manifest(place.name, tag, previous)
            github.info(f"  restored {tag} -> {previous.digest}")
        except RegistryError as exc:
            github.warning(f"could not restore {tag} to {previous.digest}: {exc.cause}")


def settle_and_verify(
    place: Place,
    moving: Iterable[str],
    manifest: Manifest,
    *,
    env: str,
    fixed: Iterable[str] = (),
    reference: Callable[[str], str] | None = None,
) -> None:
    """Read every tag this run wrote back, once, with other runs perhaps publishing to the
    same environment. The run whose image the environment tag names owns the environment and
    makes the other moving tags follow it; a run that finds another image there lost the
    race, puts back any tag it moved past the winner, and fails with one line instead of
    claiming success. A `fixed` tag (the commit's) not at the image fails the run."""
    registry, name, show = place.registry, place.name, reference or place.reference
    moving = tuple(dict.fromkeys(moving))
    found = {tag: registry.head_manifest(name, tag) for tag in dict.fromkeys((*fixed, *moving))}
    holder = found.get(env)
    if holder is None or holder.digest != manifest.digest:
        _lost(place, {tag: found[tag] for tag in moving if tag != env}, manifest, env, holder)
    for tag in moving:
        now = found[tag]
        if tag != env and (now is None or now.digest != manifest.digest):
            # A moving tag another run moved after this one: the environment is ours, so it follows.
            registry.put_manifest(name, tag, manifest)
            github.info(f"  {tag} -> {manifest.digest} again (another run had moved it)")
            found[tag] = registry.head_manifest(name, tag)
    for tag, now in found.items():
        if now is None or now.digest != manifest.digest:
            raise RegistryError(
                f"after the push, {show(tag)} resolves to "
                f"{now.digest if now else 'nothing'}, not {manifest.digest}",
                "another job may be publishing to the same tags: serialise deploys with a "
                "`concurrency` group per environment, then rerun",
            )
        github.info(f"  {show(tag)} = {manifest.digest}")


def _lost(
    place: Place,
    others: dict[str, Descriptor | None],
    manifest: Manifest,
    env: str,
    holder: Descriptor | None,
) -> NoReturn:
    """Put back the moving tags (`others`, the environment's aside) this run left on its image."""
    winner = place.registry.get_manifest(place.name, holder.digest) if holder else None
    for tag, now in others.items():
        if winner is not None and now is not None and now.digest == manifest.digest:
            place.registry.put_manifest(place.name, tag, winner)
            github.info(f"  {tag} -> {winner.digest}, with {env}")
    raise RegistryError(
        f"another run moved {place.reference(env)} to "
        f"{holder.digest if holder else 'nothing'} while this run published {manifest.digest}: "
        f"this run's image is pushed (and tagged with its commit) but {env} and latest name the "
        "other run's",
        "serialise deploys of one environment with a `concurrency` group; rerun this job if its "
        "commit is the one that must be deployed",
    )
