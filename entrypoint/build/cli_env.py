"""What the docker CLI is given for a build: its environment (an allow-list of the job's,
so neither the AWS credentials nor other steps' tokens reach it, and build-arg names that
could steer it refused) and a private Docker config holding the ECR login."""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping


# What the docker CLI (and the BuildKit client in it) needs from the job's environment to
# find and reach the engine, its config and the network. Nothing else of the job reaches
# it: not the AWS credentials, not tokens of other steps.
_CLI_ENVIRONMENT = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "XDG_RUNTIME_DIR",  # rootless Docker's socket
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_API_VERSION",
    "DOCKER_CONFIG",
    "BUILDX_BUILDER",
    "BUILDX_CONFIG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
# BuildKit's gha cache reads these; only cache mode gha passes them.
GHA_ENVIRONMENT = ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL")

# Names a build arg (an environment variable of the CLI, see `build_command`) must not
# take: what the CLI, BuildKit's client, Go's runtime and TLS, git (which buildx runs for
# build metadata), the dynamic loader or a shell would read as settings. DOCKER_HOST as a
# build arg would send the build, with the registry login, to another engine.
_CLI_READS_PREFIXES = (
    "DOCKER_",
    "BUILDX_",
    "BUILDKIT_",
    "LD_",
    "GIT_",
    "OTEL_",
    "XDG_",
    "SSL_",
    "LC_",
    "ACTIONS_",
    "GITHUB_",
    "RUNNER_",
)
_CLI_READS_NAMES = frozenset(
    {name.upper() for name in _CLI_ENVIRONMENT}
    | {
        "SHELL",
        "IFS",
        "ENV",
        "BASH_ENV",
        "PWD",
        "TERM",
        "ALL_PROXY",
        "FTP_PROXY",
        "JAEGER_TRACE",
        "GODEBUG",
        "GOGC",
        "GOMAXPROCS",
        "GOMEMLIMIT",
        "GOTRACEBACK",
    }
)


def cli_reads(name: str) -> bool:
    """Whether the docker CLI process would take environment variable `name` as a setting."""
    upper = name.upper()
    return upper in _CLI_READS_NAMES or upper.startswith(_CLI_READS_PREFIXES)


def build_environment(
    base: Mapping[str, str],
    build_args: Iterable[tuple[str, str]],
    *,
    secrets: Iterable[tuple[str, str]] = (),
    gha: bool = False,
) -> dict[str, str]:
    """The docker CLI's whole environment: an allow-list of the job's, then our settings,
    then the build args (whose keys `inputs` keeps clear of every name above)."""
    names = _CLI_ENVIRONMENT + (GHA_ENVIRONMENT if gha else ())
    env = {name: base[name] for name in names if base.get(name)}
    env["DOCKER_BUILDKIT"] = "1"
    env["BUILDKIT_PROGRESS"] = "plain"
    env.update(build_args)
    for _, variable in secrets:
        env[variable] = base.get(variable, "")
    return env


@contextmanager
def registry_credentials(host: str, username: str, password: str, base: Mapping[str, str]) -> Iterator[str]:
    """A private DOCKER_CONFIG holding the ECR login, for BuildKit's cache import and export.

    The job's own Docker config is left untouched (no credentials written to the runner's
    home); its settings, its buildx builders and CLI plugins still apply through a copy of
    config.json and links to its folders. The folder is removed when the build is done.
    """
    user_config = Path(base.get("DOCKER_CONFIG") or Path.home() / ".docker")
    with tempfile.TemporaryDirectory(prefix="lambda-publish-docker-") as folder:
        private = Path(folder)
        config: dict[str, Any] = {}
        if (user_config / "config.json").is_file():
            with contextlib.suppress(ValueError, OSError):
                config = json.loads((user_config / "config.json").read_text())
        for helper_map in ("credHelpers",):
            config.get(helper_map, {}).pop(host, None)
        if config.get("credsStore"):
            # A credential store would be asked first and know nothing of this login.
            config.pop("credsStore")
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        config.setdefault("auths", {})[host] = {"auth": token}
        path = private / "config.json"
        path.touch(mode=0o600)
        path.write_text(json.dumps(config))
        for sub in ("buildx", "cli-plugins", "contexts"):
            if (user_config / sub).exists():
                (private / sub).symlink_to(user_config / sub)
        yield str(private)
