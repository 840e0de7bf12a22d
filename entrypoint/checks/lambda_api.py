"""AWS Lambda's API through boto3, as the after-apply check reads it: a function's state, its
last update and the image it resolved (`GetFunction`), and its function URL's address, auth
type and invoke mode (`GetFunctionUrlConfig`).

boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_LAMBDA, which is how a local stack (moto)
stands in for AWS. Every value Lambda returns is text from outside: it is kept as a string
and only shown through `shown` or the summary's escaping. Every AWS failure becomes an
`AwsError` that names the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from entrypoint.errors import AwsError, shown
from entrypoint.registry.ecr import aws_error
from entrypoint.registry.reference import DIGEST_RE

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

# Each call is short; a poll that meets a slow answer asks again on its next round.
_CONFIG = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"})


@dataclass(frozen=True)
class FunctionState:
    """What GetFunction says of one function ("" where Lambda says nothing)."""

    name: str
    arn: str
    package_type: str
    state: str  # Pending, Active, Inactive, Failed
    state_reason: str
    state_reason_code: str
    update_status: str  # InProgress, Successful, Failed; absent on a function never updated
    update_reason: str
    update_reason_code: str
    image_uri: str  # as the function's configuration names it: by digest or by tag
    resolved_image_uri: str  # what Lambda resolved that to when it last deployed the code

    @property
    def resolved_digest(self) -> str | None:
        """The digest Lambda runs. Read from after the last `@` of ResolvedImageUri, which is
        all AWS documents of its shape (moto writes `repo@sha256@sha256:<digest>`)."""
        return _digest_after_at(self.resolved_image_uri)

    @property
    def configured_digest(self) -> str | None:
        """The digest the configuration pins, or None when it names a tag."""
        return _digest_after_at(self.image_uri)

    def describe(self) -> str:
        """`State Active, LastUpdateStatus Successful` with Lambda's reasons where it gave any,
        escaped for a log line (`shown`): the reasons are Lambda's free text."""
        parts = [f"State {self.state or '(none)'}" + _reason(self.state_reason_code, self.state_reason)]
        if self.update_status:
            parts.append(
                f"LastUpdateStatus {self.update_status}"
                + _reason(self.update_reason_code, self.update_reason)
            )
        return shown(", ".join(parts), 1000)


@dataclass(frozen=True)
class UrlConfig:
    url: str
    auth_type: str  # AWS_IAM or NONE
    invoke_mode: str  # BUFFERED or RESPONSE_STREAM


def _digest_after_at(uri: str) -> str | None:
    _, at, digest = uri.rpartition("@")
    return digest if at and DIGEST_RE.fullmatch(digest) else None


def _reason(code: str, text: str) -> str:
    if not (code or text):
        return ""
    return f" ({': '.join(part for part in (code, text) if part)})"


def lambda_error(call: str, exc: Exception) -> AwsError:
    """`aws_error`, with the Lambda endpoint named where the endpoint is the problem."""
    if isinstance(exc, EndpointConnectionError):
        return AwsError(
            f"cannot reach the Lambda API for {call}: {exc}",
            "check the region and the runner's network (or AWS_ENDPOINT_URL / "
            "AWS_ENDPOINT_URL_LAMBDA for a local stack)",
        )
    return aws_error(call, call, exc)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class LambdaApi:
    def __init__(self, region: str) -> None:
        # Imported here, as in ecr.py: boto3 is a sixth of a start-up, and only this command
        # talks to Lambda.
        import boto3  # noqa: PLC0415 - see above

        self.region = region
        # One session for the client and the probe's signature: the same credentials sign both.
        self._session = boto3.session.Session(region_name=region)
        self._client: Any = self._session.client("lambda", config=_CONFIG)

    @staticmethod
    def _ask(operation: str, call: Any, name: str) -> dict[str, Any] | None:
        """Lambda's answer about function `name`, None when it has no such resource, else an
        AwsError naming the call."""
        try:
            reply: dict[str, Any] = call(FunctionName=name)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise lambda_error(f"lambda:{operation}", exc) from exc
        except BotoCoreError as exc:
            raise lambda_error(f"lambda:{operation}", exc) from exc
        return reply

    def function(self, name: str) -> FunctionState | None:
        """The function's state, or None when Lambda has no function of that name."""
        reply = self._ask("GetFunction", self._client.get_function, name)
        if reply is None:
            return None
        config = reply.get("Configuration") or {}
        code = reply.get("Code") or {}

        def text(source: dict[str, Any], key: str) -> str:
            value = source.get(key)
            return value if isinstance(value, str) else ""

        return FunctionState(
            name=text(config, "FunctionName") or name,
            arn=text(config, "FunctionArn"),
            package_type=text(config, "PackageType") or "Zip",
            state=text(config, "State"),
            state_reason=text(config, "StateReason"),
            state_reason_code=text(config, "StateReasonCode"),
            update_status=text(config, "LastUpdateStatus"),
            update_reason=text(config, "LastUpdateStatusReason"),
            update_reason_code=text(config, "LastUpdateStatusReasonCode"),
            image_uri=text(code, "ImageUri"),
            resolved_image_uri=text(code, "ResolvedImageUri"),
        )

    def url_config(self, name: str) -> UrlConfig | None:
        """The function URL's configuration, or None when the function has none."""
        reply = self._ask("GetFunctionUrlConfig", self._client.get_function_url_config, name)
        if reply is None:
            return None
        return UrlConfig(
            url=str(reply.get("FunctionUrl") or ""),
            auth_type=str(reply.get("AuthType") or ""),
            invoke_mode=str(reply.get("InvokeMode") or "BUFFERED"),
        )

    def credentials(self) -> ReadOnlyCredentials:
        """The job's AWS credentials, to sign a function URL request (AWS_IAM)."""
        try:
            found = self._session.get_credentials()
            frozen = found.get_frozen_credentials() if found is not None else None
        except BotoCoreError as exc:
            raise lambda_error("the function URL's SigV4 signature", exc) from exc
        if frozen is None or not frozen.access_key:
            raise AwsError(
                "AWS credentials are missing: the function URL's request (auth type AWS_IAM) "
                "could not be signed",
                "run aws-actions/configure-aws-credentials (with a role that may call "
                "lambda:InvokeFunctionUrl) before this step",
            )
        return frozen
