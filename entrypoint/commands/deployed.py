"""After `terraform apply`: prove that Lambda runs the digest we published.

The functions come from the plan the verify gate read (every Image function it creates or
updates, its function_name and the digest its image_uri pins) and from the `functions`
input. For each, GetFunction is polled (bounded by `timeout`, backing off, a progress line
every few seconds) until Lambda reports the function `Active` and its last update
`Successful`; a `Failed` update or state, or an `Inactive` function, ends the wait with
Lambda's own reason. Then the digest in `Code.ResolvedImageUri`, what Lambda resolved the
configured image to and runs, must be the published one: a configuration naming a tag
that moved since, or an apply that never updated the function, shows here.

Optionally each function URL named in `function-urls` is probed with the streaming rules
(`checks.url_probe`), signed with SigV4 when its auth type is AWS_IAM.

The outputs and summary are written whatever the result; one error line lists every
function that failed, with the fixes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from entrypoint import github
from entrypoint.checks import url_probe
from entrypoint.checks.lambda_api import FunctionState, LambdaApi, UrlConfig
from entrypoint.checks.tfplan import images_in_plan, load_plan
from entrypoint.errors import ActionError, CheckError, InputError, shown
from entrypoint.inputs.deployed import FUNCTION_RE, FunctionTarget, UrlTarget, check_function_name
from entrypoint.registry.reference import parse_image_uri

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from entrypoint.inputs.deployed import DeployedInputs

OK = "ok"
FAILED = "failed"
INACTIVE = "inactive"
TIMEOUT = "timeout"
MISMATCH = "mismatch"
MISSING = "missing"
NOT_IMAGE = "not-image"
UNKNOWN = "unknown"
ERROR = "error"
NO_STREAM = "no-stream"

FIRST_POLL_S = 0.5
MAX_POLL_S = 5.0
PROGRESS_S = 5.0

# Lambda's reason codes (LastUpdateStatusReasonCode, StateReasonCode) and their fixes.
_REASON_FIXES = {
    "ImageAccessDenied": (
        "Lambda could not pull the image: the ECR repository's policy must allow the "
        "lambda.amazonaws.com principal ecr:BatchGetImage and ecr:GetDownloadUrlForLayer (for "
        "a cross-account image, with the function's account in aws:SourceAccount), and a "
        "KMS-encrypted repository's key must let Lambda decrypt"
    ),
    "ImageDeleted": (
        "the image was deleted from ECR after it was deployed (a lifecycle policy?): publish "
        "it again, apply, and keep deployed digests out of the lifecycle policy's reach"
    ),
    "InvalidImage": (
        "Lambda cannot run the image: its platform must match the function's architectures "
        "and it must be one image manifest (run the verify action on the plan before apply)"
    ),
    "InsufficientRolePermissions": (
        "the function's execution role lacks what Lambda needs to set the function up (in a "
        "VPC: ec2:CreateNetworkInterface and friends, as in AWSLambdaVPCAccessExecutionRole)"
    ),
    "KMSKeyAccessDenied": "let the function's execution role use the KMS key of its environment variables",
    "KMSKeyNotFound": "point kms_key_arn at a KMS key that exists, or remove it",
    "InvalidStateKMSKey": "enable the KMS key of the function's environment variables",
    "DisabledKMSKey": "enable the KMS key of the function's environment variables",
    "EniLimitExceeded": "raise the account's network interface quota or use fewer subnets",
    "SubnetOutOfIPAddresses": "give the function subnets with free IP addresses",
    "InvalidSubnet": "fix the function's vpc_config subnet_ids",
    "InvalidSecurityGroup": "fix the function's vpc_config security_group_ids",
}
_REASON_FIX = "fix what Lambda's reason names in the function's Terraform configuration and apply again"
INACTIVE_FIX = (
    "an Inactive function was idle long enough for Lambda to reclaim it, and no update reached "
    "it: check that the apply updated this function, or invoke it once to make it Active again"
)
TIMEOUT_FIX = (
    "raise 'timeout' (a large image's first deploy takes minutes), or see the function's "
    "state in the Lambda console"
)
STREAM_FIX = (
    "the usual causes: a compression or buffering middleware (GZip, a proxy) holds events "
    "until the end, the app does not flush each event, the Lambda Web Adapter runs in "
    "buffered mode (set AWS_LWA_INVOKE_MODE=response_stream), or the function URL's "
    'invoke_mode is BUFFERED (set invoke_mode = "RESPONSE_STREAM")'
)
_MARK = {OK: "✔"}


@dataclass
class Row:
    target: FunctionTarget
    status: str
    detail: str
    fix: str = ""
    state: FunctionState | None = None
    stream: str = ""  # "streams", or what kept the URL from proving a stream; "" when not probed
    url: str = ""

    @property
    def failed(self) -> bool:
        return self.status != OK

    def output(self) -> dict[str, Any]:
        state = self.state
        return {
            "status": self.status,
            "digest": state.resolved_digest if state else None,
            "expected": self.target.digest,
            "state": state.state if state else None,
            "last-update-status": (state.update_status or None) if state else None,
            "resolved-image-uri": (state.resolved_image_uri or None) if state else None,
            "url": self.url or None,
            "stream": self.stream or None,
        }


@dataclass
class DeployedReport:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Row]:
        return [row for row in self.rows if row.failed]

    def outputs(self) -> dict[str, str]:
        checked = {row.target.name: row.output() for row in self.rows}
        return {"checked": json.dumps(checked, sort_keys=True)}

    def table(self) -> list[str]:
        header = ("function", "runs", "state", "stream", "result")
        rows = [header] + [
            (
                shown(row.target.name, 120),
                _short(row.state.resolved_digest if row.state else None),
                shown(row.state.state, 20) if row.state and row.state.state else "-",
                row.stream or "-",
                f"{_MARK.get(row.status, '✘')} {row.status}",
            )
            for row in self.rows
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return lines

    def summary(self) -> str:
        title = (
            "### Lambda functions not running the published image\n\n"
            if self.failures
            else "### Lambda functions run the published image\n\n"
        )
        notes = "".join(f"\n{github.markdown_text(note)}\n" for note in self.notes)
        if not self.rows:
            return title + notes.lstrip("\n")
        rows = [
            (
                github.markdown_code(row.target.name),
                github.markdown_code(row.target.digest),
                github.markdown_code(row.state.resolved_digest or "") if row.state else "",
                github.markdown_text(row.state.describe() if row.state else "-"),
                github.markdown_text(row.stream or "-"),
                f"{_MARK.get(row.status, '✘')} {row.status}",
                github.markdown_text(row.detail),
            )
            for row in self.rows
        ]
        header = ("function", "published", "runs", "state", "stream", "result", "detail")
        return title + github.markdown_table(header, rows) + notes

    def raise_for_failures(self) -> None:
        failures = self.failures
        if not failures:
            return
        fixes = list(dict.fromkeys(row.fix for row in failures if row.fix))
        raise CheckError(
            f"{len(failures)} of {len(self.rows)} function(s) failed the after-apply check: "
            + "; ".join(f"{row.target.name}: {row.detail}" for row in failures),
            "; ".join(fixes) or "see the table above",
        )


def _short(digest: str | None) -> str:
    return f"{digest[:19]}…" if digest else "-"


def deployed(inputs: DeployedInputs) -> DeployedReport:
    report = DeployedReport()
    targets = list(inputs.functions)
    if inputs.plan is not None:
        with github.stage(f"read the plan {inputs.plan.name}"):
            planned, unusable, notes = _from_plan(inputs.plan, inputs.digest, inputs.region)
            report.rows.extend(unusable)
            report.notes.extend(notes)
            targets = _merge(planned, targets)
            for note in notes:
                github.info(f"  {note}")
    # With a plan, a URL of a function this apply did not deploy is not probed: a plan that
    # changes only IAM must not fail the job. Without one, every URL names a function given.
    urls, skipped = _urls_by_function(inputs.urls, targets, lenient=inputs.plan is not None)
    for note in skipped:
        github.notice(note)
    report.notes.extend(skipped)
    if not targets:
        if not report.rows:
            github.notice("nothing to check: " + "; ".join(report.notes))
        return _finish(report)

    api = LambdaApi(inputs.region)
    with github.stage(
        # Named for what it waits for, a final answer, which a Failed update is too: the
        # verdict on each function follows in the table.
        f"wait for Lambda's final state of {len(targets)} function(s) (Active with the update "
        f"Successful, or Failed; up to {inputs.timeout:.0f} s)"
    ):
        waited = _wait(api, targets, inputs.timeout)
    rows = {target.name: waited[target.name] for target in targets}
    probed = [(name, row) for name, row in rows.items() if not row.failed and urls.get(name)]
    if probed:
        rules = url_probe.StreamRules(content_type=inputs.content_type)
        with github.stage(f"probe {sum(len(urls[n]) for n, _ in probed)} function URL(s) for a stream"):
            github.info(f"  thresholds: {rules.describe()}")
            for name, row in probed:
                for url_target in urls[name]:
                    _probe(api, inputs, rules, row, url_target)
                    if row.failed:
                        break  # the row says why; a later URL's verdict must not hide it
    report.rows.extend(rows[target.name] for target in targets)
    return _finish(report)


def _finish(report: DeployedReport) -> DeployedReport:
    if report.rows:
        for line in report.table():
            github.info(line)
    for row in report.failures:
        github.info(f"  ✘ {shown(row.target.name)}: {row.detail}")
    return report


# ------------------------------------------------------------------------ which functions


def _from_plan(
    path: Path, digest: str | None, region: str
) -> tuple[list[FunctionTarget], list[Row], list[str]]:
    """The functions the plan creates or updates with package type Image, each with the
    digest it deploys (else the `digest` input); rows for those the plan cannot name."""
    plan = load_plan(path)
    planned = images_in_plan(plan)
    names = _function_names(plan)
    targets: list[FunctionTarget] = []
    rows: list[Row] = []
    for item in planned.deployed:
        name = names.get(item.address)
        if name is None:
            rows.append(
                Row(
                    FunctionTarget(item.address, digest or "", item.address),
                    UNKNOWN,
                    "the plan's function_name is only known after apply",
                    "name the function in 'functions' (e.g. from terraform output)",
                )
            )
            continue
        check_function_name(name, region, f"the plan's {item.address}")
        uri = parse_image_uri(item.image_uri) if item.image_uri else None
        wanted = uri.digest if uri and uri.digest else digest
        if wanted is None:
            why = (
                f"its image_uri {item.image_uri} is pinned by tag"
                if item.image_uri
                else "its image_uri was only known at apply time"
            )
            rows.append(
                Row(
                    FunctionTarget(name, "", item.address),
                    UNKNOWN,
                    f"the plan does not say which digest was published: {why}",
                    "pass the publish action's digest output as 'digest', and deploy by digest "
                    "(the publish action's image-uri output) so the plan names it",
                )
            )
            continue
        targets.append(FunctionTarget(name, wanted, item.address))
    for unjudged in planned.unjudged:
        # Fail closed, as the gate does: what the plan left open is not taken as "no image".
        rows.append(
            Row(
                FunctionTarget(unjudged.address, digest or "", unjudged.address),
                UNKNOWN,
                f"the plan cannot say whether it runs an image ({unjudged.detail})",
                "name the function in 'functions' with its digest, or pin package_type in the "
                "configuration so the plan knows it",
            )
        )
    notes = [f"the plan creates or updates {len(planned.deployed)} Image function(s)"]
    if planned.not_deployed:
        notes.append(
            f"{len(planned.not_deployed)} Image function(s) the plan leaves alone or deletes, not "
            "checked: " + ", ".join(planned.not_deployed)
        )
    return targets, rows, notes


def _function_names(plan: Mapping[str, Any]) -> dict[str, str | None]:
    """Each planned (aws|awscc)_lambda_function's function_name (None when known only after apply)."""
    names: dict[str, str | None] = {}
    for entry in plan.get("resource_changes") or []:
        if not isinstance(entry, dict) or entry.get("type") not in (
            "aws_lambda_function",
            "awscc_lambda_function",
        ):
            continue
        change = entry.get("change") or {}
        after = change.get("after") or {}
        after_unknown = change.get("after_unknown")
        unknown = after_unknown is True or (
            isinstance(after_unknown, dict) and after_unknown.get("function_name") is True
        )
        name = after.get("function_name") if isinstance(after, dict) else None
        names[str(entry.get("address", ""))] = (
            name if isinstance(name, str) and name and not unknown else None
        )
    return names


def _merge(planned: list[FunctionTarget], given: list[FunctionTarget]) -> list[FunctionTarget]:
    merged: dict[str, FunctionTarget] = {}
    for target in [*planned, *given]:
        earlier = merged.get(target.name)
        if earlier is not None and earlier.digest != target.digest:
            raise InputError(
                f"the function '{target.name}' must run {earlier.digest} ({earlier.source}) and "
                f"{target.digest} ({target.source})",
                "name each function once: leave it out of 'functions' when the plan deploys it",
            )
        merged.setdefault(target.name, target)
    return list(merged.values())


def _urls_by_function(
    urls: Iterable[UrlTarget], targets: list[FunctionTarget], *, lenient: bool
) -> tuple[dict[str, list[UrlTarget]], list[str]]:
    """The URLs to probe by function, and notes on those left out (`lenient` only)."""
    found: dict[str, list[UrlTarget]] = {}
    skipped: list[str] = []
    for url in urls:
        if lenient and not targets:
            skipped.append(f"{url.source}: not probed, the plan deploys no Image function")
            continue
        if not url.function:
            if len(targets) != 1:
                raise InputError(
                    f"{url.source} names no function, and {len(targets)} functions are checked",
                    "write it as <function>=<URL>",
                )
            found.setdefault(targets[0].name, []).append(url)
            continue
        key = FUNCTION_RE.fullmatch(url.function)
        matches = [
            t for t in targets if url.function == t.name or (key is not None and key["name"] == t.short_name)
        ]
        if not matches and lenient:
            skipped.append(f"{url.source}: not probed, the plan does not deploy '{url.function}'")
            continue
        if len(matches) != 1:
            checked = ", ".join(t.name for t in targets) or "none"
            raise InputError(
                f"{url.source} names the function '{url.function}', which is "
                + ("not one of the functions checked" if not matches else "ambiguous among them")
                + f" ({checked})",
                "name the function as 'functions' or the plan's function_name does",
            )
        found.setdefault(matches[0].name, []).append(url)
    return found, skipped


# ------------------------------------------------------------------------ wait and judge


def _wait(api: LambdaApi, targets: list[FunctionTarget], timeout: float) -> dict[str, Row]:
    """Poll every function until each is ready or failed, or time runs out."""
    started = time.monotonic()
    deadline = started + timeout
    pending = {target.name: target for target in targets}
    done: dict[str, Row] = {}
    seen: dict[str, str] = {}
    last: dict[str, FunctionState] = {}
    delay = FIRST_POLL_S
    progress_at = started
    while True:
        for name, target in list(pending.items()):
            row = _poll(api, target, last)
            state = last.get(name)
            if state is not None and seen.get(name) != state.describe():
                seen[name] = state.describe()
                github.info(f"  {shown(name)}: {state.describe()} ({time.monotonic() - started:.0f} s)")
            if row is not None:
                done[name] = row
                del pending[name]
        now = time.monotonic()
        if not pending:
            return done
        if now >= deadline:
            for name, target in pending.items():
                state = last.get(name)
                what = state.describe() if state else "no answer"
                done[name] = Row(
                    target,
                    TIMEOUT,
                    f"was not ready after {timeout:.0f} s: last seen {what}",
                    TIMEOUT_FIX,
                    state,
                )
            return done
        if now - progress_at >= PROGRESS_S:
            progress_at = now
            waiting = ", ".join(
                f"{shown(n)} ({last[n].describe() if n in last else 'no answer yet'})" for n in pending
            )
            github.info(f"  still waiting ({now - started:.0f} s of {timeout:.0f} s): {waiting}")
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.5, MAX_POLL_S)


def _poll(api: LambdaApi, target: FunctionTarget, last: dict[str, FunctionState]) -> Row | None:
    """The row for a function that is done (ready and judged, or failed), else None."""
    try:
        state = api.function(target.name)
    except ActionError as exc:
        return Row(target, ERROR, f"could not be read: {exc.cause}", exc.fix)
    if state is None:
        return Row(
            target,
            MISSING,
            f"Lambda has no function '{target.name}'",
            "check the function's name and the 'region' input, and that the apply created it",
        )
    last[target.name] = state
    if state.update_status == "Failed":
        return _lambda_failure(target, state, "its last update Failed", state.update_reason_code)
    if state.state == "Failed":
        return _lambda_failure(target, state, "it is in state Failed", state.state_reason_code)
    if state.update_status == "InProgress" or state.state == "Pending":
        return None
    if state.state == "Inactive":
        reason = _REASON_FIXES.get(state.state_reason_code)
        return Row(
            target,
            INACTIVE,
            f"it is Inactive: {state.describe()}",
            f"{reason}; {INACTIVE_FIX}" if reason else INACTIVE_FIX,
            state,
        )
    if state.state == "Active" and state.update_status in ("Successful", ""):
        return _judge(target, state)
    return None  # a state this check does not know: wait, and say it at the timeout


def _lambda_failure(target: FunctionTarget, state: FunctionState, what: str, code: str) -> Row:
    return Row(
        target,
        FAILED,
        f"{what}: {state.describe()}",
        _REASON_FIXES.get(code, _REASON_FIX),
        state,
    )


def _judge(target: FunctionTarget, state: FunctionState) -> Row:
    """The digest Lambda resolved and runs, against the one published."""
    if state.package_type != "Image":
        return Row(
            target,
            NOT_IMAGE,
            f"it has package type {shown(state.package_type)}, not Image",
            "check the function's name: the image goes to an aws_lambda_function with "
            'package_type = "Image"',
            state,
        )
    runs = state.resolved_digest
    configured = shown(state.image_uri or "(none)")
    if runs is None:
        return Row(
            target,
            ERROR,
            f"Lambda names no digest it resolved (ResolvedImageUri '{shown(state.resolved_image_uri)}')",
            "rerun; if it repeats, compare the function's image in the Lambda console",
            state,
        )
    if runs == target.digest:
        return Row(target, OK, f"runs {runs} ({state.describe()})", state=state)
    mismatch = f"runs {runs}, not the published {target.digest}"
    if state.configured_digest is None:
        return Row(
            target,
            MISMATCH,
            f"{mismatch}: its image_uri {configured} is a tag, which Lambda resolved when the "
            "function was last updated; the tag has moved since, or this apply did not update it",
            "deploy by digest: pass the publish action's image-uri output (…@sha256:…) to the "
            "function's image_uri, so each new image is an update Terraform applies",
            state,
        )
    if state.configured_digest == runs:
        return Row(
            target,
            MISMATCH,
            f"{mismatch}: its image_uri is still {configured}, so the apply did not update this function",
            "check that terraform apply ran the plan that sets this function's image_uri to the "
            "published digest (a stale or other plan, a -target that left it out), and that no "
            "other pipeline deployed since",
            state,
        )
    return Row(
        target,
        MISMATCH,
        f"{mismatch}: its image_uri is {configured}, which Lambda resolved to {runs}",
        "publish and deploy one image manifest (the publish action's image-uri output is one), "
        "not an image index",
        state,
    )


# ------------------------------------------------------------------------ function URLs


def _probe(
    api: LambdaApi, inputs: DeployedInputs, rules: url_probe.StreamRules, row: Row, target: UrlTarget
) -> None:
    """Probe one of the function's URLs; a failure turns the row into NO_STREAM or ERROR."""
    name = row.target.name
    try:
        config = api.url_config(name)
        url = _url(target, config, name)
        if target.sensitive:
            github.mask(url)
        row.url = url
        signer = None
        how = "no function URL configured: unsigned"
        if config is not None:
            how = f"auth type {shown(config.auth_type)}, invoke mode {shown(config.invoke_mode)}"
            _require_own_url(url, config, name, inputs.url_hosts)
            if config.auth_type == "AWS_IAM":
                # Refused before the credentials are even read, for a host that may not see them.
                url_probe.require_may_sign(url, inputs.region, inputs.url_hosts)
                signer = url_probe.Signer(api.credentials(), inputs.region, inputs.url_hosts)
                how += f", signed with SigV4 for lambda in {inputs.region}"
        github.info(f"  {shown(name)}: GET {shown(url)} ({how})")
        seen = url_probe.probe(url, rules, signer)
    except ActionError as exc:
        row.status, row.stream = ERROR, "not probed"
        row.detail, row.fix = (
            f"runs the published image, but its URL could not be probed: {exc.cause}",
            exc.fix,
        )
        github.info(f"  {shown(name)}: ✘ {exc.cause}")
        return
    problems = url_probe.judge(seen, rules)
    github.info(f"  {shown(name)}: {seen.describe()}")
    if not problems:
        row.stream = "streams"
        row.detail += f"; {url} streams ({seen.events.count} events over {seen.events.spread:.2f} s)"
        github.info(f"  {shown(name)}: ✔ streams")
        return
    row.status, row.stream = NO_STREAM, "refused"
    row.detail = (
        f"runs the published image, but {url} does not stream: "
        + "; ".join(problems)
        + f" (seen: {seen.describe()})"
    )
    row.fix = _stream_fix(seen, config)
    github.info(f"  {shown(name)}: ✘ " + "; ".join(problems))


def _url(target: UrlTarget, config: UrlConfig | None, name: str) -> str:
    if target.url is not None:
        return target.url
    if config is None or not config.url:
        raise CheckError(
            f"{target.source} asks for the function URL Lambda gives '{name}', and it has none",
            "create an aws_lambda_function_url for it, or give the URL itself",
        )
    parts = urlsplit(config.url)
    if parts.scheme != "https" or url_probe.lambda_url_region(parts.netloc) is None:
        raise CheckError(
            f"Lambda names '{shown(config.url)}' as the function URL of '{name}', not a function URL host",
            "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_LAMBDA: the endpoint is not AWS Lambda",
        )
    return config.url.rstrip("/") + target.path


def _require_own_url(url: str, config: UrlConfig, name: str, named: tuple[str, ...]) -> None:
    """A Lambda URL host must be this function's: a signature made for another function's
    URL would be spent on a request this check did not mean to make."""
    host = urlsplit(url).netloc.lower()
    own = urlsplit(config.url).netloc.lower()
    if host in named or url_probe.lambda_url_region(host) is None or host == own:
        return
    raise InputError(
        f"the URL {shown(url)} is not the function URL of '{name}' (Lambda gives {shown(config.url)})",
        f"probe {shown(config.url)} ({{lambda}} in function-urls does), or fix the output it comes from",
    )


def _stream_fix(seen: url_probe.Seen, config: UrlConfig | None) -> str:
    if seen.status in (401, 403):
        return (
            "the function URL refused the request: with auth type AWS_IAM the job's role needs "
            "lambda:InvokeFunctionUrl on the function; with NONE, its resource policy must allow "
            "lambda:InvokeFunctionUrl to everyone (principal *)"
        )
    if not 200 <= seen.status < 300:
        return "see the status and body above, and the function's logs"
    if config is not None and config.invoke_mode == "BUFFERED":
        return (
            "the function URL's invoke mode is BUFFERED, so Lambda sends the answer only when it "
            'is complete: set invoke_mode = "RESPONSE_STREAM" on the aws_lambda_function_url '
            "(and AWS_LWA_INVOKE_MODE=response_stream in the image)"
        )
    return STREAM_FIX
