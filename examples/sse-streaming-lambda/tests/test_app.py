"""Tests of the SSE app: event framing, headers, parameters and real incremental delivery."""

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from app import main
from app.main import MAX_DELAY_SECONDS, MAX_EVENTS, app, buffered_from_env, delay_from_env
from fastapi.testclient import TestClient


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def parse_sse(lines: Iterator[str]) -> list[dict[str, str]]:
    """Minimal parser following the SSE spec's field rules.

    A blank line ends an event, a line starting with ``:`` is a comment, one space after
    the colon is dropped, and several ``data:`` lines are joined with newlines.
    """
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if current or data:
                if data:
                    current["data"] = "\n".join(data)
                events.append(current)
            current, data = {}, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        else:
            current[field] = value
    assert not current, f"stream ended inside an event: {current}"
    assert not data, f"stream ended inside an event: {data}"
    return events


def stream_events(client: TestClient, **params: object) -> tuple[httpx.Response, list]:
    with client.stream("GET", "/stream", params=params) as response:
        response.raise_for_status()
        events = parse_sse(response.iter_lines())
    return response, events


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_stream_headers(client: TestClient) -> None:
    response, _ = stream_events(client, count=1, delay=0)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


def test_stream_events_in_order_with_json_data(client: TestClient) -> None:
    _, events = stream_events(client, count=4, delay=0)

    ticks = [e for e in events if e.get("event") == "tick"]
    assert len(ticks) == 4
    assert [e["id"] for e in ticks] == ["1", "2", "3", "4"]
    for expected_seq, event in enumerate(ticks, start=1):
        payload = json.loads(event["data"])
        assert payload["seq"] == expected_seq
        assert payload["count"] == 4
        assert payload["time"].endswith("+00:00")

    # The stream ends with exactly one "done" event, after the ticks.
    assert events[-1]["event"] == "done"
    assert events[-1]["id"] == "5"
    assert json.loads(events[-1]["data"]) == {"count": 4}
    assert len(events) == 5


def test_stream_default_count(client: TestClient) -> None:
    _, events = stream_events(client, delay=0)
    assert [e["event"] for e in events] == ["tick"] * 5 + ["done"]


def test_stream_resumes_after_last_event_id(client: TestClient) -> None:
    headers = {"Last-Event-ID": "2"}
    params = {"count": 4, "delay": 0}
    with client.stream("GET", "/stream", params=params, headers=headers) as response:
        events = parse_sse(response.iter_lines())
    assert [e["id"] for e in events] == ["3", "4", "5"]
    assert [e["event"] for e in events] == ["tick", "tick", "done"]


@pytest.mark.parametrize(
    "params",
    [
        {"count": 0},
        {"count": -1},
        {"count": MAX_EVENTS + 1},
        {"count": "many"},
        {"delay": -0.1},
        {"delay": MAX_DELAY_SECONDS + 0.5},
        {"delay": "slow"},
    ],
)
def test_stream_rejects_bad_parameters(client: TestClient, params: dict) -> None:
    response = client.get("/stream", params=params)
    assert response.status_code == 422
    assert not response.headers["content-type"].startswith("text/event-stream")


def test_stream_accepts_the_caps(client: TestClient) -> None:
    _, events = stream_events(client, count=MAX_EVENTS, delay=0)
    assert len(events) == MAX_EVENTS + 1


def test_stream_rejects_bad_last_event_id(client: TestClient) -> None:
    response = client.get("/stream", params={"delay": 0}, headers={"Last-Event-ID": "abc"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, 0.5), ({"SSE_EVENT_DELAY_SECONDS": ""}, 0.5), ({"SSE_EVENT_DELAY_SECONDS": "0"}, 0.0)],
)
def test_delay_from_env(environ: dict[str, str], expected: float) -> None:
    assert delay_from_env(environ) == expected


@pytest.mark.parametrize("raw", ["fast", "-1", str(MAX_DELAY_SECONDS + 1)])
def test_delay_from_env_rejects_bad_values(raw: str) -> None:
    with pytest.raises(ValueError, match="SSE_EVENT_DELAY_SECONDS"):
        delay_from_env({"SSE_EVENT_DELAY_SECONDS": raw})


@pytest.fixture
def live_server() -> Iterator[str]:
    """Run the app in a real uvicorn server on a free local port.

    TestClient hands the body over only once the app has finished, so it cannot tell a
    stream from a buffered response; a socket can.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_events_arrive_incrementally(live_server: str) -> None:
    delay = 0.4
    arrivals: list[float] = []
    start = time.monotonic()
    with httpx.stream(
        "GET", f"{live_server}/stream", params={"count": 3, "delay": delay}, timeout=10
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("id:"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 4  # 3 ticks + done
    # The first event comes right away, not after the whole stream (~2 * delay).
    assert arrivals[0] < delay
    assert arrivals[2] - arrivals[0] >= 2 * delay * 0.9


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"SSE_BUFFERED": ""}, False),
        ({"SSE_BUFFERED": "0"}, False),
        ({"SSE_BUFFERED": "1"}, True),
        ({"SSE_BUFFERED": " True "}, True),
    ],
)
def test_buffered_from_env(environ: dict[str, str], expected: bool) -> None:
    assert buffered_from_env(environ) is expected


def test_buffered_from_env_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="SSE_BUFFERED"):
        buffered_from_env({"SSE_BUFFERED": "sometimes"})


def test_the_buffered_switch_sends_the_same_events_all_at_once(
    live_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSE_BUFFERED=1: the same events and headers, but none before the last is ready."""
    monkeypatch.setattr(main, "BUFFERED", True)
    delay = 0.3
    arrivals: list[float] = []
    start = time.monotonic()
    with httpx.stream(
        "GET", f"{live_server}/stream", params={"count": 3, "delay": delay}, timeout=10
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            if line.startswith("id:"):
                arrivals.append(time.monotonic() - start)
    assert [e["event"] for e in parse_sse(iter(lines))] == ["tick"] * 3 + ["done"]
    # The first event waits for the whole stream (2 * delay), then all come together.
    assert arrivals[0] >= 2 * delay * 0.9
    assert arrivals[-1] - arrivals[0] < 0.1
