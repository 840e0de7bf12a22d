"""One ECR login per run: the token masked the moment it exists, the hosts it may be sent to
(`CredentialScope`), and a registry client per host. Publish, verify, promote and rollback
all log in here.

One token serves every ECR registry the role may read or write, so a cross-account promotion
needs no second login.
"""

from __future__ import annotations

from dataclasses import dataclass

from entrypoint import github
from entrypoint.registry.client import RegistryClient
from entrypoint.registry.ecr import Ecr, RegistryLogin
from entrypoint.registry.transport import CredentialScope, Transport


@dataclass(frozen=True)
class Session:
    ecr: Ecr
    login: RegistryLogin
    scope: CredentialScope

    def client(self, host: str, where: str) -> RegistryClient:
        """A client for `host`; refused before any request when the login may not go there.
        `where` names what gave the host, for that error."""
        return RegistryClient(
            Transport(host, self.login.username, self.login.password, scope=self.scope, where=where)
        )


def open_session(region: str, named: tuple[tuple[str, str], ...] = ()) -> Session:
    """Log in to ECR. `named`: (host, input) pairs the workflow author typed, which the login
    may be sent to besides the registry it names and ECR hosts."""
    ecr = Ecr(region)
    login = ecr.login()
    github.mask(login.password)
    github.info(f"  logged in as {login.username} (registry {login.registry})")
    return Session(ecr, login, CredentialScope(login.registry, named))
