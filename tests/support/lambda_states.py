"""A real HTTP proxy in front of moto's Lambda API, standing in for the function states moto
does not model.

moto answers every GetFunction with `State: Active` and `LastUpdateStatus: Successful` at
once. Lambda itself reports `Pending` / `InProgress` for seconds to minutes after a create
or an update, and `Failed` with a reason and a reason code when it cannot deploy the
function (an image it may not pull, a KMS key it may not use). This proxy forwards every
request to moto unchanged and, in GetFunction answers only, overwrites fields of
`Configuration` as the test's script says for the first calls per function: everything
else (the function's code, ResolvedImageUri, URL configuration) is still moto's.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import unquote

import requests

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from typing_extensions import Self

# GET /2015-03-31/functions/{name}: GetFunction (GetFunctionConfiguration adds /configuration).
_GET_FUNCTION = re.compile(r"/2015-03-31/functions/(?P<name>[^/?]+)(?:\?.*)?")
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}

PENDING = {"State": "Pending", "StateReason": "The function is being created.", "StateReasonCode": "Creating"}
IN_PROGRESS = {
    "LastUpdateStatus": "InProgress",
    "LastUpdateStatusReason": "The function is being updated.",
    "LastUpdateStatusReasonCode": "Updating",
}


class LambdaStates:
    """`with LambdaStates(moto_endpoint, {"api": [PENDING, IN_PROGRESS]}) as proxy:` serves
    on `proxy.endpoint`. The n-th GetFunction of a function gets the n-th overlay of its
    list; past the list, moto's own answer, or the last overlay again with `repeat_last`."""

    def __init__(
        self,
        upstream: str,
        script: Mapping[str, Sequence[Mapping[str, str]]],
        *,
        repeat_last: bool = False,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.script = {name: list(overlays) for name, overlays in script.items()}
        self.repeat_last = repeat_last
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                answer = requests.request(
                    self.command, outer.upstream + self.path, headers=headers, data=body, timeout=30
                )
                content = answer.content
                match = _GET_FUNCTION.fullmatch(self.path)
                if self.command == "GET" and match and answer.status_code == 200:
                    content = outer._rewrite(unquote(match["name"]), content)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _rewrite(self, name: str, content: bytes) -> bytes:
        short = name.rsplit(":function:", 1)[-1].split(":", 1)[0]
        with self._lock:
            count = self.calls.get(short, 0)
            self.calls[short] = count + 1
        overlays = self.script.get(short, [])
        if count < len(overlays):
            overlay = overlays[count]
        elif self.repeat_last and overlays:
            overlay = overlays[-1]
        else:
            return content
        reply = json.loads(content)
        reply["Configuration"].update(overlay)
        return json.dumps(reply).encode()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
