"""A Terraform plan (`terraform show -json`) as the verify gate reads it: the Image
functions it deploys, the image each runs, and the invoke mode each must speak.

Plans come from Terraform code that a pull request can change, so every value read here
is untrusted: control characters are refused, and nothing here decides where credentials go.

The invoke mode comes from the plan itself: a function URL with `invoke_mode =
"RESPONSE_STREAM"` needs its function's Lambda Web Adapter to stream. The URL is tied to its
function through the plan's `configuration` (the reference in `function_name`), else by the
planned `function_name` value. What the function sets in its own `environment` is read too,
since Lambda gives that precedence over the image's ENV.

Functions are `aws_lambda_function` and `awscc_lambda_function` (the Cloud Control
provider's, with its image under `code`); URLs are `aws_lambda_function_url` and
`awscc_lambda_url`. What the plan leaves to the apply is reported as such, never filled in
with a default: a package_type known only at apply time could be "Image" (`Unjudged`), an
invoke mode known only at apply time could be either (`UNKNOWN_MODE`), and so could an
environment (`FunctionSetting.known` False). A Lambda resource of another type that carries
an image attribute is reported too (`Unjudged`), since the gate cannot check an image it
does not know how to find.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from entrypoint.checks.lambda_rules import WEB_ADAPTER_ENV, FunctionSetting
from entrypoint.errors import InputError, shown

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

DEPLOYING_ACTIONS = ("create", "update")
URL_MODES = {"RESPONSE_STREAM": "response-stream", "BUFFERED": "buffered"}
# A function URL's mode that the plan leaves to the apply: it may become either.
UNKNOWN_MODE = "unknown"
# Where each function type keeps its image and its environment's variables (aws's
# `environment` is a block list, awscc's a single object).
_Path: TypeAlias = tuple[str | int, ...]
FUNCTION_TYPES: dict[str, tuple[_Path, _Path]] = {
    "aws_lambda_function": (("image_uri",), ("environment", 0, "variables")),
    "awscc_lambda_function": (("code", "image_uri"), ("environment", "variables")),
}
# Each function URL type and the attribute that names its function.
URL_TYPES = {"aws_lambda_function_url": "function_name", "awscc_lambda_url": "target_function_arn"}
# Resource types that may deploy to Lambda: one of them carrying an image that the gate
# does not know how to read must not pass as "no image".
_LAMBDA_TYPE = re.compile(r"^aws(?:cc)?_lambda_")
_IMAGE_KEYS = ("image_uri", "image_config")
_INDEX = re.compile(r"\[[^\]]*\]")
_FUNCTION_REFERENCE = re.compile(r"(?:^|\.)((?:aws|awscc)_lambda_function\.[A-Za-z0-9_-]+)")
# The name in a function ARN (full or partial); Lambda takes either where a name goes.
_ARN_NAME = re.compile(r"(?:^|:)function:([^:]+)")


@dataclass(frozen=True)
class FunctionUrl:
    address: str
    mode: str  # response-stream, buffered, or UNKNOWN_MODE


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
class Unjudged:
    """A resource the plan deploys that may run an image the gate cannot find in the plan."""

    address: str
    image: str  # what stands in the report's image column
    unknown_package: bool  # True: a function of unknown package type; False: an unknown resource type
    detail: str


@dataclass(frozen=True)
class PlanImages:
    deployed: tuple[PlannedImage, ...]
    # Image functions the plan leaves alone or deletes: nothing new runs there.
    not_deployed: tuple[str, ...]
    other_functions: int
    unjudged: tuple[Unjudged, ...] = ()


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
    unjudged: list[Unjudged] = []
    others = 0
    urls, by_name = function_urls(plan)
    for entry in plan.get("resource_changes") or []:
        if not isinstance(entry, dict) or entry.get("mode", "managed") != "managed":
            continue
        kind = str(entry.get("type", ""))
        change = entry.get("change") or {}
        deploying = any(action in DEPLOYING_ACTIONS for action in change.get("actions") or [])
        if kind not in FUNCTION_TYPES:
            if deploying and _LAMBDA_TYPE.match(kind) and kind not in URL_TYPES:
                unjudged.extend(_image_of_unknown_type(entry, kind, change))
            continue
        address = str(entry.get("address", f"{kind}.?"))
        _require_printable(address, "address", address)
        after = change.get("after") or {}
        before = change.get("before") or {}
        after_unknown = change.get("after_unknown")
        if not deploying:
            # Nothing new runs: the package type only sorts it for the notes.
            if (after.get("package_type") or before.get("package_type") or "Zip") == "Image":
                not_deployed.append(address)
            else:
                others += 1
            continue
        package_type = after.get("package_type")
        if package_type == "Zip" and not _unknown(after_unknown, ("package_type",)):
            others += 1
            continue
        if package_type != "Image" or _unknown(after_unknown, ("package_type",)):
            unjudged.append(_unknown_package(address, package_type, after_unknown))
            continue
        image_path, environment_path = FUNCTION_TYPES[kind]
        unknown = _unknown(after_unknown, image_path)
        uri = _at(after, image_path)
        if isinstance(uri, str):
            _require_printable(address, "image_uri", uri)
        deployed.append(
            PlannedImage(
                address=address,
                image_uri=str(uri) if uri and not unknown else None,
                unknown=unknown,
                function=_function_setting(address, after, after_unknown, environment_path),
                url=urls.get(address)
                or urls.get(_INDEX.sub("", address))
                or by_name.get(_function_key(after.get("function_name")))
                or by_name.get(_function_key(after.get("arn"))),
            )
        )
    return PlanImages(
        deployed=tuple(deployed),
        not_deployed=tuple(not_deployed),
        other_functions=others,
        unjudged=tuple(unjudged),
    )


def _unknown_package(address: str, package_type: object, after_unknown: object) -> Unjudged:
    """A function the plan deploys without saying it is Zip: Terraform's default ("Zip" for
    aws) is in the plan when it applies, so a missing or computed value is not that default."""
    if _unknown(after_unknown, ("package_type",)):
        why = "its package_type is only known at apply time"
    elif package_type is None:
        why = "the plan gives it no package_type"
    else:
        shown_type = str(package_type)
        _require_printable(address, "package_type", shown_type)
        why = f"its package_type is '{shown_type}', neither Zip nor Image"
    return Unjudged(
        address,
        "(package_type unknown)",
        unknown_package=True,
        detail=f"may run an image: {why}, so the gate cannot tell an Image function from a Zip one, "
        "and an image it cannot see is an image it cannot check",
    )


def _image_of_unknown_type(entry: Mapping[str, Any], kind: str, change: Mapping[str, Any]) -> list[Unjudged]:
    """A Lambda resource type the gate does not read, if the plan gives it an image."""
    after = change.get("after")
    keys = sorted(
        set(_image_keys(after, known=True)) | set(_image_keys(change.get("after_unknown"), known=False))
    )
    if not keys:
        return []
    address = str(entry.get("address", f"{kind}.?"))
    _require_printable(address, "address", address)
    uri = next((v for v in _values(after, "image_uri") if isinstance(v, str) and v), None)
    if uri is not None:
        _require_printable(address, "image_uri", uri)
    return [
        Unjudged(
            address,
            uri or "(image)",
            unknown_package=False,
            detail=f"is a {kind}, a resource type the gate does not read, and the plan gives it "
            f"an image ({', '.join(keys)}), so what it deploys cannot be checked",
        )
    ]


def _image_keys(tree: object, *, known: bool, depth: int = 0) -> Iterator[str]:
    """The image attributes anywhere in a planned value: set (`known`) or computed (after_unknown)."""
    if depth > 8:
        return
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if key in _IMAGE_KEYS and (value not in (None, "", [], {}) if known else _any_true(value)):
            yield str(key)
        else:
            yield from _image_keys(value, known=known, depth=depth + 1)


def _any_true(tree: object) -> bool:
    if isinstance(tree, dict):
        return any(_any_true(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_any_true(v) for v in tree)
    return tree is True


def _values(tree: object, name: str, depth: int = 0) -> Iterator[object]:
    if depth > 8:
        return
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if key == name:
            yield value
        yield from _values(value, name, depth + 1)


def _at(tree: object, path: _Path) -> object:
    """The planned value at `path`, None where the plan has nothing."""
    for key in path:
        if isinstance(key, int):
            tree = tree[key] if isinstance(tree, list) and len(tree) > key else None
        else:
            tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _unknown(after_unknown: object, path: _Path) -> bool:
    """Whether the value at `path`, or anything holding it, is only known at apply time."""
    node = after_unknown
    for key in path:
        if node is True:
            return True
        node = _at(node, (key,))
    return node is True


def _function_key(value: object) -> str:
    """A function's name, from a name or an ARN (a URL may name its function by either)."""
    text = str(value or "")
    match = _ARN_NAME.search(text)
    return match.group(1) if match else text


def _function_setting(
    address: str, after: Mapping[str, Any], after_unknown: object, path: _Path
) -> FunctionSetting:
    """AWS_LWA_INVOKE_MODE from the function's environment in the plan."""
    if _unknown(after_unknown, path) or _unknown(after_unknown, (*path, WEB_ADAPTER_ENV)):
        return FunctionSetting()  # decided at apply time: not known here
    variables = _at(after, path)
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
    (from the configuration's reference), and by the planned function name (the fallback)."""
    references = dict(_url_references(plan.get("configuration") or {}))
    by_address: dict[str, FunctionUrl] = {}
    by_name: dict[str, FunctionUrl] = {}
    for entry in plan.get("resource_changes") or []:
        if not isinstance(entry, dict) or entry.get("type") not in URL_TYPES:
            continue
        change = entry.get("change") or {}
        after = change.get("after")
        if not isinstance(after, dict):
            continue  # deleted
        address = str(entry.get("address", ""))
        _require_printable(address, "address", address)
        url = FunctionUrl(address, _url_mode(after, change.get("after_unknown")))
        target = references.get(_INDEX.sub("", address))
        if target:
            by_address[target] = url
        name = _function_key(after.get(URL_TYPES[str(entry.get("type"))]))
        if name:
            by_name[name] = url
    return by_address, by_name


def _url_mode(after: Mapping[str, Any], after_unknown: object) -> str:
    """Lambda buffers when no mode is sent; a mode computed at apply time could be either."""
    if _unknown(after_unknown, ("invoke_mode",)):
        return UNKNOWN_MODE
    value = after.get("invoke_mode")
    if value is None:
        return "buffered"
    return URL_MODES.get(str(value), UNKNOWN_MODE)


def _url_references(configuration: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(URL address, function address) for each function URL in the configuration whose
    function attribute refers to a function of the same module."""
    for prefix, resource in _configured_resources(configuration.get("root_module") or {}, ""):
        attribute = URL_TYPES.get(str(resource.get("type")))
        if attribute is None:
            continue
        expression = (resource.get("expressions") or {}).get(attribute) or {}
        for reference in expression.get("references") or []:
            match = _FUNCTION_REFERENCE.search(str(reference))
            if match and str(reference).startswith(tuple(f"{kind}." for kind in FUNCTION_TYPES)):
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
