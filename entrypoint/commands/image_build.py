"""One image built and checked on the engine, before anything is pushed: the cache sources,
the BuildKit request (secrets and build args through the CLI's environment, registry cache
with a private Docker config), then Lambda's rules and the smoke boot."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from entrypoint import github
from entrypoint.build import buildkit, cache, cli_env
from entrypoint.checks import imagefacts, lambda_rules, smoke

if TYPE_CHECKING:
    from entrypoint.commands.plan import Plan, Target
    from entrypoint.engine import Engine


def build(plan: Plan, target: Target | None, builder: buildkit.Builder) -> buildkit.BuildResult:
    """Build with the cache sources the cache mode and the registry's tags give."""
    inputs = plan.inputs
    with github.stage("build"), tempfile.TemporaryDirectory(prefix="lambda-publish-") as tmp:
        cache_source = None
        previous = None
        if target is not None and inputs.cache == "registry-inline":
            previous = next((t for t in (inputs.env, "latest") if target.current.get(t)), None)
            cache_source = plan.reference(previous) if previous else None
            github.info(f"  cache from {cache_source or 'nothing yet (first publish)'}")
        mode = inputs.cache
        if target is None and mode in ("registry-inline", "registry"):
            github.info("  push is false: no registry cache without the ECR login")
            mode = "none"
        previous_image = target.current.get(previous) if target is not None and previous else None
        anchor = (
            (plan.reference(cache.inline_cache_anchor_tag(inputs.env)),)
            if target is not None
            and target.anchor is not None
            and mode == "registry-inline"
            # The same image twice would only import its cache twice.
            and (previous_image is None or target.anchor.digest != previous_image.digest)
            else ()
        )
        if anchor:
            github.info(f"  and from {anchor[0]} (the image whose inline cache covers the most layers)")
        cache_args = cache.cache_arguments(
            mode,
            builder,
            cache_source=cache_source,
            more_cache_sources=anchor,
            cache_ref=plan.reference(f"buildcache-{inputs.env}") if target else None,
            local_dir=inputs.cache_dir,
            scope=f"{inputs.repository}-{inputs.env}",
        )
        request = buildkit.BuildRequest(
            dockerfile=inputs.dockerfile,
            context=inputs.context,
            platform=inputs.platform,
            tags=(plan.local_image,),
            build_arg_keys=tuple(k for k, _ in inputs.build_args),
            iidfile=Path(tmp) / "iid",
            cache_args=cache_args,
            secrets=inputs.secrets,
        )
        argv = buildkit.build_command(builder, request)
        env = cli_env.build_environment(
            os.environ, inputs.build_args, secrets=inputs.secrets, gha=mode == "gha"
        )
        with contextlib.ExitStack() as stack:
            if target is not None and plan.registry and not cache.uses_registry(mode):
                github.info(
                    f"  cache {mode}: the build gets no ECR login (a FROM of a private ECR image "
                    "needs the job's own docker login)"
                )
            elif target is not None and plan.registry:
                # BuildKit reads and writes registry cache with the CLI's credentials.
                if env.get("DOCKER_TLS_VERIFY") and not env.get("DOCKER_CERT_PATH"):
                    # The CLI looks for a TLS engine's certificates in DOCKER_CONFIG by default.
                    env["DOCKER_CERT_PATH"] = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
                env["DOCKER_CONFIG"] = stack.enter_context(
                    cli_env.registry_credentials(
                        plan.registry, target.login.username, target.login.password, os.environ
                    )
                )
            built = buildkit.run_build(argv, env, request)
        if inputs.cache == "local" and inputs.cache_dir is not None:
            cache.rotate_local_cache(inputs.cache_dir)
        if built.cached_steps:
            github.info(f"  from cache: {'; '.join(built.cached_steps)}")
        return built


def check(plan: Plan, engine: Engine, image_id: str) -> None:
    """Lambda's rules on the built image, then its smoke boot: before anything is pushed."""
    inputs = plan.inputs
    with github.stage("check the image against Lambda's rules"):
        facts = imagefacts.facts_from_engine(engine, plan.local_image, lambda_rules.WEB_ADAPTER_PATH)
        lambda_rules.require_lambda_compatible(facts, inputs.platform, inputs.invoke_mode)
        github.info(f"  {facts.os}/{facts.architecture}, {facts.size / 1e6:.1f} MB, entrypoint ok")
        near_limit = lambda_rules.size_warning(facts)
        if near_limit:
            github.warning(near_limit)
        notice = lambda_rules.invoke_mode_notice(facts, inputs.invoke_mode)
        if notice:
            github.notice(notice)
    if inputs.smoke is None:
        return
    if not engine.runs(inputs.platform):
        github.notice(
            f"smoke boot skipped: this {engine.architecture} engine cannot run "
            f"{inputs.platform} images without emulation (docker/setup-qemu-action)"
        )
        return
    spec, chose = inputs.smoke.resolve(facts.env)
    # Adapter images run in Lambda's sandbox: boot them as it does. Without the adapter (or
    # through the Runtime Interface Emulator) the image is its own host, left as it is.
    lambda_like = bool(facts.has_web_adapter) and spec.kind == "http"
    with github.stage(f"smoke boot ({spec.describe()})"):
        if chose:
            github.info(f"  {chose}")
        if lambda_like:
            github.info(
                f"  as Lambda runs it: read-only root with a writable /tmp, user {smoke.LAMBDA_USER}, "
                f"{inputs.smoke_memory} MB, AWS_REGION={inputs.region}"
            )
        result = smoke.smoke_boot(
            engine,
            image_id,
            spec,
            inputs.smoke_timeout,
            region=inputs.region,
            memory_mb=inputs.smoke_memory,
            lambda_like=lambda_like,
        )
        github.info(f"  {result.detail} after {result.seconds:.1f} s")
