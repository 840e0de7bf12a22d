"""Amazon ECR's API through boto3: the registry login and the repository's existence.

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_ECR, which is how a local stack (moto)
stands in for AWS. Every AWS failure becomes an `AwsError` that names the call.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from dataclasses import dataclass
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

from entrypoint.errors import AwsError, RepositoryMissingError, shown
from entrypoint.registry.reference import REGISTRY_RE

if TYPE_CHECKING:
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

    def tag_is_immutable(self, tag: str) -> bool:
        if self.mutability == "MUTABLE":
            return False
        return not any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.mutable_patterns)


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

    def repository(self, name: str) -> Repository:
        try:
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
        )
