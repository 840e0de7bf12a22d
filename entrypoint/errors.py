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

    `temporary`: a network failure or a 5xx/429 that a later try may not meet."""

    def __init__(self, cause: str, fix: str, *, temporary: bool = False) -> None:
        super().__init__(cause, fix)
        self.temporary = temporary


class PushRejectedError(RegistryError):
    """The registry refused to store a manifest or tag."""


class CheckError(ActionError):
    """The image breaks a rule that Lambda enforces, or failed its smoke boot."""


class VerifyError(ActionError):
    """The verify gate found images that Terraform must not deploy."""
