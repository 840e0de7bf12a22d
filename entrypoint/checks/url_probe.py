"""A function URL probed from the runner as a browser's EventSource would: one GET with
`requests`, the body read as it arrives, each read timestamped, and the answer judged by the
streaming rules (`StreamRules`): a 2xx status, the expected content type (text/event-stream
by default), at least two events, and the last arriving clearly after the first. A response
that Lambda, the Web Adapter or the app buffered arrives as one late blob: its events all
land in one read, and the rules say so with what was seen.

Signing: a function URL whose auth type is AWS_IAM needs a SigV4 signature (service
`lambda`) made with the job's credentials. The signature and the session token go only to a
Lambda function URL host of the region (`<id>.lambda-url.<region>.on.aws`, over https) or
to a host the workflow names itself (`url-hosts`): `Signer` refuses any other host before a
request is made, since a URL can come from Terraform outputs that a pull request can change.
Nothing is followed: a redirect is an answer like any other.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from entrypoint import cancel
from entrypoint.checks.smoke import MIN_EVENTS, MIN_SPREAD_S, SSE_TYPE
from entrypoint.errors import CheckError, InputError, shown

if TYPE_CHECKING:
    from collections.abc import Iterable

    from botocore.credentials import ReadOnlyCredentials

# The smoke boot's stream rules, so a stream passes or fails alike before the push and after
# the apply: two events are the fewest that can show an order, and a fifth of a second is
# far beyond the spread of one buffered blob's reads (a few milliseconds) and far below an
# SSE app's pace between events.
EVENT_STREAM = SSE_TYPE
PROBE_SECONDS = 30.0
# How much of an error answer's body is kept for the log.
_ERROR_BODY = 2048
_READ = 65536
LAMBDA_URL_HOST = re.compile(
    r"[a-z0-9]{1,63}\.lambda-url\.(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-\d{1,2})\.on\.aws"
)
_LINE_END = re.compile(rb"\r\n|\r|\n")


def lambda_url_region(host: str) -> str | None:
    """The region of a Lambda function URL host (`host` without a port), else None."""
    match = LAMBDA_URL_HOST.fullmatch(host.lower())
    return match["region"] if match else None


def may_sign(url: str, region: str, named: Iterable[str]) -> bool:
    """Whether a request to `url` may carry the job's SigV4 signature: an https Lambda
    function URL of `region` on the default port, or a host[:port] the workflow named."""
    parts = urlsplit(url)
    host = parts.netloc.lower()
    if host in {name.lower() for name in named}:
        return True
    return parts.scheme == "https" and lambda_url_region(host) == region


def require_may_sign(url: str, region: str, named: Iterable[str]) -> None:
    """`may_sign`, as an `InputError` when it may not."""
    if not may_sign(url, region, named):
        raise InputError(
            f"the function URL {shown(url)} is not a Lambda function URL of {region} "
            "(https://<id>.lambda-url.<region>.on.aws), so the job's AWS credentials will not "
            "sign a request to it",
            "probe the URL Lambda gives the function ({lambda} in function-urls, or the "
            "aws_lambda_function_url's function_url output), or name its host in url-hosts "
            "when it is yours (a proxy or a local stand-in)",
        )


@dataclass(frozen=True)
class Signer:
    """SigV4 for service `lambda` with the job's credentials, for the hosts `may_sign` allows."""

    credentials: ReadOnlyCredentials
    region: str
    named: tuple[str, ...] = ()

    def headers(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        require_may_sign(url, self.region, self.named)
        request = AWSRequest(method="GET", url=url, headers=dict(headers))
        SigV4Auth(self.credentials, "lambda", self.region).add_auth(request)
        return {name: str(value) for name, value in request.headers.items()}


@dataclass(frozen=True)
class StreamRules:
    content_type: str = EVENT_STREAM
    min_events: int = MIN_EVENTS
    min_spread: float = MIN_SPREAD_S
    budget: float = PROBE_SECONDS

    def describe(self) -> str:
        return (
            f"2xx, content type {self.content_type}, at least {self.min_events} events, the last "
            f"at least {self.min_spread:.2f} s after the first, read for up to {self.budget:.0f} s"
        )


@dataclass
class Timeline:
    """How many times something happened, and when the first and the last did (seconds
    after the request was sent)."""

    count: int = 0
    first: float = 0.0
    last: float = 0.0

    def add(self, at: float, times: int = 1) -> None:
        if times <= 0:
            return
        if self.count == 0:
            self.first = at
        self.count += times
        self.last = at

    @property
    def spread(self) -> float:
        return self.last - self.first if self.count else 0.0


class EventCounter:
    """Server-sent events as a client dispatches them: a blank line ends an event, and only
    a block with a `data` field is one (comments and bare ids are keep-alives). Lines may
    end in CRLF, LF or CR, split anywhere between reads."""

    def __init__(self) -> None:
        self._line = b""  # the start of the unfinished line: enough to tell its field
        self._has_data = False
        self._after_cr = False

    def feed(self, data: bytes) -> int:
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]  # the LF of a CRLF split across two reads
        if not data:
            return 0
        self._after_cr = data.endswith(b"\r")
        lines = _LINE_END.split(data)
        events = 0
        for done in lines[:-1]:
            line = self._line + done
            self._line = b""
            if line == b"":
                events += int(self._has_data)
                self._has_data = False
            elif line == b"data" or line.startswith(b"data:"):
                self._has_data = True
        self._line = (self._line + lines[-1])[:16]
        return events


@dataclass
class Seen:
    """What one probe saw."""

    url: str
    status: int = 0
    content_type: str = ""
    content_encoding: str = ""
    location: str = ""
    headers_at: float = 0.0
    reads: Timeline = field(default_factory=Timeline)
    events: Timeline = field(default_factory=Timeline)
    size: int = 0
    ended: bool = False  # the server ended the body (not cut at the budget, not left early)
    stalled: str = ""  # why reading stopped before the end, if it did
    error_body: str = ""

    def describe(self) -> str:
        parts = [f"HTTP {self.status} after {self.headers_at:.2f} s"]
        parts.append(f"Content-Type {shown(self.content_type, 80) or '(none)'}")
        parts.append(f"Content-Encoding {shown(self.content_encoding, 40) or '(none)'}")
        if self.location:
            parts.append(f"Location {shown(self.location, 120)}")
        if self.reads.count == 1:
            parts.append(f"the body in one read of {self.size} bytes at {self.reads.first:.2f} s")
        elif self.reads.count:
            parts.append(
                f"{self.reads.count} reads, {self.size} bytes, from {self.reads.first:.2f} s to "
                f"{self.reads.last:.2f} s"
            )
        else:
            parts.append("no body")
        if self.events.count:
            parts.append(
                f"{self.events.count} event(s), the first at {self.events.first:.2f} s, the last at "
                f"{self.events.last:.2f} s"
            )
        else:
            parts.append("no event")
        if self.stalled:
            parts.append(self.stalled)
        return ", ".join(parts)


def media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def judge(seen: Seen, rules: StreamRules) -> list[str]:
    """What keeps the answer from proving a stream; empty when it streams."""
    if not 200 <= seen.status < 300:
        body = f": {shown(seen.error_body, 300)}" if seen.error_body else ""
        return [f"it answered HTTP {seen.status}{body}"]
    problems = []
    if media_type(seen.content_type) != rules.content_type:
        problems.append(
            f"the content type is {shown(seen.content_type, 80) or '(none)'}, not {rules.content_type}"
        )
    if seen.events.count < rules.min_events:
        problems.append(f"{seen.events.count} event(s) arrived, fewer than {rules.min_events}")
    elif seen.events.spread < rules.min_spread:
        problems.append(
            f"all {seen.events.count} events arrived within {seen.events.spread:.3f} s "
            f"(at {seen.events.first:.2f} s), less than {rules.min_spread:.2f} s apart: the answer "
            "was buffered, not streamed"
        )
    return problems


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An explicit auth that adds nothing: without one, requests would send ~/.netrc's
    credentials for the URL's host, and the URL may come from Terraform outputs."""
    return request


def probe(url: str, rules: StreamRules, signer: Signer | None = None) -> Seen:
    """GET `url` and time its body until the rules pass, the body ends or the budget is spent.
    Raises a `CheckError` when no answer came at all."""
    headers = {"Accept": rules.content_type, "Cache-Control": "no-cache"}
    if signer is not None:
        headers = signer.headers(url, headers)
    seen = Seen(url)
    started = time.monotonic()
    try:
        with requests.Session() as session:
            response = session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(10, rules.budget),
                auth=_no_auth,
            )
            with response:
                _read(response, seen, rules, started)
    except requests.RequestException as exc:
        raise CheckError(
            f"the function URL {shown(url)} did not answer: {shown(str(exc), 300)}",
            "check the URL (the aws_lambda_function_url's function_url), the runner's network "
            "and the function's logs for a crash at start-up",
        ) from exc
    return seen


def _read(response: requests.Response, seen: Seen, rules: StreamRules, started: float) -> None:
    seen.headers_at = time.monotonic() - started
    seen.status = response.status_code
    seen.content_type = response.headers.get("Content-Type", "")
    seen.content_encoding = response.headers.get("Content-Encoding", "")
    seen.location = response.headers.get("Location", "")
    raw = response.raw
    if not 200 <= seen.status < 300:
        with contextlib.suppress(OSError, urllib3.exceptions.HTTPError):
            seen.error_body = raw.read(_ERROR_BODY, decode_content=True).decode("utf-8", "replace")
        return
    counter = EventCounter()
    deadline = started + rules.budget
    while True:
        cancel.raise_if_requested()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            seen.stalled = f"still open when the probe stopped reading at {rules.budget:g} s"
            return
        _read_timeout(response, remaining)
        try:
            data = raw.read1(_READ, decode_content=True)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            timed_out = isinstance(exc, TimeoutError | urllib3.exceptions.ReadTimeoutError)
            seen.stalled = (
                f"nothing more arrived until the probe stopped reading at {rules.budget:g} s"
                if timed_out
                else f"the connection broke: {shown(str(exc), 200)}"
            )
            return
        if not data:
            seen.ended = True
            return
        at = time.monotonic() - started
        seen.reads.add(at)
        seen.size += len(data)
        seen.events.add(at, counter.feed(data))
        if seen.events.count >= rules.min_events and seen.events.spread >= rules.min_spread:
            return  # proven; an SSE stream may never end on its own


def _read_timeout(response: requests.Response, seconds: float) -> None:
    """Bound the next read by what is left of the budget: requests' read timeout is per
    read, so a trickling server would otherwise hold the probe far past it."""
    with contextlib.suppress(AttributeError, OSError):
        response.raw.connection.sock.settimeout(max(seconds, 0.05))  # type: ignore[union-attr]
