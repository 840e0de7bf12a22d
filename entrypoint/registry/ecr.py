"""Amazon ECR's API through boto3: the registry login, the repository's existence and its
image scans (start one, read its findings).

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECR, which is how a local stack (moto)
stands in for AWS. Every AWS failure becomes an `AwsError` that names the call.
"""

from __future__ import annotations

import base64
import fnmatch
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    TokenRetrievalError,
)

from entrypoint import cancel
from entrypoint.errors import AwsError, RepositoryMissingError, shown
from entrypoint.registry.reference import REGISTRY_RE

if TYPE_CHECKING:
    from collections.abc import Callable

    from mypy_boto3_ecr import ECRClient

# Short timeouts and few retries keep a dead endpoint's error inside the 30 s promise.
_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})

_CREDENTIAL_CODES = {
    "ExpiredTokenException": "the AWS credentials have expired",
    "ExpiredToken": "the AWS credentials have expired",
    "RequestExpired": "the AWS credentials have expired",
    "UnrecognizedClientException": "the AWS credentials are not valid",
    "InvalidClientTokenId": "the AWS credentials are not valid",
    "InvalidSignatureException": "the AWS secret key does not match the access key",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
}
# Right after a push ECR's scan API may not see the image for a moment.
_VISIBLE_S = 30.0
_VISIBLE_POLL_S = 2.0
# ECR lists at most 1000 findings a page; an answer that keeps paging past this is not ECR's.
_FINDINGS_PAGE = 1000
_MAX_PAGES = 100
_SCAN_UNSUPPORTED_FIX = (
    "ECR's basic scanning reads the OS packages of the distributions it supports only: build on "
    "one of them (Amazon Linux, Debian, Ubuntu, Alpine, RHEL), turn on enhanced scanning for the "
    "registry, or set scan to false for this image"
)
_CREDENTIALS_FIX = (
    "run aws-actions/configure-aws-credentials (with a role that may call ECR) before this "
    "step, or export fresh AWS credentials"
)


@dataclass(frozen=True)
class RegistryLogin:
    username: str
    password: str
    registry: str  # host[:port] of the account's registry, from the token's proxy endpoint


@dataclass(frozen=True)
class Repository:
    name: str
    uri: str
    registry_id: str
    mutability: str
    # IMMUTABLE_WITH_EXCLUSION repositories keep tags matching these wildcards mutable.
    mutable_patterns: tuple[str, ...] = ()
    # ECR starts a basic scan of every image pushed (imageScanningConfiguration.scanOnPush).
    scan_on_push: bool = False

    def tag_is_immutable(self, tag: str) -> bool:
        if self.mutability == "MUTABLE":
            return False
        return not any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.mutable_patterns)


@dataclass(frozen=True)
class ImageScan:
    """One DescribeImageScanFindings answer, its pages joined. Every value is ECR's, unchecked:
    the caller reads it as untrusted text."""

    status: str  # imageScanStatus.status: IN_PROGRESS, COMPLETE, FAILED, ACTIVE, ...
    description: str
    completed_at: str
    counts: tuple[tuple[str, Any], ...]  # findingSeverityCounts, as ECR gave it
    findings: tuple[Any, ...]  # basic scanning's `findings`
    enhanced: tuple[Any, ...]  # enhanced scanning's `enhancedFindings`


def aws_error(call: str, action: str, exc: Exception) -> AwsError:
    """The one line a failed AWS call turns into: which call, why, and what to change."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsError(f"AWS credentials are missing: {call} could not be signed", _CREDENTIALS_FIX)
    if isinstance(exc, TokenRetrievalError):
        return AwsError(f"AWS credentials could not be refreshed for {call}: {exc}", _CREDENTIALS_FIX)
    if isinstance(exc, EndpointConnectionError):
        return AwsError(
            f"cannot reach the ECR API for {call}: {exc}",
            "check the region and the runner's network (or AWS_ENDPOINT_URL for a local stack)",
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        message = exc.response.get("Error", {}).get("Message", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code.isdigit() or "<Code>" in message:
            # An error body botocore could not parse (proxies, some endpoints answer in XML).
            code = _xml_field(message, "Code") or code
            message = _xml_field(message, "Message") or message
        if code in _CREDENTIAL_CODES:
            return AwsError(f"{_CREDENTIAL_CODES[code]}: {call} returned {code}", _CREDENTIALS_FIX)
        if code in ("AccessDeniedException", "AccessDenied") or status == 403:
            return AwsError(
                f"AWS denied {call}: {message or code}",
                f"allow {action} to the role this job assumes",
            )
        return AwsError(f"{call} failed: {code}: {message}", "see the AWS error above")
    return AwsError(f"{call} failed: {exc}", "check the AWS configuration of this job")


def _xml_field(text: str, field: str) -> str:
    match = re.search(rf"<{field}>([^<]*)</{field}>", text)
    return match.group(1) if match else ""


class Ecr:
    def __init__(self, region: str, client: ECRClient | None = None) -> None:
        self.region = region
        if client is None:
            # Imported here, not at the top: boto3 (with s3transfer, which it always loads) is
            # a sixth of the action's start-up, and this import runs while the engine probe's
            # docker CLI runs in another thread.
            import boto3  # noqa: PLC0415 - see above

            client = boto3.client("ecr", region_name=region, config=_CONFIG)
        self._client: ECRClient = client

    def login(self) -> RegistryLogin:
        try:
            reply = self._client.get_authorization_token()
        except (BotoCoreError, ClientError) as exc:
            raise aws_error("ecr:GetAuthorizationToken", "ecr:GetAuthorizationToken", exc) from exc
        data = reply["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        endpoint = data["proxyEndpoint"]
        host = endpoint.split("://", 1)[-1].rstrip("/")
        if not REGISTRY_RE.fullmatch(host):
            # The login is sent to this host; it must be exactly one host[:port].
            raise AwsError(
                f"ecr:GetAuthorizationToken named the registry '{shown(endpoint)}', not a host",
                "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECR: the endpoint is not Amazon ECR",
            )
        return RegistryLogin(username=user, password=password, registry=host)

    def repository(self, name: str, registry_id: str | None = None) -> Repository:
        """`registry_id`: the account of another registry than the caller's (an image URI's)."""
        try:
            if registry_id:
                reply = self._client.describe_repositories(repositoryNames=[name], registryId=registry_id)
            else:
                reply = self._client.describe_repositories(repositoryNames=[name])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
                raise RepositoryMissingError(
                    f"ECR repository '{name}' does not exist in {self.region}",
                    "Terraform must create it first: run a targeted apply of the repository "
                    f"(terraform apply -target=aws_ecr_repository.<name>) that creates '{name}', "
                    "then rerun this job",
                ) from exc
            raise aws_error("ecr:DescribeRepositories", "ecr:DescribeRepositories", exc) from exc
        except BotoCoreError as exc:
            raise aws_error("ecr:DescribeRepositories", "ecr:DescribeRepositories", exc) from exc
        repo: Any = reply["repositories"][0]
        return Repository(
            name=repo["repositoryName"],
            uri=repo["repositoryUri"],
            registry_id=repo["registryId"],
            mutability=repo.get("imageTagMutability", "MUTABLE"),
            mutable_patterns=tuple(f["filter"] for f in repo.get("imageTagMutabilityExclusionFilters", [])),
            scan_on_push=repo.get("imageScanningConfiguration", {}).get("scanOnPush") is True,
        )

    def start_image_scan(self, repository: str, digest: str, registry_id: str | None = None) -> bool:
        """Start a basic scan of the image: True when ECR started one, False when it refused
        another because it scanned the image within the last 24 hours (LimitExceededException:
        one scan per image a day), in which case that scan's findings stand."""
        ask: dict[str, Any] = {"repositoryName": repository, "imageId": {"imageDigest": digest}}
        if registry_id:
            ask["registryId"] = registry_id
        try:
            self._while_invisible(lambda: self._client.start_image_scan(**ask))
        except ClientError as exc:
            if _code(exc) == "LimitExceededException":
                return False
            raise self._scan_error("ecr:StartImageScan", repository, digest, exc) from exc
        except BotoCoreError as exc:
            raise aws_error("ecr:StartImageScan", "ecr:StartImageScan", exc) from exc
        return True

    def describe_image_scan_findings(
        self, repository: str, digest: str, registry_id: str | None = None
    ) -> ImageScan | None:
        """The image's latest scan, every page of its findings; None when it has none
        (ScanNotFoundException)."""
        ask: dict[str, Any] = {
            "repositoryName": repository,
            "imageId": {"imageDigest": digest},
            "maxResults": _FINDINGS_PAGE,
        }
        if registry_id:
            ask["registryId"] = registry_id
        pages: list[Any] = []
        try:
            while True:
                reply: Any = self._while_invisible(lambda: self._client.describe_image_scan_findings(**ask))
                pages.append(reply)
                token = reply.get("nextToken")
                if not token:
                    break
                if token == ask.get("nextToken") or len(pages) >= _MAX_PAGES:
                    raise AwsError(
                        f"ecr:DescribeImageScanFindings kept paging the findings of {repository}@{digest} "
                        f"({len(pages)} pages of {_FINDINGS_PAGE})",
                        "check AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECR: that endpoint does not page as "
                        "ECR does",
                    )
                ask["nextToken"] = token
        except ClientError as exc:
            if _code(exc) == "ScanNotFoundException":
                return None
            raise self._scan_error("ecr:DescribeImageScanFindings", repository, digest, exc) from exc
        except BotoCoreError as exc:
            raise aws_error("ecr:DescribeImageScanFindings", "ecr:DescribeImageScanFindings", exc) from exc
        return _image_scan(pages)

    @staticmethod
    def _while_invisible(call: Callable[[], Any]) -> Any:
        """`call`, asked again for a bounded while as long as ECR does not know the image."""
        deadline = time.monotonic() + _VISIBLE_S
        while True:
            try:
                return call()
            except ClientError as exc:
                if _code(exc) != "ImageNotFoundException" or time.monotonic() >= deadline:
                    raise
            cancel.raise_if_requested()
            time.sleep(_VISIBLE_POLL_S)

    def _scan_error(self, call: str, repository: str, digest: str, exc: ClientError) -> AwsError:
        code = _code(exc)
        message = shown(str(exc.response.get("Error", {}).get("Message", "")))
        if code == "ImageNotFoundException":
            return AwsError(
                f"ECR has no image {repository}@{digest} in {self.region} ({call}, asked for "
                f"{_VISIBLE_S:.0f} s)",
                "push the image to this repository first, and check the repository, the region and "
                "the digest",
            )
        if code == "RepositoryNotFoundException":
            return AwsError(
                f"ECR repository '{repository}' does not exist in {self.region} ({call})",
                "check the repository and the region of the image",
            )
        if code == "ImageArchivedException":
            return AwsError(
                f"ECR has archived the image {repository}@{digest} ({call}), so it cannot be scanned",
                "restore the image to the standard storage class (ecr:UpdateImageStorageClass), or "
                "publish it again",
            )
        if code == "UnsupportedImageTypeException":
            return AwsError(
                f"ECR cannot scan {repository}@{digest}: {message or code}", _SCAN_UNSUPPORTED_FIX
            )
        return aws_error(call, call, exc)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _image_scan(pages: list[Any]) -> ImageScan:
    first = pages[0]
    status = first.get("imageScanStatus") or {}
    found = first.get("imageScanFindings") or {}
    completed = found.get("imageScanCompletedAt", "")
    counts = found.get("findingSeverityCounts") or {}
    return ImageScan(
        status=str(status.get("status", "")),
        description=str(status.get("description", "")),
        completed_at=completed.isoformat() if isinstance(completed, datetime) else str(completed),
        counts=tuple(counts.items()) if isinstance(counts, dict) else (),
        findings=_listed(pages, "findings"),
        enhanced=_listed(pages, "enhancedFindings"),
    )


def _listed(pages: list[Any], key: str) -> tuple[Any, ...]:
    """One list of findings from every page (pages that are not ECR's shape add none)."""
    joined: list[Any] = []
    for page in pages:
        found = page.get("imageScanFindings") or {}
        listed = found.get(key) if isinstance(found, dict) else None
        joined += listed if isinstance(listed, list) else []
    return tuple(joined)
