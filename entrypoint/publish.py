"""The publish job: plan, check the engine, log in, build, push the commit tag, move the
other tags once the image is complete, and prove every tag resolves to one digest."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from entrypoint import buildkit, github
from entrypoint.ecr import Ecr
from entrypoint.engine import Engine
from entrypoint.errors import PushRejectedError, RegistryError
from entrypoint.plan import Plan, make_plan
from entrypoint.registry import Descriptor, Manifest, RegistryClient, Transport

if TYPE_CHECKING:
    from collections.abc import Mapping

    from entrypoint.ecr import RegistryLogin, Repository
    from entrypoint.inputs import PublishInputs


@dataclass(frozen=True)
class PublishResult:
    registry: str
    repository: str
    digest: str
    references: tuple[str, ...]

    @property
    def image_uri(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}" if self.digest else ""

    def outputs(self) -> dict[str, str]:
        return {
            "image-uri": self.image_uri,
            "digest": self.digest,
            "tags": "\n".join(self.references),
            "registry": self.registry,
            "repository": self.repository,
        }


@dataclass(frozen=True)
class Target:
    """Where the image goes, known once ECR has answered."""

    login: RegistryLogin
    registry: RegistryClient
    repository: Repository
    current: dict[str, Descriptor | None]


def publish(inputs: PublishInputs, environ: Mapping[str, str]) -> PublishResult:
    with github.stage("plan"):
        plan = make_plan(inputs, environ)
        for line in plan.describe():
            github.info(f"  {line}")

    with github.stage("check the Docker engine"):
        engine = Engine.connect()
        builder = buildkit.detect_builder()
        github.info(f"  builder: {builder.kind} ({builder.version}), driver {builder.driver}")

    target: Target | None = None
    if inputs.push:
        with github.stage("log in to Amazon ECR"):
            plan, target = _connect(plan)

    with github.stage("build"), tempfile.TemporaryDirectory(prefix="lambda-publish-") as tmp:
        request = buildkit.BuildRequest(
            dockerfile=inputs.dockerfile,
            context=inputs.context,
            platform=inputs.platform,
            tags=(plan.local_image,),
            build_arg_keys=tuple(k for k, _ in inputs.build_args),
            iidfile=Path(tmp) / "iid",
        )
        argv = buildkit.build_command(builder, request)
        env = buildkit.build_environment(os.environ, inputs.build_args)
        built = buildkit.run_build(argv, env, request)
        github.info(f"  image {built.image_id} ({len(built.cached_steps)} steps from cache)")

    if target is None:
        github.notice(f"push is false: built {plan.local_image} ({built.image_id}); nothing was pushed")
        return PublishResult(
            registry=plan.registry or "", repository=inputs.repository, digest="", references=()
        )

    with github.stage(f"push {plan.reference(plan.commit_tag)}"):
        manifest = _push_commit_tag(engine, plan, target, built.image_id)
    with github.stage("move " + ", ".join(plan.moving_tags)):
        _move_tags(plan, target, manifest)
    with github.stage("verify the registry"):
        _verify(plan, target, manifest.digest)
    assert plan.registry is not None
    return PublishResult(
        registry=plan.registry,
        repository=inputs.repository,
        digest=manifest.digest,
        references=tuple(plan.reference(t) for t in plan.tags),
    )


def _connect(plan: Plan) -> tuple[Plan, Target]:
    ecr = Ecr(plan.inputs.region)
    login = ecr.login()
    github.mask(login.password)
    plan = plan.with_registry(plan.inputs.registry or login.registry)
    assert plan.registry is not None
    registry = RegistryClient(Transport(plan.registry, login.username, login.password))
    registry.ping()
    github.info(f"  logged in to {plan.registry} as {login.username}")
    repository = ecr.repository(plan.inputs.repository)
    github.info(f"  repository {repository.name} exists (tags {repository.mutability})")
    current = {tag: registry.head_manifest(repository.name, tag) for tag in plan.tags}
    for tag, found in current.items():
        if found:
            github.info(f"  {tag} is now {found.digest}")
    _check_tags_can_move(plan, repository, current)
    return plan, Target(login=login, registry=registry, repository=repository, current=current)


def _check_tags_can_move(plan: Plan, repository: Repository, current: dict[str, Descriptor | None]) -> None:
    """Refuse up front, not halfway, when immutable tags would have to move."""
    existing = current[plan.commit_tag]
    destination = existing.digest if existing and repository.tag_is_immutable(plan.commit_tag) else None
    stuck = [
        f"{tag} (at {found.digest[:19]}…)"
        for tag in plan.moving_tags
        if (found := current[tag]) and repository.tag_is_immutable(tag) and found.digest != destination
    ]
    if stuck:
        raise PushRejectedError(
            f"repository {repository.name} has immutable tags ({repository.mutability}) and "
            f"{', '.join(stuck)} cannot move to a new image; nothing was pushed",
            'set image_tag_mutability = "MUTABLE" on the aws_ecr_repository, or '
            "IMMUTABLE_WITH_EXCLUSION with exclusion filters for the environment and latest tags "
            "(deploys still pin the digest)",
        )


def _push_commit_tag(engine: Engine, plan: Plan, target: Target, image_id: str) -> Manifest:
    name = target.repository.name
    existing = target.current[plan.commit_tag]
    if existing and target.repository.tag_is_immutable(plan.commit_tag):
        # An immutable commit tag already names this commit's image: reuse it, as a rerun should.
        github.notice(
            f"{plan.reference(plan.commit_tag)} already exists in an immutable repository; "
            "reusing the image published for this commit"
        )
        return target.registry.get_manifest(name, existing.digest)
    remote = f"{plan.registry}/{name}"
    engine.tag(image_id, remote, plan.commit_tag)
    try:
        with github.group("push log"):
            pushed = engine.push(remote, plan.commit_tag, target.login)
    finally:
        engine.untag(f"{remote}:{plan.commit_tag}")
    # The registry accepts a manifest only once all its blobs are stored: reading it back by
    # digest proves the image is complete before any moving tag points at it.
    manifest = target.registry.get_manifest(name, pushed)
    if manifest.is_index:
        manifest = _single_manifest(plan, target, manifest)
    github.info(f"  {plan.commit_tag} -> {manifest.digest} ({manifest.media_type})")
    return manifest


def _single_manifest(plan: Plan, target: Target, index: Manifest) -> Manifest:
    """Engines with the containerd image store push an index; Lambda wants the image itself."""
    os_, arch = plan.inputs.platform.split("/")
    for entry in index.json().get("manifests", []):
        platform = entry.get("platform") or {}
        attestation = (entry.get("annotations") or {}).get("vnd.docker.reference.type")
        if platform.get("os") == os_ and platform.get("architecture") == arch and not attestation:
            name = target.repository.name
            manifest = target.registry.get_manifest(name, entry["digest"])
            target.registry.put_manifest(name, plan.commit_tag, manifest)
            github.notice(
                f"the engine pushed an image index; {plan.commit_tag} now names its "
                f"{plan.inputs.platform} manifest {manifest.digest}, which Lambda accepts"
            )
            return manifest
    raise PushRejectedError(
        f"the pushed image is an index without a {plan.inputs.platform} image manifest",
        "build for the platform given in 'platform'",
    )


def _move_tags(plan: Plan, target: Target, manifest: Manifest) -> None:
    name = target.repository.name
    moved: list[tuple[str, Manifest]] = []
    try:
        for tag in plan.moving_tags:
            before = target.current[tag]
            if before and before.digest == manifest.digest:
                github.info(f"  {tag} already points at {manifest.digest}")
                continue
            previous = target.registry.get_manifest(name, before.digest) if before else None
            target.registry.put_manifest(name, tag, manifest)
            github.info(f"  {tag} -> {manifest.digest}" + (f" (was {before.digest})" if before else ""))
            if previous:
                moved.append((tag, previous))
    except RegistryError:
        # Put back what already moved, so a half-finished publish leaves the old release whole.
        for tag, previous in reversed(moved):
            try:
                target.registry.put_manifest(name, tag, previous)
                github.info(f"  restored {tag} -> {previous.digest}")
            except RegistryError as exc:
                github.warning(f"could not restore {tag} to {previous.digest}: {exc.cause}")
        raise


def _verify(plan: Plan, target: Target, digest: str) -> None:
    for tag in plan.tags:
        found = target.registry.head_manifest(target.repository.name, tag)
        if found is None or found.digest != digest:
            raise RegistryError(
                f"after the push, {plan.reference(tag)} resolves to "
                f"{found.digest if found else 'nothing'}, not {digest}",
                "another job may be publishing to the same tags: serialise deploys with a "
                "`concurrency` group per environment, then rerun",
            )
        github.info(f"  {plan.reference(tag)} = {digest}")


def summary(result: PublishResult) -> str:
    rows = [(k, f"`{v}`" if v else "") for k, v in result.outputs().items()]
    return "### Lambda image published\n\n" + github.markdown_table(("output", "value"), rows)
