"""Promote and rollback: put an image that already exists in front of an environment,
without building it again.

Promote copies the tested image, byte for byte, into the environment's repository (same
digest, so what reaches prod is what preprod ran), then tags it as publish does. Rollback
moves the environment tag back to an image the repository already holds: the one it named
before its last move (the history `tags.move` records), or one given by digest or tag.
Both check the image against Lambda's rules before they write anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from entrypoint import github
from entrypoint.checks import lambda_rules
from entrypoint.commands.plan import resolve_commit
from entrypoint.commands.publish import PublishResult
from entrypoint.errors import CheckError, RegistryError
from entrypoint.registry import tags, transfer
from entrypoint.registry.client import RegistryClient, index_entries, index_images, platform_of
from entrypoint.registry.reference import is_ecr, is_loopback
from entrypoint.registry.session import open_session
from entrypoint.registry.transport import CredentialScope, Transport

if TYPE_CHECKING:
    from collections.abc import Mapping

    from entrypoint.inputs import PromoteInputs, RollbackInputs
    from entrypoint.registry.client import Manifest


def _checked(registry: RegistryClient, repository: str, manifest: Manifest, platform: str | None) -> None:
    """Lambda's rules on an image in a registry, before anything is written, for `platform`
    (else the image's own, when Lambda runs it)."""
    reference = f"{registry.host}/{repository}@{manifest.digest}"
    if manifest.is_index:
        entries = index_entries(manifest)
        images = [
            f"{registry.host}/{repository}@{e.get('digest', '')} ({platform_of(e)})"
            for e in index_images(manifest)
        ]
        inside = "; ".join(images) if images else "none: publish it again with provenance attestations off"
        raise CheckError(
            f"Lambda would refuse {reference}: it is an image index ({manifest.media_type}) of "
            f"{len(entries)} manifest(s), not one image manifest; nothing was written",
            "promote the image manifest inside it (the publish action's image-uri output is "
            f"always one): {inside}",
        )
    facts = lambda_rules.facts_from_registry(
        registry, repository, manifest.digest, platform=platform, find_adapter=False
    )
    own = f"{facts.os}/{facts.architecture}"
    chosen = platform or (own if own in lambda_rules.LAMBDA_PLATFORMS else "linux/amd64")
    lambda_rules.require_lambda_compatible(facts, chosen, None)
    github.info(f"  {reference}: {own}, {facts.size / 1e6:.1f} MB, passes Lambda's rules")


def promote(inputs: PromoteInputs, environ: Mapping[str, str]) -> PublishResult:
    source = inputs.source
    with github.stage("plan"):
        commit = resolve_commit(inputs.workspace, environ)
        moving = tuple(t for t in dict.fromkeys((inputs.env, "latest", *inputs.extra_tags)) if t != commit)
        github.info(f"  source      : {source.text}")
        github.info(f"  environment : {inputs.env}")
        github.info(f"  repository  : {inputs.registry or '<ECR registry>'}/{inputs.repository}")
        github.info(f"  tags        : {commit}, {', '.join(moving)} (the commit tag first, then the rest)")

    with github.stage("log in to Amazon ECR"):
        logged_in = not source.host or login_may_reach_source(source.host, inputs.registry)
        named = (((source.host, "source"),) if source.host and logged_in else ()) + (
            ((inputs.registry, "registry"),) if inputs.registry else ()
        )
        session = open_session(inputs.region, named)
        target_host = inputs.registry or session.login.registry
        source_host = source.host or target_host
        same_host = source_host.lower() == target_host.lower()
        target_client = session.client(target_host, "the 'registry' input")
        if same_host:
            source_client = target_client
        elif logged_in:
            source_client = session.client(source_host, "the 'source' input")
        else:
            github.info(
                f"  source registry {source_host} is read without credentials: the ECR login goes "
                "only to ECR, the 'registry' input's host and this runner's loopback"
            )
            source_client = RegistryClient(
                Transport(source_host, "", "", scope=CredentialScope(source_host), where="the 'source' input")
            )
        repository = session.ecr.repository(inputs.repository)
        github.info(f"  repository {repository.name} exists (tags {repository.mutability})")

    with github.stage("read the source image"):
        reference = source.digest or source.tag or ""
        try:
            found = source_client.head_manifest(source.repository, reference)
        except RegistryError as exc:
            if logged_in:
                raise
            raise RegistryError(
                f"cannot read {source.text} without credentials: {exc.cause}; nothing was written",
                "promote from the ECR registry the publish job pushed to (its image-uri output), "
                "from the 'registry' input's host, or from a registry that allows anonymous pulls",
            ) from exc
        if found is None:
            raise RegistryError(
                f"{source_host}/{source.repository}{'@' if source.digest else ':'}{reference} is not in "
                "its registry, so there is nothing to promote; nothing was written",
                "give the image-uri (or repository and digest) of the publish job that tested the "
                "image, and check that its repository is on that registry",
            )
        manifest = source_client.get_manifest(source.repository, source.digest or found.digest)
        if not source.digest:
            github.info(f"  {source.text} resolves to {manifest.digest}; promoting that digest")
        elif source.tag:
            github.info(f"  the tag in {source.text} is ignored: the digest names the image")
        _checked(source_client, source.repository, manifest, inputs.platform)

    with github.stage(f"look up the tags of {target_host}/{repository.name}"):
        place = tags.look_up(target_client, repository, (commit, *moving))
        tags.require_movable(place, moving, stays=commit, nothing="nothing was written")
        existing = place.current.get(commit)
        if existing and existing.digest != manifest.digest and repository.tag_is_immutable(commit):
            raise RegistryError(
                f"{place.reference(commit)} already names {existing.digest} in an immutable "
                f"repository, not the promoted {manifest.digest}; nothing was written",
                "promote the image this commit built (the publish job's image-uri), or delete "
                "the stale commit tag",
            )

    with github.stage("copy the image"):
        route = transfer.Route(source_client, source.repository, target_client, repository.name)
        copied = transfer.copy_blobs(route, transfer.blobs_of(manifest))
        github.info(f"  {copied.line()}")

    with github.stage(f"tag {place.reference(commit)}"):
        tags.put(place, commit, manifest)
    with github.stage("move " + ", ".join(moving)):
        tags.move(place, moving, manifest, env=inputs.env)
    with github.stage("verify the registry"):
        tags.settle_and_verify(place, moving, manifest, env=inputs.env, fixed=(commit,))
    return PublishResult(
        registry=target_host,
        repository=repository.name,
        digest=manifest.digest,
        references=tuple(place.reference(t) for t in (commit, *moving)),
    )


def login_may_reach_source(host: str, registry: str | None) -> bool:
    """Whether promote sends the ECR login to the `source` input's registry. The source is
    often another job's output rather than a host the workflow author typed, so it gets the
    login only where the login already goes: the target registry (the 'registry' input),
    an Amazon ECR registry (AWS's own endpoint, deciding by the role's permissions; one
    token serves every registry the role may read, so a cross-account promotion needs no
    second login), or this runner's loopback (a registry the job itself runs, reachable only
    from the runner). Any other host is read without credentials."""
    return is_ecr(host) or is_loopback(host) or (registry is not None and host.lower() == registry.lower())


def rollback(inputs: RollbackInputs) -> PublishResult:
    moving = (inputs.env, "latest")
    with github.stage("log in to Amazon ECR"):
        session = open_session(inputs.region, ((inputs.registry, "registry"),) if inputs.registry else ())
        host = inputs.registry or session.login.registry
        client = session.client(host, "the 'registry' input")
        repository = session.ecr.repository(inputs.repository)
        place = tags.look_up(client, repository, moving)

    with github.stage(f"choose the image ({inputs.to})"):
        current = place.current[inputs.env]
        if current is None:
            raise RegistryError(
                f"{place.reference(inputs.env)} does not exist, so there is nothing to roll back; "
                "nothing was moved",
                f"publish or promote to {inputs.env} first, or check 'env' and 'repository'",
            )
        manifest = _rollback_target(place, inputs, current.digest)
        _checked(client, repository.name, manifest, inputs.platform)
        tags.require_movable(place, moving, nothing="nothing was moved")

    with github.stage("move " + ", ".join(moving)):
        tags.move(place, moving, manifest, env=inputs.env)
    with github.stage("verify the registry"):
        tags.settle_and_verify(place, moving, manifest, env=inputs.env)
    return PublishResult(
        registry=host,
        repository=repository.name,
        digest=manifest.digest,
        references=tuple(place.reference(t) for t in moving),
    )


def _rollback_target(place: tags.Place, inputs: RollbackInputs, current: str) -> Manifest:
    registry, name = place.registry, place.name
    if inputs.to == "previous":
        for recorded in tags.history(place, inputs.env):
            found = registry.head_manifest(name, recorded)
            if found and found.digest != current:
                github.info(f"  {recorded}: {inputs.env} pointed at {found.digest} before its last move")
                return registry.get_manifest(name, found.digest)
        raise RegistryError(
            f"{place.reference(inputs.env)} has no earlier image recorded (no {tags.HISTORY_PREFIX}"
            f"{inputs.env}-* tag naming another image); nothing was moved",
            "name the image to return to in 'to' (a digest or a commit tag); the history starts "
            "with the first publish or promote made by this version of the action",
        )
    found = registry.head_manifest(name, inputs.to)
    if found is None:
        raise RegistryError(
            f"{place.registry.host}/{name}{'@' if inputs.to.startswith('sha256:') else ':'}{inputs.to} "
            "is not in the repository (never pushed, or expired by the lifecycle policy); nothing was moved",
            "choose an image the repository still holds (the lifecycle policy of the example "
            f"keeps every image a {tags.HISTORY_PREFIX}* tag names)",
        )
    github.info(f"  {inputs.to} is {found.digest}")
    return registry.get_manifest(name, found.digest)
