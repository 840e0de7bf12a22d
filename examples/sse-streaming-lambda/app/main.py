"""FastAPI app streaming Server-Sent Events, run on Lambda by the AWS Lambda Web Adapter.

The adapter (a Lambda extension baked into the image) starts uvicorn, waits until
``GET /health`` answers, then forwards each Function URL request to it over HTTP.
With ``AWS_LWA_INVOKE_MODE=response_stream`` and a Function URL whose invoke mode is
``RESPONSE_STREAM``, every chunk the generator below yields reaches the client as it is
produced instead of after the handler returns.

``SSE_BUFFERED=1`` breaks that on purpose, to show what the action's streaming smoke boot
(``smoke: 8080/stream stream``) catches: ``/stream`` then gathers every event and answers
them in one body, as a compression middleware or a handler that builds a list would.
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import FastAPI, Header, Query
from fastapi.responses import Response, StreamingResponse

MAX_EVENTS = 50
MAX_DELAY_SECONDS = 2.0
# Worst case MAX_EVENTS * MAX_DELAY_SECONDS = 100 s, under the Terraform default timeout
# (120 s). A Lambda timeout cuts a stream mid-way, so raise both together.

DELAY_ENV_VAR = "SSE_EVENT_DELAY_SECONDS"
FALLBACK_DELAY_SECONDS = 0.5


def delay_from_env(environ: dict[str, str] | None = None) -> float:
    """Default pause between events, from ``SSE_EVENT_DELAY_SECONDS``.

    Read once at import time: a bad value fails the cold start loudly (the adapter's
    readiness check never passes, and the error is in the function's logs) rather than
    every request.
    """
    environ = dict(os.environ) if environ is None else environ
    raw = environ.get(DELAY_ENV_VAR, "").strip()
    if not raw:
        return FALLBACK_DELAY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{DELAY_ENV_VAR}={raw!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_DELAY_SECONDS:
        raise ValueError(f"{DELAY_ENV_VAR}={raw!r} must be between 0 and {MAX_DELAY_SECONDS}")
    return value


DEFAULT_DELAY_SECONDS = delay_from_env()

BUFFERED_ENV_VAR = "SSE_BUFFERED"


def buffered_from_env(environ: dict[str, str] | None = None) -> bool:
    """Whether ``SSE_BUFFERED`` asks for the deliberately buffering ``/stream``.

    Read once at import time, like the delay; anything but 1/true/yes/0/false/no/empty
    fails the cold start.
    """
    environ = dict(os.environ) if environ is None else environ
    raw = environ.get(BUFFERED_ENV_VAR, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValueError(f"{BUFFERED_ENV_VAR}={raw!r} must be 1 or 0")


BUFFERED = buffered_from_env()

SSE_HEADERS = {
    # Browsers and CDNs must not cache or replay an event stream.
    "Cache-Control": "no-cache",
    # Tells nginx-style proxies not to buffer the body (buffering defeats streaming).
    "X-Accel-Buffering": "no",
}

app = FastAPI(title="sse-streaming-lambda")


@app.get("/health")
async def health() -> dict[str, str]:
    """Readiness probe polled by the Lambda Web Adapter (AWS_LWA_READINESS_CHECK_PATH)."""
    return {"status": "ok"}


def format_event(event_id: int, event: str, data: dict[str, object]) -> str:
    """One SSE frame: ``id:``, ``event:``, ``data:`` lines ended by a blank line.

    ``json.dumps`` without ``indent`` never emits a raw newline, so the payload always
    fits on a single ``data:`` line.
    """
    payload = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n"


async def event_stream(first: int, count: int, delay: float) -> AsyncIterator[str]:
    """Yield ``tick`` events ``first``..``count`` then one ``done`` event (id count + 1)."""
    for seq in range(first, count + 1):
        if seq > first and delay:
            await asyncio.sleep(delay)
        yield format_event(
            seq,
            "tick",
            {"seq": seq, "count": count, "time": datetime.now(UTC).isoformat()},
        )
    # EventSource reconnects by itself when a stream ends; a final event lets the
    # client tell "finished" from "connection lost" and call close().
    yield format_event(count + 1, "done", {"count": count})


@app.get("/stream")
async def stream(
    count: Annotated[int, Query(ge=1, le=MAX_EVENTS, description="number of tick events")] = 5,
    delay: Annotated[
        float | None,
        Query(ge=0, le=MAX_DELAY_SECONDS, description="seconds between events"),
    ] = None,
    last_event_id: Annotated[int | None, Header(ge=0)] = None,
) -> Response:
    """Stream ``count`` ``tick`` events, then a ``done`` event.

    A reconnecting EventSource sends ``Last-Event-ID``; the stream then resumes after
    that id instead of starting over.
    """
    first = 1 if last_event_id is None else last_event_id + 1
    pause = DEFAULT_DELAY_SECONDS if delay is None else delay
    if BUFFERED:
        # The bug SSE_BUFFERED demonstrates: the same events, all sent at the end.
        body = "".join([event async for event in event_stream(first, count, pause)])
        return Response(body, media_type="text/event-stream", headers=SSE_HEADERS)
    return StreamingResponse(
        event_stream(first, count, pause),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
