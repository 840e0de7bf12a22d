"""One image's publish, step by step: prepare (before any side effect), connect (the
repository and its tags), produce (reuse or build, check, push the commit tag), move the
other tags once the image is complete, and verify that every tag resolves to one digest.

`release` runs these steps for one image or several; this module knows one image only."""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from entrypoint import cancel, github
from entrypoint.build import buildkit, cache, layering
from entrypoint.build.fingerprint import Fingerprint, compute_fingerprint, included_paths_under
from entrypoint.checks import lambda_rules, scan, sizes
from entrypoint.commands import image_build
from entrypoint.commands.plan import Target
from entrypoint.engine import ENGINE_VARIABLES, Engine, resolve_with_engine
from entrypoint.errors import InputError, PushRejectedError
from entrypoint.registry import tags
from entrypoint.registry.client import index_images, platform_of
from entrypoint.registry.reference import is_loopback
from entrypoint.registry.session import Session, open_session

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager

    from entrypoint.commands.plan import Plan
    from entrypoint.inputs import PublishInputs
    from entrypoint.registry.client import Manifest


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


@dataclass
class Job:
    """One image through the publish: its plan, then what each step found. A release of
    several images runs one job each; `release` orders the steps across them."""

    name: str
    plan: Plan
    target: Target | None = None
    manifest: Manifest | None = None
    source: Fingerprint | None = None
    built_here: bool = False
    image_id: str = ""
    moved: tags.Moved = field(default_factory=list)
    built: buildkit.BuildResult | None = None
    uploaded: frozenset[str] = frozenset()  # the push's short layer ids it uploaded
    sizes: sizes.SizeDiff | None = None
    scan: scan.ScanResult | None = None

    @property
    def outcome(self) -> str:
        if self.built_here:
            return "built"
        if self.image_id:
            return "built, not pushed"
        if self.source is not None:
            return "skipped (same sources)"
        return "reused (commit tag)" if self.manifest else "not done"

    def result(self) -> PublishResult:
        plan = self.plan
        return PublishResult(
            registry=plan.registry or "",
            repository=plan.inputs.repository,
            digest=self.manifest.digest if self.manifest else "",
            references=tuple(plan.reference(t) for t in plan.tags) if self.manifest else (),
        )


def prepare(job: Job, environ: Mapping[str, str], *, describe: bool = True) -> None:
    """Before any side effect: the plan shown, secrets masked, leaks and cache-hostile
    Dockerfiles warned of."""
    inputs = job.plan.inputs
    if describe:
        for line in job.plan.describe():
            github.info(f"  {line}")
    _check_secrets(inputs, environ)
    _warn_about_leaks(inputs)
    hint = layering.cache_hostile_hint(inputs.dockerfile.read_text(errors="replace"))
    if hint:
        github.notice(hint)


def look_up(job: Job, engine: Engine, fingerprint: Future[Fingerprint] | None = None) -> None:
    """The image this publish can reuse without building (its fingerprint, or an immutable
    commit tag), if it has a registry to look in. `fingerprint`: computed already (see
    fingerprint_early)."""
    if job.target is not None:
        with github.stage("look for an image built from the same sources"):
            job.manifest, job.source = _reuse(job.plan, job.target, engine, fingerprint)


def fingerprint_early(job: Job, engine: Callable[[], Engine]) -> Future[Fingerprint]:
    """The job's source fingerprint, computed in a thread of its own while the ECR login
    runs: hashing the context and resolving the base images need the engine, never the
    registry. A fault is raised where the lookup reads the result, in its stage."""
    done: Future[Fingerprint] = Future()

    def work() -> None:
        try:
            done.set_result(_fingerprint(job.plan.inputs, engine()))
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            done.set_exception(exc)

    threading.Thread(target=work, name="fingerprint", daemon=True).start()
    return done


def produce(
    job: Job,
    engine: Engine,
    builders: Callable[[], buildkit.Builder],
    build_slot: AbstractContextManager[Any],
) -> None:
    """Tag the image look_up found, or build, check and push it under its commit tag. Moves
    nothing. `builders`: the builder to use (made on first call); `build_slot`: held while
    building."""
    plan, target = job.plan, job.target
    if job.manifest is not None:
        assert target is not None
        with github.stage(f"tag {plan.reference(plan.commit_tag)}"):
            tags.put(target.place, plan.commit_tag, job.manifest)
        return
    with build_slot:
        cancel.raise_if_requested()  # a cancel while this image waited for its turn
        job.built = image_build.build(plan, target, builders())
    # The image as the engine names it under the tag the build gave it, whatever its store
    # (the iidfile's digest is the config's on the containerd store, unknown to the engine).
    job.image_id = engine.image_id(plan.local_image)
    github.info(f"  image {job.image_id}")
    image_build.check(plan, engine, job.image_id)
    if target is None:
        github.notice(
            f"push is false: built and checked {plan.local_image} ({job.image_id}); nothing was pushed"
        )
        return
    with github.stage(f"push {plan.reference(plan.commit_tag)}"):
        job.manifest, job.uploaded = _push_commit_tag(engine, plan, target, job.image_id)
    job.built_here = True


def gated(job: Job) -> bool:
    """Whether a size budget or the scan gate must pass before the image's tags move."""
    inputs = job.plan.inputs
    return not inputs.budget.empty or inputs.scan is not None


def measure(job: Job) -> None:
    """The image's layers and sizes, and their diff against the image the environment tag
    names now (the one this publish replaces), read from the registry. Prints nothing: a
    publish with no gate measures while its tags move, for the summary alone."""
    plan, target, manifest = job.plan, job.target, job.manifest
    assert target is not None
    assert manifest is not None
    name = target.repository.name
    before = target.current.get(plan.inputs.env)
    if before is not None and before.digest == manifest.digest:
        current = sizes.read_anatomy(target.registry, name, manifest)
        job.sizes = sizes.diff(current, current)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="previous") as pool:
        previous = pool.submit(_previous_anatomy, plan, target, before.digest) if before else None
        current = sizes.read_anatomy(target.registry, name, manifest)
        job.sizes = sizes.diff(previous.result() if previous else None, current)


def examine(job: Job) -> None:
    """Measure the image, then hold it to the size budget and the scan gate: once the commit
    tag holds the complete image, before any tag moves."""
    plan, target, manifest = job.plan, job.target, job.manifest
    assert target is not None
    assert manifest is not None
    if job.sizes is None:
        measure(job)
    assert job.sizes is not None
    inputs = plan.inputs
    github.info(f"  {size_line(job.sizes, inputs.env)}")
    sizes.require_within_budget(job.sizes, inputs.budget, plan.reference(plan.commit_tag))
    if inputs.scan is not None:
        assert target.ecr is not None
        name = target.repository.name
        job.scan = scan.scan_image(
            target.ecr, target.repository, manifest.digest, inputs.scan, f"{name}@{manifest.digest}"
        )
        scan.require_clean(job.scan, inputs.scan)


def _previous_anatomy(plan: Plan, target: Target, digest: str) -> sizes.Anatomy | None:
    """The image the environment tag named before this run, as the image manifest of the
    platform when another tool pushed it as an index."""
    name = target.repository.name
    manifest = target.registry.get_manifest(name, digest)
    if manifest.is_index:
        entry = next((e for e in index_images(manifest) if platform_of(e) == plan.inputs.platform), None)
        if entry is None:
            return None
        manifest = target.registry.get_manifest(name, entry["digest"])
    return sizes.read_anatomy(target.registry, name, manifest)


def size_line(diff: sizes.SizeDiff, env: str) -> str:
    current = diff.current
    size = (
        f"{sizes.human_bytes(current.uncompressed)} uncompressed, "
        if current.uncompressed is not None
        else ""
    ) + f"{sizes.human_bytes(current.compressed)} compressed, {len(current.layers)} layers"
    if diff.previous is None:
        return f"size: {size} (first image under {env})"
    growth = diff.growth or 0
    sign = "+" if growth >= 0 else "-"
    percent = f", {diff.growth_percent:+.1f}%" if diff.growth_percent is not None else ""
    return (
        f"size: {size}; {sign}{sizes.human_bytes(abs(growth))}{percent} against {env}'s previous image "
        f"({diff.count('reused')} layers reused, {diff.count('rebuilt')} rebuilt, {diff.count('new')} new)"
    )


def move(job: Job) -> None:
    """Point the environment tag, latest and the extra tags at the image."""
    plan, target = job.plan, job.target
    assert target is not None
    assert job.manifest is not None
    job.moved = tags.move(target.place, plan.moving_tags, job.manifest, env=plan.inputs.env)


def verify(job: Job) -> None:
    """Read every tag back; then record the fingerprint and the cache anchor."""
    plan, target, manifest = job.plan, job.target, job.manifest
    assert target is not None
    assert manifest is not None
    tags.settle_and_verify(
        target.place,
        plan.moving_tags,
        manifest,
        env=plan.inputs.env,
        fixed=(plan.commit_tag,),
        reference=plan.reference,
    )
    if job.source is not None:
        # Recorded last, so only a complete, verified publish can be reused by a later run.
        tags.put(target.place, job.source.tag, manifest)
    if job.built_here and plan.inputs.cache == "registry-inline":
        _advance_anchor(plan, target, manifest)


class EngineProbe:
    """The engine, then its builder, probed in a thread of their own. The engine is asked
    from the start, while the ECR login runs: it answers in one API call and the source
    lookup needs it. The builder takes a few docker CLI runs (cold, a Docker 28 CLI and its
    buildx plugin read a hundred megabytes from disk: a third of a second, which the login
    and the imports beside it pay as well) and only a build needs it: with `lazy`, for one
    image whose lookup may find it built, they start when `want_builder` says the lookup
    has begun, and `stop_builder` kills them when it found the image. A named builder comes
    first instead, as its Docker context decides which engine that is."""

    def __init__(self, mode: cache.CacheMode, builder_name: str | None = None, *, lazy: bool = False) -> None:
        self._engine: Future[Engine] = Future()
        self._builder: Future[tuple[buildkit.Builder, cache.CacheSupport]] = Future()
        self._stop = threading.Event()
        self._go = threading.Event()
        if not lazy:
            self._go.set()
        self._thread = threading.Thread(target=self._probe, args=(mode, builder_name), name="engine-probe")
        self._thread.start()

    def engine(self) -> Engine:
        return self._engine.result()

    def want_builder(self) -> None:
        self._go.set()

    def builder(self) -> tuple[buildkit.Builder, cache.CacheSupport]:
        self._go.set()
        return self._builder.result()

    def stop_builder(self) -> None:
        """Nothing will build: the builder probe's CLI runs still going are killed, not
        waited for."""
        self._stop.set()
        self._go.set()
        self._thread.join()

    def _probe(self, mode: cache.CacheMode, builder_name: str | None) -> None:
        try:
            named = buildkit.detect_builder(builder_name) if builder_name else None
            engine = Engine.connect(_engine_environ(named))
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._engine.set_exception(exc)
            self._builder.set_exception(exc)
            return
        self._engine.set_result(engine)
        self._go.wait()
        try:
            builder = _on_store(named or buildkit.detect_builder(stop=self._stop), engine)
            self._builder.set_result((builder, cache.check_supported(mode, builder)))
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits
            self._builder.set_exception(exc)


def _engine_environ(named: buildkit.Builder | None) -> Mapping[str, str]:
    if named is None or not named.context:
        return os.environ
    # The build lands in that context's engine; the checks, smoke boot and push follow it.
    kept = {k: v for k, v in os.environ.items() if k not in ENGINE_VARIABLES}
    return kept | {"DOCKER_CONTEXT": named.context}


def _on_store(builder: buildkit.Builder, engine: Engine) -> buildkit.Builder:
    """A docker-driver builder exports every cache type when its engine has the containerd
    store; only the engine can say so."""
    if builder.kind == "buildx" and builder.driver == "docker" and engine.containerd_store:
        return dataclasses.replace(builder, containerd_store=True)
    return builder


def _check_secrets(inputs: PublishInputs, environ: Mapping[str, str]) -> None:
    """Every secret's variable must hold a value, masked before anything could print it."""
    for secret_id, variable in inputs.secrets:
        value = environ.get(variable, "")
        if not value:
            raise InputError(
                f"input 'secrets' gives id '{secret_id}' the variable {variable}, which is not set "
                "or empty in this step's environment",
                f"set {variable} in the step's env from a secret (env: {variable}: ${{{{ secrets.NAME }}}})",
            )
        github.mask(value)
        for line in value.splitlines():
            # The runner masks a multi-line secret line by line only when told each line.
            if line.strip() and line != value:
                github.mask(line)
    if inputs.secrets:
        github.info(f"  secrets     : {', '.join(i for i, _ in inputs.secrets)} (values masked)")


def _warn_about_leaks(inputs: PublishInputs) -> None:
    for key in inputs.secret_like_build_args:
        github.warning(
            f"build arg {key} reads like a credential: build args are recorded in the image's "
            "history and in its source fingerprint; pass it with the 'secrets' input and "
            "RUN --mount=type=secret instead"
        )
    if (inputs.context / ".git").exists() and included_paths_under(
        inputs.context, inputs.dockerfile, [".git"]
    ):
        github.warning(
            f"the build context {inputs.context} holds .git and no .dockerignore excludes it: "
            "a COPY of the context would put the repository history (and any token a checkout "
            "left in .git/config) into the image; add .git to .dockerignore"
        )


def loopback_registry(inputs: PublishInputs) -> bool:
    """A builder container reaches the runner's loopback only with host networking, which
    the action gives it only when the workflow itself named a loopback registry."""
    return inputs.registry is not None and is_loopback(inputs.registry)


def _fingerprint(inputs: PublishInputs, engine: Engine) -> Fingerprint:
    return compute_fingerprint(
        inputs.dockerfile,
        inputs.context,
        inputs.build_args,
        inputs.platform,
        resolve_with_engine(engine.client),
        secret_ids=[secret_id for secret_id, _ in inputs.secrets],
    )


def _reuse(
    plan: Plan, target: Target, engine: Engine, early: Future[Fingerprint] | None = None
) -> tuple[Manifest | None, Fingerprint | None]:
    """The image this publish can point its tags at without building, if there is one."""
    name = target.repository.name
    existing = target.current[plan.commit_tag]
    if existing and target.repository.tag_is_immutable(plan.commit_tag):
        github.notice(
            f"{plan.reference(plan.commit_tag)} already exists in an immutable repository; "
            "reusing the image published for this commit"
        )
        return target.registry.get_manifest(name, existing.digest), None
    inputs = plan.inputs
    source = early.result() if early is not None else _fingerprint(inputs, engine)
    for warning in source.warnings:
        github.warning(warning)
    github.info(
        f"  fingerprint {source.tag}: {source.files} files ({source.scope}), "
        f"{source.bytes / 1e6:.1f} MB, {len(source.bases)} base image(s), build args, platform"
    )
    if inputs.force_build:
        github.info("  force-build is true: building without looking for it")
        return None, source
    found = target.registry.head_manifest(name, source.tag)
    if found is None:
        github.info("  no image with this fingerprint yet: building")
        return None, source
    github.notice(
        f"build skipped: nothing that goes into the image changed (Dockerfile, the context files "
        f"it can read, build args, platform and base images match {source.tag}); "
        f"pointing the tags at {found.digest}. Set force-build: true to rebuild anyway"
    )
    return target.registry.get_manifest(name, found.digest), source


def log_in(inputs: PublishInputs) -> Session:
    return open_session(inputs.region, ((inputs.registry, "registry"),) if inputs.registry else ())


def connect(job: Job, session: Session) -> None:
    """The registry and repository the image goes to, and what its tags name now; refused
    here, before anything is built, when a tag that must move cannot."""
    inputs = job.plan.inputs
    plan = job.plan = job.plan.with_registry(inputs.registry or session.login.registry)
    assert plan.registry is not None
    registry = session.client(plan.registry, "the 'registry' input")
    # Independent round trips, asked at once (from a runner each is tens of milliseconds);
    # the registry's answer is reported first, as it comes first in the log.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ecr") as pool:
        described = pool.submit(session.ecr.repository, inputs.repository)
        registry.ping()
        github.info(f"  logged in to {plan.registry} as {session.login.username}")
        repository = described.result()
    github.info(f"  repository {repository.name} exists (tags {repository.mutability})")
    anchor_tag = cache.inline_cache_anchor_tag(inputs.env) if inputs.cache == "registry-inline" else None
    heads = tags.head_all(registry, repository.name, [*plan.tags, *([anchor_tag] if anchor_tag else [])])
    current = tags.look_up(registry, repository, plan.tags, found=heads).current
    tags.require_movable(
        tags.Place(registry, repository, current),
        plan.moving_tags,
        stays=plan.commit_tag,
        nothing="nothing was pushed",
    )
    anchor = heads[anchor_tag] if anchor_tag else None
    job.target = Target(
        login=session.login,
        registry=registry,
        repository=repository,
        current=current,
        anchor=anchor,
        ecr=session.ecr,
    )


def _advance_anchor(plan: Plan, target: Target, manifest: Manifest) -> None:
    """Point the inline-cache anchor at the new image when its inline cache covers at least
    as many layers as the anchor's: after a code-only change it covers only the code layer,
    and the anchor stays on the image that still describes the dependency layers."""
    tag = cache.inline_cache_anchor_tag(plan.inputs.env)
    name = target.repository.name
    if target.repository.tag_is_immutable(tag):
        return  # an anchor that cannot move would pin the cache to its first image
    new = cache.inline_cache_coverage(_config(target, manifest))
    if target.anchor is not None and target.anchor.digest != manifest.digest:
        old = cache.inline_cache_coverage(
            _config(target, target.registry.get_manifest(name, target.anchor.digest))
        )
        if new < old:
            github.info(
                f"  {tag} stays at {target.anchor.digest} (its inline cache covers {old} layers, "
                f"this image's {new})"
            )
            return
    tags.put(target.place, tag, manifest)
    github.info(f"  (its inline cache covers {new} layers)")


def _config(target: Target, manifest: Manifest) -> bytes:
    digest = (manifest.json().get("config") or {}).get("digest", "")
    return target.registry.get_blob(target.repository.name, digest) if digest else b"{}"


def _push_commit_tag(
    engine: Engine, plan: Plan, target: Target, image_id: str
) -> tuple[Manifest, frozenset[str]]:
    name = target.repository.name
    remote = f"{plan.registry}/{name}"
    engine.tag(image_id, remote, plan.commit_tag)
    try:
        with github.group("push log"):
            pushed = engine.push(remote, plan.commit_tag, target.login, plan.inputs.platform)
    finally:
        engine.untag(f"{remote}:{plan.commit_tag}")
    # The registry accepts a manifest only once all its blobs are stored: reading it back by
    # digest proves the image is complete before any moving tag points at it.
    manifest = target.registry.get_manifest(name, pushed.digest)
    if manifest.is_index:
        manifest = reduce_to_image_manifest(plan, target, manifest)
    # What Lambda will read is the pushed manifest, which the engine-side checks cannot see.
    pushed_facts = lambda_rules.facts_from_registry(
        target.registry, name, manifest.digest, platform=plan.inputs.platform, find_adapter=False
    )
    lambda_rules.require_lambda_compatible(pushed_facts, plan.inputs.platform, None)
    github.info(f"  {plan.commit_tag} -> {manifest.digest} ({manifest.media_type})")
    return manifest, pushed.uploaded


def reduce_to_image_manifest(plan: Plan, target: Target, index: Manifest) -> Manifest:
    """Engines with the containerd image store push an index; Lambda wants the image itself."""
    for entry in index_images(index):
        if platform_of(entry) == plan.inputs.platform:
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


def summary(result: PublishResult, title: str = "Lambda image published") -> str:
    rows = [(github.markdown_text(k), github.markdown_code(v)) for k, v in result.outputs().items()]
    return f"### {title}\n\n" + github.markdown_table(("output", "value"), rows)
