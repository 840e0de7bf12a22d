"""The verify gate: before `terraform apply`, prove every image the plan deploys to Lambda
exists in its registry, is pinned by digest, and passes Lambda's rules.

Images come from the `image-uris` input and from a `terraform show -json` plan: every
`aws_lambda_function` with package_type "Image" that the plan creates or updates. The
gate fails with one line listing every image that must not be deployed.

When the plan creates or updates no Image function, the gate passes and says so: it sits
in a workflow that plans on every change, and a change to IAM or to a Zip function has
no image to check. It never passes without saying what it checked, and an image the
plan does deploy but cannot name (unknown until apply) fails it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from entrypoint import github
from entrypoint.checks.lambda_rules import (
    UNKNOWN_FUNCTION,
    FunctionSetting,
    check_image,
    facts_from_registry,
)
from entrypoint.checks.tfplan import PlanImages, PlannedImage, images_in_plan, load_plan
from entrypoint.errors import RegistryError, VerifyError
from entrypoint.registry.reference import parse_image_uri
from entrypoint.registry.session import Session, open_session

if TYPE_CHECKING:
    from collections.abc import Iterable

    from entrypoint.checks.imagefacts import ImageFacts
    from entrypoint.inputs import VerifyInputs
    from entrypoint.registry.client import RegistryClient


OK = "ok"
MISSING = "missing"
REFUSED = "refused"
UNKNOWN = "unknown"
UNPINNED = "unpinned"
INVALID = "invalid"
ERROR = "error"
# Where an image is looked up: (registry host, repository, digest).
_Key: TypeAlias = tuple[str, str, str]
_MARK = {OK: "✔", MISSING: "✘", REFUSED: "✘", UNKNOWN: "✘", UNPINNED: "✘", INVALID: "✘", ERROR: "✘"}

UNKNOWN_DETAIL = (
    "image_uri is only known at apply time: Terraform computes it during the apply, "
    "typically because the ECR repository or the image is created in the same apply "
    "(the chicken-and-egg: the image cannot be pushed before its repository exists, so "
    "nothing can be checked, and the apply would fail or deploy an unchecked image)"
)
UNKNOWN_FIX = (
    "create the repository first with a targeted apply (terraform apply "
    "-target=aws_ecr_repository.<name>), publish the image, and pass the publish action's "
    "image-uri output to Terraform as a variable (-var image_uri=...)"
)
UNPINNED_DETAIL = (
    "is pinned by tag, not by digest: when the tag moves to a new image the function's "
    "configuration does not change, so Terraform plans no update and Lambda keeps running "
    "the image it resolved at the last deploy"
)
UNPINNED_FIX = (
    "pass the publish action's image-uri output (registry/repository@sha256:...), which is "
    "pinned by digest, so every new image changes the plan"
)
MISSING_FIX = (
    "publish the image before planning (the publish action's image-uri output) and check "
    "the registry, repository and digest in the URI"
)
INVALID_FIX = "give image URIs as <registry host>/<repository>@sha256:<64 hex digits>"


@dataclass(frozen=True)
class Finding:
    source: str
    image: str
    status: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status != OK


@dataclass
class VerifyReport:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.failed]

    @property
    def checked(self) -> int:
        """Distinct images found in their registry and passing every Lambda rule."""
        return len({f.image for f in self.findings if not f.failed})

    def outputs(self) -> dict[str, str]:
        return {"checked": str(self.checked)}

    def table(self) -> list[str]:
        rows = [(f.source, _short_digest(f.image), f"{_MARK[f.status]} {f.status}") for f in self.findings]
        header = ("source", "image", "status")
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(3)]
        lines = [
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in (header, *rows)
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return lines

    def summary(self) -> str:
        title = "### Lambda images refused\n\n" if self.failures else "### Lambda images verified\n\n"
        notes = [github.markdown_text(note) for note in self.notes]
        if not self.findings:
            return title + "\n".join(notes) + "\n"
        rows = [
            (
                github.markdown_text(f.source),
                github.markdown_code(f.image),
                f"{_MARK[f.status]} {f.status}",
                github.markdown_text(f.detail),
            )
            for f in self.findings
        ]
        text = title + github.markdown_table(("source", "image", "status", "detail"), rows)
        return text + "".join(f"\n{note}\n" for note in notes)

    def raise_for_failures(self) -> None:
        failures = self.failures
        if not failures:
            return
        fixes = list(dict.fromkeys(f.fix for f in failures if f.fix))
        raise VerifyError(
            f"{len(failures)} of {len(self.findings)} image(s) must not be deployed: "
            + "; ".join(f"{f.source}: {f.image} {f.detail}" for f in failures),
            "; ".join(fixes),
        )


def _short_digest(image: str) -> str:
    """A terminal-wide table: the digest's first 12 digits name it well enough there."""
    name, at, digest = image.partition("@sha256:")
    return f"{name}@sha256:{digest[:12]}…" if at else image


@dataclass(frozen=True)
class _Wanted:
    """One image to look up, and what its function needs of it."""

    source: str
    image: str
    key: _Key
    invoke_mode: str | None  # what the function URL (or the input) needs
    function: FunctionSetting = UNKNOWN_FUNCTION
    url: str = ""  # the function URL's address, when the mode comes from one


def verify(inputs: VerifyInputs) -> VerifyReport:
    report = VerifyReport()
    # (source, image URI or a finding made without the registry, the planned function).
    wanted: list[tuple[str, str | Finding, PlannedImage | None]] = [
        ("image-uris", uri, None) for uri in inputs.image_uris
    ]
    if inputs.plan is not None:
        with github.stage(f"read the plan {inputs.plan.name}"):
            planned = images_in_plan(load_plan(inputs.plan))
            wanted += [(item.address, _planned_target(item), item) for item in planned.deployed]
            report.notes.extend(_plan_notes(planned))
            for note in report.notes:
                github.info(f"  {note}")

    rows = [_row(inputs, source, target, function) for source, target, function in wanted]
    looked_up = [row for row in rows if isinstance(row, _Wanted)]
    keys = list(dict.fromkeys(row.key for row in looked_up))
    facts: dict[_Key, ImageFacts | tuple[str, str, str]] = {}
    if keys:
        with github.stage("log in to Amazon ECR"):
            session = open_session(inputs.region, ((inputs.registry, "registry"),) if inputs.registry else ())
        with github.stage(f"check {len(keys)} image(s) in the registry"):
            # Layers are read only for images some function needs an invoke mode from.
            adapters = {row.key for row in looked_up if row.invoke_mode is not None}
            facts = _read_all(inputs, session, keys, adapters)
    elif not rows:
        github.notice("nothing to verify: " + "; ".join(report.notes))
    report.findings = [
        row if isinstance(row, Finding) else _judge(inputs, row, facts[row.key]) for row in rows
    ]

    for line in report.table():
        github.info(line)
    for finding in report.failures:
        github.info(f"  ✘ {finding.source}: {finding.image} {finding.detail}")
    return report


def _planned_target(item: PlannedImage) -> str | Finding:
    """The image URI a planned function gets, or the finding when the plan cannot say."""
    if item.unknown:
        return Finding(item.address, "(known after apply)", UNKNOWN, UNKNOWN_DETAIL, UNKNOWN_FIX)
    if item.image_uri is None:
        return Finding(item.address, "(none)", INVALID, "has no image_uri", INVALID_FIX)
    return item.image_uri


def _row(
    inputs: VerifyInputs, source: str, target: str | Finding, function: PlannedImage | None
) -> Finding | _Wanted:
    """A finding made without the registry, or what to look up in it."""
    if isinstance(target, Finding):
        return target
    uri = parse_image_uri(target)
    if uri is None:
        return Finding(source, target, INVALID, "is not an image URI", INVALID_FIX)
    if uri.digest is None:
        return Finding(source, target, UNPINNED, UNPINNED_DETAIL, UNPINNED_FIX)
    return _wanted(
        inputs, source, target, (inputs.registry or uri.host, uri.repository, uri.digest), function
    )


def _wanted(inputs: VerifyInputs, source: str, image: str, key: _Key, item: PlannedImage | None) -> _Wanted:
    """The invoke mode a function needs comes from its URL in the plan; the input stands in
    for plans (and image URIs) without one."""
    if item is None:
        return _Wanted(source, image, key, inputs.invoke_mode)
    if item.url is not None:
        return _Wanted(source, image, key, item.url.mode, item.function, item.url.address)
    return _Wanted(source, image, key, inputs.invoke_mode, item.function)


def _plan_notes(planned: PlanImages) -> list[str]:
    if planned.deployed:
        notes = [f"the plan creates or updates {len(planned.deployed)} Image function(s)"]
    else:
        notes = ["the plan creates or updates no aws_lambda_function with package_type Image"]
    if planned.not_deployed:
        notes.append(
            f"{len(planned.not_deployed)} Image function(s) the plan leaves alone or deletes, not "
            "checked: " + ", ".join(planned.not_deployed)
        )
    if planned.other_functions:
        notes.append(f"{planned.other_functions} Zip function(s) have no image to check")
    streaming = [i for i in planned.deployed if i.url is not None and i.url.mode == "response-stream"]
    if streaming:
        notes.append(
            "served by a RESPONSE_STREAM function URL, so their adapter must stream: "
            + ", ".join(f"{i.address} ({i.url.address})" for i in streaming if i.url)
        )
    return notes


def _read_all(
    inputs: VerifyInputs, session: Session, keys: Iterable[_Key], adapters: set[_Key]
) -> dict[_Key, ImageFacts | tuple[str, str, str]]:
    """Each image's facts from its registry, or (status, detail, fix) when it cannot be had."""
    clients: dict[str, RegistryClient | RegistryError] = {}
    found: dict[_Key, ImageFacts | tuple[str, str, str]] = {}
    for key in keys:
        host, repository, digest = key
        if host not in clients:
            # One login check per host, so an unreachable registry costs one retry budget.
            try:
                client = session.client(host, "the image URI")
                client.ping()
                clients[host] = client
            except RegistryError as exc:
                clients[host] = exc
        result = _read_one(inputs, clients[host], repository, digest, find_adapter=key in adapters)
        found[key] = result
        status = result[0] if isinstance(result, tuple) else "found"
        github.info(f"  {host}/{repository}@{digest[:19]}…: {status}")
    return found


def _read_one(
    inputs: VerifyInputs,
    client: RegistryClient | RegistryError,
    repository: str,
    digest: str,
    *,
    find_adapter: bool,
) -> ImageFacts | tuple[str, str, str]:
    if isinstance(client, RegistryError):
        return ERROR, f"could not be checked: {client.cause}", client.fix
    try:
        if client.head_manifest(repository, digest) is None:
            return MISSING, f"is missing: {client.host}/{repository} has no manifest {digest}", MISSING_FIX
        return facts_from_registry(
            client, repository, digest, platform=inputs.platform, find_adapter=find_adapter
        )
    except RegistryError as exc:
        return ERROR, f"could not be checked: {exc.cause}", exc.fix


def _judge(inputs: VerifyInputs, row: _Wanted, facts: ImageFacts | tuple[str, str, str]) -> Finding:
    """Lambda's rules for this image as this function will run it."""
    if isinstance(facts, tuple):
        return Finding(row.source, row.image, *facts)
    violations = check_image(facts, inputs.platform, row.invoke_mode, row.function)
    if violations:
        url = f" (served by {row.url}, invoke mode {row.invoke_mode})" if row.url else ""
        return Finding(
            row.source,
            row.image,
            REFUSED,
            "breaks Lambda's rules"
            + url
            + ": "
            + "; ".join(f"({n}) {v.line()}" for n, v in enumerate(violations, 1)),
            "; ".join(v.fix for v in violations),
        )
    size = f"{facts.size / 1024**2:.1f} MB compressed"
    adapter = {True: ", Lambda Web Adapter", False: ", no Lambda Web Adapter", None: ""}[
        facts.has_web_adapter
    ]
    streams = ", streams" if row.invoke_mode == "response-stream" and facts.has_web_adapter else ""
    return Finding(row.source, row.image, OK, f"{facts.os}/{facts.architecture}, {size}{adapter}{streams}")
