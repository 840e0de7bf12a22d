"""A publish step from start to end, for one image or the images of a `config` file.

One plan, one engine check and one ECR login for all. Each image then goes its own way in
a worker of its own (look up its repository, reuse or build, check, push under its commit
tag), with at most `parallel` builds at a time and its lines kept in one folded group.
Only when every image is pushed and checked do environment tags, latest and the extra
tags move, for all of them; if any image failed, none moves, and the error names each
failed image and its cause. A move that fails half-way puts back the tags already moved.

With one image (no `config`) the same steps run in this thread, and the log is the
single-image log it always was.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from entrypoint import github
from entrypoint.build import buildkit
from entrypoint.commands import publish, summary
from entrypoint.commands.plan import Plan, resolve_commit
from entrypoint.errors import ActionError
from entrypoint.registry import tags

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from entrypoint.build import cache
    from entrypoint.commands.publish import Job, PublishResult
    from entrypoint.engine import Engine
    from entrypoint.inputs import ReleaseInputs
    from entrypoint.registry.session import Session

# Registry look-ups and tag moves are network round trips; this many images at once.
NETWORK_WORKERS = 8


class ReleaseFailedError(ActionError):
    """Some images of a release failed; no environment tag of any image moved."""

    def __init__(self, failures: list[tuple[str, ActionError]], total: int, stage: str) -> None:
        causes = "; ".join(f"{name}: {exc.cause}" for name, exc in failures)
        fixes = "; ".join(f"{name}: {exc.fix}" for name, exc in failures)
        super().__init__(
            f"{len(failures)} of {total} images failed {stage}, so no environment tag, latest or "
            f"extra tag of any image moved - {causes}",
            f"{fixes}; then rerun (images that passed are pushed under their commit tags and "
            "the rerun reuses them)",
        )
        self.failures = failures
        codes = {exc.exit_code for _, exc in failures}
        self.exit_code = codes.pop() if len(codes) == 1 else 1


@dataclass(frozen=True)
class ReleaseResult:
    images: tuple[tuple[str, PublishResult, str, float], ...]  # name, result, outcome, seconds
    single: bool
    jobs: tuple[Job, ...] = ()

    def outputs(self) -> dict[str, str]:
        results = [result for _, result, _, _ in self.images]
        by_name = {
            (name or result.repository): {
                "image-uri": result.image_uri,
                "digest": result.digest,
                "repository": result.repository,
            }
            for name, result, _, _ in self.images
        }
        # The single-image outputs name one image; with several, each is in `images` only.
        one = (
            results[0].outputs()
            if len(results) == 1
            else dict.fromkeys(("image-uri", "digest", "repository"), "")
        )
        return one | {
            "tags": "\n".join(ref for result in results for ref in result.references),
            "registry": results[0].registry,
            "images": json.dumps(by_name, sort_keys=True),
            "report": summary.dumps(summary.report(self.jobs, github.stages())),
        }

    def summary(self) -> str:
        if not self.jobs[0].plan.inputs.push:
            return publish.summary(self.images[0][1], "Lambda image built (not pushed)")
        return summary.markdown(self.jobs, github.stages())


@dataclass
class _Builders:
    """The builder every build uses; a docker-container builder (for cache modes the
    engine's own builder cannot export) is made on first need, once, and removed at the end."""

    builder: buildkit.Builder
    support: cache.CacheSupport
    host_network: bool
    stack: contextlib.ExitStack
    made: buildkit.Builder | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> buildkit.Builder:
        if not self.support.needs_container_builder:
            return self.builder
        with self.lock:
            if self.made is None:
                self.made = self.stack.enter_context(
                    buildkit.container_builder(self.builder, allow_host_network=self.host_network)
                )
            return self.made


def _no_build() -> buildkit.Builder:
    raise AssertionError("a reused image is tagged, never built")


def publish_release(release: ReleaseInputs, environ: Mapping[str, str]) -> ReleaseResult:
    first = release.images[0][1]
    commit = resolve_commit(first.workspace, environ)
    jobs = [publish.Job(name, Plan(inputs, commit, inputs.registry)) for name, inputs in release.images]
    began = time.monotonic()
    with github.stage("plan"):
        _plan(jobs, release, environ)

    # The engine probe (an API call) overlaps the ECR login (network round trips); the builder
    # probe (docker CLI runs) too, unless the one image's lookup can find it built: then it
    # overlaps the lookup, and is stopped if nothing is to build. Neither has a side effect.
    probe = publish.EngineProbe(first.cache, first.builder, lazy=release.single and first.push)
    try:
        return _publish(release, jobs, probe, began)
    finally:
        probe.stop_builder()  # after a fault, a lazy probe still waits to be told


def _publish(
    release: ReleaseInputs, jobs: list[Job], probe: publish.EngineProbe, began: float
) -> ReleaseResult:
    first = release.images[0][1]
    # One image's fingerprint (the context hashed, base images resolved) is computed during
    # the login too; with several, each image's worker computes its own.
    early = publish.fingerprint_early(jobs[0], probe.engine) if release.single and first.push else None
    session: Session | None = None
    if first.push:
        with github.stage("log in to Amazon ECR"):
            session = publish.log_in(first)
            if release.single:
                publish.connect(jobs[0], session)
    probe.want_builder()
    if release.single and jobs[0].target is not None:
        # The lookup needs the engine only; the build or the commit tag come after the check.
        publish.look_up(jobs[0], probe.engine(), early)
    # One image found already built: nothing builds, and the builder probe is stopped rather
    # than waited for.
    reused = release.single and jobs[0].manifest is not None
    with github.stage("check the Docker engine"):
        engine = probe.engine()
        github.info(f"  engine: {engine.endpoint.describe()}, {engine.architecture}")
        if reused:
            probe.stop_builder()
        else:
            builder, support = probe.builder()
            named = f" '{builder.name}' (input 'builder', used as it is)" if builder.chosen else ""
            github.info(f"  builder{named}: {builder.kind} ({builder.version}), driver {builder.driver}")
            if support.note:
                github.info(f"  cache: {support.note}")

    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        builders: Callable[[], buildkit.Builder] = (
            _no_build if reused else _Builders(builder, support, publish.loopback_registry(first), stack)
        )
        if release.single:
            publish.produce(jobs[0], engine, builders, contextlib.nullcontext())
        else:
            seconds = _produce_all(jobs, release.parallel, session, engine, builders)
    if first.push:
        if any(publish.gated(job) for job in jobs):
            _examine_all(jobs, release.single)
            _finish(jobs, release.single)
        else:
            # Nothing waits on the sizes but the summary: they are read while the tags move.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="measure") as pool:
                measured = pool.submit(_measure_all, jobs)
                _finish(jobs, release.single)
                _report_sizes(jobs, measured)
    whole = time.monotonic() - began
    return ReleaseResult(
        images=tuple((job.name, job.result(), job.outcome, seconds.get(job.name, whole)) for job in jobs),
        single=release.single,
        jobs=tuple(jobs),
    )


def _finish(jobs: list[Job], single: bool) -> None:
    _move_all(jobs, single)
    with github.stage("verify the registry"):
        _each(jobs, _prefixed(publish.verify, single), single, "verifying its tags")


def _measure_all(jobs: list[Job]) -> None:
    with ThreadPoolExecutor(
        max_workers=min(NETWORK_WORKERS, len(jobs)), thread_name_prefix="measure"
    ) as pool:
        for done in [pool.submit(publish.measure, job) for job in jobs]:
            done.result()


def _report_sizes(jobs: list[Job], measured: Future[None]) -> None:
    """The sizes read beside the tag moves. The image is deployed by now: a registry that
    would not say its sizes costs the summary its size facts, not the publish."""
    try:
        measured.result()
    except ActionError as exc:
        github.warning(f"the job summary has no sizes: {exc.cause}")
        return
    for job in jobs:
        if job.sizes is not None:
            prefix = f"[{job.name}] " if job.name else ""
            github.info(f"  {prefix}{publish.size_line(job.sizes, job.plan.inputs.env)}")


def _examine_all(jobs: list[Job], single: bool) -> None:
    """Sizes, the size budget and the scan gate of every image, before any tag moves. A
    refusal still writes the summary (what was refused, and why) before it is raised."""
    name = "measure the image" if single else f"measure the {len(jobs)} images"
    if any(job.plan.inputs.scan is not None for job in jobs):
        name += " and wait for its scan" if single else " and wait for their scans"
    try:
        with github.stage(name):
            _each(jobs, _prefixed(publish.examine, single), single, "its size budget or scan gate")
    except ActionError as exc:
        failures = exc.failures if isinstance(exc, ReleaseFailedError) else [(jobs[0].name, exc)]
        refused = {name: failed.cause for name, failed in failures}
        # What was refused and why, for people (the summary) and for tools (the report).
        github.set_outputs({"report": summary.dumps(summary.report(jobs, github.stages(), refused))})
        github.write_summary(summary.markdown(jobs, github.stages(), refused))
        raise


def _plan(jobs: list[Job], release: ReleaseInputs, environ: Mapping[str, str]) -> None:
    if release.single:
        publish.prepare(jobs[0], environ)
        return
    plan = jobs[0].plan
    github.info(f"  config      : {release.config} ({len(jobs)} images, {release.parallel} builds at once)")
    for line in plan.describe()[:2]:  # environment and region hold for every image
        github.info(f"  {line}")
    github.info(f"  commit      : {plan.commit}")
    extra = " and its own extra tags" if any(job.plan.inputs.extra_tags for job in jobs) else ""
    github.info(
        f"  tags        : {plan.commit_tag}, {plan.inputs.env}, latest{extra} for each image (environment "
        "tags move only once every image is pushed)"
    )
    for job in jobs:
        inputs = job.plan.inputs
        github.info(
            f"  {job.name}: {inputs.dockerfile.relative_to(inputs.workspace)} -> "
            f"{job.plan.repository_path} ({inputs.platform})"
        )
        publish.prepare(job, environ, describe=False)


def _produce_all(
    jobs: list[Job],
    parallel: int,
    session: Session | None,
    engine: Engine,
    builders: Callable[[], buildkit.Builder],
) -> dict[str, float]:
    """Each image in a worker of its own; at most `parallel` of them build at once."""
    slots = threading.BoundedSemaphore(parallel)
    seconds: dict[str, float] = {}

    def one(job: Job) -> None:
        began = time.monotonic()
        ok = False
        try:
            with github.image_log(job.name) as log:
                if session is not None:
                    with github.stage(f"look up {job.plan.inputs.repository}"):
                        publish.connect(job, session)
                publish.look_up(job, engine)
                publish.produce(job, engine, builders, slots)
                ok = True
        finally:
            seconds[job.name] = time.monotonic() - began
            digest = f" {job.manifest.digest}" if job.manifest else ""
            title = f"{job.name}: {job.outcome if ok else 'failed'}{digest} ({seconds[job.name]:.1f} s)"
            github.show_image_log(log, title)

    with github.stage(f"publish {len(jobs)} images under their commit tags"):
        _each(jobs, one, False, "before any tag moved", workers=max(parallel, NETWORK_WORKERS))
    return seconds


def _move_all(jobs: list[Job], single: bool) -> None:
    moving = ", ".join(jobs[0].plan.moving_tags)
    with github.stage(f"move {moving}" if single else f"move {moving} of {len(jobs)} images"):
        try:
            _each(jobs, _prefixed(publish.move, single), single, "moving its tags")
        except ActionError:
            # One image's move failed (and put back its own tags): the others go back too,
            # so that the release stays all or nothing.
            for job in jobs:
                if job.moved:
                    assert job.target is not None
                    tags.undo(job.target.place, job.moved)
            raise


def _each(
    jobs: Iterable[Job],
    step: Callable[[Job], None],
    single: bool,
    stage: str,
    *,
    workers: int = NETWORK_WORKERS,
) -> None:
    """Run `step` for every job; with several, at once, and every failure named in one error."""
    jobs = list(jobs)
    if single:
        for job in jobs:
            step(job)
        return
    failures: list[tuple[str, ActionError]] = []
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="image") as pool:
        futures = {pool.submit(step, job): job for job in jobs}
        try:
            wait(futures)
        except BaseException:
            # Cancelled on this thread: the workers stop at their next check (builds are
            # told to stop by the signal itself) and clean up before the error is raised.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for future, job in futures.items():
        exc = future.exception()
        if isinstance(exc, ActionError):
            failures.append((job.name, exc))
        elif exc is not None:
            raise exc
    if failures:
        raise ReleaseFailedError(failures, len(jobs), stage)


def _prefixed(step: Callable[[Job], None], single: bool) -> Callable[[Job], None]:
    """A short step of several images at once: its lines, prefixed with the image's name,
    printed together when it ends (so one image's lines stay together)."""
    if single:
        return step

    def run(job: Job) -> None:
        try:
            with github.image_log(job.name) as log:
                step(job)
        finally:
            for line in log.lines:
                github.info(f"  [{job.name}] {line.strip()}")

    return run
