"""The verify gate's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from entrypoint.checks.lambda_rules import parse_invoke_mode
from entrypoint.checks.scan import ScanRule, parse_scan_rule
from entrypoint.errors import InputError
from entrypoint.inputs.common import (
    DEFAULT_PLATFORM,
    PLATFORMS,
    parse_region,
    parse_registry,
    path_in,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

VERIFY_INPUTS = (
    "image-uris",
    "plan",
    "region",
    "registry",
    "platform",
    "invoke-mode",
    "scan",
    "scan-fail-on",
    "scan-ignore",
    "scan-timeout",
)


@dataclass(frozen=True)
class VerifyInputs:
    image_uris: tuple[str, ...]
    plan: Path | None
    region: str
    registry: str | None
    platform: str
    invoke_mode: str | None
    scan: ScanRule | None = None  # the ECR scan gate's rule, when it is on


def parse_verify(raw: Mapping[str, str], workspace: Path) -> VerifyInputs:
    image_uris = tuple(dict.fromkeys(line.strip() for line in raw.get("image-uris", "").splitlines()))
    image_uris = tuple(uri for uri in image_uris if uri)
    plan_value = raw.get("plan", "").strip()
    plan: Path | None = None
    if plan_value:
        plan = path_in(workspace, "plan", plan_value)
        if not plan.is_file():
            raise InputError(
                f"plan file '{plan_value}' does not exist (looked for {plan})",
                "write it before this step with terraform plan -out=tfplan and terraform show "
                "-json tfplan > plan.json, and give its path relative to the workspace (a step's "
                "working-directory does not apply to action inputs)",
            )
    if not image_uris and plan is None:
        raise InputError(
            "neither 'image-uris' nor 'plan' was given, so there is nothing to verify",
            "pass the plan (terraform show -json output) as 'plan', or the images as 'image-uris'",
        )
    platform = raw.get("platform", "").strip() or DEFAULT_PLATFORM
    if platform not in PLATFORMS:
        raise InputError(
            f"input 'platform' is '{platform}', which Lambda cannot run",
            f"use one of {', '.join(PLATFORMS)} (Lambda's x86_64 and arm64)",
        )
    return VerifyInputs(
        image_uris=image_uris,
        plan=plan,
        region=parse_region(raw),
        registry=parse_registry(raw),
        platform=platform,
        invoke_mode=parse_invoke_mode(raw.get("invoke-mode", "")),
        scan=parse_scan_rule(
            raw.get("scan", ""),
            raw.get("scan-fail-on", ""),
            raw.get("scan-ignore", ""),
            raw.get("scan-timeout", ""),
        ),
    )
