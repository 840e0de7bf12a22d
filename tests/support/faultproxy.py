"""A fault-injecting HTTP proxy in front of a test registry, on loopback.

Requests pass through unchanged, one upstream connection each, until a rule matches: then
the proxy answers 503 itself (a burst), resets the connection after part of the request
body has arrived (a reset mid-upload), hands the registry that part as a whole request and
then resets (a "cut": a reset after which the registry keeps what arrived, as registries that
store chunks do), stops reading the body for a while (a stall), holds the answer back (a
slow registry), or answers 429 with a `Retry-After` (a throttling registry). With `rate` set,
every body in either direction shares one link of that many bytes per second: a slow office
line or VPN. The Docker engine pushes through it as it would through any registry on
127.0.0.1.

    with FaultProxy(registry.host) as proxy:
        proxy.add(Fault("reset", method="PATCH", path="/blobs/uploads/", after_bytes=1 << 20))
        ... push to proxy.host ...
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import io
    from collections.abc import Iterator

    from typing_extensions import Self

Kind = Literal["503", "429", "reset", "cut", "stall", "slow"]
# What Go's HTTP servers (the CNCF registry's) answer a TLS handshake on a plain port with.
TLS_TO_PLAIN_ANSWER = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    kind: Kind
    method: str = ""  # "" matches any
    path: str = ""  # a substring of the request path
    times: int = 1  # how many matching requests it hits; 0: every one
    after_bytes: int = 0  # reset / stall: once this much of the body has passed
    seconds: float = 0.0  # stall / slow: how long; 429 / 503: the Retry-After it sends (0: none)
    hits: int = field(default=0)

    def matches(self, method: str, path: str) -> bool:
        live = self.times == 0 or self.hits < self.times
        return live and (not self.method or method == self.method) and self.path in path


class _Link:
    """One shared line of `rate` bytes per second: every body, both ways, waits its turn, so
    concurrent layer uploads share the bandwidth as they would on a real link."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._free_at = 0.0
        self._lock = threading.Lock()

    def carry(self, size: int) -> None:
        if not self.rate:
            return
        with self._lock:
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + size / self.rate
            done = self._free_at
        time.sleep(max(0.0, done - time.monotonic()))


class FaultProxy:
    def __init__(self, upstream: str, *, rate: int = 0) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.log: list[str] = []  # "METHOD path -> status|fault"
        self.stamps: list[tuple[float, str]] = []  # (time.monotonic(), the log line)
        self.body_bytes = 0  # request body bytes passed to the registry
        self._link = _Link(rate)
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                outer._serve(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

            def handle_one_request(self) -> None:
                # Engines with the containerd store try TLS first on an insecure registry and
                # fall back to plain HTTP only when the answer starts with "HTTP/", as Go's
                # servers send it; Python's would answer a ClientHello as HTTP/0.9, bare.
                if self.rfile.peek(1)[:1] == b"\x16":  # type: ignore[attr-defined]
                    self.wfile.write(TLS_TO_PLAIN_ANSWER)
                    self.close_connection = True
                    return
                super().handle_one_request()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _note(self, line: str) -> None:
        with self._lock:
            self.log.append(line)
            self.stamps.append((time.monotonic(), line))

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
        self._server.shutdown()
        self._server.server_close()

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    # A reset, cut or stall counts only once it fires: a body too short to reach
                    # `after_bytes` (a small config blob) passes and leaves it armed.
                    if fault.kind not in ("reset", "cut", "stall"):
                        fault.hits += 1
                    return fault
        return None

    def _cut(self, handler: BaseHTTPRequestHandler, fault: Fault) -> None:
        """Forward the first `after_bytes` of the body as a whole request, then reset."""
        kept = _cut_body(handler, fault)
        with self._lock:
            fault.hits += 1
        upstream = http.client.HTTPConnection(self.upstream, timeout=120)
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in _HOP | {"host", "content-length"}
        }
        headers |= {"Host": self.host, "Content-Length": str(len(kept))}
        try:
            upstream.request(handler.command, handler.path, body=kept, headers=headers)
            status = upstream.getresponse().status
        finally:
            upstream.close()
        self._note(
            f"{handler.command} {handler.path} -> cut after {len(kept)} B, registry said {status} (fault)"
        )
        handler.close_connection = True
        _reset(handler.connection)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        fault = self._take(method, path)
        if fault and fault.kind in ("503", "429"):
            self._note(f"{method} {path} -> {fault.kind} (fault)")
            code = "UNAVAILABLE" if fault.kind == "503" else "TOOMANYREQUESTS"
            body = b'{"errors":[{"code":"%s","message":"injected fault"}]}' % code.encode()
            handler.send_response(int(fault.kind))
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            if fault.seconds:
                handler.send_header("Retry-After", f"{fault.seconds:.0f}")
            # The request body (if any) was not read: the connection cannot carry another.
            handler.send_header("Connection", "close")
            handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(body)
            return
        if fault and fault.kind == "cut":
            declared = int(handler.headers.get("Content-Length") or 0)
            if declared > fault.after_bytes or "chunked" in handler.headers.get("Transfer-Encoding", ""):
                self._cut(handler, fault)
                return
            fault = None  # too short to cut: passes, and the fault stays armed
        upstream = http.client.HTTPConnection(self.upstream, timeout=120)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
        headers["Host"] = self.host  # the registry builds upload URLs from it: they come back here
        chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        length = int(handler.headers.get("Content-Length") or 0)
        has_body = chunked or length > 0
        try:
            upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            sent = 0
            for data in _body(handler, chunked, length) if has_body else ():
                if fault and fault.kind in ("reset", "stall") and sent + len(data) > fault.after_bytes:
                    with self._lock:
                        fault.hits += 1
                    if fault.kind == "reset":
                        self._note(f"{method} {path} -> reset after {sent} bytes (fault)")
                        handler.close_connection = True
                        _reset(handler.connection)
                        return
                    self._note(f"{method} {path} -> stalled {fault.seconds:.0f} s after {sent} bytes (fault)")
                    time.sleep(fault.seconds)
                    fault = None
                self._link.carry(len(data))
                upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                sent += len(data)
                with self._lock:
                    self.body_bytes += len(data)
            if chunked:
                upstream.send(b"0\r\n\r\n")
            response = upstream.getresponse()
            if fault and fault.kind == "slow":
                time.sleep(fault.seconds)
            self._note(f"{method} {path} -> {response.status}")
            handler.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP:
                    handler.send_header(name, value)
            upstream_length = response.getheader("Content-Length")
            streamed = upstream_length is None and method != "HEAD" and response.status not in (204, 304)
            if streamed:
                handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            if method == "HEAD":
                return
            while data := response.read(1 << 16):
                self._link.carry(len(data))
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if streamed else data)
            if streamed:
                handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            handler.close_connection = True
        finally:
            upstream.close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a reset or cancelled connection is the point of these tests, not news


def _cut_body(handler: BaseHTTPRequestHandler, fault: Fault) -> bytes:
    chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
    length = int(handler.headers.get("Content-Length") or 0)
    kept = b""
    for data in _body(handler, chunked, length):
        kept += data
        if len(kept) >= fault.after_bytes:
            break
    return kept[: fault.after_bytes]


def _body(handler: BaseHTTPRequestHandler, chunked: bool, length: int) -> Iterator[bytes]:
    """The request body as it arrives: `length` bytes, or chunk by chunk, decoded."""
    reader = handler.rfile
    if not chunked:
        yield from _exactly(reader, length)
        return
    while True:
        size_line = reader.readline(1024)
        size = int(re.split(rb"[;\s]", size_line.strip(), maxsplit=1)[0] or b"0", 16)
        if size == 0:
            while reader.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        yield from _exactly(reader, size)
        reader.readline(1024)  # the CRLF after each chunk


def _exactly(reader: io.BufferedIOBase, size: int) -> Iterator[bytes]:
    """`size` bytes from `reader`, in pieces, fewer if the client hangs up."""
    left = size
    while left > 0:
        data = reader.read(min(left, 1 << 16))
        if not data:
            return
        left -= len(data)
        yield data


def _reset(connection: socket.socket) -> None:
    """Close with RST, not FIN: what a dropped NAT entry or a crashed proxy looks like."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()
