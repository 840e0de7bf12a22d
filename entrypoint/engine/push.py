"""Pushing one tag through the engine, watched: a push may take as long as it keeps moving
(a 10 GB image through a slow link included); one that stops moving is asked for again a
bounded number of times, and a cancel hangs up on the engine (which then cancels the push)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from docker import auth as docker_auth
from docker.errors import APIError
from docker.utils import version_gte

from entrypoint import cancel, github
from entrypoint.engine.endpoint import first_line
from entrypoint.errors import PushRejectedError, RegistryError, push_rejection_fix, shown

if TYPE_CHECKING:
    from collections.abc import Iterator

    from entrypoint.engine.endpoint import Endpoint
    from entrypoint.registry.ecr import RegistryLogin

# A push with no progress for this long is stopped and tried again. There is no bound on
# the whole push: its length grows with the image and shrinks with the link, so only "no
# progress" says it is stuck. Tries times the stall limit puts the error line of a push
# that never moves again within 90 s of the fault.
PUSH_STALL_S = 20.0
PUSH_TRIES = 3
# The engine API version whose push takes a `platform` (Docker 27.2+); older engines push
# what the tag names.
PLATFORM_PUSH_API = "1.46"
# Engines with the containerd store report the pushed digest only in this status line, with
# no `aux` Digest event (moby/moby#48331).
# Network failures the engine reports as a push error rather than retrying: the containerd
# store's pusher gives up on a layer upload at the first reset, where the classic store's
# retries it five times.
_TRANSIENT = ("connection reset by peer", "broken pipe", "use of closed network connection", "unexpected eof",
              ": eof", "502 bad gateway", "503 service unavailable", "504 gateway timeout",
              "tls handshake timeout")  # fmt: skip
_DIGEST_LINE = re.compile(r"\bdigest: (sha256:[0-9a-f]{64}) size: \d+")


@dataclass(frozen=True)
class Pushed:
    """What a push stored: the manifest's digest, and the layers it uploaded (the engine's
    short ids: a diff ID's on the classic store, the blob digest's on the containerd store),
    not those the registry had already."""

    digest: str
    uploaded: frozenset[str]


def _layer_done(status: str) -> bool:
    return status in ("Pushed", "Layer already exists") or status.startswith("Mounted from")


class _TryAgain(Exception):
    """A push that stopped moving or broke off on the network: worth asking for again."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Progress:
    """When the push last moved: bytes sent for a layer, or a layer done."""

    def __init__(self) -> None:
        self.at = time.monotonic()
        self._sent: dict[str, int] = {}
        self._open: dict[str, str] = {}  # layer -> its last status, while not done

    def see(self, event: dict[str, Any]) -> None:
        layer, status = str(event.get("id") or ""), str(event.get("status") or "")
        detail = event.get("progressDetail") or {}
        current = int(detail.get("current") or 0)
        moved = _layer_done(status)
        if status == "Pushing" and current > self._sent.get(layer, -1):
            self._sent[layer] = current
            moved = True
        if moved or (event.get("aux") or {}).get("Digest"):
            self.at = time.monotonic()
        if not layer:
            return
        if _layer_done(status):
            self._open.pop(layer, None)
        else:
            total = int(detail.get("total") or 0)
            size = f", {current / 1e6:.1f} of {total / 1e6:.1f} MB sent" if total else ""
            self._open[layer] = status + size

    def where(self) -> str:
        """The layer the push is stuck on: the last one still open."""
        if not self._open:
            return ""
        layer, status = list(self._open.items())[-1]
        return f" at layer {layer} ({status})"


def push(
    endpoint: Endpoint, repository: str, tag: str, login: RegistryLogin, platform: str | None = None
) -> Pushed:
    """Push one tag; the manifest digest the registry stored and the layers it uploaded.

    The engine's push reports progress as it goes. A push that makes none for
    `PUSH_STALL_S` (a reset it keeps retrying, a connection that stopped moving) is
    dropped and asked for again, `PUSH_TRIES` times in all: layers already stored are not
    sent again, and an upload still in flight is joined, not restarted (the engine keeps
    it), so a registry that recovers completes the push. Then one line names the
    registry, the layer and what to check."""
    reference = f"{repository}:{tag}"
    started = time.monotonic()
    stall: _TryAgain | None = None
    uploaded: set[str] = set()  # a try that stalled may have stored layers the next one skips
    for tries in range(1, PUSH_TRIES + 1):
        try:
            return _push_once(endpoint, (repository, tag), login, platform, uploaded)
        except _TryAgain as stalled:
            stall = stalled
            if tries < PUSH_TRIES:
                github.warning(
                    f"the push of {reference} {stalled.what}; asking the engine again "
                    f"({tries + 1}/{PUSH_TRIES})"
                )
    host = reference.split("/", 1)[0]
    raise RegistryError(
        f"pushing {reference} to {host} did not finish: it {stall.what if stall else 'stopped'} "
        f"({PUSH_TRIES} tries in {time.monotonic() - started:.0f} s); no environment tag was moved",
        f"check the network path from this runner to {host} (proxy, VPN, MTU, NAT timeouts) "
        "and the registry's health, then rerun",
        temporary=True,
    )


def _push_once(
    endpoint: Endpoint,
    pushed: tuple[str, str],
    login: RegistryLogin,
    platform: str | None,
    uploaded: set[str],
) -> Pushed:
    repository, tag = pushed
    auth = {"username": login.username, "password": login.password}
    reference = f"{repository}:{tag}"
    # A client of its own whose read timeout is the stall limit: an engine that sends
    # nothing at all for that long is stuck, whatever the layer.
    api = endpoint.client(timeout=PUSH_STALL_S).api
    # The push's streaming response, kept through a requests hook (the docker-py client
    # is a requests session) so that it can be closed: the engine cancels a push when
    # its caller hangs up, uploads in flight included.
    responses: list[requests.Response] = []
    api.hooks["response"].append(lambda response, *args, **kwargs: responses.append(response))
    progress = _Progress()

    def hang_up() -> None:
        for response in responses:
            response.close()

    try:
        with cancel.stopper(hang_up):
            digest = _follow(_push_stream(api, pushed, auth, platform), reference, progress, uploaded)
    except APIError as exc:
        raise _push_error(reference, first_line(exc)) from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        cancel.raise_if_requested()
        raise _TryAgain(f"sent no word for {PUSH_STALL_S:.0f} s{progress.where()}") from exc
    finally:
        # Closing the connection cancels the engine's push; the next try starts clean.
        for response in responses:
            response.close()
        api.close()
    if not digest:
        raise RegistryError(
            f"the engine pushed {reference} but reported no digest",
            "rerun; if it persists, check the engine's log",
        )
    return Pushed(digest, frozenset(uploaded))


def _push_stream(
    api: Any, pushed: tuple[str, str], auth: dict[str, str], platform: str | None
) -> Iterator[dict[str, Any]]:
    """The engine's push as decoded progress events; with `platform` (and an engine whose API
    takes it), only that platform's image manifest is pushed, not an index of the store's
    (moby/moby#51532). docker-py's `push` has no platform, so the request is made with
    the same private helpers its `push` uses."""
    repository, tag = pushed
    if not platform or not version_gte(api.api_version, PLATFORM_PUSH_API):
        stream: Iterator[dict[str, Any]] = api.push(
            repository, tag, stream=True, decode=True, auth_config=auth
        )
        return stream
    os_name, _, architecture = platform.partition("/")
    architecture, _, variant = architecture.partition("/")
    wanted = {"os": os_name, "architecture": architecture} | ({"variant": variant} if variant else {})
    response = api._post_json(
        api._url("/images/{0}/push", repository),
        None,
        headers={"X-Registry-Auth": docker_auth.encode_header(auth)},
        stream=True,
        params={"tag": tag, "platform": json.dumps(wanted)},
    )
    api._raise_for_status(response)
    events: Iterator[dict[str, Any]] = api._stream_helper(response, decode=True)
    return events


def _follow(events: Iterator[dict[str, Any]], reference: str, progress: _Progress, uploaded: set[str]) -> str:
    """Read the push's progress to its end; the digest it reports. Adds the layers it
    uploaded to `uploaded`."""
    digest = ""
    for event in events:
        cancel.raise_if_requested()
        if "error" in event or "errorDetail" in event:
            message = str((event.get("errorDetail") or {}).get("message") or event.get("error", ""))
            if any(marker in message.lower() for marker in _TRANSIENT):
                raise _TryAgain(f"broke off{progress.where()}: {_message_line(message)}")
            raise _push_error(reference, message)
        aux = event.get("aux") or {}
        status = str(event.get("status") or "")
        reported = _DIGEST_LINE.search(status)
        if aux.get("Digest"):
            digest = str(aux["Digest"])
        elif reported and not digest:
            digest = reported.group(1)
        progress.see(event)
        if status and event.get("id") and status in ("Pushed", "Layer already exists", "Mounted from"):
            github.info(f"  {event['id']}: {status}")
            if status == "Pushed":
                uploaded.add(str(event["id"]))
        if time.monotonic() - progress.at > PUSH_STALL_S:
            raise _TryAgain(f"made no progress for {PUSH_STALL_S:.0f} s{progress.where()}")
    return digest


def _message_line(message: str, limit: int = 200) -> str:
    return shown(message.strip().splitlines()[0] if message.strip() else "no message", limit)


def _push_error(reference: str, message: str) -> RegistryError:
    lower = message.lower()
    host = reference.split("/", 1)[0]
    if any(m in lower for m in ("connection refused", "no such host", "i/o timeout", "dial tcp")):
        return RegistryError(
            f"registry {host} is unreachable while pushing {reference}: {message}",
            f"check that the registry host '{host}' is right and reachable from this runner",
        )
    if any(m in lower for m in ("unauthorized", "authentication required", "no basic auth")):
        return RegistryError(
            f"registry {host} refused the login while pushing {reference}: {message}",
            "make sure 'registry' is the ECR registry of this account and region",
        )
    fix = push_rejection_fix(0, (), message)
    return PushRejectedError(f"registry {host} rejected the push of {reference}: {message}", fix)
