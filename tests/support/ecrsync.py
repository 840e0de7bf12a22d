"""The local stack as ECR for image scanning: moto's ECR knows only images put through its API,
while the tests push to a CNCF registry. `EcrSync` receives the registry's push notifications
(`Registry(notify_url=...)`, tests/support/stack.py) and puts every pushed manifest into moto's
ECR byte for byte, so the digest ECR's API knows is the registry's, as on AWS where both are one
service. Like ECR's, the sync takes a moment after the push: `wait` blocks until it is done.

`set_findings` gives moto the answer DescribeImageScanFindings returns for an image, through
moto's own API (POST /moto-api/static/ecr/scan-finding-results).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
import requests
from botocore.config import Config

from tests.support.stack import (
    MANIFEST_ACCEPT,
    MEDIA_DOCKER_LIST,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_OCI_MANIFEST,
    free_port,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from typing_extensions import Self

    from tests.support.stack import Registry

MANIFEST_TYPES = frozenset({MEDIA_DOCKER_MANIFEST, MEDIA_DOCKER_LIST, MEDIA_OCI_MANIFEST, MEDIA_OCI_INDEX})
MOTO_ACCOUNT = "123456789012"
_SYNC_ERRORS = (
    requests.RequestException,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    RuntimeError,
)


class EcrSync:
    """`with EcrSync(moto endpoint, region) as sync, Registry(notify_url=sync.url) as reg:`
    then `sync.follow(reg)`: from then on every manifest pushed to `reg` lands in moto's ECR,
    in the repository of the same name (which must exist there, as Terraform would make it)."""

    def __init__(self, moto_endpoint: str, region: str) -> None:
        self.moto_endpoint = moto_endpoint
        self.region = region
        self.port = free_port()
        self.errors: list[str] = []
        self._registry: Registry | None = None
        self._synced: set[tuple[str, str]] = set()
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ecr: Any = boto3.client(
            "ecr",
            endpoint_url=moto_endpoint,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        )

    @property
    def url(self) -> str:
        """Where the registry sends its events."""
        return f"http://127.0.0.1:{self.port}/events"

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("EcrSync follows no registry yet: call follow()")
        return self._registry

    def follow(self, registry: Registry) -> None:
        self._registry = registry

    # -- lifecycle
    def start(self) -> Self:
        sync = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sync.receive(body)
                # Always 200: the registry would otherwise send the envelope again and again,
                # and what went wrong is in sync.errors for `wait` to report.
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ecr-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the sync
    def receive(self, body: bytes) -> None:
        """One envelope of registry events: each manifest push is put into moto."""
        try:
            events = json.loads(body).get("events") or []
        except (ValueError, AttributeError) as exc:
            self._failed(f"an envelope that is not JSON: {exc}")
            return
        for event in events:
            target = event.get("target") or {}
            if event.get("action") == "push" and target.get("mediaType") in MANIFEST_TYPES:
                self._put(target["repository"], target["digest"], target.get("tag") or None)

    def _put(self, repository: str, digest: str, tag: str | None) -> None:
        try:
            body, media_type = self._manifest(repository, digest)
            put: dict[str, Any] = {
                "repositoryName": repository,
                "imageManifest": body.decode(),
                "imageManifestMediaType": media_type,
                "imageDigest": digest,
            }
            if tag:
                put["imageTag"] = tag
            # The same manifest under the same tag again: already in sync.
            with contextlib.suppress(self._ecr.exceptions.ImageAlreadyExistsException):
                self._ecr.put_image(**put)
        except _SYNC_ERRORS as exc:
            self._failed(f"{repository}@{digest}: {exc}")
            return
        with self._changed:
            self._synced.add((repository, digest))
            self._changed.notify_all()

    def _manifest(self, repository: str, digest: str) -> tuple[bytes, str]:
        """The exact bytes the registry stores for `digest`, and their media type."""
        registry = self.registry
        with requests.Session() as session:
            session.auth = registry.session.auth
            session.verify = registry.session.verify
            session.trust_env = False
            reply = session.get(
                f"{registry.url}/v2/{repository}/manifests/{digest}",
                headers={"Accept": MANIFEST_ACCEPT},
                timeout=30,
            )
        reply.raise_for_status()
        body = reply.content
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RuntimeError(f"the registry's manifest for {digest} hashes to another digest")
        return body, reply.headers.get("Content-Type", "").split(";")[0].strip()

    def _failed(self, problem: str) -> None:
        with self._changed:
            self.errors.append(problem)
            self._changed.notify_all()

    def wait(self, repository: str, digest: str, timeout: float = 20.0) -> None:
        """Until moto's ECR has the manifest `digest` in `repository`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (repository, digest) not in self._synced:
                remaining = deadline - time.monotonic()
                if self.errors or remaining <= 0:
                    raise AssertionError(
                        f"{repository}@{digest} did not reach moto's ECR in {timeout:.0f} s; "
                        f"sync errors: {self.errors or 'none'}"
                    )
                self._changed.wait(remaining)

    # -- what moto answers
    def set_findings(
        self,
        repository: str,
        digest: str,
        *,
        status: str = "COMPLETE",
        findings: Iterable[Mapping[str, Any]] = (),
        enhanced: Iterable[Mapping[str, Any]] | None = None,
        counts: Mapping[str, int] | None = None,
        description: str = "",
    ) -> None:
        """What DescribeImageScanFindings returns for the image once a scan of it exists
        (moto keeps the first answer it gave for an image). `counts` defaults to the findings'."""
        listed = [dict(f) for f in findings]
        more = [dict(f) for f in enhanced or ()]
        if counts is None:
            tally: dict[str, int] = {}
            for finding in [*listed, *more]:
                tally[finding["severity"]] = tally.get(finding["severity"], 0) + 1
            counts = tally
        scan_findings: dict[str, Any] = {
            "imageScanCompletedAt": "2026-01-01T00:00:00Z",
            "findingSeverityCounts": dict(counts),
            "findings": listed,
        }
        if enhanced is not None:
            scan_findings["enhancedFindings"] = more
        result = {
            "registryId": MOTO_ACCOUNT,
            "repositoryName": repository,
            "imageId": {"imageDigest": digest},
            "imageScanStatus": {"status": status, "description": description},
            "imageScanFindings": scan_findings,
        }
        reply = requests.post(
            f"{self.moto_endpoint}/moto-api/static/ecr/scan-finding-results",
            json={"results": [result], "region": self.region},
            timeout=30,
        )
        reply.raise_for_status()


def basic_finding(
    name: str, severity: str, package: str = "openssl", version: str = "3.0.1"
) -> dict[str, Any]:
    """A finding as ECR's basic scanning writes it."""
    return {
        "name": name,
        "uri": f"https://nvd.nist.gov/vuln/detail/{name}",
        "severity": severity,
        "attributes": [
            {"key": "package_version", "value": version},
            {"key": "package_name", "value": package},
            {"key": "CVSS2_SCORE", "value": "7.5"},
        ],
    }


def enhanced_finding(
    name: str, severity: str, package: str = "zlib", version: str = "1.2.13"
) -> dict[str, Any]:
    """A finding as enhanced scanning (Amazon Inspector) writes it."""
    return {
        "awsAccountId": MOTO_ACCOUNT,
        "description": "a vulnerability",
        "findingArn": f"arn:aws:inspector2:eu-west-2:{MOTO_ACCOUNT}:finding/{name.lower()}",
        "severity": severity,
        "status": "ACTIVE",
        "title": f"{name} - {package}",
        "type": "PACKAGE_VULNERABILITY",
        "packageVulnerabilityDetails": {
            "vulnerabilityId": name,
            "source": "NVD",
            "sourceUrl": f"https://nvd.nist.gov/vuln/detail/{name}",
            "vulnerablePackages": [{"name": package, "version": version, "packageManager": "OS"}],
        },
    }
