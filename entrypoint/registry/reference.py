"""The shapes of registry names: hosts, repositories, tags and digests, matched whole.

Every pattern is used with `fullmatch`: `re.match` with `$` accepts a trailing newline,
and a value that goes into a URL path, a tag or a log line must be exactly what it claims.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# host[:port]: a DNS name or IPv4 address, no scheme, user or path.
REGISTRY_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?")
# ECR's own rule for repository names (CreateRepository's pattern).
REPOSITORY_RE = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Amazon ECR private registries: <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn].
ECR_HOST_RE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2})\.amazonaws\.com(?:\.cn)?"
)


def hostname(host: str) -> str:
    """The name part of host[:port] (brackets of an IPv6 literal removed)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.strip("[]").lower()


def is_loopback(host: str) -> bool:
    name = hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_ecr(host: str) -> bool:
    return ECR_HOST_RE.fullmatch(host.lower()) is not None


def ecr_account_region(host: str) -> tuple[str, str] | None:
    """The account ID and region an ECR host names; None for any other host."""
    found = ECR_HOST_RE.fullmatch(host.lower())
    return (found["account"], found["region"]) if found else None


@dataclass(frozen=True)
class ImageUri:
    text: str
    host: str
    repository: str
    tag: str | None
    digest: str | None


def parse_image_uri(text: str, *, host_optional: bool = False) -> ImageUri | None:
    """registry/repository[:tag][@sha256:...], or None when it is not one. `host_optional`:
    a reference without a registry host (Docker's rule: the first part holds a `.` or `:`,
    or is `localhost`) is taken whole as the repository, with host ""."""
    name, at, digest = text.partition("@")
    host, slash, path = name.partition("/")
    if not slash or not ("." in host or ":" in host or host == "localhost"):
        if not host_optional:
            return None
        host, path = "", name
    elif not REGISTRY_RE.fullmatch(host):
        return None
    repository, tag = path, None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        repository, _, tag = path.rpartition(":")
    if not REPOSITORY_RE.fullmatch(repository) or (tag is not None and not TAG_RE.fullmatch(tag)):
        return None
    if at and not DIGEST_RE.fullmatch(digest):
        return None
    return ImageUri(text=text, host=host, repository=repository, tag=tag, digest=digest or None)
