"""Turning the shared Docker engine into what a new GitHub runner has."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
import requests

from tests.support.stack import REPO_ROOT

if TYPE_CHECKING:
    from docker import DockerClient


def _repository_name(reference: str) -> str:
    """`127.0.0.1:5000/name:tag` or `name:tag` -> `name` (the last path part)."""
    return reference.rpartition(":")[0].rpartition("/")[2]


def our_tags(client: DockerClient, prefix: str) -> list[str]:
    """Every local tag of a repository this benchmark made (their names start with ``prefix``)."""
    return [
        tag
        for image in client.images.list()
        for tag in image.tags
        if _repository_name(tag).startswith(prefix)
    ]


def empty_engine(client: DockerClient, prefix: str, *, prune_cache: bool = True) -> None:
    """Remove our images and (by default) all build cache; base images stay.

    Only our tags are removed, by name, so images other processes use are left alone; an
    image goes when its last tag does. Build cache cannot be told apart by owner, so all
    of it goes, as in tests/test_republish.py (`all=True`: used-before records too).
    """
    for tag in our_tags(client, prefix):
        with contextlib.suppress(docker.errors.NotFound):
            client.images.remove(tag, force=True)
    if prune_cache:
        client.api.prune_builds(all=True)
    left = our_tags(client, prefix)
    if left:
        raise RuntimeError(f"images still in the engine after emptying it: {', '.join(left)}")


# dockerd writes its pid here; a new pid means the engine restarted (e.g. after a crash).
DOCKERD_PIDFILE = Path("/var/run/docker.pid")


def fresh_page_cache() -> bool:
    """Drop the kernel's page cache (root only; False where it cannot): a fresh runner has
    nothing cached, and on these VMs memory the guest frees goes back to the host, so without
    the drop each sample's writes cost more than the one before."""
    if os.geteuid() != 0:
        return False
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def engine_pid() -> str:
    try:
        return DOCKERD_PIDFILE.read_text().strip()
    except OSError:
        return ""


def engine_answers(client: DockerClient) -> bool:
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException):
        return False


def wait_for_engine(client: DockerClient, timeout: float = 180.0) -> None:
    """Until the engine answers again; after 30 s, `scripts/stack.sh up` (re)starts it."""
    started = time.monotonic()
    restarted = False
    while time.monotonic() - started < timeout:
        if engine_answers(client):
            return
        if not restarted and time.monotonic() - started > 30:
            subprocess.run(["bash", str(REPO_ROOT / "scripts" / "stack.sh"), "up"], check=False)
            restarted = True
        time.sleep(2)
    raise RuntimeError(f"the Docker engine did not answer again within {timeout:.0f} s")
