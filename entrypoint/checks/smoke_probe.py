"""The smoke boot's HTTP probe from inside the container: curl, wget, python or node, the
first the image has, GETs 127.0.0.1, where the Lambda Web Adapter reaches the app, so a
server bound to loopback only passes as it would in Lambda. smoke.py judges the answer."""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

from entrypoint import github
from entrypoint.engine import ContainerError

if TYPE_CHECKING:
    from entrypoint.engine import Container


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


class InContainer:
    """HTTP GETs run inside the container, so they reach 127.0.0.1 as the adapter would."""

    def __init__(self, container: Container, port: int, path: str) -> None:
        self.container = container
        self.port = port
        self.path = path
        self.candidates = list(_CLIENTS)
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
