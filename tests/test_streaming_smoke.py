"""The streaming smoke boot (`smoke: PORT/PATH stream [TYPE]`) against real containers: the
example SSE app streaming, the same image with its buffering switch, busybox images serving
shell loops through httpd's CGI (probed with busybox wget, or through the published port
when the image has no client), and a gzip server that buffers only when the client accepts
gzip, as a browser behind a function URL does."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from entrypoint.checks.smoke import SSE_TYPE, SmokeSpec, smoke_boot
from entrypoint.checks.smoke_probe import MAX_EVENTS, Events
from entrypoint.engine import Engine
from entrypoint.engine.endpoint import find_endpoint
from entrypoint.errors import CheckError, InputError
from entrypoint.inputs import parse_release, parse_smoke
from tests.lambda_images import Images
from tests.support.remote import remote_host
from tests.support.run import EXAMPLE, REGION
from tests.support.stack import docker_cli

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from docker import DockerClient

NDJSON = "application/x-ndjson"

# ------------------------------------------------------------------------------ the grammar


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("8080/events stream", SmokeSpec("http", 8080, "/events", stream=SSE_TYPE)),
        ("/events stream", SmokeSpec("http", 8080, "/events", stream=SSE_TYPE)),
        ("9000 stream", SmokeSpec("http", 9000, "/", stream=SSE_TYPE)),
        ("  8080/stream?count=3   stream  ", SmokeSpec("http", 8080, "/stream?count=3", stream=SSE_TYPE)),
        ("8080/events STREAM Text/Event-Stream", SmokeSpec("http", 8080, "/events", stream=SSE_TYPE)),
        ("8080/feed stream application/x-ndjson", SmokeSpec("http", 8080, "/feed", stream=NDJSON)),
        # The forms before it are unchanged.
        ("8080/health", SmokeSpec("http", 8080, "/health")),
        ("auto", SmokeSpec("auto")),
        ("invoke", SmokeSpec("invoke")),
    ],
)  # fmt: skip
def test_parse_the_stream_form(value: str, spec: SmokeSpec) -> None:
    assert parse_smoke(value) == spec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8080/events stream sse", "input 'smoke' names the content type 'sse', which is not a media type"),
        ("8080/e stream text/event-stream x", "is '8080/e stream text/event-stream x', which is not"),
        ("stream", "input 'smoke' is 'stream', which is not a smoke test"),
        ("auto stream", "input 'smoke' is 'auto stream', which is not a smoke test"),
        ("8080/events streaming", "which is not a smoke test"),
        ("70000/events stream", "input 'smoke' has the port 70000, outside 1-65535"),
    ],
)  # fmt: skip
def test_parse_the_stream_form_refuses(value: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_smoke(value)
    assert message in caught.value.line()
    assert "stream" in caught.value.fix


def test_a_config_files_images_take_the_stream_form(tmp_path: Path) -> None:
    for name in ("events", "feed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "lambdas.yml").write_text(
        "images:\n"
        "  - name: events\n    dockerfile: events/Dockerfile\n    smoke: 8080/events stream\n"
        "  - name: feed\n    dockerfile: feed/Dockerfile\n    smoke: 8080/feed stream application/x-ndjson\n"
    )
    raw = {"env": "prod", "region": REGION, "config": "lambdas.yml"}
    (_, events), (_, feed) = parse_release(raw, tmp_path).images
    assert events.smoke == SmokeSpec("http", 8080, "/events", stream=SSE_TYPE)
    assert feed.smoke == SmokeSpec("http", 8080, "/feed", stream=NDJSON)

    (tmp_path / "lambdas.yml").write_text(
        "images:\n  - name: events\n    dockerfile: events/Dockerfile\n    smoke: 8080/events stream sse\n"
    )
    with pytest.raises(InputError) as caught:
        parse_release(raw, tmp_path)
    assert "lambdas.yml line 4, image 'events': 'smoke' names the content type 'sse'" in caught.value.line()


@pytest.mark.parametrize(
    ("pieces", "counts"),
    [
        # An event ends with a blank line, whatever the line ends (LF, CRLF, CR) and however
        # the pieces cut them; a comment-only block is a keep-alive, not an event.
        ([b"data: 1\n\n"], [1]),
        ([b"data: 1\n", b"\ndata: 2\n\n"], [0, 2]),
        ([b"data: 1\r", b"\n\r\n"], [0, 1]),
        ([b"data: 1\r\rdata: 2\r\n\r\n"], [2]),
        ([b": keep-alive\n\n", b"event: tick\ndata: x\n\n\n\n"], [0, 1]),
        ([b"data: no blank line yet\n"], [0]),
    ],
)
def test_sse_events_are_counted_as_their_blank_lines_arrive(pieces: list[bytes], counts: list[int]) -> None:
    events = Events(sse=True, encoding="")
    assert [events.feed(piece) for piece in pieces] == counts


def test_other_types_count_lines_and_unknown_encodings_are_refused() -> None:
    lines = Events(sse=False, encoding="identity")
    assert [lines.feed(piece) for piece in (b'{"a":1}\n{"a"', b':2}\n\n{"a":3}\n')] == [1, 2]
    with pytest.raises(ValueError, match="Content-Encoding br, which the probe does not decode"):
        Events(sse=True, encoding="br")


# ------------------------------------------------------------------------- real containers


@pytest.fixture(scope="module")
def images(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    made = Images(docker_client, tmp_path_factory.mktemp("streaming"))
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def example_image(images: Images, python_base: str, adapter_image: str) -> str:
    """The example as its Dockerfile builds it, on the local bases (its defaults are public)."""
    tag = "streaming-smoke/example:test"
    argv = [docker_cli(), "build", "--progress=plain", "-t", tag, "--build-arg", f"BASE_IMAGE={python_base}",
            "--build-arg", f"ADAPTER_IMAGE={adapter_image}", str(EXAMPLE)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    images.made.append(tag)
    return tag


def events_in(log: str) -> list[float]:
    """The arrival time of each event, as the smoke boot's log shows it."""
    return [float(t) for t in re.findall(r"smoke boot: event \d+ at (\d+\.\d+) s", log)]


def test_the_example_streams_and_passes(
    images: Images, example_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Booted as Lambda runs it (the adapter's image: read-only, unprivileged), probed with
    the image's python3 on 127.0.0.1: 5 ticks 0.5 s apart and a done event."""
    result = smoke_boot(
        Engine(images.client),
        example_image,
        parse_smoke("8080/stream stream") or SmokeSpec("auto"),
        timeout_s=30,
        region=REGION,
        lambda_like=True,
    )
    log = capsys.readouterr().out
    print(log)
    assert result.detail.startswith(
        "GET :8080/stream as a text/event-stream stream answered HTTP 200 and streamed 6 events over "
    )
    assert "probing from inside the container (python3)" in log
    assert re.search(
        r"HTTP 200 at \d+\.\d+ s: Content-Type text/event-stream; charset=utf-8, Content-Encoding none", log
    )
    # The thresholds, and what was measured against them.
    assert "a stream passes with >= 2 events, the last >= 0.20 s after the first, and the first within" in log
    assert re.search(r"measured 6 events from .* last - first \d+\.\d+ s \(needs >= 0\.20 s\)", log)
    arrivals = events_in(log)
    assert len(arrivals) == 6
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(0.3 < gap < 1.0 for gap in gaps[:4]), arrivals  # the ticks, SSE_EVENT_DELAY_SECONDS apart
    assert images.containers_of(example_image) == []


def test_the_example_with_its_buffering_switch_is_refused_in_one_line(
    images: Images, example_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    buffered = images.build(f"FROM {example_image}\nENV SSE_BUFFERED=1\n", name="streaming-smoke/buffered")
    with pytest.raises(CheckError) as caught:
        smoke_boot(
            Engine(images.client),
            buffered,
            parse_smoke("8080/stream stream") or SmokeSpec("auto"),
            timeout_s=30,
            region=REGION,
            lambda_like=True,
        )
    log = capsys.readouterr().out
    print(log)
    line = caught.value.line()
    print(line)
    assert "\n" not in line
    assert re.search(
        rf"smoke boot of {buffered} failed: GET :8080/stream as a text/event-stream stream answered HTTP 200 "
        r"but the events were buffered, not streamed: one chunk of 6 events \d+\.\d+ s after the request, "
        r"the head at \d+\.\d+ s; Content-Type text/event-stream; charset=utf-8, Content-Encoding none",
        caught.value.cause,
    )
    # The head came with the body: the whole answer was built first, so that cause leads.
    assert caught.value.fix.startswith("the handler builds the whole answer before sending it")
    for cause in ("GZipMiddleware", "proxy_buffering off", "AWS_LWA_INVOKE_MODE=response_stream"):
        assert cause in caught.value.fix
    # Every event's arrival is in the log: all at once.
    arrivals = events_in(log)
    assert len(arrivals) == 6 and max(arrivals) - min(arrivals) < 0.05
    assert "last - first 0.00 s (needs >= 0.20 s)" in log
    assert "container log (last 30 lines):" in log
    assert images.containers_of(buffered) == []


# Shell loops behind busybox httpd's CGI, which passes each write on as it comes.
CGI = {
    # 4 events 0.3 s apart.
    "events": 'printf "Content-Type: text/event-stream\\r\\n\\r\\n"\n'
    'for i in 1 2 3 4; do printf "id: %s\\ndata: tick %s\\n\\n" $i $i; sleep 0.3; done\n',
    # The head at once, then every event together after 1 s.
    "clump": 'printf "Content-Type: text/event-stream\\r\\n\\r\\n"\nsleep 1\n'
    'printf "data: 1\\n\\ndata: 2\\n\\ndata: 3\\n\\ndata: 4\\n\\n"\n',
    # Never ends.
    "forever": 'printf "Content-Type: text/event-stream\\r\\n\\r\\n"\n'
    'i=0; while true; do i=$((i+1)); printf "data: %s\\n\\n" $i; sleep 0.1; done\n',
    # The head, then silence.
    "silent": 'printf "Content-Type: text/event-stream\\r\\n\\r\\n"\nsleep 60\n',
    # NDJSON, one object a line.
    "feed": 'printf "Content-Type: application/x-ndjson\\r\\n\\r\\n"\n'
    'for i in 1 2 3; do printf "{\\"seq\\": %s}\\n" $i; sleep 0.3; done\n',
}


@pytest.fixture(scope="module")
def cgi_image(images: Images, busybox_base: str) -> str:
    files = {f"www/cgi-bin/{name}": f"#!/bin/sh\n{body}" for name, body in CGI.items()}
    return images.build(
        f"FROM {busybox_base}\nCOPY --chmod=755 www/ /www/\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n',
        name="streaming-smoke/cgi",
        files=files,
    )


def boot(images: Images, image: str, smoke: str, timeout_s: float = 20) -> str:
    spec = parse_smoke(smoke)
    assert spec is not None
    return smoke_boot(Engine(images.client), image, spec, timeout_s=timeout_s, region=REGION).detail


def test_a_busybox_image_streams_through_its_wget(
    images: Images, cgi_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    detail = boot(images, cgi_image, "8080/cgi-bin/events stream")
    log = capsys.readouterr().out
    assert "streamed 4 events over" in detail
    assert "probing from inside the container (wget)" in log
    assert len(events_in(log)) == 4
    assert images.containers_of(cgi_image) == []


def test_a_clump_after_an_early_head_is_refused_naming_it(images: Images, cgi_image: str) -> None:
    with pytest.raises(CheckError) as caught:
        boot(images, cgi_image, "8080/cgi-bin/clump stream")
    assert "but the events were buffered, not streamed: one chunk of 4 events" in caught.value.cause
    # The head came first and the body later: something after the handler held it.
    assert caught.value.fix.startswith("a compression middleware")


def test_an_endless_stream_is_read_up_to_the_most_events(
    images: Images, cgi_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    detail = boot(images, cgi_image, "8080/cgi-bin/forever stream")
    assert f"streamed {MAX_EVENTS} events" in detail
    assert f"stopped reading after {MAX_EVENTS} events" in capsys.readouterr().out
    assert time.monotonic() - started < 15
    assert images.containers_of(cgi_image) == []


def test_a_silent_stream_is_refused_within_the_timeout(images: Images, cgi_image: str) -> None:
    started = time.monotonic()
    with pytest.raises(CheckError) as caught:
        boot(images, cgi_image, "8080/cgi-bin/silent stream", timeout_s=4)
    assert time.monotonic() - started < 12
    assert (
        "but 0 event(s) arrived (smoke-timeout ran out while reading, 0 bytes in 0 chunks)"
        in caught.value.cause
    )
    assert "sends at least 2 events, each ended by a blank line" in caught.value.fix


def test_another_content_type_is_named_after_stream(images: Images, cgi_image: str) -> None:
    assert "streamed 3 events" in boot(images, cgi_image, "8080/cgi-bin/feed stream application/x-ndjson")
    with pytest.raises(CheckError) as caught:
        boot(images, cgi_image, "8080/cgi-bin/feed stream")
    seen = "answered HTTP 200 with Content-Type application/x-ndjson, Content-Encoding none"
    assert f"{seen}, not text/event-stream" in caught.value.cause
    assert "'8080/cgi-bin/feed stream application/x-ndjson'" in caught.value.fix


def test_a_missing_endpoint_fails_with_its_status(images: Images, cgi_image: str) -> None:
    with pytest.raises(CheckError, match="answered HTTP 404"):
        boot(images, cgi_image, "8080/cgi-bin/nothing stream")


def test_without_a_client_inside_the_stream_is_read_through_the_published_port(
    images: Images, cgi_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = images.build(f"FROM {cgi_image}\nRUN rm /bin/wget\n", name="streaming-smoke/bare")
    assert "streamed 4 events" in boot(images, bare, "8080/cgi-bin/events stream")
    log = capsys.readouterr().out
    assert "reading the stream through a port published on 127.0.0.1" in log
    assert "through the published port" in log
    with pytest.raises(CheckError, match="buffered, not streamed: one chunk of 4 events"):
        boot(images, bare, "8080/cgi-bin/clump stream")


# A server that compresses when the client accepts gzip: /flushed flushes the compressor
# after each event (a stream that survives compression), /buffered only at the end (what
# a compression middleware without a flush does).
GZIP_SERVER = """\
import http.server, time, zlib

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if gzip:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        packer = zlib.compressobj(wbits=31)
        for i in range(4):
            event = b"data: %d\\n\\n" % i
            if not gzip:
                self.wfile.write(event)
            elif self.path == "/flushed":
                self.wfile.write(packer.compress(event) + packer.flush(zlib.Z_SYNC_FLUSH))
            else:
                self.wfile.write(packer.compress(event))
            time.sleep(0.3)
        if gzip:
            self.wfile.write(packer.flush())

http.server.ThreadingHTTPServer(("127.0.0.1", 8080), Handler).serve_forever()
"""


def test_a_compressed_stream_is_decoded_as_it_comes_and_a_compressor_that_holds_it_is_named(
    images: Images, python_base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The probe accepts gzip as browsers do: a server that streams plain text to a client
    without it would pass a probe that did not ask, and buffer in production."""
    image = images.build(
        f'FROM {python_base}\nCOPY server.py /server.py\nCMD ["python3", "/server.py"]\n',
        name="streaming-smoke/gzip",
        files={"server.py": GZIP_SERVER},
    )
    assert "streamed 4 events" in boot(images, image, "8080/flushed stream")
    assert "Content-Encoding gzip" in capsys.readouterr().out
    with pytest.raises(CheckError) as caught:
        boot(images, image, "8080/buffered stream")
    assert "buffered, not streamed: one chunk of 4 events" in caught.value.cause
    assert "Content-Type text/event-stream, Content-Encoding gzip" in caught.value.cause
    assert caught.value.fix.startswith(
        "a compression middleware (Starlette/FastAPI GZipMiddleware, Flask-Compress, Express compression()) "
        "holds events until the body ends: exclude text/event-stream from it or remove it"
    )


def test_on_a_remote_engine_the_stream_is_timed_through_the_docker_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An engine on another host (TCP with mutual TLS): the probe's output comes through the
    engine's API as it is written, so the events are timed as they leave the app there."""
    context = tmp_path / "context"
    (context / "www" / "cgi-bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", context / "busybox")  # static; the remote engine has no images
    for name in ("events", "clump"):
        (context / "www" / "cgi-bin" / name).write_text(f"#!/bin/sh\n{CGI[name]}")
        (context / "www" / "cgi-bin" / name).chmod(0o755)
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "COPY www/ /www/\n"
        'CMD ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )
    with remote_host() as remote:
        client = remote.client()
        image, _ = client.images.build(path=str(context), tag="streaming-smoke/remote:test", rm=True)
        engine = Engine(client, find_endpoint(remote.env()))
        assert engine.endpoint.remote
        spec = parse_smoke("8080/cgi-bin/events stream")
        assert spec is not None
        detail = smoke_boot(engine, str(image.id), spec, timeout_s=20, region=REGION).detail
        log = capsys.readouterr().out
        assert "answered HTTP 200 and streamed 4 events" in detail, log + remote.log()
        assert "probing from inside the container (wget)" in log
        arrivals = events_in(log)
        # The server sleeps 0.3 s between events; the pipe may still join two of them (seen:
        # 0.38, 0.68, 0.98, 0.98), so the check is that they came apart, not the exact gaps.
        assert len(set(arrivals)) >= 3 and arrivals == sorted(arrivals), arrivals
        assert arrivals[-1] - arrivals[0] >= 0.5, arrivals
        clump = parse_smoke("8080/cgi-bin/clump stream")
        assert clump is not None
        with pytest.raises(CheckError, match="buffered, not streamed: one chunk of 4 events"):
            smoke_boot(engine, str(image.id), clump, timeout_s=20, region=REGION)
        assert client.containers.list(all=True) == []
