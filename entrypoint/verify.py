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

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from entrypoint import github
from entrypoint.ecr import Ecr
from entrypoint.errors import InputError, RegistryError, VerifyError
from entrypoint.inputs import DEFAULT_PLATFORM, PLATFORMS, parse_region, parse_registry, path_in
from entrypoint.lambda_checks import check_image, facts_from_registry, parse_invoke_mode
from entrypoint.reference import DIGEST_RE, REPOSITORY_RE, TAG_RE
from entrypoint.registry import CredentialScope, RegistryClient, Transport

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from entrypoint.ecr import RegistryLogin

VERIFY_INPUTS = ("image-uris", "plan", "region", "registry", "platform", "invoke-mode")
DEPLOYING_ACTIONS = ("create", "update")

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
class VerifyInputs:
    image_uris: tuple[str, ...]
    plan: Path | None
    region: str
    registry: str | None
    platform: str
    invoke_mode: str | None


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
    )


# -------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedImage:
    address: str
    image_uri: str | None
    unknown: bool


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
                address=address, image_uri=str(uri) if uri and not unknown else None, unknown=unknown
            )
        )
    return PlanImages(deployed=tuple(deployed), not_deployed=tuple(not_deployed), other_functions=others)


def _require_printable(address: str, what: str, value: str) -> None:
    """Plans come from Terraform code a pull request can change; a control character in a
    value the gate prints could start a line the runner reads as a command."""
    if all(ch.isprintable() for ch in value):
        return
    raise InputError(
        f"the plan's {what} '{_escaped(value)}' (resource '{_escaped(address)}') holds control characters",
        "Terraform writes none there: check where the plan file comes from and the value that sets it",
    )


def _escaped(value: str) -> str:
    return value.encode("unicode_escape").decode()[:200]


# ----------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImageUri:
    text: str
    host: str
    repository: str
    tag: str | None
    digest: str | None


def parse_image_uri(text: str) -> ImageUri | None:
    """registry/repository[:tag][@sha256:...], or None when it is not one."""
    name, at, digest = text.partition("@")
    host, slash, path = name.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        return None
    repository, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = path.rpartition(":")
    if not REPOSITORY_RE.fullmatch(repository) or (tag is not None and not TAG_RE.fullmatch(tag)):
        return None
    if at and not DIGEST_RE.fullmatch(digest):
        return None
    return ImageUri(text=text, host=host, repository=repository, tag=tag, digest=digest or None)


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


def verify(inputs: VerifyInputs) -> VerifyReport:
    report = VerifyReport()
    # (source, image URI or a finding made without the registry), in the order given.
    wanted: list[tuple[str, str | Finding]] = [("image-uris", uri) for uri in inputs.image_uris]
    if inputs.plan is not None:
        with github.stage(f"read the plan {inputs.plan.name}"):
            planned = images_in_plan(load_plan(inputs.plan))
            for item in planned.deployed:
                if item.unknown:
                    found = Finding(item.address, "(known after apply)", UNKNOWN, UNKNOWN_DETAIL, UNKNOWN_FIX)
                    wanted.append((item.address, found))
                elif item.image_uri is None:
                    found = Finding(item.address, "(none)", INVALID, "has no image_uri", INVALID_FIX)
                    wanted.append((item.address, found))
                else:
                    wanted.append((item.address, item.image_uri))
            report.notes.extend(_plan_notes(planned))
            for note in report.notes:
                github.info(f"  {note}")

    rows: list[Finding | tuple[str, str, _Key]] = []
    for source, target in wanted:
        if isinstance(target, Finding):
            rows.append(target)
        elif (uri := parse_image_uri(target)) is None:
            rows.append(Finding(source, target, INVALID, "is not an image URI", INVALID_FIX))
        elif uri.digest is None:
            rows.append(Finding(source, target, UNPINNED, UNPINNED_DETAIL, UNPINNED_FIX))
        else:
            rows.append((source, target, (inputs.registry or uri.host, uri.repository, uri.digest)))

    keys = list(dict.fromkeys(row[2] for row in rows if isinstance(row, tuple)))
    results: dict[_Key, tuple[str, str, str]] = {}
    if keys:
        with github.stage("log in to Amazon ECR"):
            login = Ecr(inputs.region).login()
            github.mask(login.password)
            github.info(f"  logged in as {login.username} (registry {login.registry})")
        with github.stage(f"check {len(keys)} image(s) in the registry"):
            results = _check_all(inputs, login, keys)
    elif not rows:
        github.notice("nothing to verify: " + "; ".join(report.notes))
    report.findings = [
        row if isinstance(row, Finding) else Finding(row[0], row[1], *results[row[2]]) for row in rows
    ]

    for line in report.table():
        github.info(line)
    for finding in report.failures:
        github.info(f"  ✘ {finding.source}: {finding.image} {finding.detail}")
    return report


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
    return notes


def _check_all(
    inputs: VerifyInputs, login: RegistryLogin, keys: Iterable[_Key]
) -> dict[_Key, tuple[str, str, str]]:
    clients: dict[str, RegistryClient | RegistryError] = {}
    results: dict[_Key, tuple[str, str, str]] = {}
    named = ((inputs.registry, "registry"),) if inputs.registry else ()
    scope = CredentialScope(login.registry, named)
    for host, repository, digest in keys:
        if host not in clients:
            # One login check per host, so an unreachable registry costs one retry budget.
            try:
                transport = Transport(
                    host, login.username, login.password, scope=scope, where="the image URI"
                )
                client = RegistryClient(transport)
                client.ping()
                clients[host] = client
            except RegistryError as exc:
                clients[host] = exc
        status, detail, fix = _check_one(inputs, clients[host], repository, digest)
        github.info(f"  {_MARK[status]} {host}/{repository}@{digest[:19]}…: {status}")
        results[(host, repository, digest)] = (status, detail, fix)
    return results


def _check_one(
    inputs: VerifyInputs, client: RegistryClient | RegistryError, repository: str, digest: str
) -> tuple[str, str, str]:
    if isinstance(client, RegistryError):
        return ERROR, f"could not be checked: {client.cause}", client.fix
    try:
        if client.head_manifest(repository, digest) is None:
            return MISSING, f"is missing: {client.host}/{repository} has no manifest {digest}", MISSING_FIX
        facts = facts_from_registry(
            client,
            repository,
            digest,
            platform=inputs.platform,
            # Reading layers only answers the invoke-mode rule; skip it when there is none.
            find_adapter=inputs.invoke_mode is not None,
        )
    except RegistryError as exc:
        return ERROR, f"could not be checked: {exc.cause}", exc.fix
    violations = check_image(facts, inputs.platform, inputs.invoke_mode)
    if violations:
        return (
            REFUSED,
            "breaks Lambda's rules: " + "; ".join(f"({n}) {v.line()}" for n, v in enumerate(violations, 1)),
            "; ".join(v.fix for v in violations),
        )
    size = f"{facts.size / 1024**2:.1f} MB compressed"
    adapter = {True: ", Lambda Web Adapter", False: ", no Lambda Web Adapter", None: ""}[
        facts.has_web_adapter
    ]
    return OK, f"{facts.os}/{facts.architecture}, {size}{adapter}", ""
