"""How AWS failures read. Missing, invalid and denied credentials are caused for real in
tests/test_publish_errors.py; moto never expires credentials, so expiry is shown here with
the error botocore raises for it."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from entrypoint.registry.ecr import aws_error


def client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetAuthorizationToken",
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            client_error("ExpiredTokenException", "The security token included in the request is expired"),
            "the AWS credentials have expired: ecr:GetAuthorizationToken returned ExpiredTokenException",
        ),
        (
            client_error("UnrecognizedClientException"),
            "the AWS credentials are not valid: ecr:GetAuthorizationToken returned "
            "UnrecognizedClientException",
        ),
        (
            client_error("AccessDeniedException", "User: arn:aws:iam::1:user/x is not authorized", 400),
            "AWS denied ecr:GetAuthorizationToken: User: arn:aws:iam::1:user/x is not authorized",
        ),
        (
            client_error(
                "403",
                "<ErrorResponse><Error><Code>AccessDenied</Code><Message>nope</Message>"
                "</Error></ErrorResponse>",
                403,
            ),
            "AWS denied ecr:GetAuthorizationToken: nope",
        ),
        (NoCredentialsError(), "AWS credentials are missing: ecr:GetAuthorizationToken could not be signed"),
        (
            EndpointConnectionError(endpoint_url="https://api.ecr.eu-west-2.amazonaws.com/"),
            "cannot reach the ECR API for ecr:GetAuthorizationToken",
        ),
    ],
)
def test_aws_failures_name_the_call_and_the_fix(exc: Exception, expected: str) -> None:
    error = aws_error("ecr:GetAuthorizationToken", "ecr:GetAuthorizationToken", exc)
    assert error.line().startswith(expected)
    assert "Fix: " in error.line()
