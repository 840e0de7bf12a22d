"""Smoke boot: start the image as Lambda would and see it answer, before it is pushed.

Two probes, chosen by the `smoke` input:

- HTTP (`8080/health`, `/health`, or `auto`: the Lambda Web Adapter's own port and readiness
  path from the image's ENV): for images whose CMD starts a web server, as with the Lambda Web
  Adapter (which only runs inside Lambda; outside it the server answers itself). The probe
  runs inside the container (its curl, wget, python or node), to 127.0.0.1, where the adapter
  would knock: a server bound to loopback only is right for Lambda. Images without any of
  those clients are probed through a port published on the runner's loopback.
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

from entrypoint import cancel, github
from entrypoint.checks.smoke_probe import STATUS, InContainer
from entrypoint.engine import ContainerError
from entrypoint.errors import CheckError

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
_POLL_S = 0.25
SMOKE_FORMS = (
    "use 'none', 'auto' (the Lambda Web Adapter's port and readiness path from the image), "
    "'8080/health' or '/health' (GET, port 8080 by default, expects 2xx), or "
    "'invoke' / 'invoke:{\"key\": \"value\"}' (POST the event to the Runtime Interface Emulator "
    "on port 8080)"
)


@dataclass(frozen=True)
class SmokeSpec:
    kind: Literal["http", "invoke", "auto"]
    port: int = DEFAULT_PORT
    path: str = "/"
    event: str = "{}"

    def describe(self) -> str:
        if self.kind == "auto":
            return "GET the Lambda Web Adapter's readiness path"
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
    started = time.monotonic()
    try:
        container.start()
    except ContainerError as exc:
        what = f"the container did not start: {exc}"
        raise _failure(container, image, spec, what, memory_mb) from exc
    github.info(f"  smoke boot: {spec.describe()} (up to {timeout_s:.0f} s)")
    deadline = started + timeout_s
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


def _failure(container: Container, image: str, spec: SmokeSpec, what: str, memory_mb: int) -> CheckError:
    """Print the container's last log lines, then the error to raise: a cause Lambda's
    sandbox explains (read-only files, an unprivileged user, memory) gets its own fix."""
    raw = container.logs(LOG_LINES)
    lines = [line for line in raw.decode("utf-8", "replace").splitlines() if line.strip()]
    github.info(f"  container log (last {LOG_LINES} lines):" if lines else "  container log: empty")
    for line in lines:
        github.info(f"  | {line}")
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
