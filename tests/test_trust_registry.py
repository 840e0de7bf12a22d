"""A registry's answers name the URLs the login is sent to next: an upload's Location, the
next page's Link, a token realm. Each is tried here with values that would have carried the
login to another host (issue 23, finding 3), between real local servers: the hostile
registry, and an accomplice on another address (or port) where a leaked login would land.

A leading `.` only extends a host named without a port (an ECR host becomes
`….amazonaws.com.evil.example`), which no local server can stand for; those cases go through
an HTTP proxy that stands for the whole network, so every host the client asks for is
recorded, whatever its name.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from contextlib import ExitStack
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from entrypoint.errors import RegistryError
from entrypoint.registry.client import RegistryClient
from entrypoint.registry.transport import CredentialScope, Transport
from tests.support.fakehttp import FakeHttp, Reply, Request

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    Answer = Callable[[Request, FakeHttp], Reply]

USER, PASSWORD = "AWS", "deploy-role-registry-token"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BLOB = b"one layer\n"
BLOB_DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
UPLOAD = "/v2/app/blobs/uploads/u1"
FIRST_PAGE = "/v2/app/tags/list?n=1000"
# Served through the proxy: a name without a port (port 80), loopback so plain HTTP.
NAMED = "localhost"

# Absolute references (they have a scheme) with no authority: they name no host at all.
# Appended to the base as a path they became `http://<registry>@<evil>/…`.
NO_HOST = {
    "https-colon-at": "https:@{evil}/v2/app/x",
    "http-colon-at": "http:@{evil}/v2/app/x",
}
STAGES = ("POST", "PATCH")  # the answer that carries the Location: upload start, or data sent


def accomplice(request: Request, server: FakeHttp) -> Reply:
    """Where a leaked login lands: answers like a registry, so a leak goes unnoticed."""
    if request.method in ("POST", "PATCH"):
        return Reply(202, headers={"Location": UPLOAD})
    if request.method == "PUT":
        return Reply(201, headers={"Docker-Content-Digest": BLOB_DIGEST})
    return Reply(200, json.dumps({"tags": ["stolen"]}).encode())


def uploads(post: str, patch: str, evil: str = "", registry: str = "") -> Answer:
    """A registry whose upload answers send the client to `post` (after POST) and `patch`
    (after PATCH); `{evil}` and `{registry}` in them are filled in."""

    def answer(request: Request, server: FakeHttp) -> Reply:
        fill = {"evil": evil, "registry": registry or server.host}
        if request.method == "POST":
            return Reply(202, headers={"Location": post.format(**fill)})
        if request.method == "PATCH":
            return Reply(202, headers={"Location": patch.format(**fill)})
        if request.method == "PUT":
            return Reply(201, headers={"Docker-Content-Digest": BLOB_DIGEST})
        return Reply(404)

    return answer


def pages(link: str, evil: str = "", registry: str = "") -> Answer:
    """A registry whose first page of tags links to `link`; every other page is the last."""

    def answer(request: Request, server: FakeHttp) -> Reply:
        if request.path.endswith(FIRST_PAGE):
            target = link.format(evil=evil, registry=registry or server.host)
            return Reply(200, json.dumps({"tags": ["a"]}).encode(), {"Link": f'<{target}>; rel="next"'})
        return Reply(200, json.dumps({"tags": ["b"]}).encode())

    return answer


def client_of(host: str) -> RegistryClient:
    return RegistryClient(Transport(host, USER, PASSWORD, scope=CredentialScope(host)))


def push_blob(client: RegistryClient) -> None:
    """What a copy does for each layer: open an upload, send the data, close it."""
    location = client.start_upload("app")
    client.upload_blob(location, BLOB_DIGEST, len(BLOB), io.BytesIO(BLOB))


def attempt(action: Callable[[], object]) -> RegistryError | None:
    try:
        action()
    except RegistryError as exc:
        return exc
    return None


def stage_locations(stage: str, payload: str) -> tuple[str, str]:
    """(POST's Location, PATCH's Location) with `payload` in the given stage."""
    return (payload, UPLOAD) if stage == "POST" else (UPLOAD, payload)


@pytest.fixture
def evil() -> Iterator[FakeHttp]:
    """The accomplice, on another loopback address than the registry's 127.0.0.1."""
    with FakeHttp(accomplice, address="127.0.0.2") as server:
        yield server


# ------------------------------------------------------ an upload's Location


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("payload", NO_HOST.values(), ids=NO_HOST.keys())
def test_an_upload_location_that_names_no_host_is_refused(evil: FakeHttp, payload: str, stage: str) -> None:
    post, patch = stage_locations(stage, payload)
    with FakeHttp(uploads(post, patch, evil=evil.host)) as hostile:
        error = attempt(lambda: push_blob(client_of(hostile.host)))
    assert evil.requests == []
    assert error is not None
    what = "start an upload to app" if stage == "POST" else f"upload blob {BLOB_DIGEST[:19]}"
    assert f"sent the request to {what} to '{payload.format(evil=evil.host)}'" in error.line()
    assert f"which is not on http://{hostile.host}; the login was not sent there" in error.line()
    # Nothing after the refusal: what was to go elsewhere is not sent anywhere.
    assert [r.method for r in hostile.requests] == (["POST"] if stage == "POST" else ["POST", "PATCH"])


@pytest.mark.parametrize("stage", STAGES)
def test_an_upload_location_that_reads_as_a_path_stays_on_the_registry(evil: FakeHttp, stage: str) -> None:
    """`@<evil>/…` has no scheme and no `//`: RFC 3986 makes it a relative path, resolved
    against the request it answers, so it names a path on the registry (as for Docker,
    containerd and go-containerregistry); appended to the base it named <evil>'s host."""
    post, patch = stage_locations(stage, "@{evil}/v2/app/blobs/uploads/u1")
    with FakeHttp(uploads(post, patch, evil=evil.host)) as hostile:
        push_blob(client_of(hostile.host))
    assert evil.requests == []
    resolved = f"/v2/app/blobs/uploads/@{evil.host}/v2/app/blobs/uploads/u1"
    sent = [(r.method, r.path.split("?")[0]) for r in hostile.requests]
    landed = ("PATCH", resolved) if stage == "POST" else ("PUT", resolved)
    assert landed in sent, sent


@pytest.mark.parametrize(
    "location",
    [UPLOAD, "u1", "http://{registry}" + UPLOAD, "HTTP://{registry}" + UPLOAD + "#ignored"],
    ids=["absolute-path", "relative-path", "absolute-url", "absolute-url-case-and-fragment"],
)
def test_an_upload_location_on_the_registry_still_works(location: str) -> None:
    with FakeHttp(uploads(location, location)) as registry:
        push_blob(client_of(registry.host))
    assert [(r.method, r.path) for r in registry.requests] == [
        ("POST", "/v2/app/blobs/uploads/"),
        ("PATCH", UPLOAD),
        ("PUT", f"{UPLOAD}?digest={BLOB_DIGEST}"),
    ]
    assert all(r.headers.get("Authorization") == BASIC for r in registry.requests)


def test_an_upload_location_keeps_its_query() -> None:
    """Registries keep the upload's state in the query (distribution's `_state`)."""
    with FakeHttp(uploads(UPLOAD + "?_state=s1%3D", UPLOAD + "?_state=s2%3D")) as registry:
        push_blob(client_of(registry.host))
    assert [(r.method, r.path) for r in registry.requests][1:] == [
        ("PATCH", f"{UPLOAD}?_state=s1%3D"),
        ("PUT", f"{UPLOAD}?_state=s2%3D&digest={BLOB_DIGEST}"),
    ]


# ------------------------------------------------------ a tag page's Link


@pytest.mark.parametrize("payload", NO_HOST.values(), ids=NO_HOST.keys())
def test_a_tag_page_link_that_names_no_host_is_refused(evil: FakeHttp, payload: str) -> None:
    with FakeHttp(pages(payload, evil=evil.host)) as hostile:
        error = attempt(lambda: client_of(hostile.host).tags("app"))
    assert evil.requests == []
    assert error is not None
    assert "sent the request to list the tags of app to" in error.line()
    assert f"which is not on http://{hostile.host}; the login was not sent there" in error.line()
    assert [r.path for r in hostile.requests] == [FIRST_PAGE]


def test_a_tag_page_link_that_reads_as_a_path_stays_on_the_registry(evil: FakeHttp) -> None:
    with FakeHttp(pages("@{evil}/v2/app/tags/list?last=a", evil=evil.host)) as hostile:
        tags = client_of(hostile.host).tags("app")
    assert evil.requests == []
    assert tags == ["a", "b"]
    assert [r.path for r in hostile.requests] == [
        FIRST_PAGE,
        f"/v2/app/tags/@{evil.host}/v2/app/tags/list?last=a",
    ]


@pytest.mark.parametrize(
    "link",
    [
        "/v2/app/tags/list?last=a&n=1000",
        "list?last=a&n=1000",
        "http://{registry}/v2/app/tags/list?last=a&n=1000",
    ],
    ids=["absolute-path", "relative-path", "absolute-url"],
)
def test_a_tag_page_link_on_the_registry_still_works(link: str) -> None:
    with FakeHttp(pages(link)) as registry:
        tags = client_of(registry.host).tags("app")
    assert tags == ["a", "b"]
    assert [r.path for r in registry.requests] == [FIRST_PAGE, "/v2/app/tags/list?last=a&n=1000"]


# ------------------------------------------------------ a registry named without a port


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Answer], FakeHttp]]:
    """`network(registry_answer)`: a proxy every HTTP request goes through, answering for
    NAMED with `registry_answer` and as the accomplice for any other host."""
    with ExitStack() as servers:

        def start(registry_answer: Answer) -> FakeHttp:
            def answer(request: Request, server: FakeHttp) -> Reply:
                if urlsplit(request.path).hostname == NAMED:
                    return registry_answer(request, server)
                return accomplice(request, server)

            proxy = servers.enter_context(FakeHttp(answer))
            for name in ("http_proxy", "HTTP_PROXY"):
                monkeypatch.setenv(name, f"http://{proxy.host}")
            for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
                monkeypatch.delenv(name, raising=False)
            return proxy

        yield start


def elsewhere(proxy: FakeHttp) -> list[Request]:
    """What the network was asked for on hosts other than the registry's."""
    return [r for r in proxy.requests if urlsplit(r.path).hostname != NAMED]


@pytest.mark.parametrize(
    ("payload", "resolved"),
    [
        (
            ".evil.example/v2/app/blobs/uploads/u1",
            "/v2/app/blobs/uploads/.evil.example/v2/app/blobs/uploads/u1",
        ),
        (
            "@evil.example/v2/app/blobs/uploads/u1",
            "/v2/app/blobs/uploads/@evil.example/v2/app/blobs/uploads/u1",
        ),
        ("https:@evil.example/x", None),
    ],
    ids=["leading-dot", "leading-at", "https-colon-at"],
)
@pytest.mark.parametrize("stage", STAGES)
def test_an_upload_location_cannot_extend_a_host_named_without_port(
    network: Callable[[Answer], FakeHttp], payload: str, resolved: str | None, stage: str
) -> None:
    proxy = network(uploads(*stage_locations(stage, payload)))
    error = attempt(lambda: push_blob(client_of(NAMED)))
    assert elsewhere(proxy) == []
    if resolved is None:
        assert error is not None
        assert f"which is not on http://{NAMED}; the login was not sent there" in error.line()
    else:
        assert error is None
        sent = [urlsplit(r.path).path for r in proxy.requests]
        assert resolved in sent, sent


@pytest.mark.parametrize(
    ("payload", "resolved"),
    [
        (".evil.example/v2/app/tags/list?last=a", "/v2/app/tags/.evil.example/v2/app/tags/list"),
        ("@evil.example/v2/app/tags/list?last=a", "/v2/app/tags/@evil.example/v2/app/tags/list"),
        ("https:@evil.example/x", None),
    ],
    ids=["leading-dot", "leading-at", "https-colon-at"],
)
def test_a_tag_page_link_cannot_extend_a_host_named_without_port(
    network: Callable[[Answer], FakeHttp], payload: str, resolved: str | None
) -> None:
    proxy = network(pages(payload))
    error = attempt(lambda: client_of(NAMED).tags("app"))
    assert elsewhere(proxy) == []
    if resolved is None:
        assert error is not None
        assert f"which is not on http://{NAMED}; the login was not sent there" in error.line()
    else:
        assert error is None
        assert urlsplit(proxy.requests[-1].path).path == resolved


@pytest.mark.parametrize("location", ["http://localhost:80" + UPLOAD, "HTTP://LocalHost" + UPLOAD])
def test_the_registrys_default_port_and_name_case_are_the_same_place(
    network: Callable[[Answer], FakeHttp], location: str
) -> None:
    proxy = network(uploads(location, location))
    push_blob(client_of(NAMED))
    assert [urlsplit(r.path).path for r in proxy.requests] == ["/v2/app/blobs/uploads/", UPLOAD, UPLOAD]
    assert all(r.headers.get("Authorization") == BASIC for r in proxy.requests)


# ------------------------------------------------------ the transport's own last line


@pytest.mark.parametrize(
    "path", ["@{evil}/v2/", ".evil.example/v2/", "v2/", ""], ids=["at", "dot", "no-slash", "empty"]
)
def test_the_transport_sends_only_paths_on_the_registry(evil: FakeHttp, path: str) -> None:
    """Whatever a caller hands it, the transport appends only a path that starts with `/`."""
    with FakeHttp(accomplice) as registry:
        transport = Transport(registry.host, USER, PASSWORD, scope=CredentialScope(registry.host))
        error = attempt(lambda: transport.request("GET", path.format(evil=evil.host), "list the tags"))
    assert evil.requests == []
    assert registry.requests == []
    assert error is not None
    assert "which is not a path on it; the login was not sent there" in error.line()


# ------------------------------------------------------ a token realm


def test_a_token_realm_on_another_port_of_the_registrys_host_gets_no_login() -> None:
    """Another port is another service: the same machine may run something that is not the
    registry's token service, and the basic login must not reach it."""

    def token_service(request: Request, server: FakeHttp) -> Reply:
        return Reply(200, json.dumps({"token": "t" * 20}).encode())

    with FakeHttp(token_service) as other_port:

        def answer(request: Request, server: FakeHttp) -> Reply:
            if request.headers.get("Authorization", "").startswith("Bearer "):
                return Reply(200, b"{}")
            realm = f"http://{other_port.host}/token"
            return Reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'})

        with FakeHttp(answer) as hostile:
            assert other_port.host.split(":")[0] == hostile.host.split(":")[0]
            error = attempt(client_of(hostile.host).ping)
    assert other_port.requests == []
    assert error is not None
    assert (
        f"token service http://{other_port.host}/token, which is not HTTPS on {hostile.host}" in error.line()
    )
    assert "the login was not sent" in error.line()
