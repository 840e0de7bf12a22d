"""A Terraform plan (`terraform show -json`) as the verify gate reads it: the Image
functions it deploys, the image each runs, and the invoke mode each must speak.

Plans come from Terraform code that a pull request can change, so every value read here
is untrusted: control characters are refused, and nothing here decides where credentials go.

The invoke mode comes from the plan itself: a function URL with `invoke_mode =
"RESPONSE_STREAM"` needs its function's Lambda Web Adapter to stream. The URL is tied to its
function through the plan's `configuration` (the reference in `function_name`), else by the
planned `function_name` value. What the function sets in its own `environment` is read too,
since Lambda gives that precedence over the image's ENV.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from entrypoint.checks.lambda_rules import WEB_ADAPTER_ENV, FunctionSetting
from entrypoint.errors import InputError, shown

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

DEPLOYING_ACTIONS = ("create", "update")
URL_MODES = {"RESPONSE_STREAM": "response-stream", "BUFFERED": "buffered"}
_INDEX = re.compile(r"\[[^\]]*\]")
_FUNCTION_REFERENCE = re.compile(r"(?:^|\.)(aws_lambda_function\.[A-Za-z0-9_-]+)")


@dataclass(frozen=True)
class FunctionUrl:
    address: str
    mode: str  # response-stream or buffered


@dataclass(frozen=True)
class PlannedImage:
    address: str
    image_uri: str | None
    unknown: bool
    # What the function's own environment sets for the adapter (known: it is in the plan).
    function: FunctionSetting = field(default_factory=FunctionSetting)
    # The function URL that serves this function, if the plan has one.
    url: FunctionUrl | None = None


@dataclass(frozen=True)
class PlanImages:
    deployed: tuple[PlannedImage, ...]
    # Image functions the plan leaves alone or deletes: nothing new runs there.
    not_deployed: tuple[str, ...]
    other_functions: int


def load_plan(path: Path) -> dict[str, Any]:
    """The plan as JSON, or an `InputError` that says what the file is instead."""
    data = path.read_bytes()
    fix = "convert the saved plan with terraform show -json tfplan > plan.json and pass that file"
    if data.startswith(b"PK"):
        raise InputError(f"plan file '{path}' is a binary Terraform plan, not JSON", fix)
    try:
        plan = json.loads(data)
    except ValueError as exc:
        first = data.lstrip().split(b"\n", 1)[0]
        if first.startswith(b'{"@level"'):
            raise InputError(
                f"plan file '{path}' is the log stream of terraform plan -json, not a plan", fix
            ) from exc
        raise InputError(f"plan file '{path}' is not JSON ({exc})", fix) from exc
    if not isinstance(plan, dict) or "format_version" not in plan:
        raise InputError(f"plan file '{path}' is JSON but not a Terraform plan (no format_version)", fix)
    if "planned_values" not in plan and "resource_changes" not in plan:
        what = "a state (terraform show -json without a plan file)" if "values" in plan else "not a plan"
        raise InputError(f"plan file '{path}' is {what}", fix)
    if plan.get("errored"):
        raise InputError(
            f"plan file '{path}' is a plan that errored, so it would apply nothing",
            "fix the errors terraform plan reported and plan again",
        )
    return plan


def images_in_plan(plan: Mapping[str, Any]) -> PlanImages:
    """The Image functions the plan creates or updates, and the image each will run.

    `resource_changes` is one flat list in which child modules' resources carry their
    full address (module.app.aws_lambda_function.this), so one pass sees them all.
    """
    deployed: list[PlannedImage] = []
    not_deployed: list[str] = []
    others = 0
    urls, by_name = function_urls(plan)
    for entry in plan.get("resource_changes") or []:
        if not isinstance(entry, dict) or entry.get("type") != "aws_lambda_function":
            continue
        if entry.get("mode", "managed") != "managed":
            continue
        address = str(entry.get("address", "aws_lambda_function.?"))
        change = entry.get("change") or {}
        after = change.get("after") or {}
        before = change.get("before") or {}
        package_type = after.get("package_type") or before.get("package_type") or "Zip"
        if package_type != "Image":
            others += 1
            continue
        if not any(action in DEPLOYING_ACTIONS for action in change.get("actions") or []):
            not_deployed.append(address)
            continue
        after_unknown = change.get("after_unknown")
        unknown = after_unknown is True or (
            isinstance(after_unknown, dict) and after_unknown.get("image_uri") is True
        )
        uri = after.get("image_uri")
        _require_printable(address, "address", address)
        if isinstance(uri, str):
            _require_printable(address, "image_uri", uri)
        deployed.append(
            PlannedImage(
                address=address,
                image_uri=str(uri) if uri and not unknown else None,
                unknown=unknown,
                function=_function_setting(address, after, after_unknown),
                url=urls.get(address)
                or urls.get(_INDEX.sub("", address))
                or by_name.get(str(after.get("function_name") or "")),
            )
        )
    return PlanImages(deployed=tuple(deployed), not_deployed=tuple(not_deployed), other_functions=others)


def _function_setting(address: str, after: Mapping[str, Any], after_unknown: object) -> FunctionSetting:
    """AWS_LWA_INVOKE_MODE from the function's `environment` block in the plan."""
    if after_unknown is True or (
        isinstance(after_unknown, dict) and after_unknown.get("environment") is True
    ):
        return FunctionSetting()  # decided at apply time: not known here
    blocks = after.get("environment") or []
    variables = (blocks[0] if isinstance(blocks, list) and blocks else {}).get("variables") or {}
    value = variables.get(WEB_ADAPTER_ENV) if isinstance(variables, dict) else None
    if value is not None:
        _require_printable(address, WEB_ADAPTER_ENV, str(value))
    return FunctionSetting(
        known=True,
        value=str(value) if value is not None else None,
        where=f"{address}'s environment in the plan",
    )


def function_urls(plan: Mapping[str, Any]) -> tuple[dict[str, FunctionUrl], dict[str, FunctionUrl]]:
    """Function URLs the plan keeps or makes, keyed by the function they serve: by address
    (from the configuration's reference), and by planned function_name (the fallback)."""
    references = dict(_url_references(plan.get("configuration") or {}))
    by_address: dict[str, FunctionUrl] = {}
    by_name: dict[str, FunctionUrl] = {}
    for entry in plan.get("resource_changes") or []:
        if not isinstance(entry, dict) or entry.get("type") != "aws_lambda_function_url":
            continue
        change = entry.get("change") or {}
        after = change.get("after")
        if not isinstance(after, dict):
            continue  # deleted
        address = str(entry.get("address", ""))
        _require_printable(address, "address", address)
        url = FunctionUrl(address, URL_MODES.get(str(after.get("invoke_mode") or "BUFFERED"), "buffered"))
        target = references.get(_INDEX.sub("", address))
        if target:
            by_address[target] = url
        name = after.get("function_name")
        if isinstance(name, str) and name:
            by_name[name] = url
    return by_address, by_name


def _url_references(configuration: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(URL address, function address) for each aws_lambda_function_url in the configuration
    whose function_name refers to an aws_lambda_function of the same module."""
    for prefix, resource in _configured_resources(configuration.get("root_module") or {}, ""):
        if resource.get("type") != "aws_lambda_function_url":
            continue
        expression = (resource.get("expressions") or {}).get("function_name") or {}
        for reference in expression.get("references") or []:
            match = _FUNCTION_REFERENCE.search(str(reference))
            if match and str(reference).startswith("aws_lambda_function."):
                yield f"{prefix}{resource.get('address', '')}", f"{prefix}{match.group(1)}"
                break


def _configured_resources(module: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for resource in module.get("resources") or []:
        if isinstance(resource, dict):
            yield prefix, resource
    for name, call in (module.get("module_calls") or {}).items():
        if isinstance(call, dict):
            yield from _configured_resources(call.get("module") or {}, f"{prefix}module.{name}.")


def _require_printable(address: str, what: str, value: str) -> None:
    """Plans come from Terraform code a pull request can change; a control character in a
    value the gate prints could start a line the runner reads as a command."""
    if all(ch.isprintable() for ch in value):
        return
    raise InputError(
        f"the plan's {what} '{shown(value)}' (resource '{shown(address)}') holds control characters",
        "Terraform writes none there: check where the plan file comes from and the value that sets it",
    )
