"""Smoke boot: start the image as Lambda would and see it answer, before it is pushed.

Two probes, chosen by the `smoke` input:

- HTTP (`8080/health`, `/health`): for images whose CMD starts a web server, as with the
  Lambda Web Adapter (which only runs inside Lambda; outside it the server answers itself).
- invoke (`invoke`, `invoke:{"key": "value"}`): POST an event to the Runtime Interface
  Emulator, which the AWS base images start when they run outside Lambda.

The container is always removed, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import requests
from docker.errors import APIError, ImageNotFound, NotFound

from entrypoint import github
from entrypoint.errors import CheckError, EngineError, InputError

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

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
_HTTP_RE = re.compile(r"^(?:(?P<port>\d{1,5}))?(?P<path>/\S*)?$")
_POLL_S = 0.25
_FORMS = (
    "use 'none', '8080/health' or '/health' (GET, port 8080 by default, expects 2xx), or "
    "'invoke' / 'invoke:{\"key\": \"value\"}' (POST the event to the Runtime Interface Emulator "
    "on port 8080)"
)


@dataclass(frozen=True)
class SmokeSpec:
    kind: Literal["http", "invoke"]
    port: int = DEFAULT_PORT
    path: str = "/"
    event: str = "{}"

    def describe(self) -> str:
        if self.kind == "http":
            return f"GET :{self.port}{self.path}"
        return f"invoke through the Runtime Interface Emulator on :{self.port}"


@dataclass(frozen=True)
class SmokeResult:
    spec: SmokeSpec
    detail: str
    seconds: float


def parse_smoke(value: str, name: str = "smoke") -> SmokeSpec | None:
    text = value.strip()
    if text.lower() in ("", "none"):
        return None
    if text == "invoke" or text.startswith("invoke:"):
        event = text.partition(":")[2].strip() or "{}"
        try:
            json.loads(event)
        except ValueError as exc:
            raise InputError(
                f"input '{name}' has the event '{event}', which is not JSON ({exc})",
                'write the event as JSON after "invoke:", e.g. invoke:{"path": "/health"}',
            ) from exc
        return SmokeSpec(kind="invoke", event=event)
    match = _HTTP_RE.fullmatch(text)
    if match and (match["port"] or match["path"]):
        port = int(match["port"] or DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise InputError(f"input '{name}' has the port {port}, outside 1-65535", _FORMS)
        return SmokeSpec(kind="http", port=port, path=match["path"] or "/")
    raise InputError(f"input '{name}' is '{text}', which is not a smoke test", _FORMS)


def smoke_boot(
    client: docker.DockerClient, image: str, spec: SmokeSpec, timeout_s: float = 30.0, *, region: str
) -> SmokeResult:
    """Run `image` with the probe's port on 127.0.0.1 until it answers, exits, or time runs out."""
    try:
        container = client.containers.create(
            image,
            detach=True,
            # The function's own region, as Lambda sets it: apps read it to pick endpoints.
            environment={**LAMBDA_ENV, "AWS_REGION": region, "AWS_DEFAULT_REGION": region},
            # An empty host port lets the engine pick a free one; loopback keeps it private.
            ports={f"{spec.port}/tcp": ("127.0.0.1", None)},
            labels={"lambda-image-publish.purpose": "smoke-boot"},
        )
    except ImageNotFound as exc:
        raise EngineError(
            f"the engine has no image '{image}' to smoke-test", "build the image first"
        ) from exc
    except APIError as exc:
        raise CheckError(
            f"smoke boot of {image} failed: the engine could not create its container: "
            f"{exc.explanation or exc}",
            "check the image's ENTRYPOINT and CMD",
        ) from exc
    try:
        return _probe(container, image, spec, timeout_s)
    finally:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except APIError as exc:
            github.warning(f"could not remove the smoke-boot container {container.short_id}: {exc}")


def _probe(container: Container, image: str, spec: SmokeSpec, timeout_s: float) -> SmokeResult:
    started = time.monotonic()
    try:
        container.start()
    except APIError as exc:
        what = f"the container did not start: {exc.explanation or exc}"
        raise _failure(container, image, spec, what) from exc
    github.info(f"  smoke boot: {spec.describe()} (up to {timeout_s:.0f} s)")
    deadline = started + timeout_s
    last = "no answer"
    url = ""
    while True:
        container.reload()
        if container.status in ("exited", "dead"):
            code = container.attrs.get("State", {}).get("ExitCode")
            raise _failure(
                container, image, spec, f"the container exited with code {code} after {_since(started)}"
            )
        if not url:
            url = _url(container, spec)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if url:
            outcome = _attempt(url, spec, min(remaining, 2.0) if spec.kind == "http" else remaining)
            if isinstance(outcome, SmokeResult):
                done = SmokeResult(spec, outcome.detail, time.monotonic() - started)
                github.info(f"  smoke boot: {done.detail} after {done.seconds:.1f} s")
                return done
            last, final = outcome
            if final:
                raise _failure(container, image, spec, last)
        time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
    raise _failure(container, image, spec, f"no answer in {timeout_s:.0f} s (last try: {last})")


def _url(container: Container, spec: SmokeSpec) -> str:
    bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{spec.port}/tcp")
    if not bindings:
        return ""
    port = bindings[0]["HostPort"]
    return f"http://127.0.0.1:{port}{spec.path if spec.kind == 'http' else RIE_PATH}"


def _attempt(url: str, spec: SmokeSpec, timeout: float) -> SmokeResult | tuple[str, bool]:
    """A result, or (what happened, whether trying again is pointless)."""
    try:
        if spec.kind == "http":
            # No redirects: the image must answer itself, and only 127.0.0.1 is asked.
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


def _failure(container: Container, image: str, spec: SmokeSpec, what: str) -> CheckError:
    """Print the container's last log lines, then the error to raise."""
    lines: list[str] = []
    with contextlib.suppress(APIError):
        raw = container.logs(tail=LOG_LINES)
        lines = [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
    github.info(f"  container log (last {LOG_LINES} lines):" if lines else "  container log: empty")
    for line in lines:
        github.info(f"  | {line}")
    last = f"; its last log line: {lines[-1].strip()[:200]}" if lines else ""
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
