"""The registry's HTTP API (OCI distribution): read manifests, move tags, check results.

Layers, as in go-containerregistry: `Transport` owns the session, authentication and the
one bounded retry policy; `RegistryClient` names the operations. A failure becomes a
`RegistryError` whose message names the host; only errors marked temporary are retried.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from entrypoint.errors import PushRejectedError, RegistryError, push_rejection_fix, shown
from entrypoint.registry.reference import DIGEST_RE, REPOSITORY_RE, TAG_RE
from entrypoint.registry.transport import (
    REQUEST_TIMEOUT_S,
    Transport,
    origin,
    registry_codes,
    registry_message,
    short_error,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((*IMAGE_MANIFESTS, *INDEXES))

# A layer upload may take long, but never this long without the registry reading from it.
UPLOAD_STALL_S = 30.0
# A registry that ignores a Range header sends the whole blob: this much of it is read (a
# blob that small is then still of use), and the connection is dropped on the rest.
RANGE_FALLBACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Descriptor:
    digest: str
    media_type: str
    size: int


# BuildKit marks the attestation manifests of an index with this annotation.
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


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
            message, codes = registry_message(response), registry_codes(response)
            raise PushRejectedError(
                f"registry {self.host} rejected {what} (HTTP {response.status_code}: {message})",
                push_rejection_fix(response.status_code, codes, message),
                status=response.status_code,
                codes=codes,
            )
        return response.headers.get("Docker-Content-Digest", manifest.digest)

    def get_blob(self, repository: str, digest: str, *, limit: int | None = None) -> bytes:
        """The whole blob, checked against its digest. `limit`: the most bytes to take from the
        registry, for blobs read whole that a registry answer could make endless (a config)."""
        what = f"read blob {digest[:19]} of {repository}"
        if limit is None:
            response = self.transport.request("GET", self._path(repository, "blobs", digest), what)
            self._expect(response, 200, what)
            return self._verified(response.content, digest, what)
        response = self.transport.request("GET", self._path(repository, "blobs", digest), what, stream=True)
        try:
            self._expect(response, 200, what)
            content = self._read_at_most(response, limit + 1, what)
        finally:
            response.close()
        if len(content) > limit:
            raise RegistryError(
                f"registry {self.host} answered {what} with more than {limit} bytes, the most read of it",
                "check the image in the registry, push it again with docker or buildx, and rerun",
            )
        return self._verified(content, digest, what)

    def blob_range(self, repository: str, digest: str, start: int, stop: int, size: int) -> bytes | None:
        """Bytes [start, stop) of a blob of `size` bytes (the manifest's word), through an HTTP
        Range request: a few bytes of a layer without downloading it.

        None when the registry does not give exactly those bytes: it refused the range (416),
        answered another range or another blob size, or ignored the Range header and sent
        the whole blob (200). Of a whole blob no more than RANGE_FALLBACK_BYTES are read; a
        blob that small is used, once it hashes to its digest."""
        if not 0 <= start < stop <= size:
            raise ValueError(f"bytes [{start}, {stop}) are not within a blob of {size} bytes")
        what = f"read bytes {start}-{stop - 1} of blob {digest[:19]} of {repository}"
        response = self.transport.request(
            "GET",
            self._path(repository, "blobs", digest),
            what,
            headers={"Range": f"bytes={start}-{stop - 1}"},
            stream=True,
        )
        try:
            if response.status_code == 416:
                return None
            if response.status_code == 206:
                found = _content_range(response.headers.get("Content-Range", ""))
                if found not in ((start, stop, size), (start, stop, None)):
                    return None
                # One byte more than asked shows a body longer than its Content-Range.
                content = self._read_at_most(response, stop - start + 1, what)
                return content if len(content) == stop - start else None
            self._expect(response, 200, what)
            content = self._read_at_most(response, RANGE_FALLBACK_BYTES + 1, what)
        finally:
            response.close()
        if len(content) != size or size > RANGE_FALLBACK_BYTES:
            return None
        return self._verified(content, digest, what)[start:stop]

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

    def start_upload(self, repository: str) -> str:
        """Open a blob upload; its URL path."""
        what = f"start an upload to {repository}"
        response = self.transport.request("POST", self._path(repository, "blobs", "uploads/"), what)
        self._expect(response, 202, what)
        return self._upload_path(response, what)

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> str | None:
        """Ask the registry to link a blob it holds in `source_repository` into `repository`:
        None when it did (201), else the upload it opened instead (202, as the spec has
        registries that do not mount answer), for the blob to be sent there."""
        self._path(source_repository, "blobs", digest)  # both names exactly what they claim
        what = f"mount blob {digest[:19]} into {repository}"
        response = self.transport.request(
            "POST",
            self._path(repository, "blobs", "uploads/"),
            what,
            params={"mount": digest, "from": source_repository},
        )
        if response.status_code == 201:
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
                f"the transfer of blob {digest[:19]} broke: {short_error(exc)}",
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
            path = self._on_registry(response, following.group(1), what)
        return found

    def _upload_path(self, response: requests.Response, what: str) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise RegistryError(
                f"registry {self.host} gave no upload location to {what}",
                "check that 'registry' is an OCI registry",
            )
        return self._on_registry(response, location, what)

    def _on_registry(self, response: requests.Response, reference: str, what: str) -> str:
        """A URL the registry handed back (an upload's Location, a page's Link), as a path on
        this registry: the login goes with it, so an answer must not send it elsewhere.

        Resolved as RFC 3986 (section 5) says, against the URL of the request it answers
        (RFC 9110 10.2.2, RFC 8288 3.2), and kept only if it lands on the registry's own
        scheme, host and port, with no user part. Strictly: a reference with a scheme is
        absolute, so `https:@evil.example/x` names no host at all, where `urljoin` would
        read it as a relative path."""
        parts = urlsplit(reference)
        target = parts if parts.scheme else urlsplit(urljoin(response.url, reference))
        if origin(target) != self.transport.origin:
            raise RegistryError(
                f"registry {self.host} sent the request to {what} to '{shown(reference, 120)}', "
                f"which is not on {self.transport.base}; the login was not sent there",
                "use the registry's own endpoint for 'registry'",
            )
        # The fragment stays behind: it is never sent, and a query appended after it would be lost.
        return (target.path or "/") + (f"?{target.query}" if target.query else "")

    def _read_at_most(self, response: requests.Response, limit: int, what: str) -> bytes:
        """At most `limit` bytes of a streamed body (a transfer encoding undone); the caller
        closes the response, which drops the rest unread."""
        parts: list[bytes] = []
        count = 0
        try:
            for chunk in response.iter_content(min(limit, 1 << 16)):
                parts.append(chunk[: limit - count])
                count += len(parts[-1])
                if count >= limit:
                    break
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise RegistryError(
                f"registry {self.host} broke off the answer to {what}: {short_error(exc)}",
                f"check that the registry host '{self.host}' is reachable from this runner, then rerun",
                temporary=True,
            ) from exc
        return b"".join(parts)

    def _expect(self, response: requests.Response, status: int, what: str) -> None:
        if response.status_code == status:
            return
        if response.status_code == 403:
            raise RegistryError(
                f"registry {self.host} denied the request to {what} (HTTP 403: {registry_message(response)})",
                "allow the ECR image actions (ecr:BatchGetImage, ecr:PutImage, ecr:Initiate"
                "LayerUpload, ...) on this repository to the role this job assumes",
            )
        raise RegistryError(
            f"registry {self.host} failed to {what}: HTTP {response.status_code} "
            f"{registry_message(response)}",
            "see the registry's message; rerun if it was transient",
        )


def _content_range(value: str) -> tuple[int, int, int | None] | None:
    """A 206's `Content-Range: bytes first-last/size` as (first, last + 1, size or None for `*`)."""
    matched = re.fullmatch(r"\s*bytes\s+(\d{1,19})-(\d{1,19})/(\d{1,19}|\*)\s*", value)
    if matched is None:
        return None
    first, last, size = matched.groups()
    return int(first), int(last) + 1, None if size == "*" else int(size)


def index_entries(index: Manifest) -> list[dict[str, Any]]:
    return [e for e in index.json().get("manifests") or [] if isinstance(e, dict)]


def index_images(index: Manifest) -> list[dict[str, Any]]:
    """The image entries of an index, its attestation manifests left out: the one place
    that tells them apart, for the checks, the publish that reduces an index, and promote."""
    return [e for e in index_entries(index) if not (e.get("annotations") or {}).get(ATTESTATION_ANNOTATION)]


def platform_of(entry: dict[str, Any]) -> str:
    """os/architecture[/variant] of an index entry."""
    platform = entry.get("platform") or {}
    name = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return f"{name}/{platform['variant']}" if platform.get("variant") else name
