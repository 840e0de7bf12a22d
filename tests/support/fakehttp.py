"""A small HTTP server on a loopback address that answers as a test tells it and records
every request it gets: a hostile registry, a token service that should never be asked, a
place where leaked credentials would land."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from typing_extensions import Self


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class FakeHttp:
    """`with FakeHttp(answer) as server:` serves on `server.host` (ip:port) until the block ends."""

    def __init__(self, answer: Callable[[Request, FakeHttp], Reply], address: str = "127.0.0.1") -> None:
        self.answer = answer
        self.requests: list[Request] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                request = Request(self.command, self.path, dict(self.headers.items()))
                outer.requests.append(request)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                reply = outer.answer(request, outer)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((address, 0), _Handler)
        self.host = f"{address}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def authorized(self) -> Iterator[Request]:
        """The requests that carried credentials of any kind."""
        return (r for r in self.requests if "Authorization" in r.headers)
