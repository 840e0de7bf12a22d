"""The ECR scan gate: ECR's vulnerability findings for one image, and the rule that refuses it.

Basic scanning (`findings`: name, severity, uri, package_name/package_version attributes) and
enhanced scanning (`enhancedFindings`, Amazon Inspector's: packageVulnerabilityDetails) are
both read. Publish scans the image it just pushed; verify reads each image's latest scan and
starts one only when the image has none.

The gate fails closed: a scan that does not complete (failed, unsupported image, findings
unavailable, eligibility expired, the wait ran out), a quota that allows no scan, or an answer
listing fewer findings than it counts is an error, never a pass, since the gate cannot then
say the image is clean. Everything in ECR's answer reaches the log and is text from outside:
it is escaped (`shown`) and capped when read, before anything prints it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from entrypoint import cancel, github
from entrypoint.errors import AwsError, CheckError, InputError, shown

if TYPE_CHECKING:
    from entrypoint.registry.ecr import Ecr, ImageScan, Repository

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")  # worst first
FAIL_ON_WORDS = ("critical", "high", "medium", "low", "informational", "none")
DEFAULT_FAIL_ON = "high"
DEFAULT_TIMEOUT_S = 600
MAX_TIMEOUT_S = 3600
# A finding name as ECR and Inspector write them: CVE-2024-1234, GHSA-xxxx-xxxx-xxxx, ALAS2-2024:1.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# Inspector says UNTRIAGED for a finding it has not rated yet: below every rating, as UNDEFINED.
_SEVERITY_ALIASES = {"UNTRIAGED": "UNDEFINED"}
_DONE = ("COMPLETE", "ACTIVE")  # ACTIVE: enhanced scanning, continuous and current
_WAITING = ("IN_PROGRESS", "PENDING")
# How often to ask, and to say we are still waiting: a basic scan takes a minute or two.
_POLL_S = 5.0
_PROGRESS_S = 10.0
# A repository that scans on push starts its scan a moment after the push; after this long
# without one, the gate starts it.
_PUSH_SCAN_GRACE_S = 20.0
_WORST_SHOWN = 3
_RERUN_OR_DISABLE = "or set scan to false to deploy without the gate (it cannot say the image is clean)"
_STATUS_FIXES = {
    "FAILED": (
        "failed",
        f"rerun the job (ECR may refuse another scan of the image until the next day), {_RERUN_OR_DISABLE}",
    ),
    "UNSUPPORTED_IMAGE": (
        "is not possible: ECR does not support scanning this image",
        "build on a base whose OS packages ECR's scanning reads (Amazon Linux, Debian, Ubuntu, Alpine, "
        f"RHEL), or turn on enhanced scanning for the registry, {_RERUN_OR_DISABLE}",
    ),
    "SCAN_ELIGIBILITY_EXPIRED": (
        "is no longer kept: the image is past the registry's enhanced scanning duration",
        "publish the image again (a new push is scanned) or raise the scan duration in the registry's "
        f"enhanced scanning settings, {_RERUN_OR_DISABLE}",
    ),
    "FINDINGS_UNAVAILABLE": (
        "has no findings to give (ECR says so when the image was removed or its findings expired)",
        f"check that the image is still in the repository and publish it again, {_RERUN_OR_DISABLE}",
    ),
    "LIMIT_EXCEEDED": (
        "was not made: the account's scan quota is spent",
        f"rerun later, or ask AWS for a higher Amazon Inspector quota, {_RERUN_OR_DISABLE}",
    ),
}


@dataclass(frozen=True)
class ScanRule:
    fail_on: str | None  # a SEVERITIES name; findings at or above it fail; None = report only
    ignore: frozenset[str]  # finding names (e.g. CVE-2024-1234) the team accepted, upper-cased
    timeout: float  # seconds to wait for the findings


@dataclass(frozen=True)
class Finding:
    """One finding, every field escaped and capped (ECR's text)."""

    name: str
    severity: str  # a SEVERITIES name
    package: str
    version: str
    uri: str

    def line(self) -> str:
        package = " ".join(part for part in (self.package, self.version) if part)
        return f"{self.name} ({self.severity}{', ' + package if package else ''})"


@dataclass(frozen=True)
class ScanResult:
    reference: str  # what was scanned, e.g. repo@sha256:...
    status: str  # ECR's imageScanStatus.status
    counts: tuple[tuple[str, int], ...]  # findingSeverityCounts, worst first
    findings: tuple[Finding, ...]  # all, worst first
    blocking: tuple[Finding, ...]  # at/above fail_on and not ignored
    ignored: tuple[Finding, ...]  # at/above fail_on but in the allow-list
    completed_at: str

    def counted(self) -> str:
        """`1 HIGH, 2 LOW`, or `no findings`."""
        return ", ".join(f"{count} {severity}" for severity, count in self.counts) or "no findings"


def parse_scan_rule(enabled: str, fail_on: str, ignore: str, timeout: str) -> ScanRule | None:
    """From the inputs `scan` (true/false), `scan-fail-on` (critical|high|medium|low|informational|
    none, case-insensitive, default high), `scan-ignore` (finding names separated by commas,
    whitespace or newlines), `scan-timeout` (seconds, default 600, 1..3600). None when scan is
    false; every value is checked either way, so a typo shows before the gate is turned on."""
    switch = enabled.strip().lower()
    if switch not in ("", "true", "false"):
        raise InputError(
            f"input 'scan' is '{shown(enabled, 40)}', not a boolean", "set 'scan' to true or false"
        )
    level = fail_on.strip().lower() or DEFAULT_FAIL_ON
    if level not in FAIL_ON_WORDS:
        raise InputError(
            f"input 'scan-fail-on' is '{shown(fail_on, 40)}', not a severity",
            f"use one of {', '.join(FAIL_ON_WORDS)} (none reports the findings and fails on none)",
        )
    names = [name for name in re.split(r"[\s,]+", ignore) if name]
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise InputError(
                f"input 'scan-ignore' holds '{shown(name, 60)}', which is not a finding name",
                "list finding IDs such as CVE-2024-1234 (letters, digits and - _ . : only), separated by "
                "commas, spaces or newlines",
            )
    seconds = timeout.strip() or str(DEFAULT_TIMEOUT_S)
    if not re.fullmatch(r"[0-9]{1,5}", seconds) or not 1 <= int(seconds) <= MAX_TIMEOUT_S:
        raise InputError(
            f"input 'scan-timeout' is '{shown(timeout, 40)}', not a whole number of seconds from 1 to "
            f"{MAX_TIMEOUT_S}",
            f"give the seconds to wait for ECR's findings, e.g. {DEFAULT_TIMEOUT_S}",
        )
    if switch != "true":
        return None
    return ScanRule(
        fail_on=None if level == "none" else level.upper(),
        ignore=frozenset(name.upper() for name in names),
        timeout=float(seconds),
    )


def scan_image(
    ecr: Ecr, repository: Repository, digest: str, rule: ScanRule, reference: str, *, reuse: bool = False
) -> ScanResult:
    """ECR's findings for the image `digest` in `repository`, waiting (within rule.timeout) for
    the scan to complete. A new scan is started unless the repository scans on push (then one
    is started only if none shows up within a short grace); ECR allows one scan per image a day,
    so an image scanned earlier that day is judged by that scan. `reuse`: read the image's
    latest scan when it has one (the verify gate, for images published before), and start one
    only when it has none. CheckError (or AwsError) when the scan cannot say the image is clean."""
    started = time.monotonic()
    deadline = started + rule.timeout
    scan = _first_scan(ecr, repository, digest, reference, deadline, reuse=reuse)
    last_said = started
    while scan is None or scan.status in _WAITING:
        now = time.monotonic()
        if now >= deadline:
            raise CheckError(
                f"ECR's scan of {reference} did not complete in {rule.timeout:.0f} s "
                f"(status {_status(scan)})",
                f"raise scan-timeout (up to {MAX_TIMEOUT_S} s) or rerun the job: the scan goes on, and a "
                "rerun reads its findings",
            )
        if now - last_said >= _PROGRESS_S:
            github.info(f"  scan: {_status(scan)} after {now - started:.0f} s")
            last_said = now
        cancel.raise_if_requested()
        time.sleep(min(_POLL_S, deadline - now))
        scan = ecr.describe_image_scan_findings(repository.name, digest, repository.registry_id)
    return _result(scan, rule, reference)


def require_clean(result: ScanResult, rule: ScanRule) -> None:
    """CheckError naming the count per severity, the worst few findings and the fix when any
    finding at or above rule.fail_on is not in scan-ignore; each of them is logged first."""
    if not result.blocking:
        return
    for finding in result.blocking:
        github.info(f"  ✘ {finding.line()} {finding.uri}".rstrip())
    per_severity = [
        f"{sum(f.severity == severity for f in result.blocking)} {severity}"
        for severity in SEVERITIES
        if any(f.severity == severity for f in result.blocking)
    ]
    worst = [f.line() for f in result.blocking[:_WORST_SHOWN]]
    more = f" and {len(result.blocking) - _WORST_SHOWN} more" if len(result.blocking) > _WORST_SHOWN else ""
    raise CheckError(
        f"{result.reference} has {len(result.blocking)} finding(s) at or above {rule.fail_on} that "
        f"scan-ignore does not accept ({', '.join(per_severity)}): {', '.join(worst)}{more}",
        "update the affected packages (or rebuild on a patched base image) and publish again, or list "
        "the IDs the team accepts in scan-ignore",
    )


def _first_scan(
    ecr: Ecr, repository: Repository, digest: str, reference: str, deadline: float, *, reuse: bool
) -> ImageScan | None:
    """The scan to wait for: an existing one, or None right after starting one."""
    name, registry_id = repository.name, repository.registry_id
    if reuse:
        found = ecr.describe_image_scan_findings(name, digest, registry_id)
        if found is not None:
            github.info(f"  scan: reading ECR's latest scan of {reference}")
            return found
    elif repository.scan_on_push:
        found = _scan_from_push(ecr, repository, digest, min(deadline, time.monotonic() + _PUSH_SCAN_GRACE_S))
        if found is not None:
            github.info(f"  scan: reading the scan ECR started on push of {reference}")
            return found
        github.info(f"  scan: ECR started no scan on push within {_PUSH_SCAN_GRACE_S:.0f} s; starting one")
    if ecr.start_image_scan(name, digest, registry_id):
        github.info(f"  scan: started ECR's basic scan of {reference}")
        return ecr.describe_image_scan_findings(name, digest, registry_id)
    found = ecr.describe_image_scan_findings(name, digest, registry_id)
    if found is None:
        raise AwsError(
            f"ECR refused to scan {reference} (LimitExceededException) and has no earlier scan of it",
            "ECR allows one scan per image a day and limits the scans of an account: rerun later, or ask "
            "AWS for a higher scan quota",
        )
    github.info(
        f"  scan: ECR scanned {reference} within the last 24 h (one scan per image a day); reading that scan"
    )
    return found


def _scan_from_push(ecr: Ecr, repository: Repository, digest: str, until: float) -> ImageScan | None:
    while True:
        found = ecr.describe_image_scan_findings(repository.name, digest, repository.registry_id)
        now = time.monotonic()
        if found is not None or now >= until:
            return found
        cancel.raise_if_requested()
        time.sleep(min(_POLL_S, until - now))


def _status(scan: ImageScan | None) -> str:
    return shown(scan.status, 40) if scan is not None else "not started yet"


def _result(scan: ImageScan, rule: ScanRule, reference: str) -> ScanResult:
    if scan.status not in _DONE:
        cause, fix = _STATUS_FIXES.get(
            scan.status,
            (
                f"ended with the status '{shown(scan.status, 40)}', which the gate does not know",
                f"rerun the job, {_RERUN_OR_DISABLE}",
            ),
        )
        said = f" ({shown(scan.description, 300)})" if scan.description else ""
        raise CheckError(f"ECR's scan of {reference} {cause}{said}", fix)
    findings = sorted(
        [f for f in map(_basic, scan.findings) if f] + [f for f in map(_enhanced, scan.enhanced) if f],
        key=lambda f: (SEVERITIES.index(f.severity), f.name),
    )
    counts = _counts(scan.counts, findings)
    at_or_above: list[Finding] = []
    if rule.fail_on is not None:
        limit = SEVERITIES.index(rule.fail_on)
        at_or_above = [f for f in findings if SEVERITIES.index(f.severity) <= limit]
        counted = sum(count for severity, count in counts if SEVERITIES.index(severity) <= limit)
        if counted > len(at_or_above):
            raise CheckError(
                f"ECR's scan of {reference} counts {counted} finding(s) at or above {rule.fail_on} but "
                f"lists {len(at_or_above)}, so the gate cannot tell which scan-ignore accepts",
                f"rerun the job; if it persists, read the findings in the ECR console, {_RERUN_OR_DISABLE}",
            )
    result = ScanResult(
        reference=reference,
        status=shown(scan.status, 40),
        counts=counts,
        findings=tuple(findings),
        blocking=tuple(f for f in at_or_above if f.name.upper() not in rule.ignore),
        ignored=tuple(f for f in at_or_above if f.name.upper() in rule.ignore),
        completed_at=shown(scan.completed_at, 40),
    )
    at = f" at {result.completed_at}" if result.completed_at else ""
    github.info(f"  scan: {result.status}{at}: {result.counted()}")
    for finding in result.ignored:
        github.info(f"  accepted by scan-ignore: {finding.line()}")
    return result


def _text(value: Any, limit: int) -> str:
    return shown(value, limit) if isinstance(value, str) else ""


def _severity(value: Any) -> str:
    word = value.upper() if isinstance(value, str) else ""
    word = _SEVERITY_ALIASES.get(word, word)
    return word if word in SEVERITIES else "UNDEFINED"


def _basic(raw: Any) -> Finding | None:
    """A basic scan's finding: name, severity, uri, and the package in its attributes."""
    if not isinstance(raw, dict):
        return None
    listed = raw.get("attributes")
    attributes = {
        item.get("key"): item.get("value")
        for item in (listed if isinstance(listed, list) else [])
        if isinstance(item, dict)
    }
    return Finding(
        name=_text(raw.get("name"), 128) or "(unnamed)",
        severity=_severity(raw.get("severity")),
        package=_text(attributes.get("package_name"), 128),
        version=_text(attributes.get("package_version"), 64),
        uri=_text(raw.get("uri"), 300),
    )


def _enhanced(raw: Any) -> Finding | None:
    """An enhanced scan's finding: Inspector's vulnerability ID and its first vulnerable package."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("packageVulnerabilityDetails")
    details = details if isinstance(details, dict) else {}
    packages = details.get("vulnerablePackages")
    package = packages[0] if isinstance(packages, list) and packages and isinstance(packages[0], dict) else {}
    return Finding(
        name=_text(details.get("vulnerabilityId") or raw.get("title"), 128) or "(unnamed)",
        severity=_severity(raw.get("severity")),
        package=_text(package.get("name"), 128),
        version=_text(package.get("version"), 64),
        uri=_text(details.get("sourceUrl"), 300),
    )


def _counts(raw: tuple[tuple[str, Any], ...], findings: list[Finding]) -> tuple[tuple[str, int], ...]:
    """findingSeverityCounts worst first, unknown names (UNTRIAGED) counted as UNDEFINED; never
    fewer than the findings listed, should ECR's counts leave some out."""
    totals = dict.fromkeys(SEVERITIES, 0)
    for severity, count in raw:
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            totals[_severity(severity)] += count
    for severity in SEVERITIES:
        totals[severity] = max(totals[severity], sum(f.severity == severity for f in findings))
    return tuple((severity, count) for severity, count in totals.items() if count)
