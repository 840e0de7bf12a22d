"""The registry's HTTP transport: one session, authentication (basic, or a bearer token
from the registry's own realm), where the login may go, and the one bounded retry policy.

`registry.RegistryClient` names the operations on top of it, as go-containerregistry layers
its `remote` package over `transport`.
"""

from __future__ import annotations

import email.utils
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

import requests

from entrypoint.errors import RegistryError, shown
from entrypoint.registry.reference import is_ecr, is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable

# The whole time one operation may spend retrying before it reports the registry as down;
# with the 5 s request timeout this keeps the error line within 30 s of the fault.
RETRY_BUDGET_S = 20.0
REQUEST_TIMEOUT_S = 5.0


DEFAULT_PORTS = {"http": 80, "https": 443}


def scheme_for(host: str) -> str:
    """Plain HTTP only for loopback registries, as the Docker engine itself allows."""
    return "http" if is_loopback(host) else "https"


def origin(url: SplitResult) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL, the port defaulted by scheme (RFC 3986
    6.2.3: `https://r` and `https://r:443` are one place); None when it has no host, a user
    part (`r@evil.example` is a login sent to evil.example), or an unreadable port."""
    if "@" in url.netloc or url.scheme not in DEFAULT_PORTS or not url.hostname:
        return None
    try:
        port = url.port
    except ValueError:
        return None
    return url.scheme, url.hostname.lower(), port or DEFAULT_PORTS[url.scheme]


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
    """A failure worth another try: connection refused, timeout, 429, 5xx. `retry_after`: the
    seconds the registry asked for (`Retry-After`), 0 when it named none."""

    def __init__(self, what: str, retry_after: float = 0.0) -> None:
        super().__init__(what)
        self.retry_after = retry_after


def retry_after(response: requests.Response) -> float:
    """The wait a 429 or 503 asks for (RFC 9110 `Retry-After`: seconds, or an HTTP date);
    0 when it names none or something unreadable."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return 0.0
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


def _anonymous(request: Any) -> Any:
    """An auth that adds nothing: given instead of None, so requests reads no ~/.netrc."""
    return request


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
        own = origin(urlsplit(self.base))
        if own is None:
            raise RegistryError(f"'{shown(host, 120)}' is not a registry host", "set it to host[:port]")
        self.origin = own  # (scheme, host, port): where the login may go, and nowhere else
        # No username: anonymous, no Authorization header at all (an empty Basic login is
        # still a login, and a token service may refuse it).
        self._auth: tuple[str, str] | Callable[[Any], Any] = (username, password) if username else _anonymous
        self._user = username
        self._bearer: dict[str, str] = {}
        self._budget_s = budget_s
        self._sleep = sleep
        self._session = requests.Session()
        # requests reads REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE itself; OpenSSL's SSL_CERT_FILE,
        # which private registries and TLS proxies are often set up with, it does not.
        if os.environ.get("SSL_CERT_FILE") and not (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        ):
            self._session.verify = os.environ["SSL_CERT_FILE"]

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
                    retry_after=exc.retry_after,
                ) from exc
        deadline = time.monotonic() + self._budget_s
        delay = 0.5
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._authorized(method, path, **kwargs)
            except _Temporary as exc:
                # The registry's own word on when to come back wins over our backoff; a wait
                # longer than the budget left is not sat out, it is reported.
                wait = max(delay, exc.retry_after)
                if time.monotonic() + wait >= deadline:
                    raise self._gave_up(what, exc, attempts) from exc
                self._sleep(wait)
                delay = min(delay * 2, 4.0)

    def _gave_up(self, what: str, exc: _Temporary, attempts: int) -> RegistryError:
        if exc.retry_after:
            return RegistryError(
                f"registry {self.host} is throttling requests to {what}: {exc}, and asked to "
                f"retry after {exc.retry_after:.0f} s, past the {self._budget_s:.0f} s this "
                f"step waits ({attempts} tries)",
                "rerun later; if it keeps happening, spread the deploys out or ask AWS for a "
                "higher ECR API rate quota (Service Quotas)",
            )
        return RegistryError(
            f"registry {self.host} is unreachable while trying to {what}: {exc} "
            f"({attempts} tries in {self._budget_s:.0f} s)",
            f"check that the registry host '{self.host}' is right and reachable from "
            "this runner (VPC endpoint, proxy, firewall), then rerun",
        )

    def _url(self, path: str) -> str:
        """The URL of a path on this registry. Paths may come from registry answers; the
        client resolves those, and this is the last line: text appended to the base that
        does not start with `/` (`@evil.example/x`, `.evil.example/x`) would become part of
        the host and take the login along."""
        url = self.base + path
        if not path.startswith("/") or origin(urlsplit(url)) != self.origin:
            raise RegistryError(
                f"refused to send a request to registry {self.host} for '{shown(path, 120)}', "
                "which is not a path on it; the login was not sent there",
                "use the registry's own endpoint for 'registry'",
            )
        return url

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self._url(path)
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
                url,
                headers=headers,
                auth=auth,
                timeout=kwargs.pop("timeout", REQUEST_TIMEOUT_S),
                # Registries send blob downloads to their storage (ECR: S3), and requests drops
                # the Authorization header on the way; nothing else of the API redirects.
                allow_redirects=method == "GET" and "/blobs/" in path,
                **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            if not _untrusted(exc):
                raise _Temporary(short_error(exc)) from exc
            # Not temporary: a certificate this runner does not trust stays untrusted.
            raise RegistryError(
                f"registry {self.host}'s TLS certificate is not trusted here: {short_error(exc)}",
                "if the registry (or a proxy in front of it) uses a private CA, set SSL_CERT_FILE "
                "or REQUESTS_CA_BUNDLE in the step's env to a bundle holding that CA",
            ) from exc
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Temporary(short_error(exc)) from exc
        if response.status_code == 429 or response.status_code >= 500:
            wait = retry_after(response) if response.status_code in (429, 503) else 0.0
            raise _Temporary(f"HTTP {response.status_code} {response.text[:200]}", wait)
        return response

    def _authorized(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._send(method, path, **dict(kwargs))
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and challenge.lower().startswith("bearer"):
            # Token-auth registries (proxies, mirrors) trade the basic credentials for a token.
            self._bearer[_scope(path)] = self._token(challenge)
            response = self._send(method, path, **dict(kwargs))
        if response.status_code == 401:
            if not self._user:
                raise RegistryError(
                    f"registry {self.host} refused anonymous access (HTTP 401: {registry_message(response)})",
                    "read from a registry that allows anonymous pulls, or from one the ECR login reaches",
                )
            raise RegistryError(
                f"registry {self.host} refused the login for user '{self._user}' "
                f"(HTTP 401: {registry_message(response)})",
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
            raise _Temporary(short_error(exc)) from exc
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
        """The basic credentials go to a token realm only on the registry's own host and
        port, over HTTPS (plain HTTP on loopback only), with no user part: a challenge must
        not redirect them, not even to another service on the same machine."""
        parts = urlsplit(realm)
        found = origin(parts)
        secure = found is not None and (found[0] == "https" or is_loopback(found[1]))
        if found is None or not secure or found[1:] != self.origin[1:]:
            place = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
            raise RegistryError(
                f"registry {self.host} asked for the login to be sent to the token service "
                f"{shown(place, 120)}, which is not HTTPS on {self.origin[1]}:{self.origin[2]}; "
                "the login was not sent",
                "use the registry's own endpoint for 'registry' (ECR, or a proxy that serves its "
                "token service on its own host and port over HTTPS)",
            )


def _scope(path: str) -> str:
    """Tokens are scoped to a repository: /v2/<name>/manifests/... and /v2/<name>/blobs/..."""
    return re.split(r"/(?:manifests|blobs)/", path, maxsplit=1)[0]


def _untrusted(exc: Exception) -> bool:
    text = str(exc).lower()
    return "certificate verify failed" in text or "hostname mismatch" in text


def short_error(exc: Exception) -> str:
    text = str(exc)
    for marker in (
        "certificate verify failed",
        "Connection refused",
        "timed out",
        "Name or service not known",
        "Temporary failure in name resolution",
        "No route to host",
    ):
        if marker in text:
            return marker.lower()
    return text[:200]


def registry_codes(response: requests.Response) -> tuple[str, ...]:
    """The OCI error codes of an answer (`{"errors": [{"code": ...}]}`), if it has any."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return ()
    return tuple(str(e.get("code", "")) for e in errors if isinstance(e, dict) and e.get("code"))


def registry_message(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return response.text[:200] or response.reason
    if not errors:
        return response.reason
    first = errors[0]
    return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
