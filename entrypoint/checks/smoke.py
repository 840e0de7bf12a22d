"""Smoke boot: start the image as Lambda would and see it answer, before it is pushed.

Three probes, chosen by the `smoke` input:

- HTTP (`8080/health`, `/health`, or `auto`: the Lambda Web Adapter's own port and readiness
  path from the image's ENV): for images whose CMD starts a web server, as with the Lambda Web
  Adapter (which only runs inside Lambda; outside it the server answers itself). The probe
  runs inside the container (its curl, wget, python or node), to 127.0.0.1, where the adapter
  would knock: a server bound to loopback only is right for Lambda. Images without any of
  those clients are probed through a port published on the runner's loopback.
- stream (`8080/events stream`, `8080/feed stream application/x-ndjson`): the same GET from
  inside, its body read as it arrives (smoke_probe.InContainer.stream); it passes only when
  the events come one by one (`judge_stream`), as a response-streaming function URL must
  send them, not gathered into one late body by a compression middleware or a handler that
  builds the whole answer first.
- invoke (`invoke`, `invoke:{"key": "value"}`): POST an event to the Runtime Interface
  Emulator, which the AWS base images start when they run outside Lambda.

Adapter images boot as Lambda runs them: read-only root file system with a writable /tmp, an
unprivileged user, the memory of `smoke-memory`, Lambda's variables with the `region` input's
AWS_REGION; what fails only there (writing beside the code, files only root may read) fails
here, with the Dockerfile fix. The container is always removed, whatever happened.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import requests
import urllib3

from entrypoint import cancel, github
from entrypoint.checks.smoke_probe import MAX_BYTES, MAX_EVENTS, STATUS, InContainer, Streamed
from entrypoint.engine import ContainerError
from entrypoint.errors import CheckError, shown

if TYPE_CHECKING:
    from collections.abc import Mapping

    from entrypoint.engine import Container, Engine

DEFAULT_PORT = 8080
# The Runtime Interface Emulator's path for a synchronous invoke of "the" function.
RIE_PATH = "/2015-03-31/functions/function/invocations"
LOG_LINES = 30
# Lambda sets these for every function; apps read them at start, so give them values.
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "smoke-boot",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/smoke-boot",
    "AWS_LAMBDA_LOG_STREAM_NAME": "smoke-boot",
    "TZ": ":UTC",
}
# Lambda runs functions as an unprivileged user of its own, never as the image's USER root.
LAMBDA_USER = "993:990"
# Lambda's /tmp: the only writable path, 512 MB by default.
LAMBDA_TMPFS = {"/tmp": "rw,exec,nosuid,size=512m,mode=1777"}  # noqa: S108 - inside the container
DEFAULT_MEMORY_MB = 512
HTTP_RE = re.compile(r"^(?:(?P<port>\d{1,5}))?(?P<path>/\S*)?$")
STREAM_WORD = "stream"
SSE_TYPE = "text/event-stream"
MEDIA_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
# A stream passes with at least this many events, the last this long after the first, and
# the first within this share of the time from the answer's head to the last: a body
# gathered and sent at once brings all its events in the same instant.
MIN_EVENTS = 2
MIN_SPREAD_S = 0.2
FIRST_WITHIN = 0.5
_POLL_S = 0.25
SMOKE_FORMS = (
    "use 'none', 'auto' (the Lambda Web Adapter's port and readiness path from the image), "
    "'8080/health' or '/health' (GET, port 8080 by default, expects 2xx), "
    "'8080/events stream' (GET a server-sent event stream and check that its events arrive one by "
    "one; name another content type after 'stream', e.g. '8080/feed stream application/x-ndjson'), or "
    "'invoke' / 'invoke:{\"key\": \"value\"}' (POST the event to the Runtime Interface Emulator "
    "on port 8080)"
)


@dataclass(frozen=True)
class SmokeSpec:
    kind: Literal["http", "invoke", "auto"]
    port: int = DEFAULT_PORT
    path: str = "/"
    event: str = "{}"
    # The content type of a streaming probe (kind http); empty for a single GET.
    stream: str = ""

    def describe(self) -> str:
        if self.kind == "auto":
            return "GET the Lambda Web Adapter's readiness path"
        if self.kind == "http" and self.stream:
            return f"GET :{self.port}{self.path} as a {self.stream} stream"
        if self.kind == "http":
            return f"GET :{self.port}{self.path}"
        return f"invoke through the Runtime Interface Emulator on :{self.port}"

    def resolve(self, image_env: Mapping[str, str]) -> tuple[SmokeSpec, str]:
        """`auto` becomes the probe the adapter itself would make: its port (AWS_LWA_PORT,
        else PORT, else 8080) and readiness path (AWS_LWA_READINESS_CHECK_PATH, else /)."""
        if self.kind != "auto":
            return self, ""
        port_from = next((name for name in ("AWS_LWA_PORT", "PORT") if image_env.get(name)), "")
        path = image_env.get("AWS_LWA_READINESS_CHECK_PATH") or "/"
        try:
            port = int(image_env[port_from]) if port_from else DEFAULT_PORT
        except ValueError as exc:
            raise CheckError(
                f"smoke: auto cannot read the port: the image sets {port_from}={image_env[port_from]!r}",
                f"set {port_from} to a port number in the Dockerfile, or give 'smoke' as PORT/PATH",
            ) from exc
        chosen = SmokeSpec(kind="http", port=port, path=path if path.startswith("/") else f"/{path}")
        path_from = "AWS_LWA_READINESS_CHECK_PATH" if image_env.get("AWS_LWA_READINESS_CHECK_PATH") else ""
        why = (
            f"smoke: auto chose {chosen.describe()} (port from {port_from or 'the default 8080'}, "
            f"path from {path_from or 'the default /'})"
        )
        return chosen, why


@dataclass(frozen=True)
class SmokeResult:
    spec: SmokeSpec
    detail: str
    seconds: float


def smoke_boot(
    engine: Engine,
    image: str,
    spec: SmokeSpec,
    timeout_s: float = 30.0,
    *,
    region: str,
    memory_mb: int = DEFAULT_MEMORY_MB,
    lambda_like: bool = False,
) -> SmokeResult:
    """Run `image` until its probe answers, it exits, or time runs out.

    `lambda_like` (adapter images): read-only root, writable /tmp, unprivileged user, as in
    Lambda. `spec` must be resolved (`SmokeSpec.resolve`), not `auto`."""
    environment = {
        **LAMBDA_ENV,
        # The function's own region, as Lambda sets it: apps read it to pick endpoints.
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
    }
    confinement: dict[str, object] = {}
    if lambda_like:
        confinement = {"read_only": True, "tmpfs": LAMBDA_TMPFS, "user": LAMBDA_USER}
        environment["LAMBDA_TASK_ROOT"] = "/var/task"
    try:
        container = engine.create_container(
            image,
            environment=environment,
            # Also published, for images without an HTTP client to probe from inside and for
            # the Runtime Interface Emulator: on the runner's loopback only, or, when the
            # engine is on another host, on that host's interfaces, where the runner reaches it.
            ports={f"{spec.port}/tcp": ("0.0.0.0" if engine.endpoint.remote else "127.0.0.1", None)},  # noqa: S104
            labels={"lambda-image-publish.purpose": "smoke-boot"},
            mem_limit=f"{memory_mb}m",
            memswap_limit=f"{memory_mb}m",
            **confinement,
        )
    except ContainerError as exc:
        raise CheckError(
            f"smoke boot of {image} failed: the engine could not create its container: {exc}",
            "check the image's ENTRYPOINT and CMD",
        ) from exc
    try:
        return _probe(container, image, spec, (timeout_s, memory_mb), engine.endpoint.host)
    finally:
        problem = container.remove()
        if problem:
            github.warning(f"could not remove the smoke-boot container {container.short_id}: {problem}")


def _probe(
    container: Container, image: str, spec: SmokeSpec, limits: tuple[float, int], host: str
) -> SmokeResult:
    timeout_s, memory_mb = limits
    started = _start(container, image, spec, limits)
    deadline = started + timeout_s
    if spec.stream:
        return _probe_stream(container, image, spec, (started, deadline, memory_mb), host)
    last = "no answer"
    inside = InContainer(container, spec.port, spec.path) if spec.kind == "http" else None
    url = ""
    while True:
        cancel.raise_if_requested()
        state = container.state()
        if state.get("Status") in ("exited", "dead"):
            code = state.get("ExitCode")
            raise _failure(
                container,
                image,
                spec,
                f"the container exited with code {code} after {_since(started)}",
                memory_mb,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        outcome: SmokeResult | tuple[str, bool] | None = None
        if inside is not None:
            answer = inside.attempt()
            outcome = _classify(spec, answer) if isinstance(answer, str) else answer
            if outcome is None:
                github.info(
                    "  smoke boot: the image has no curl, wget, python or node to probe from inside; "
                    f"probing through a port published on {host}, which only reaches a server "
                    "bound to all interfaces"
                )
                inside = None
        if outcome is None and inside is None:
            url = url or _url(container, spec, host)
            if url:
                outcome = _attempt(url, spec, min(remaining, 2.0) if spec.kind == "http" else remaining)
        if isinstance(outcome, SmokeResult):
            done = SmokeResult(spec, outcome.detail, time.monotonic() - started)
            github.info(f"  smoke boot: {done.detail} after {done.seconds:.1f} s")
            return done
        if outcome is not None:
            last, final = outcome
            if final:
                raise _failure(container, image, spec, last, memory_mb)
        time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
    raise _failure(container, image, spec, f"no answer in {timeout_s:.0f} s (last try: {last})", memory_mb)


def _start(container: Container, image: str, spec: SmokeSpec, limits: tuple[float, int]) -> float:
    """Start the container; when it started."""
    timeout_s, memory_mb = limits
    started = time.monotonic()
    try:
        container.start()
    except ContainerError as exc:
        what = f"the container did not start: {exc}"
        raise _failure(container, image, spec, what, memory_mb) from exc
    github.info(f"  smoke boot: {spec.describe()} (up to {timeout_s:.0f} s)")
    return started


def _probe_stream(
    container: Container, image: str, spec: SmokeSpec, times: tuple[float, float, int], host: str
) -> SmokeResult:
    """Like `_probe`, but the 2xx answer's body is read as it arrives and judged."""
    started, deadline, memory_mb = times
    github.info(
        f"  smoke boot: a stream passes with >= {MIN_EVENTS} events, the last >= {MIN_SPREAD_S:.2f} s "
        f"after the first, and the first within the first {FIRST_WITHIN:.0%} of the time from the "
        f"answer's head to the last; reading stops after {MAX_EVENTS} events, {MAX_BYTES} bytes or "
        "smoke-timeout"
    )
    inside: InContainer | None = InContainer(container, spec.port, spec.path)
    url = ""
    last = "no answer"
    while True:
        cancel.raise_if_requested()
        state = container.state()
        if state.get("Status") in ("exited", "dead"):
            what = f"the container exited with code {state.get('ExitCode')} after {_since(started)}"
            raise _failure(container, image, spec, what, memory_mb)
        if time.monotonic() >= deadline:
            break
        seen: Streamed | str | None = None
        if inside is not None:
            seen = inside.stream(spec.stream, deadline)
            if seen is None:
                github.info(
                    "  smoke boot: the image has no curl, wget, python or node to probe from inside; "
                    f"reading the stream through a port published on {host}, which only reaches a "
                    "server bound to all interfaces"
                )
                inside = None
        if inside is None:
            url = url or _url(container, spec, host)
            seen = _stream_url(url, spec, deadline) if url else None
        if isinstance(seen, Streamed):
            if 200 <= seen.status < 300:
                verdict = judge_stream(spec, seen)
                if isinstance(verdict, SmokeResult):
                    done = SmokeResult(spec, verdict.detail, time.monotonic() - started)
                    github.info(f"  smoke boot: {done.detail} after {done.seconds:.1f} s")
                    return done
                what, fix = verdict
                raise _failure(container, image, spec, what, memory_mb, fix=fix)
            location = seen.header("Location")
            where = f" to {shown(location)}" if 300 <= seen.status < 400 and location else ""
            last = f"{spec.describe()} answered HTTP {seen.status}{where}"
            # A server warming up answers 5xx; anything else stays wrong.
            if not (seen.status >= 500 or seen.status == 429):
                raise _failure(container, image, spec, last, memory_mb)
        elif seen:
            last = seen
        time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
    timeout_s = deadline - started
    raise _failure(container, image, spec, f"no answer in {timeout_s:.0f} s (last try: {last})", memory_mb)


def _stream_url(url: str, spec: SmokeSpec, deadline: float) -> Streamed | str:
    """The streaming GET through the published port, for images without a client inside."""
    started = time.monotonic()
    try:
        response = requests.get(
            url,
            headers={"Accept": spec.stream, "Accept-Encoding": "gzip"},
            stream=True,
            allow_redirects=False,
            timeout=(2.0, max(0.5, deadline - started)),
        )
    except requests.ConnectionError:
        return "connection refused or reset"
    except requests.Timeout:
        return "the request timed out"
    with response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        seen = Streamed("the published port", response.status_code, headers, time.monotonic() - started,
                        spec.stream == SSE_TYPE)  # fmt: skip
        seen.show_head()
        if not 200 <= seen.status < 300:
            return seen
        while time.monotonic() < deadline:
            cancel.raise_if_requested()
            try:
                # read1: what has arrived, not a full buffer; raw: the body as sent, still
                # compressed, as the in-container clients give it.
                data = response.raw.read1(65536, decode_content=False)
            except (urllib3.exceptions.HTTPError, OSError):
                seen.ended = "the connection broke"
                return seen
            if not data or not seen.take(time.monotonic() - started, data):
                return seen
        seen.ended = "smoke-timeout ran out while reading"
    return seen


def judge_stream(spec: SmokeSpec, seen: Streamed) -> SmokeResult | tuple[str, str]:
    """A 2xx streamed answer: a result when its events arrived one by one, else (what was
    seen, the fix)."""
    content_type = seen.header("Content-Type")
    encoding = seen.header("Content-Encoding").strip()
    said = (
        f"Content-Type {shown(content_type, 80) or 'none'}, Content-Encoding {shown(encoding, 40) or 'none'}"
    )
    answered = f"{spec.describe()} answered HTTP {seen.status}"
    if content_type.split(";")[0].strip().lower() != spec.stream:
        return (
            f"{answered} with {said}, not {spec.stream}",
            f"send the stream with Content-Type {spec.stream} (FastAPI/Starlette: "
            f"StreamingResponse(events(), media_type='{spec.stream}')), or name the type the endpoint "
            f"streams after 'stream' in 'smoke' "
            f"(e.g. '{spec.port}{spec.path} stream application/x-ndjson')",
        )
    if seen.problem:
        return f"{answered} with {said}, but {seen.problem}", _buffered_fix(spec, seen)
    times = [at for at, _ in seen.events]
    chunks = len({piece for _, piece in seen.events})
    github.info(
        f"  smoke boot: {seen.ended}: {len(times)} events in {chunks} of {seen.pieces} chunks "
        f"({seen.size} bytes) through {seen.via}"
    )
    framing = (
        "each ended by a blank line (data: ...\\n\\n)" if spec.stream == SSE_TYPE else "each on its own line"
    )
    if len(times) < MIN_EVENTS:
        return (
            f"{answered} with {said}, but {len(times)} event(s) arrived ({seen.ended}, "
            f"{seen.size} bytes in {seen.pieces} chunks)",
            f"point 'smoke' at a path (with a query, if the endpoint takes one) that sends at least "
            f"{MIN_EVENTS} events, {framing}, within smoke-timeout; if it does, they are held back: "
            f"{_buffered_fix(spec, seen)}",
        )
    first, last = times[0], times[-1]
    # wget's body (stdout) can overtake its head (stderr) by a hair.
    first_after, last_after = max(0.0, first - seen.head_at), max(0.0, last - seen.head_at)
    spread, limit = last - first, FIRST_WITHIN * last_after
    github.info(
        f"  smoke boot: measured {len(times)} events from {first:.2f} s to {last:.2f} s (head at "
        f"{seen.head_at:.2f} s): last - first {spread:.2f} s (needs >= {MIN_SPREAD_S:.2f} s), first "
        f"{first_after:.2f} s after the head (needs <= {limit:.2f} s, {FIRST_WITHIN:.0%} of "
        f"{last_after:.2f} s)"
    )
    if spread >= MIN_SPREAD_S and first_after <= limit:
        streamed = f"streamed {len(times)} events over {spread:.2f} s"
        detail = f"{spec.describe()} answered HTTP {seen.status} and {streamed}"
        return SmokeResult(spec, detail, 0.0)
    if chunks == 1:
        arrived = f"one chunk of {len(times)} events {last:.2f} s after the request"
    elif spread < MIN_SPREAD_S:
        arrived = (
            f"{len(times)} events in {chunks} chunks within {spread:.2f} s, from {first:.2f} s to "
            f"{last:.2f} s after the request (a stream spreads them over >= {MIN_SPREAD_S:.2f} s)"
        )
    else:
        arrived = (
            f"the first of {len(times)} events {first_after:.2f} s after the head, the last "
            f"{last_after:.2f} s after it (a stream sends the first within {FIRST_WITHIN:.0%})"
        )
    head = f"the head at {seen.head_at:.2f} s"
    return f"{answered} but the events were buffered, not streamed: {arrived}, {head}; {said}", _buffered_fix(
        spec, seen
    )


def _buffered_fix(spec: SmokeSpec, seen: Streamed) -> str:
    """The usual causes of a buffered stream and their fixes, the one the answer points to
    first: a compressed body, a head held back with the body, or a body held after the head."""
    compression = (
        f"a compression middleware (Starlette/FastAPI GZipMiddleware, Flask-Compress, Express compression()) "
        f"holds events until the body ends: exclude {spec.stream} from it or remove it"
    )
    whole = (
        "the handler builds the whole answer before sending it: return StreamingResponse over an async "
        "generator that yields each event (Flask: a generator with stream_with_context; Node: res.write "
        "per event, then flush if compression is on), not a list or a joined string"
    )
    proxy = (
        "a proxy in the image between the adapter and the app buffers: turn its buffering off "
        "(nginx: proxy_buffering off)"
    )
    adapter = (
        "in Lambda, the adapter must stream too: AWS_LWA_INVOKE_MODE=response_stream in the image and a "
        "function URL with invoke mode RESPONSE_STREAM (the 'invoke-mode' input checks both)"
    )
    first_event = seen.events[0][0] if seen.events else seen.head_at
    if seen.header("Content-Encoding").strip().lower() not in ("", "identity"):
        causes = [compression, whole, proxy]
    elif first_event - seen.head_at < MIN_SPREAD_S:
        causes = [whole, compression, proxy]
    else:
        causes = [compression, proxy, whole]
    return f"{'; or '.join(causes)}; and {adapter}"


def _classify(spec: SmokeSpec, text: str) -> SmokeResult | tuple[str, bool]:
    found = list(STATUS.finditer(text))
    status = int(next((g for g in (found[-1].group(1), found[-1].group(3)) if g), "0")) if found else 0
    if not status:
        return "connection refused or reset", False
    if 200 <= status < 300:
        return SmokeResult(spec, f"{spec.describe()} answered HTTP {status}", 0.0)
    # A server warming up answers 5xx; anything else stays wrong.
    final = not (status >= 500 or status == 429)
    where = f" to {found[-1].group(2)}" if 300 <= status < 400 and found[-1].group(2) else ""
    return f"{spec.describe()} answered HTTP {status}{where}", final


def _url(container: Container, spec: SmokeSpec, host: str) -> str:
    port = container.host_port(spec.port)
    if not port:
        return ""
    return f"http://{host}:{port}{spec.path if spec.kind == 'http' else RIE_PATH}"


def _attempt(url: str, spec: SmokeSpec, timeout: float) -> SmokeResult | tuple[str, bool]:
    """A result, or (what happened, whether trying again is pointless)."""
    try:
        if spec.kind == "http":
            # No redirects: the image must answer itself, and only the engine's host is asked.
            response = requests.get(url, timeout=timeout, allow_redirects=False)
        else:
            response = requests.post(url, data=spec.event.encode(), timeout=timeout)
    except requests.ConnectionError:
        return "connection refused or reset", False
    except requests.Timeout:
        return "the request timed out", False
    status = response.status_code
    if spec.kind == "invoke":
        error = _function_error(response)
        if error:
            return f"the invoke returned a function error: {error}", True
    if 200 <= status < 300:
        return SmokeResult(spec, f"{spec.describe()} answered HTTP {status}", 0.0)
    # A server warming up answers 5xx (the RIE 502 while init runs); anything else stays wrong.
    final = not (status >= 500 or status == 429)
    where = f" to {response.headers.get('Location')}" if 300 <= status < 400 else ""
    return f"{spec.describe()} answered HTTP {status}{where}", final


def _function_error(response: requests.Response) -> str:
    """The RIE answers 200 even when the handler raised; the body says so."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and "errorType" in body and "errorMessage" in body:
        return f"{body['errorType']}: {str(body['errorMessage'])[:200]}"
    return ""


def _since(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"


def _failure(
    container: Container, image: str, spec: SmokeSpec, what: str, memory_mb: int, *, fix: str = ""
) -> CheckError:
    """Print the container's last log lines, then the error to raise: a cause Lambda's
    sandbox explains (read-only files, an unprivileged user, memory) gets its own fix. With
    `fix`, the app answered and `what` is the whole story: the log is only shown."""
    raw = container.logs(LOG_LINES)
    lines = [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
    github.info(f"  container log (last {LOG_LINES} lines):" if lines else "  container log: empty")
    for line in lines:
        github.info(f"  | {line}")
    if fix:
        return CheckError(f"smoke boot of {image} failed: {what}", fix)
    last = f"; its last log line: {lines[-1].strip()[:200]}" if lines else ""
    state = container.state()
    diagnosis = _sandbox_cause(lines, bool(state.get("OOMKilled")), memory_mb)
    if diagnosis:
        cause, fix = diagnosis
        return CheckError(f"smoke boot of {image} ({spec.describe()}) failed: {what}: {cause}{last}", fix)
    fix = (
        "make sure the image's CMD starts the web server on port "
        f"{spec.port} and that {spec.path} answers 2xx without AWS services; "
        "run it locally with docker run -p "
        f"{spec.port}:{spec.port} {image} to see why"
        if spec.kind == "http"
        else "the invoke probe needs the Runtime Interface Emulator (the AWS base images "
        "start it outside Lambda) and a handler that succeeds for the event; run it locally "
        f"with docker run -p 8080:8080 {image} to see why"
    )
    return CheckError(f"smoke boot of {image} ({spec.describe()}) failed: {what}{last}", fix)


def _sandbox_cause(lines: list[str], oom: bool, memory_mb: int) -> tuple[str, str] | None:
    text = "\n".join(lines)
    if oom:
        return (
            f"it was killed for using more than {memory_mb} MB (smoke-memory)",
            "raise the function's memory_size and 'smoke-memory' together, or make the app use less",
        )
    if "Read-only file system" in text:
        return (
            "it wrote outside /tmp, and Lambda's file system is read-only but for /tmp",
            "write only under /tmp: point caches and state there in the Dockerfile (e.g. ENV "
            "HOME=/tmp XDG_CACHE_HOME=/tmp/.cache) or in the app, not beside the code",
        )
    if "Permission denied" in text or "permission denied" in text:
        return (
            "a file it needs is not readable by Lambda's unprivileged user",
            "Lambda runs the image as a non-root user: make the files world-readable (COPY "
            "--chmod=644, or RUN chmod -R o+rX on the app folder) and do not rely on USER root",
        )
    return None
