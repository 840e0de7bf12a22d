"""What the docker CLI is given for a build: its environment (an allow-list of the job's,
so neither the AWS credentials nor other steps' tokens reach it, and build-arg names that
could steer it or a process under it refused) and, for the cache modes that use our
registry, a private Docker config holding the ECR login."""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entrypoint.engine.endpoint import CLIENT_ENVIRONMENT

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping


# What the docker CLI (and the BuildKit client in it) gets of the job's environment: the
# allow-list every child that talks to the engine gets (`engine.endpoint`), so neither the
# AWS credentials nor other steps' tokens reach it.
_CLI_ENVIRONMENT = CLIENT_ENVIRONMENT
# BuildKit's gha cache reads these; only cache mode gha passes them.
GHA_ENVIRONMENT = ("ACTIONS_RUNTIME_TOKEN", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL")

# Names a build arg (an environment variable of the CLI, see `build_command`) must not
# take: what the CLI or a process under it reads as a setting. DOCKER_HOST as a build arg
# would send the build, with the registry login, to another engine; SSH_AUTH_SOCK would
# hand an ssh engine's connection another agent, HOSTALIASES another registry address.
# Who reads what:
# - the CLI, buildx and BuildKit's client: DOCKER_*, BUILDX_*, BUILDKIT_*, OTEL_* and
#   JAEGER_TRACE (tracing endpoints), the proxies (ALL_PROXY, FTP_PROXY too), the CA
#   bundle (SSL_*), the config's home (HOME, XDG_*), KUBECONFIG and KUBERNETES_* (buildx's
#   kubernetes driver), ACTIONS_* (its gha cache), GITHUB_* and RUNNER_* (build metadata);
# - Go's runtime: GODEBUG, GOGC, GOMAXPROCS, GOMEMLIMIT, GOTRACEBACK (not GOPROXY and
#   GOFLAGS: Go's tool reads those, not a built binary, and Go builds pass them as ARGs);
# - git, which buildx runs for build metadata: GIT_*, HOME, XDG_CONFIG_HOME, and a shell
#   for its hooks and aliases: SHELL, IFS, ENV, BASH_ENV, PWD;
# - ssh, for ssh:// engines: SSH_* (SSH_AUTH_SOCK, SSH_ASKPASS, SSH_ASKPASS_REQUIRE), DISPLAY
#   (which makes it run SSH_ASKPASS);
# - libc and the dynamic loader, in every one of them: LD_*, GCONV_PATH, NLSPATH, LOCPATH,
#   MALLOC_*, GLIBC_TUNABLES, LC_*, the resolver's HOSTALIASES, LOCALDOMAIN, RES_OPTIONS
#   and RESOLV_*, and NSS modules' NSS_* (nss_wrapper);
# - a terminal: TERM.
# Left to Dockerfiles: NODE_OPTIONS, PYTHON* and the like (nothing under the CLI is node or
# Python), and TZ (a common ARG; it only changes the time zone of the CLI's log lines).
_CLI_READS_PREFIXES = (
    "DOCKER_",
    "BUILDX_",
    "BUILDKIT_",
    "OTEL_",
    "SSL_",
    "XDG_",
    "KUBERNETES_",
    "ACTIONS_",
    "GITHUB_",
    "RUNNER_",
    "GIT_",
    "SSH_",
    "LD_",
    "MALLOC_",
    "LC_",
    "RESOLV_",
    "NSS_",
)
_CLI_READS_NAMES = frozenset(
    {name.upper() for name in _CLI_ENVIRONMENT}
    | {
        "ALL_PROXY",
        "FTP_PROXY",
        "JAEGER_TRACE",
        "KUBECONFIG",
        "GODEBUG",
        "GOGC",
        "GOMAXPROCS",
        "GOMEMLIMIT",
        "GOTRACEBACK",
        "SHELL",
        "IFS",
        "ENV",
        "BASH_ENV",
        "PWD",
        "DISPLAY",
        "GCONV_PATH",
        "NLSPATH",
        "LOCPATH",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "RES_OPTIONS",
        "TERM",
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
