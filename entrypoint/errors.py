"""One exception hierarchy: every failure the user can act on carries its cause and its fix.

`cli.main` is the only place that turns these into the `::error::` line and an exit code.
"""

from __future__ import annotations


def shown(value: str, limit: int = 200) -> str:
    """A value from outside (a plan, a registry, an API) as it may appear in an error line:
    control characters escaped, so it cannot end the line or start a runner command."""
    return value.encode("unicode_escape").decode()[:limit]


class ActionError(Exception):
    """A failure with a cause the user can read and a fix the user can apply."""

    exit_code = 1

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(cause)
        self.cause = cause.rstrip(". ")
        self.fix = fix.rstrip(". ")

    def line(self) -> str:
        # One line: the runner shows only the first line of an annotation in the summary.
        return f"{self.cause}. Fix: {self.fix}."


class InputError(ActionError):
    exit_code = 2


class EngineError(ActionError):
    """The Docker engine or CLI is missing, stopped or unusable."""


class BuildError(ActionError):
    """The image build itself failed."""


class AwsError(ActionError):
    """An AWS API call failed: credentials, permissions, endpoint."""


class RepositoryMissingError(ActionError):
    """The ECR repository does not exist yet."""


class RegistryError(ActionError):
    """The registry was unreachable, refused the login, or rejected an operation.

    `temporary`: a network failure or a 5xx/429 that a later try may not meet. `status` and
    `codes`: the HTTP status and the registry's error codes (OCI `errors[].code`), when it
    answered. `retry_after`: the seconds a 429 or 503 asked the caller to wait, if any."""

    def __init__(
        self,
        cause: str,
        fix: str,
        *,
        temporary: bool = False,
        status: int = 0,
        codes: tuple[str, ...] = (),
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(cause, fix)
        self.temporary = temporary
        self.status = status
        self.codes = codes
        self.retry_after = retry_after


class PushRejectedError(RegistryError):
    """The registry refused to store a manifest or tag."""


class CheckError(ActionError):
    """The image breaks a rule that Lambda enforces, or failed its smoke boot."""


class VerifyError(ActionError):
    """The verify gate found images that Terraform must not deploy."""


IMMUTABLE_TAGS_FIX = (
    'set image_tag_mutability = "MUTABLE" on the aws_ecr_repository, or IMMUTABLE_WITH_EXCLUSION '
    "with exclusion filters for the environment and latest tags (deploys still pin the digest)"
)


def push_rejection_fix(status: int, codes: tuple[str, ...], message: str) -> str:
    """The one mapping from a refused write (a manifest PUT, or the engine's push) to its
    fix: by the registry's error codes and status where it gave them, else by its words
    (the engine passes the registry's message on as text)."""
    text = message.lower()
    if (
        "TAG_INVALID" in codes
        or "ImageTagAlreadyExistsException" in codes
        or any(word in text for word in ("immutable", "tag invalid", "already exists"))
    ):
        return f"the repository's tags are immutable: {IMMUTABLE_TAGS_FIX}"
    if (
        status in (401, 403, 405)
        or "DENIED" in codes
        or "UNAUTHORIZED" in codes
        or any(word in text for word in ("denied", "unsupported", "forbidden", "method not allowed"))
    ):
        return (
            "the registry does not accept pushes here: allow ecr:PutImage and the layer upload "
            "actions to the role this job assumes, and check the registry is not read-only"
        )
    return "see the registry's message; rerun if it was transient"
