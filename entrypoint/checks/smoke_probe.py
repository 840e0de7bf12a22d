"""The smoke boot's HTTP probe from inside the container: curl, wget, python or node, the
first the image has, GETs 127.0.0.1, where the Lambda Web Adapter reaches the app, so a
server bound to loopback only passes as it would in Lambda. smoke.py judges the answer.

The streaming probe (`InContainer.stream`) runs such a client too, writing the body through
unbuffered; the engine forwards each piece of its output as it is written, so the time each
event arrives here is the time it left the app, give or take the engine's latency. That
holds on a remote engine too: the exec's output comes through the Docker API. `Streamed`
records what arrived, for smoke.py to judge.
"""

from __future__ import annotations

import functools
import queue
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from entrypoint import cancel, github
from entrypoint.engine import ContainerError
from entrypoint.errors import shown

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from entrypoint.engine import Container, ExecStream


# Each prints "STATUS <code>" for an answer; anything else is "no answer yet". Tried in this
# order until one exists in the image. The port and path are arguments, never spliced in.
_PY_PROBE = (
    "import http.client,sys\n"
    "c=http.client.HTTPConnection('127.0.0.1',int(sys.argv[1]),timeout=2)\n"
    "try:\n c.request('GET',sys.argv[2]);r=c.getresponse()\n"
    " print('STATUS',r.status,r.getheader('Location') or '')\n"
    "except Exception as e:\n print('ERROR',type(e).__name__)\n"
)
_NODE_PROBE = (
    "const r=require('http').get({host:'127.0.0.1',port:+process.argv[1],path:process.argv[2],timeout:2000},"
    "s=>{console.log('STATUS',s.statusCode,s.headers.location||'');process.exit(0)});"
    "r.on('error',e=>{console.log('ERROR',e.code);process.exit(0)});"
    "r.on('timeout',()=>{console.log('ERROR timeout');process.exit(0)})"
)
# Placeholders, each a whole argument: the values are never spliced into a script.
_URL, _PORT, _PATH = object(), object(), object()
_CLIENTS: tuple[tuple[str | object, ...], ...] = (
    ("curl", "-s", "-o", "/dev/null", "--max-time", "2", "-w", "STATUS %{http_code} %{redirect_url}", _URL),
    # No -T: busybox 1.35's wget crashes with it; `_exec` bounds every probe instead.
    ("wget", "-S", "-O", "/dev/null", _URL),
    ("python3", "-c", _PY_PROBE, _PORT, _PATH),
    ("python", "-c", _PY_PROBE, _PORT, _PATH),
    ("node", "-e", _NODE_PROBE, _PORT, _PATH),
)
STATUS = re.compile(r"STATUS (\d{3})(?: (\S+))?|HTTP/\d(?:\.\d)? (\d{3})")

# The streaming clients print the answer's head as curl -i does (the status line, the
# headers, a blank line; wget -S prints it on stderr), then the body as it comes, each
# piece flushed at once. They ask as a browser's EventSource behind a function URL would:
# Accept the type expected, and Accept-Encoding gzip, which wakes compression middleware
# (the usual way a stream becomes one late blob) and which the action can decode as it
# arrives. Errors go to stderr, so stdout holds only the answer.
_PY_STREAM = (
    "import http.client,sys\n"
    "o=sys.stdout.buffer\n"
    "c=http.client.HTTPConnection('127.0.0.1',int(sys.argv[1]),timeout=float(sys.argv[4]))\n"
    "try:\n"
    " c.request('GET',sys.argv[2],headers={'Accept':sys.argv[3],'Accept-Encoding':'gzip'})\n"
    " r=c.getresponse()\n"
    "except Exception as e:\n sys.stderr.write('ERROR %s\\n'%type(e).__name__);sys.exit(0)\n"
    "h=''.join('%s: %s\\r\\n'%kv for kv in r.getheaders())\n"
    "o.write(('HTTP/1.1 %d %s\\r\\n%s\\r\\n'%(r.status,r.reason,h)).encode('latin-1'));o.flush()\n"
    # read1 returns what has arrived; read(n) would wait for n bytes.
    "read=getattr(r,'read1',None) or (lambda n:r.read(1))\n"
    "try:\n"
    " while 1:\n"
    "  b=read(65536)\n"
    "  if not b:break\n"
    "  o.write(b);o.flush()\n"
    "except Exception as e:\n sys.stderr.write('ERROR %s\\n'%type(e).__name__)\n"
)
_NODE_STREAM = (
    "const q=require('http').get({host:'127.0.0.1',port:+process.argv[1],path:process.argv[2],"
    "headers:{accept:process.argv[3],'accept-encoding':'gzip'}},s=>{"
    "let h='HTTP/'+s.httpVersion+' '+s.statusCode+' '+s.statusMessage+'\\r\\n';"
    "for(let i=0;i<s.rawHeaders.length;i+=2)h+=s.rawHeaders[i]+': '+s.rawHeaders[i+1]+'\\r\\n';"
    "process.stdout.write(h+'\\r\\n');s.on('data',d=>process.stdout.write(d))});"
    "q.on('error',e=>console.error('ERROR',e.code))"
)
_ACCEPT, _ACCEPT_HEADER, _SECONDS = object(), object(), object()
_STREAM_CLIENTS: tuple[tuple[str | object, ...], ...] = (
    (
        "curl",
        "-sS",
        "-N",
        "-i",
        "--max-time",
        _SECONDS,
        "-H",
        _ACCEPT_HEADER,
        "-H",
        "Accept-Encoding: gzip",
        _URL,
    ),
    ("wget", "-S", "-O", "-", "--header", _ACCEPT_HEADER, "--header", "Accept-Encoding: gzip", _URL),
    ("python3", "-c", _PY_STREAM, _PORT, _PATH, _ACCEPT, _SECONDS),
    ("python", "-c", _PY_STREAM, _PORT, _PATH, _ACCEPT, _SECONDS),
    ("node", "-e", _NODE_STREAM, _PORT, _PATH, _ACCEPT),
)
# Reading stops at whichever comes first: enough to judge, and bounded whatever the app sends.
MAX_EVENTS = 10
MAX_BYTES = 256 * 1024
MAX_DECODED = 1024 * 1024
_MAX_HEAD = 64 * 1024
_WAIT_S = 0.25
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_HEADER = re.compile(r"^\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)\s*$")
_STATUS_LINE = re.compile(r"^\s*HTTP/\d(?:\.\d)? (\d{3})")
_LINE_END = re.compile(rb"\r\n|\r|\n")


class Events:
    """Counts the events of a body fed piece by piece. text/event-stream: an event is a block
    of lines ended by a blank line (a block of only `:` comments is a keep-alive, not an
    event). Other types: one event per non-empty line (NDJSON, JSON Lines, text). A gzip or
    deflate body is decoded as it comes; ValueError when it cannot be, or grows too large."""

    def __init__(self, sse: bool, encoding: str) -> None:
        self.sse = sse
        self.encoding = encoding.strip().lower()
        self._decoder = (
            zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib, told by the header
            if self.encoding in ("gzip", "x-gzip", "deflate")
            else None
        )
        if self.encoding not in ("", "identity") and self._decoder is None:
            raise ValueError(f"Content-Encoding {shown(encoding, 40)}, which the probe does not decode")
        self._pending = b""
        self._in_event = False
        self.decoded = 0

    def feed(self, data: bytes) -> int:
        """How many events `data` completed."""
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data, MAX_DECODED - self.decoded + 1)
            except zlib.error as exc:
                raise ValueError(f"a {self.encoding} body the probe could not decode ({exc})") from exc
        self.decoded += len(data)
        if self.decoded > MAX_DECODED:
            raise ValueError(f"the body decoded to more than {MAX_DECODED} bytes")
        text = self._pending + data
        # A CR at the end may be half of a CRLF: keep it for the next piece.
        held = b"\r" if text.endswith(b"\r") else b""
        lines = _LINE_END.split(text[: len(text) - len(held)])
        self._pending = lines.pop() + held
        done = 0
        for line in lines:
            if not self.sse:
                done += bool(line.strip())
            elif not line:
                done += self._in_event
                self._in_event = False
            elif not line.startswith(b":"):
                self._in_event = True
        return done


@dataclass
class Streamed:
    """A streaming GET's answer as it arrived. Times are seconds since the request started;
    `events` holds each event's arrival and the number of the piece that brought it."""

    via: str
    status: int
    headers: dict[str, str]
    head_at: float
    sse: bool
    events: list[tuple[float, int]] = field(default_factory=list)
    pieces: int = 0
    size: int = 0
    ended: str = "the stream ended"
    problem: str = ""
    _framer: Events | None = field(default=None, repr=False)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def show_head(self) -> None:
        encoding = self.header("Content-Encoding") or "none"
        transfer = (
            f", Transfer-Encoding {shown(self.header('Transfer-Encoding'), 40)}"
            if self.header("Transfer-Encoding")
            else ""
        )
        github.info(
            f"  smoke boot: HTTP {self.status} at {self.head_at:.2f} s: Content-Type "
            f"{shown(self.header('Content-Type'), 80) or 'none'}, "
            f"Content-Encoding {shown(encoding, 40)}{transfer}"
        )

    def take(self, at: float, data: bytes) -> bool:
        """One piece of the body; False when reading should stop (a limit, or a body that
        cannot be read as events)."""
        if not data:
            return True
        self.pieces += 1
        self.size += len(data)
        try:
            if self._framer is None:
                self._framer = Events(self.sse, self.header("Content-Encoding"))
            done = self._framer.feed(data)
        except ValueError as exc:
            self.problem = str(exc)
            self.ended = "the body could not be read as events"
            return False
        for _ in range(done):
            self.events.append((at, self.pieces))
            if len(self.events) <= MAX_EVENTS:
                github.info(f"  smoke boot: event {len(self.events)} at {at:.2f} s (chunk {self.pieces})")
        if len(self.events) >= MAX_EVENTS:
            self.ended = f"stopped reading after {MAX_EVENTS} events"
            return False
        if self.size >= MAX_BYTES:
            self.ended = f"stopped reading after {self.size} bytes"
            return False
        return True


class _Head:
    """The answer's head, gathered from the client's output: on stdout before the first blank
    line (curl -i and the scripts), or the lines wget -S prints on stderr."""

    def __init__(self, on_stderr: bool) -> None:
        self.on_stderr = on_stderr
        self.text = b""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.at = 0.0
        self.done = False
        # wget's body (stdout) can overtake the end of its head (stderr): the engine copies
        # the two streams on their own.
        self.early: list[tuple[float, bytes]] = []

    def take(self, at: float, out: bytes, err: bytes) -> list[tuple[float, bytes]]:
        """The body pieces that came with or before this one, each with its arrival time,
        once the head is complete."""
        if not self.on_stderr:
            self.text += out
            end = _HEAD_END.search(self.text)
            if end is None or not self.text.startswith(b"HTTP/"):
                return []
            self._parse(self.text[: end.start()].decode("latin-1").splitlines(), at)
            return [(at, self.text[end.end() :])]
        self.text += err
        if out:
            self.early.append((at, out))
        lines = self.text.decode("latin-1").splitlines()
        starts = [i for i, line in enumerate(lines) if _STATUS_LINE.match(line)]
        if not starts:
            return []
        if not self.at:
            self.at = at
        # Whole lines only: a line cut after its indent would read as the blank line.
        head = lines[starts[-1] :] if self.text.endswith(b"\n") else lines[starts[-1] : -1]
        # wget -S indents the head's lines; busybox's ends it with a blank line, GNU's with its
        # own unindented lines (Length:, Saving to:). Body that came first proves nothing: the
        # engine copies stdout and stderr on their own, and the rest of the head may be on its
        # way (a Content-Type read as missing).
        if any(not line.strip() or not line[:1].isspace() for line in head[1:]):
            self._parse(head, self.at)
            return self.early
        return []

    def finish(self) -> list[tuple[float, bytes]]:
        """At the end of the output, an answer's head that came without its end (wget -S
        prints no blank line after an error status): the body pieces, as `take`."""
        if self.done or not self.on_stderr or not self.at:
            return []
        lines = self.text.decode("latin-1").splitlines()
        starts = [i for i, line in enumerate(lines) if _STATUS_LINE.match(line)]
        self._parse(lines[starts[-1] :], self.at)
        return self.early

    def _parse(self, lines: list[str], at: float) -> None:
        found = _STATUS_LINE.match(lines[0]) if lines else None
        self.status = int(found.group(1)) if found else 0
        for line in lines[1:]:
            if not line.strip():
                break
            header = _HEADER.match(line)
            if header:
                self.headers.setdefault(header.group(1).lower(), header.group(2))
        self.at = at
        self.done = True


class InContainer:
    """HTTP GETs run inside the container, so they reach 127.0.0.1 as the adapter would."""

    def __init__(self, container: Container, port: int, path: str) -> None:
        self.container = container
        self.port = port
        self.path = path
        self.candidates = list(_CLIENTS)
        self.stream_candidates = list(_STREAM_CLIENTS)
        self.announced = False

    def attempt(self) -> str | tuple[str, bool] | None:
        """What a client printed (an answer, for smoke.py to judge: STATUS matches it), (what
        happened, final) when there was no answer, or None when the image has no client."""
        url = f"http://127.0.0.1:{self.port}{self.path}"
        while self.candidates:
            template = self.candidates[0]
            values = {_URL: url, _PORT: str(self.port), _PATH: self.path}
            argv = [part if isinstance(part, str) else values[part] for part in template]
            try:
                done = _exec(self.container, argv)
            except ContainerError as exc:
                if "is not running" in str(exc):
                    return "the container stopped", False
                self.candidates.pop(0)
                continue
            if done is None:
                return "the probe got no answer within 3 s", False
            code, text = done
            if code not in (126, 127) and not self.announced:
                self.announced = True
                github.info(
                    f"  smoke boot: probing from inside the container ({template[0]}), where the "
                    "Lambda Web Adapter reaches the app on 127.0.0.1"
                )
            if code in (126, 127) or "executable file not found" in text or "no such file" in text.lower():
                self.candidates.pop(0)
                continue
            return text
        return None

    def stream(self, accept: str, deadline: float) -> Streamed | str | None:
        """One streaming GET from inside, read until it ends, a limit, or `deadline`: what
        arrived once an answer's head did, else (no answer yet) what the client said, or
        None when the image has no client."""
        url = f"http://127.0.0.1:{self.port}{self.path}"
        while self.stream_candidates:
            template = self.stream_candidates[0]
            seconds = str(max(1, int(deadline - time.monotonic()) + 1))
            values = {
                _URL: url,
                _PORT: str(self.port),
                _PATH: self.path,
                _ACCEPT: accept,
                _ACCEPT_HEADER: f"Accept: {accept}",
                _SECONDS: seconds,
            }
            argv = [part if isinstance(part, str) else values[part] for part in template]
            try:
                running = self.container.exec_stream(argv)
            except ContainerError as exc:
                if "is not running" in str(exc):
                    return "the container stopped"
                self.stream_candidates.pop(0)
                continue
            client = str(template[0])
            outcome = _read_stream(
                running,
                client,
                accept == "text/event-stream",
                deadline,
                functools.partial(self._announce, client),
            )
            if outcome is None:
                self.stream_candidates.pop(0)
                continue
            self._announce(client)
            return outcome
        return None

    def _announce(self, client: str) -> None:
        if not self.announced:
            self.announced = True
            github.info(
                f"  smoke boot: probing from inside the container ({client}), where the "
                "Lambda Web Adapter reaches the app on 127.0.0.1"
            )


def _read_stream(
    running: ExecStream, client: str, sse: bool, deadline: float, announce: Callable[[], None]
) -> Streamed | str | None:
    """Read a streaming client's output as the engine forwards it, each piece timed on
    arrival. None when the client is not in the image (or cannot run there)."""
    head = _Head(on_stderr=client == "wget")
    said = b""
    seen: Streamed | None = None
    for at, out, err in _arrivals(running, deadline):
        if seen is not None:
            if not seen.take(at, out):
                return seen
            continue
        said = (said + out + err)[-_MAX_HEAD:]
        body = head.take(at, out, err)
        if not head.done:
            if len(head.text) + sum(len(piece) for _, piece in head.early) >= _MAX_HEAD:
                return f"{client} printed {_MAX_HEAD} bytes without an HTTP answer's head"
            continue
        seen = _answer(head, client, sse, announce)
        if not 200 <= seen.status < 300 or not all(seen.take(*piece) for piece in body):
            return seen
    if seen is None:
        body = head.finish()
        if head.done:
            seen = _answer(head, client, sse, announce)
            all(seen.take(*piece) for piece in body)
    if seen is not None:
        if time.monotonic() >= deadline:
            seen.ended = "smoke-timeout ran out while reading"
        return seen
    text = said.decode("utf-8", "replace")
    if (
        running.exit_code() in (126, 127)
        or "executable file not found" in text
        or "no such file or directory" in text.lower()
        or "Traceback (most recent call last)" in text
    ):
        return None
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    return f"no answer ({client}: {shown(last, 160)})" if last else f"no answer ({client} printed nothing)"


def _answer(head: _Head, client: str, sse: bool, announce: Callable[[], None]) -> Streamed:
    announce()
    seen = Streamed(client, head.status, head.headers, head.at, sse)
    seen.show_head()
    return seen


def _arrivals(running: ExecStream, deadline: float) -> Iterator[tuple[float, bytes, bytes]]:
    """(seconds since the start, stdout, stderr) of each piece of the output, until it ends
    or `deadline` passes."""
    started = time.monotonic()
    arrivals: queue.Queue[tuple[float, bytes, bytes] | None] = queue.Queue()

    def pump() -> None:
        # A thread, so that reading stops at the deadline even while the stream is silent;
        # it ends when the container is removed, which closes the exec's stream, or once it
        # has passed on more than is ever read (a client left writing then blocks).
        passed = 0
        try:
            for out, err in running.pieces():
                arrivals.put((time.monotonic() - started, out, err))
                passed += len(out) + len(err)
                if passed > MAX_BYTES + 2 * _MAX_HEAD:
                    break
        except ContainerError:
            pass
        arrivals.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        cancel.raise_if_requested()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            arrival = arrivals.get(timeout=min(left, _WAIT_S))
        except queue.Empty:
            continue
        if arrival is None:
            return
        yield arrival


def _exec(container: Container, argv: list[str]) -> tuple[int, str] | None:
    """Run one probe in the container; None when it takes more than 3 s (it is left to end
    with the container, which is always removed)."""
    result: list[tuple[int, bytes]] = []
    errors: list[ContainerError] = []

    def run() -> None:
        try:
            result.append(container.exec(argv))
        except ContainerError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=3.0)
    if errors:
        raise errors[0]
    if not result:
        return None
    code, output = result[0]
    return code, output.decode("utf-8", "replace")
