"""The registry's HTTP API (OCI distribution): read manifests, move tags, check results.

Layers, as in go-containerregistry: `Transport` owns the session, authentication and the
one bounded retry policy; `RegistryClient` names the operations. A failure becomes a
`RegistryError` whose message names the host; only errors marked temporary are retried.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import requests
import urllib3

from entrypoint.errors import PushRejectedError, RegistryError, shown
from entrypoint.reference import DIGEST_RE, REPOSITORY_RE, TAG_RE, hostname, is_ecr, is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((*IMAGE_MANIFESTS, *INDEXES))

# The whole time one operation may spend retrying before it reports the registry as down;
# with the 5 s request timeout this keeps the error line within 30 s of the fault.
RETRY_BUDGET_S = 20.0
REQUEST_TIMEOUT_S = 5.0
# A layer upload may take long, but never this long without the registry reading from it.
UPLOAD_STALL_S = 30.0


@dataclass(frozen=True)
class Descriptor:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    raw: bytes

    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES

    def descriptor(self) -> Descriptor:
        return Descriptor(digest=self.digest, media_type=self.media_type, size=len(self.raw))


def scheme_for(host: str) -> str:
    """Plain HTTP only for loopback registries, as the Docker engine itself allows."""
    return "http" if is_loopback(host) else "https"


@dataclass(frozen=True)
class CredentialScope:
    """Where the ECR login may be sent: the registry the login names, Amazon ECR registry
    hosts, and hosts the workflow author typed into an input. A host that only a plan, an
    image URI or a registry answer names gets nothing: a pull request that changes a
    Terraform image_uri must not receive the deploy role's registry token."""

    login_registry: str
    named: tuple[tuple[str, str], ...] = ()  # (host, the input that named it)

    def allows(self, host: str) -> bool:
        host = host.lower()
        return (
            host == self.login_registry.lower()
            or is_ecr(host)
            or any(host == named.lower() for named, _ in self.named)
        )

    def require(self, host: str, where: str, input_name: str = "registry") -> None:
        if not self.allows(host):
            raise RegistryError(
                f"refused to send the ECR login to {host}, which {where} names: it is neither "
                f"the ECR registry the login is for ({self.login_registry}), an ECR registry "
                "host, nor a host given in an input",
                f"if {host} is your registry (a proxy or mirror of ECR), set the '{input_name}' "
                "input to it; otherwise fix the image URI",
            )


class _Temporary(Exception):
    """A failure worth another try: connection refused, timeout, 429, 5xx."""


class Transport:
    def __init__(
        self,
        host: str,
        username: str,
        password: str,
        *,
        scope: CredentialScope,
        where: str = "the 'registry' input",
        budget_s: float = RETRY_BUDGET_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Refused here, before any request: the credentials never leave for a host out of scope.
        scope.require(host, where)
        self.host = host
        self.base = f"{scheme_for(host)}://{host}"
        self._auth = (username, password)
        self._bearer: dict[str, str] = {}
        self._budget_s = budget_s
        self._sleep = sleep
        self._session = requests.Session()

    def request(
        self, method: str, path: str, what: str, *, once: bool = False, **kwargs: Any
    ) -> requests.Response:
        """Send one request with authentication, retrying temporary failures within budget.

        `once`: a single try, for a body that is a stream and cannot be sent again; a
        temporary failure is then a `RegistryError` with `temporary` set, for the caller's
        own retry of the whole transfer."""
        if once:
            try:
                return self._authorized(method, path, **kwargs)
            except _Temporary as exc:
                raise RegistryError(
                    f"registry {self.host} failed while trying to {what}: {exc}",
                    f"check that the registry host '{self.host}' is reachable from this runner, then rerun",
                    temporary=True,
                ) from exc
        deadline = time.monotonic() + self._budget_s
        delay = 0.5
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._authorized(method, path, **kwargs)
            except _Temporary as exc:
                if time.monotonic() + delay >= deadline:
                    raise RegistryError(
                        f"registry {self.host} is unreachable while trying to {what}: {exc} "
                        f"({attempts} tries in {self._budget_s:.0f} s)",
                        f"check that the registry host '{self.host}' is right and reachable from "
                        "this runner (VPC endpoint, proxy, firewall), then rerun",
                    ) from exc
                self._sleep(delay)
                delay = min(delay * 2, 4.0)

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        token = self._bearer.get(_scope(path))
        auth = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        else:
            auth = self._auth
        try:
            response = self._session.request(
                method,
                self.base + path,
                headers=headers,
                auth=auth,
                timeout=kwargs.pop("timeout", REQUEST_TIMEOUT_S),
                # Registries send blob downloads to their storage (ECR: S3), and requests drops
                # the Authorization header on the way; nothing else of the API redirects.
                allow_redirects=method == "GET" and "/blobs/" in path,
                **kwargs,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Temporary(_short(exc)) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Temporary(f"HTTP {response.status_code} {response.text[:200]}")
        return response

    def _authorized(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._send(method, path, **dict(kwargs))
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer"):
            # Token-auth registries (proxies, mirrors) trade the basic credentials for a token.
            self._bearer[_scope(path)] = self._token(challenge)
            response = self._send(method, path, **dict(kwargs))
        if response.status_code == 401:
            raise RegistryError(
                f"registry {self.host} refused the login for user '{self._auth[0]}' "
                f"(HTTP 401: {_registry_message(response)})",
                "make sure 'registry' is the ECR registry of this account and region (or "
                "accepts its credentials) and the role may call ecr:GetAuthorizationToken",
            )
        return response

    def _token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(
                f"registry {self.host} asked for a token without a realm",
                "use a registry that supports basic or token authentication",
            )
        self._require_realm(realm)
        try:
            reply = self._session.get(
                realm, params=params, auth=self._auth, timeout=REQUEST_TIMEOUT_S, allow_redirects=False
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Temporary(_short(exc)) from exc
        if reply.status_code != 200:
            raise RegistryError(
                f"registry {self.host}'s token service refused the login (HTTP {reply.status_code})",
                "check the registry credentials",
            )
        try:
            body = reply.json()
        except ValueError as exc:
            raise RegistryError(
                f"registry {self.host}'s token service answered something that is not JSON",
                "check that 'registry' is an OCI registry",
            ) from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"registry {self.host}'s token service answered without a token",
                "check that 'registry' is an OCI registry",
            )
        return token

    def _require_realm(self, realm: str) -> None:
        """The basic credentials go to a token realm only on the registry's own host, over
        HTTPS (plain HTTP on loopback only): a challenge must not redirect them."""
        parts = urlsplit(realm)
        realm_host = (parts.hostname or "").lower()
        secure = parts.scheme == "https" or (parts.scheme == "http" and is_loopback(realm_host))
        if not secure or realm_host != hostname(self.host) or parts.username or parts.password:
            raise RegistryError(
                f"registry {self.host} asked for the login to be sent to the token service "
                f"{parts.scheme}://{parts.hostname}{parts.path}, which is not HTTPS on "
                f"{hostname(self.host)}; the login was not sent",
                "use the registry's own endpoint for 'registry' (ECR, or a proxy that serves its "
                "token service on its own host over HTTPS)",
            )


class _Hashed:
    """A blob on its way from one registry to another: read once, front to back, hashed as it
    goes. `__len__` lets requests send a Content-Length instead of chunked encoding."""

    def __init__(self, source: IO[bytes], size: int) -> None:
        self._source = source
        self._size = size
        self._hash = hashlib.sha256()
        self.count = 0

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int = -1) -> bytes:
        data = self._source.read(amount if amount and amount > 0 else 1 << 20)
        self._hash.update(data)
        self.count += len(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _scope(path: str) -> str:
    """Tokens are scoped to a repository: /v2/<name>/manifests/... and /v2/<name>/blobs/..."""
    return re.split(r"/(?:manifests|blobs)/", path, maxsplit=1)[0]


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in (
        "Connection refused",
        "timed out",
        "Name or service not known",
        "Temporary failure in name resolution",
        "No route to host",
    ):
        if marker in text:
            return marker.lower()
    return text[:200]


def _registry_message(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return response.text[:200] or response.reason
    if not errors:
        return response.reason
    first = errors[0]
    return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")


class RegistryClient:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.host = transport.host

    def _path(self, repository: str, kind: str, reference: str) -> str:
        """/v2/<repository>/<kind>/<reference>, for names that are exactly what they claim:
        digests and tags come from registry answers and plans too, and one with a slash or
        a newline would address something else."""
        valid_reference = (
            DIGEST_RE.fullmatch(reference)
            or (kind == "manifests" and TAG_RE.fullmatch(reference))
            or (kind, reference) in (("blobs", "uploads/"), ("tags", "list"))
        )
        if not REPOSITORY_RE.fullmatch(repository) or not valid_reference:
            asked = shown(f"{repository}:{reference}", 120)
            raise RegistryError(
                f"refused to ask registry {self.host} for '{asked}', which is not a valid "
                "repository and " + ("digest" if kind == "blobs" else "tag or digest"),
                "check the image reference; digests are sha256:<64 hex digits>",
            )
        return f"/v2/{repository}/{kind}/{reference}"

    def _verified(self, content: bytes, digest: str, what: str) -> bytes:
        """Content fetched by digest must hash to it: a registry (or anything between) that
        answers other bytes would have the checks judge an image that is not the one deployed."""
        found = "sha256:" + hashlib.sha256(content).hexdigest()
        if found != digest:
            raise RegistryError(
                f"registry {self.host} answered {what} with content whose digest is {found}, not {digest}",
                "the registry or a proxy between altered the content: check the 'registry' host "
                "and the network path, then rerun",
            )
        return content

    def ping(self) -> None:
        """Reach the registry and prove the login works, before anything is built."""
        response = self.transport.request("GET", "/v2/", "log in")
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.host} answered HTTP {response.status_code} to the login check",
                "make sure 'registry' points at an OCI registry (ECR, or a proxy to it)",
            )

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        response = self.transport.request(
            "HEAD",
            self._path(repository, "manifests", reference),
            f"look up {repository}:{reference}",
            headers={"Accept": ACCEPT},
        )
        if response.status_code == 404:
            return None
        self._expect(response, 200, f"look up {repository}:{reference}")
        digest = response.headers.get("Docker-Content-Digest", "")
        if not DIGEST_RE.fullmatch(digest):
            # Some registries omit the digest on HEAD; GET always lets us compute it.
            return self.get_manifest(repository, reference).descriptor()
        return Descriptor(
            digest=digest,
            media_type=response.headers.get("Content-Type", "").split(";")[0],
            size=int(response.headers.get("Content-Length", "0")),
        )

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        what = f"read {repository}:{reference}"
        response = self.transport.request(
            "GET", self._path(repository, "manifests", reference), what, headers={"Accept": ACCEPT}
        )
        self._expect(response, 200, what)
        if DIGEST_RE.fullmatch(reference):
            self._verified(response.content, reference, what)
        digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
        return Manifest(
            digest=digest,
            media_type=response.headers.get("Content-Type", "").split(";")[0],
            raw=response.content,
        )

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        what = f"tag {repository}:{tag}"
        response = self.transport.request(
            "PUT",
            self._path(repository, "manifests", tag),
            what,
            headers={"Content-Type": manifest.media_type},
            data=manifest.raw,
        )
        if response.status_code not in (200, 201):
            raise PushRejectedError(
                f"registry {self.host} rejected {what} (HTTP {response.status_code}: "
                f"{_registry_message(response)})",
                _push_fix(response),
            )
        return response.headers.get("Docker-Content-Digest", manifest.digest)

    def get_blob(self, repository: str, digest: str) -> bytes:
        what = f"read blob {digest[:19]} of {repository}"
        response = self.transport.request("GET", self._path(repository, "blobs", digest), what)
        self._expect(response, 200, what)
        return self._verified(response.content, digest, what)

    @contextmanager
    def stream_blob(self, repository: str, digest: str) -> Iterator[IO[bytes]]:
        """The blob as a file to read once, front to back, for layers too big to hold.

        Leaving the block early closes the connection, so a reader that has seen enough
        stops the download there.
        """
        what = f"read blob {digest[:19]} of {repository}"
        # Read only as far as a check needs, a streamed layer cannot be hashed whole: for it
        # the registry's word is taken, as the engine takes it until a pull completes.
        response = self.transport.request("GET", self._path(repository, "blobs", digest), what, stream=True)
        try:
            self._expect(response, 200, what)
            # Undo only a transfer encoding; a gzip layer itself stays gzip.
            response.raw.decode_content = True
            # urllib3's response is a binary file (io.IOBase) that typeshed does not call IO.
            yield cast("IO[bytes]", response.raw)
        finally:
            response.close()

    def has_blob(self, repository: str, digest: str) -> bool:
        what = f"look up blob {digest[:19]} in {repository}"
        response = self.transport.request("HEAD", self._path(repository, "blobs", digest), what)
        if response.status_code == 404:
            return False
        self._expect(response, 200, what)
        return True

    def start_upload(self, repository: str, mount: tuple[str, str] | None = None) -> str | None:
        """Open a blob upload and return its URL path; with `mount` = (digest, repository on
        this registry), ask the registry to link the blob instead: None when it did (201),
        else the upload it opened (registries that do not mount answer 202, as the spec says)."""
        path = f"/v2/{repository}/blobs/uploads/"
        self._path(repository, "blobs", mount[0] if mount else "sha256:" + "0" * 64)  # validates
        params = {}
        if mount:
            if not REPOSITORY_RE.fullmatch(mount[1]):
                raise RegistryError(
                    f"refused to mount from '{shown(mount[1], 120)}'", "check the source image"
                )
            params = {"mount": mount[0], "from": mount[1]}
        what = f"start an upload to {repository}"
        response = self.transport.request("POST", path, what, params=params)
        if mount and response.status_code == 201:
            return None
        self._expect(response, 202, what)
        return self._upload_path(response, what)

    def upload_blob(self, location: str, digest: str, size: int, body: IO[bytes]) -> None:
        """Send the whole blob in one PATCH (streamed from `body`), then close the upload with
        its digest, which the registry checks against what it received. One try each: the
        caller retries the whole upload, since a stream cannot be rewound."""
        what = f"upload blob {digest[:19]}"
        sent = _Hashed(body, size)
        try:
            response = self.transport.request(
                "PATCH",
                location,
                what,
                once=True,
                data=sent,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                timeout=(REQUEST_TIMEOUT_S, UPLOAD_STALL_S),
            )
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            # The source's download broke while it was being sent (reset, short read).
            raise RegistryError(
                f"the transfer of blob {digest[:19]} broke: {_short(exc)}",
                "check both registries are reachable from this runner, then rerun",
                temporary=True,
            ) from exc
        self._expect(response, 202, what)
        if sent.digest() != digest:
            # Closing the upload would fail the same way at the target; say which side lied.
            raise RegistryError(
                f"the source sent {sent.count} bytes hashing to {sent.digest()} for blob {digest}",
                "the source registry or a proxy altered the content: check the source registry "
                "and the network path, then rerun",
            )
        location = self._upload_path(response, what)
        separator = "&" if "?" in location else "?"
        response = self.transport.request("PUT", f"{location}{separator}digest={digest}", what, once=True)
        self._expect(response, 201, what)

    def tags(self, repository: str) -> list[str]:
        """Every tag of the repository, following the registry's pages."""
        path = self._path(repository, "tags", "list") + "?n=1000"
        found: list[str] = []
        what = f"list the tags of {repository}"
        for _ in range(1000):
            response = self.transport.request("GET", path, what)
            if response.status_code == 404:
                return found
            self._expect(response, 200, what)
            try:
                body = response.json()
            except ValueError as exc:
                raise RegistryError(
                    f"registry {self.host} answered {what} with something that is not JSON",
                    "check that 'registry' is an OCI registry",
                ) from exc
            found += [t for t in (body.get("tags") or []) if isinstance(t, str) and TAG_RE.fullmatch(t)]
            following = re.search(r"<([^>]+)>;\s*rel=\"?next\"?", response.headers.get("Link", ""))
            if not following:
                return found
            path = self._same_host(following.group(1), what)
        return found

    def _upload_path(self, response: requests.Response, what: str) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise RegistryError(
                f"registry {self.host} gave no upload location to {what}",
                "check that 'registry' is an OCI registry",
            )
        return self._same_host(location, what)

    def _same_host(self, url: str, what: str) -> str:
        """A URL the registry handed back, as a path on this registry: the login goes with
        it, so a registry answer must not send it elsewhere."""
        parts = urlsplit(url)
        if parts.netloc and parts.netloc.lower() != self.host.lower():
            raise RegistryError(
                f"registry {self.host} sent the request to {what} to another host "
                f"({shown(parts.netloc, 80)}); the login was not sent there",
                "use the registry's own endpoint for 'registry'",
            )
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def _expect(self, response: requests.Response, status: int, what: str) -> None:
        if response.status_code == status:
            return
        if response.status_code == 403:
            raise RegistryError(
                f"registry {self.host} denied the request to {what} (HTTP 403: "
                f"{_registry_message(response)})",
                "allow the ECR image actions (ecr:BatchGetImage, ecr:PutImage, ecr:Initiate"
                "LayerUpload, ...) on this repository to the role this job assumes",
            )
        raise RegistryError(
            f"registry {self.host} failed to {what}: HTTP {response.status_code} "
            f"{_registry_message(response)}",
            "see the registry's message; rerun if it was transient",
        )


def _push_fix(response: requests.Response) -> str:
    text = _registry_message(response).lower()
    if "immutable" in text or "already exists" in text:
        return (
            'the repository\'s tags are immutable: set image_tag_mutability = "MUTABLE" on the '
            "aws_ecr_repository (or IMMUTABLE_WITH_EXCLUSION excluding the environment and "
            "latest tags)"
        )
    if response.status_code in (403, 405) or "denied" in text or "unsupported" in text:
        return (
            "the registry does not accept pushes here: check the role's ecr:PutImage permission "
            "and that the registry is not read-only"
        )
    return "see the registry's message above"
