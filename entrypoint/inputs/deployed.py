"""The deployed action's inputs: which functions must run which digest, how long to wait, and
which function URLs to probe (given, Lambda's own, or read from `terraform output -json`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from entrypoint.checks.url_probe import EVENT_STREAM, lambda_url_region
from entrypoint.errors import InputError, shown
from entrypoint.inputs.common import numbered_lines, parse_region, path_in, text_lines
from entrypoint.registry.reference import DIGEST_RE, REGISTRY_RE, parse_image_uri

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

DEPLOYED_INPUTS = (
    "plan",
    "functions",
    "digest",
    "region",
    "timeout",
    "function-urls",
    "terraform-outputs",
    "url-hosts",
    "content-type",
)
DEFAULT_TIMEOUT_S = 300
MAX_TIMEOUT_S = 3600
# What GetFunction takes as FunctionName (Lambda's own pattern): a name, a partial ARN
# (<account>:function:<name>) or a full ARN, with an optional version or alias.
FUNCTION_RE = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d{1,2}):)?"
    r"(?:(?P<account>\d{12}):function:)?"
    r"(?P<name>[a-zA-Z0-9_-]{1,64})"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?"
)
_TIMEOUT_RE = re.compile(r"(?P<value>\d{1,5})\s*(?P<unit>s|m)?")
_MEDIA_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_OUTPUT_RE = re.compile(r"\{output:(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\}")
LAMBDA_PLACEHOLDER = "{lambda}"
FUNCTIONS_FORMS = (
    "give one function per line as <name or ARN>=<image URI>@sha256:<digest> (the publish "
    "action's image-uri output), <name or ARN>=sha256:<digest>, or <name or ARN> with the "
    "'digest' input"
)
URL_FORMS = (
    "give one URL per line as <function>=<target>, where the target is https://... (used as "
    "it is), {lambda}/path (the URL Lambda gives the function, plus a path) or "
    "{output:<name>}/path (an output of the terraform-outputs file, plus a path); with one "
    "function, the target alone"
)


@dataclass(frozen=True)
class FunctionTarget:
    """A function that must run `digest`."""

    name: str  # as GetFunction takes it: name, partial or full ARN, qualifier allowed
    digest: str
    source: str  # where it was named, for the log: "functions line 2", a plan address

    @property
    def short_name(self) -> str:
        match = FUNCTION_RE.fullmatch(self.name)
        return match["name"] if match else self.name


@dataclass(frozen=True)
class UrlTarget:
    """A function URL to probe with the streaming rules."""

    function: str  # the key the line gives ("" when there was none: the only function)
    url: str | None  # None: the URL Lambda gives the function, plus `path`
    path: str
    source: str
    sensitive: bool = False  # a Terraform output marked sensitive: masked before it is shown


@dataclass(frozen=True)
class DeployedInputs:
    plan: Path | None
    functions: tuple[FunctionTarget, ...]
    digest: str | None
    region: str
    timeout: float
    urls: tuple[UrlTarget, ...]
    url_hosts: tuple[str, ...]
    content_type: str


def parse_deployed(raw: Mapping[str, str], workspace: Path) -> DeployedInputs:
    region = parse_region(raw)
    digest = _digest(raw.get("digest", "").strip())
    plan = _plan(raw.get("plan", "").strip(), workspace)
    functions = _functions(raw.get("functions", ""), digest, region)
    if not functions and plan is None:
        raise InputError(
            "neither 'functions' nor 'plan' was given, so there is no function to check",
            "pass the plan the verify action gated (terraform show -json) as 'plan', or the "
            "functions as 'functions'",
        )
    url_hosts = tuple(dict.fromkeys(_host(line) for line in text_lines(raw.get("url-hosts", ""))))
    outputs_value = raw.get("terraform-outputs", "").strip()
    outputs = _Outputs(path_in(workspace, "terraform-outputs", outputs_value) if outputs_value else None)
    urls = tuple(
        _url_line(number, line.strip(), outputs, url_hosts, region)
        for number, line in numbered_lines(raw.get("function-urls", ""))
    )
    return DeployedInputs(
        plan=plan,
        functions=functions,
        digest=digest,
        region=region,
        timeout=_timeout(raw.get("timeout", "").strip()),
        urls=urls,
        url_hosts=url_hosts,
        content_type=_content_type(raw.get("content-type", "").strip()),
    )


def _digest(value: str) -> str | None:
    if not value:
        return None
    if not DIGEST_RE.fullmatch(value):
        raise InputError(
            f"input 'digest' is '{shown(value)}', not a digest",
            "give sha256:<64 hex digits>, the publish action's digest output",
        )
    return value


def _plan(value: str, workspace: Path) -> Path | None:
    if not value:
        return None
    plan = path_in(workspace, "plan", value)
    if not plan.is_file():
        raise InputError(
            f"plan file '{value}' does not exist (looked for {plan})",
            "pass the same plan JSON the verify action read (terraform show -json tfplan > "
            "plan.json), by its path relative to the workspace",
        )
    return plan


def check_function_name(value: str, region: str, where: str) -> str:
    """`value` if GetFunction can take it in `region`, else an `InputError` naming `where`."""
    match = FUNCTION_RE.fullmatch(value)
    if match is None:
        raise InputError(
            f"{where} names the function '{shown(value)}', not a function name or ARN", FUNCTIONS_FORMS
        )
    if match["region"] and match["region"] != region:
        raise InputError(
            f"{where} names the function '{value}' in {match['region']}, not in {region}",
            "check the function with the action once per region, with that region in 'region'",
        )
    return value


def _functions(value: str, digest: str | None, region: str) -> tuple[FunctionTarget, ...]:
    found: dict[str, FunctionTarget] = {}
    for number, line in numbered_lines(value):
        where = f"input 'functions' line {number}"
        name, equals, published = (part.strip() for part in line.partition("="))
        check_function_name(name, region, where)
        if not equals:
            if digest is None:
                raise InputError(
                    f"{where} names '{name}' without its image, and 'digest' is empty", FUNCTIONS_FORMS
                )
            wanted = digest
        else:
            wanted = _published_digest(published, where)
        target = FunctionTarget(name, wanted, f"functions line {number}")
        if name in found and found[name].digest != wanted:
            raise InputError(
                f"{where} gives '{name}' the digest {wanted}, and an earlier line {found[name].digest}",
                "name each function once",
            )
        found[name] = target
    return tuple(found.values())


def _published_digest(value: str, where: str) -> str:
    if DIGEST_RE.fullmatch(value):
        return value
    uri = parse_image_uri(value)
    if uri is None or uri.digest is None:
        why = "pinned by tag, and a tag says nothing of what was published" if uri else "not an image URI"
        raise InputError(f"{where} gives '{shown(value)}', which is {why}", FUNCTIONS_FORMS)
    return uri.digest


def _timeout(value: str) -> float:
    if not value:
        return float(DEFAULT_TIMEOUT_S)
    match = _TIMEOUT_RE.fullmatch(value)
    seconds = int(match["value"]) * (60 if match["unit"] == "m" else 1) if match else 0
    if not 1 <= seconds <= MAX_TIMEOUT_S:
        raise InputError(
            f"input 'timeout' is '{shown(value)}', not a time from 1 s to {MAX_TIMEOUT_S // 60} minutes",
            f"give seconds (300, 300s) or minutes (5m); the default is {DEFAULT_TIMEOUT_S} s",
        )
    return float(seconds)


def _content_type(value: str) -> str:
    if not value:
        return EVENT_STREAM
    if not _MEDIA_TYPE_RE.fullmatch(value.lower()):
        raise InputError(
            f"input 'content-type' is '{shown(value)}', not a media type",
            f"give type/subtype without parameters, e.g. {EVENT_STREAM} (the default)",
        )
    return value.lower()


def _host(value: str) -> str:
    if "://" in value or not REGISTRY_RE.fullmatch(value):
        raise InputError(
            f"input 'url-hosts' has '{shown(value)}', not a host[:port]",
            "give each host without scheme or path, one per line, e.g. 127.0.0.1:8080",
        )
    return value.lower()


def _url_line(number: int, line: str, outputs: _Outputs, named: tuple[str, ...], region: str) -> UrlTarget:
    where = f"input 'function-urls' line {number}"
    function, target = "", line
    if not line.startswith(("https://", "http://", "{")):
        function, _, target = (part.strip() for part in line.partition("="))
        if not target:
            raise InputError(f"{where} is '{shown(line)}', which names no URL", URL_FORMS)
        check_function_name(function, region, where)
    if target.startswith(LAMBDA_PLACEHOLDER):
        path = _path(target.removeprefix(LAMBDA_PLACEHOLDER), where)
        return UrlTarget(function, None, path, where)
    output = _OUTPUT_RE.match(target)
    if output:
        value, sensitive = outputs.value(output["name"], where)
        path = _path(target[output.end() :], where)
        url = value.rstrip("/") + path if path != "/" else value
        source = f"{where} (terraform output {output['name']})"
        return UrlTarget(function, check_url(url, named, region, source), "", source, sensitive)
    if not target.startswith(("https://", "http://")):
        raise InputError(f"{where} is '{shown(line)}', not a URL", URL_FORMS)
    return UrlTarget(function, check_url(target, named, region, where), "", where)


def _path(value: str, where: str) -> str:
    if value and not value.startswith("/"):
        raise InputError(f"{where} adds '{shown(value)}' to its URL, which is not a path", URL_FORMS)
    if any(not ch.isprintable() or ch.isspace() or ch == "#" for ch in value):
        raise InputError(
            f"{where} adds '{shown(value)}' to its URL, which holds spaces or a fragment", URL_FORMS
        )
    return value or "/"


def check_url(url: str, named: tuple[str, ...], region: str, where: str) -> str:
    """`url` if the probe may GET it: http(s), a host and no credentials of its own; plain
    http only to a host the workflow named in url-hosts."""
    if any(not ch.isprintable() or ch.isspace() for ch in url):
        raise InputError(f"{where} gives '{shown(url)}', a URL with spaces or control characters", URL_FORMS)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"{where} gives '{shown(url)}', which is not a URL ({exc})", URL_FORMS) from exc
    host = parts.netloc.lower()
    if parts.scheme not in ("https", "http") or not REGISTRY_RE.fullmatch(host) or "@" in parts.netloc:
        raise InputError(
            f"{where} gives '{shown(url)}', which is not an http(s) URL of a host[:port]",
            "give the URL as https://<host>/<path>, without user, password or fragment",
        )
    if parts.fragment:
        raise InputError(f"{where} gives '{shown(url)}', whose fragment no server sees", "leave out the #...")
    if parts.scheme == "http" and host not in named:
        raise InputError(
            f"{where} gives '{shown(url)}', plain http to a host url-hosts does not name",
            "Lambda's function URLs are https; name the host in url-hosts when it is yours and "
            "speaks plain http (a local stand-in)",
        )
    url_region = lambda_url_region(parts.hostname or "")
    if url_region and url_region != region and host not in named:
        raise InputError(
            f"{where} gives '{shown(url)}', a function URL in {url_region}, not in {region}",
            "check each region's functions with its own step",
        )
    if url_region and port not in (None, 443):
        raise InputError(
            f"{where} gives '{shown(url)}', a function URL on port {port}", "function URLs are on 443"
        )
    return url if parts.path else urlunsplit(parts._replace(path="/"))


class _Outputs:
    """`terraform output -json`, read once when a line names an output. Written by Terraform
    code that a pull request can change: every value is checked like a typed URL."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._data: dict[str, Any] | None = None

    def _load(self, where: str) -> dict[str, Any]:
        fix = "write it with terraform output -json > outputs.json after the apply, and pass its path"
        if self.path is None:
            raise InputError(f"{where} names a Terraform output, and 'terraform-outputs' is empty", fix)
        if self._data is None:
            if not self.path.is_file():
                raise InputError(f"terraform-outputs file '{self.path}' does not exist", fix)
            try:
                data = json.loads(self.path.read_bytes())
            except ValueError as exc:
                raise InputError(f"terraform-outputs file '{self.path}' is not JSON ({exc})", fix) from exc
            if not isinstance(data, dict) or not all(
                isinstance(v, dict) and "value" in v for v in data.values()
            ):
                raise InputError(
                    f"terraform-outputs file '{self.path}' is not terraform output -json's "
                    'object of {"name": {"value": ...}}',
                    fix,
                )
            self._data = data
        return self._data

    def value(self, name: str, where: str) -> tuple[str, bool]:
        """The output's string value (a map's entry for name.key), and whether it is sensitive."""
        data = self._load(where)
        first, *keys = name.split(".")
        if first not in data:
            known = ", ".join(sorted(data)[:20]) or "none"
            raise InputError(
                f"{where} names the Terraform output '{first}', which the terraform-outputs file "
                f"does not have (it has: {shown(known)})",
                "add the output to the Terraform configuration (e.g. value = "
                "aws_lambda_function_url.<name>.function_url), or fix its name",
            )
        value: Any = data[first]["value"]
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str):
            raise InputError(
                f"{where} names the Terraform output '{name}', which is not a string",
                "name an output (or a map output's key, output.key) whose value is the URL",
            )
        return value, bool(data[first].get("sensitive"))
