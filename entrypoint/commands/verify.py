"""The verify gate: before `terraform apply`, prove every image the plan deploys to Lambda
exists in its registry, is pinned by digest, and passes Lambda's rules.

Images come from the `image-uris` input and from a `terraform show -json` plan: every
`aws_lambda_function` and `awscc_lambda_function` with package_type "Image" that the plan
creates or updates. The gate fails with one line listing every image that must not be deployed.

When the plan creates or updates no Image function, the gate passes and says so: it sits
in a workflow that plans on every change, and a change to IAM or to a Zip function has
no image to check. It never passes without saying what it checked, and it fails closed:
what the plan leaves to the apply is never filled in with a default. An image it cannot
name, a function whose package type is unknown (it could be an Image one), and a Lambda
resource of a type the gate does not read that carries an image each fail it. A function
URL's invoke mode or a function's environment that the plan leaves open is judged for every
value it may take: the image passes only if it passes for each (an image without the Lambda
Web Adapter does; one with it cannot be right for both, so it fails with the reason).

With `scan` on, every image that passed those checks is also judged by ECR's vulnerability
findings (`checks.scan`): its latest scan is read (one is started when it has none), and an
image with findings at or above `scan-fail-on` that `scan-ignore` does not accept is refused,
as is one ECR cannot say is clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeAlias

from entrypoint import github
from entrypoint.checks.lambda_rules import (
    INVOKE_MODES,
    UNKNOWN_FUNCTION,
    WEB_ADAPTER_ENV,
    FunctionSetting,
    Violation,
    check_image,
    facts_from_registry,
)
from entrypoint.checks.scan import require_clean, scan_image
from entrypoint.checks.tfplan import (
    UNKNOWN_MODE,
    PlanImages,
    PlannedImage,
    Unjudged,
    images_in_plan,
    load_plan,
)
from entrypoint.errors import AwsError, CheckError, RegistryError, RepositoryMissingError, VerifyError
from entrypoint.registry.ecr import Ecr
from entrypoint.registry.reference import ecr_account_region, parse_image_uri
from entrypoint.registry.session import Session, open_session

if TYPE_CHECKING:
    from collections.abc import Iterable

    from entrypoint.checks.imagefacts import ImageFacts
    from entrypoint.checks.scan import ScanRule
    from entrypoint.inputs import VerifyInputs
    from entrypoint.registry.client import RegistryClient


OK = "ok"
MISSING = "missing"
REFUSED = "refused"
UNKNOWN = "unknown"
UNPINNED = "unpinned"
INVALID = "invalid"
UNSUPPORTED = "unsupported"
ERROR = "error"
VULNERABLE = "vulnerable"
# Where an image is looked up: (registry host, repository, digest).
_Key: TypeAlias = tuple[str, str, str]
# Where ECR scans it: (region, registry ID or "" for the caller's, repository, digest).
_ScanKey: TypeAlias = tuple[str, str, str, str]
_MARK = {
    OK: "✔",
    MISSING: "✘",
    REFUSED: "✘",
    UNKNOWN: "✘",
    UNPINNED: "✘",
    INVALID: "✘",
    UNSUPPORTED: "✘",
    ERROR: "✘",
    VULNERABLE: "✘",
}

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
PACKAGE_FIX = (
    'pin package_type = "Image" (or "Zip") in the configuration so the plan knows it: a literal '
    "or a variable, not a value computed from another resource"
)
UNSUPPORTED_FIX = (
    "deploy Lambda container images with aws_lambda_function or awscc_lambda_function, the "
    "resource types the gate reads, or keep this resource out of the plan the gate checks"
)
OPEN_MODE_FIX = 'make invoke_mode a literal ("RESPONSE_STREAM" or "BUFFERED") on {url} so the plan knows it'
OPEN_ENVIRONMENT_FIX = (
    f"make the environment of {{function}} known at plan time: {WEB_ADAPTER_ENV} a literal "
    '("response_stream" or "buffered") or absent, and the variables map not computed from '
    "resources of the same apply"
)


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
    # What the plan leaves to the apply that decides the adapter's rule, e.g. "the invoke_mode
    # of aws_lambda_function_url.x": the image is judged for every value each may take.
    open_mode: str = ""
    open_environment: str = ""

    def cases(self) -> list[tuple[str | None, FunctionSetting]]:
        """Each (invoke mode, function environment) the apply may bring."""
        modes = INVOKE_MODES if self.open_mode else (self.invoke_mode,)
        where = f"{self.source}'s environment, if the apply sets it so"
        functions = (
            [FunctionSetting(known=True, value=v, where=where) for v in ("response_stream", "buffered")]
            if self.open_environment
            else [self.function]
        )
        return [(mode, function) for mode in modes for function in functions]

    @property
    def needs_adapter(self) -> bool:
        return any(mode is not None for mode, _ in self.cases())


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
            wanted += [(item.address, _unjudged(item), None) for item in planned.unjudged]
            report.notes.extend(_plan_notes(planned))
            for note in report.notes:
                github.info(f"  {note}")

    rows = [_row(inputs, source, target, function) for source, target, function in wanted]
    looked_up = [row for row in rows if isinstance(row, _Wanted)]
    keys = list(dict.fromkeys(row.key for row in looked_up))
    facts: dict[_Key, ImageFacts | tuple[str, str, str]] = {}
    session: Session | None = None
    if keys:
        with github.stage("log in to Amazon ECR"):
            session = open_session(inputs.region, ((inputs.registry, "registry"),) if inputs.registry else ())
        with github.stage(f"check {len(keys)} image(s) in the registry"):
            # Layers are read only for images some function needs an invoke mode from.
            adapters = {row.key for row in looked_up if row.needs_adapter}
            facts = _read_all(inputs, session, keys, adapters)
    elif not rows:
        github.notice("nothing to verify: " + "; ".join(report.notes))
    report.findings = [
        row if isinstance(row, Finding) else _judge(inputs, row, facts[row.key]) for row in rows
    ]
    if inputs.scan is not None and session is not None:
        passed = {
            _scan_key(row, inputs.region)
            for row, f in zip(rows, report.findings, strict=True)
            if _scannable(row, f)
        }
        if passed:
            with github.stage(f"read ECR's scan of {len(passed)} image(s)"):
                report.findings = _scan_all(inputs.scan, session.ecr, rows, report.findings)

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


def _unjudged(item: Unjudged) -> Finding:
    if item.unknown_package:
        return Finding(item.address, item.image, UNKNOWN, item.detail, PACKAGE_FIX)
    return Finding(item.address, item.image, UNSUPPORTED, item.detail, UNSUPPORTED_FIX)


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
    # Publish cannot know the function; here the plan is the function, so an environment
    # it leaves to the apply may set the adapter's mode to anything.
    environment = "" if item.function.known else f"the environment of {item.address}"
    if item.url is None:
        return _Wanted(source, image, key, inputs.invoke_mode, item.function, open_environment=environment)
    if item.url.mode == UNKNOWN_MODE:
        return _Wanted(
            source,
            image,
            key,
            None,
            item.function,
            item.url.address,
            open_mode=f"the invoke_mode of {item.url.address}",
            open_environment=environment,
        )
    return _Wanted(
        source, image, key, item.url.mode, item.function, item.url.address, open_environment=environment
    )


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
    if planned.unjudged:
        notes.append(
            f"{len(planned.unjudged)} resource(s) may deploy an image the plan does not let the gate "
            "check: " + ", ".join(item.address for item in planned.unjudged)
        )
    streaming = [i for i in planned.deployed if i.url is not None and i.url.mode == "response-stream"]
    if streaming:
        notes.append(
            "served by a RESPONSE_STREAM function URL, so their adapter must stream: "
            + ", ".join(f"{i.address} ({i.url.address})" for i in streaming if i.url)
        )
    open_modes = [i for i in planned.deployed if i.url is not None and i.url.mode == UNKNOWN_MODE]
    if open_modes:
        notes.append(
            "served by a function URL whose invoke_mode is only known at apply time, so their "
            "image must be right for both modes: "
            + ", ".join(f"{i.address} ({i.url.address})" for i in open_modes if i.url)
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
    """Lambda's rules for this image as this function will run it: for every case the plan
    leaves open, so that whatever the apply picks was checked."""
    if isinstance(facts, tuple):
        return Finding(row.source, row.image, *facts)
    outcomes = [check_image(facts, inputs.platform, mode, function) for mode, function in row.cases()]
    violations = list(dict.fromkeys(v for found in outcomes for v in found))
    unknowns = " and ".join(u for u in (row.open_mode, row.open_environment) if u)
    mode = "unknown until apply" if row.open_mode else row.invoke_mode
    url = f" (served by {row.url}, invoke mode {mode})" if row.url else ""
    if violations:
        fixes = [v.fix for v in violations]
        if any(found != outcomes[0] for found in outcomes):
            # The verdict turns on what the apply picks: the plan must say it.
            return Finding(
                row.source,
                row.image,
                REFUSED,
                f"cannot be judged from the plan, which leaves {unknowns} to the apply: for some "
                f"value the apply may pick, the image breaks Lambda's rules{url}: " + _numbered(violations),
                "; ".join(dict.fromkeys([*_open_fixes(row), *fixes])),
            )
        return Finding(
            row.source,
            row.image,
            REFUSED,
            "breaks Lambda's rules" + url + ": " + _numbered(violations),
            "; ".join(fixes),
        )
    size = f"{facts.size / 1024**2:.1f} MB compressed"
    adapter = {True: ", Lambda Web Adapter", False: ", no Lambda Web Adapter", None: ""}[
        facts.has_web_adapter
    ]
    streams = ", streams" if row.invoke_mode == "response-stream" and facts.has_web_adapter else ""
    either = f", right whatever the apply makes of {unknowns}" if unknowns and row.needs_adapter else ""
    return Finding(
        row.source, row.image, OK, f"{facts.os}/{facts.architecture}, {size}{adapter}{streams}{either}"
    )


def _open_fixes(row: _Wanted) -> list[str]:
    fixes = [OPEN_MODE_FIX.format(url=row.url)] if row.open_mode else []
    if row.open_environment:
        fixes.append(OPEN_ENVIRONMENT_FIX.format(function=row.source))
    return fixes


def _numbered(violations: list[Violation]) -> str:
    return "; ".join(f"({n}) {v.line()}" for n, v in enumerate(violations, 1))


def _scannable(row: Finding | _Wanted, finding: Finding) -> bool:
    """Only images that passed the other checks are scanned: the rest are refused already."""
    return isinstance(row, _Wanted) and not finding.failed


def _scan_key(row: Finding | _Wanted, region: str) -> _ScanKey:
    """Where ECR scans the image: an ECR host names its account and region (a plan may deploy
    images of several); any other host is the caller's registry in the `region` input."""
    image = row.image
    uri = parse_image_uri(image)
    if uri is None or uri.digest is None:
        raise AssertionError(f"not a pinned image URI: {image}")  # _row made sure it is
    ecr = ecr_account_region(uri.host)
    if ecr is not None:
        account, host_region = ecr
        return host_region, account, uri.repository, uri.digest
    return region, "", uri.repository, uri.digest


def _scan_all(
    rule: ScanRule, ecr: Ecr, rows: list[Finding | _Wanted], findings: list[Finding]
) -> list[Finding]:
    """The findings with each scanned image's verdict: refused when the scan gate refuses it,
    else its scan counts added to what was checked."""
    clients = {ecr.region: ecr}
    outcomes: dict[_ScanKey, tuple[str, str, str] | str] = {}
    judged: list[Finding] = []
    for row, finding in zip(rows, findings, strict=True):
        if not _scannable(row, finding):
            judged.append(finding)
            continue
        key = _scan_key(row, ecr.region)
        if key not in outcomes:
            region = key[0]
            if region not in clients:
                clients[region] = Ecr(region)
            outcomes[key] = _scan_one(rule, clients[region], key)
        outcome = outcomes[key]
        if isinstance(outcome, str):
            judged.append(replace(finding, detail=finding.detail + outcome))
        else:
            judged.append(Finding(finding.source, finding.image, *outcome))
    return judged


def _scan_one(rule: ScanRule, ecr: Ecr, key: _ScanKey) -> tuple[str, str, str] | str:
    """(status, detail, fix) of an image the scan gate refuses, else what to add to its detail."""
    _, account, repository, digest = key
    reference = f"{repository}@{digest[:19]}…"
    github.info(f"  {reference}")
    try:
        result = scan_image(
            ecr, ecr.repository(repository, account or None), digest, rule, reference, reuse=True
        )
    except (AwsError, CheckError, RepositoryMissingError) as exc:
        return ERROR, f"could not be scanned: {exc.cause}", exc.fix
    try:
        require_clean(result, rule)
    except CheckError as exc:
        return VULNERABLE, f"is refused by the scan gate: {exc.cause}", exc.fix
    accepted = f", {len(result.ignored)} accepted by scan-ignore" if result.ignored else ""
    judged = f"none at or above {rule.fail_on}" if rule.fail_on else "report only"
    return f"; ECR scan: {result.counted()} ({judged}{accepted})"
