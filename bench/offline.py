"""The example for an engine that cannot reach the package index: a wheelhouse and a Dockerfile
that installs from it.

sid's engine (tests/support/engines.py) runs in a network namespace whose only way out is the
registry ports the benchmark forwards, so the example's `RUN ... pip install -r
requirements.txt` cannot reach PyPI there. The example's Dockerfile takes no build argument
for pip's index or options, so, for every approach alike:

* `download_wheels`: on the host (which reaches the index, through this machine's pip
  configuration and its TLS-intercepting proxy) `pip download --only-binary=:all:` of the
  example's requirements.txt for the base image's Python and manylinux2014_x86_64, once per
  benchmark run;
* `offline_example`: a copy of the example whose Dockerfile differs in its pip step only:
  `RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse ...` and `pip install
  --no-index --find-links /wheelhouse`, the wheels in `wheelhouse/` of the build context.
  The bind mount adds no layer: the image has the same layers as the host run's (the
  installed packages, from the same pins).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from docker import DockerClient

WHEELHOUSE = "wheelhouse"  # folder of the build context that holds the wheels
PLATFORM = "manylinux2014_x86_64"
_MOUNT = f"--mount=type=bind,source={WHEELHOUSE},target=/{WHEELHOUSE}"
_PIP_OPTIONS = f"--no-index --find-links /{WHEELHOUSE}"
# A RUN instruction (with its continuation lines) that runs `pip install`.
_PIP_RUN = re.compile(r"^RUN (?P<body>(?:[^\n]*\\\n)*[^\n]*pip install[^\n]*)$", re.MULTILINE)


def image_python(client: DockerClient, image: str) -> str:
    """`3.11`: the major.minor of `python3` in `image` (run once, without a network)."""
    out: bytes = client.containers.run(
        image,
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        remove=True,
        network_mode="none",
    )
    version = out.decode().strip()
    if not re.fullmatch(r"3\.\d+", version):
        raise RuntimeError(f"python3 in {image} printed {version!r}, not a version")
    return version


def download_wheels(requirements: Path, into: Path, python: str) -> tuple[str, ...]:
    """The requirements and their dependencies as wheels in `into`; their file names."""
    into.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--platform", PLATFORM,
        "--python-version", python, "--disable-pip-version-check", "-r", str(requirements), "-d", str(into),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    wheels = tuple(sorted(p.name for p in into.glob("*.whl")))
    if not wheels:
        raise RuntimeError(f"pip download saved no wheel into {into}")
    return wheels


def offline_dockerfile(dockerfile: str) -> str:
    """The example's Dockerfile with its one pip step installing from the wheelhouse."""
    found = list(_PIP_RUN.finditer(dockerfile))
    if len(found) != 1:
        raise RuntimeError(f"expected one `RUN ... pip install` in the example's Dockerfile: {len(found)}")
    body = found[0].group("body")
    if body.count("pip install") != 1:
        raise RuntimeError("expected one `pip install` in the example's pip step")
    new = f"RUN {_MOUNT} " + body.replace("pip install", f"pip install {_PIP_OPTIONS}")
    start, end = found[0].span()
    return dockerfile[:start] + new + dockerfile[end:]


def offline_example(example: Path, into: Path, wheels: Path) -> Path:
    """A copy of `example` in `into` that builds without a network: see the module's doc."""
    shutil.copytree(
        example, into, ignore=shutil.ignore_patterns("__pycache__", ".terraform", "*.tfstate*", WHEELHOUSE)
    )
    dockerfile = into / "Dockerfile"
    dockerfile.write_text(offline_dockerfile(dockerfile.read_text()))
    shutil.copytree(wheels, into / WHEELHOUSE)
    return into
