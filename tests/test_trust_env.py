"""What the action's children and its logins can reach (issue 23, finding 5), each tried for
real: build-arg names that would steer the docker CLI or a process under it, the environment
of every process the action starts (the docker CLI's probes, docker-py's `ssh`, a credential
helper), the ECR login in builds that do not use the registry, promote's source host, and a
planted rollback history tag.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from entrypoint.engine.endpoint import client_environment
from entrypoint.registry import tags
from entrypoint.registry.client import RegistryClient
from entrypoint.registry.ecr import Repository
from entrypoint.registry.transport import CredentialScope, Transport
from tests.lambda_images import Images
from tests.support.fakehttp import FakeHttp, Reply, Request
from tests.support.remote import Pki
from tests.support.run import REGION, Run, run_entrypoint
from tests.support.run import publish as publish_in
from tests.support.stack import ECR_PASSWORD, ECR_USER, Registry, docker_cli

if TYPE_CHECKING:
    from collections.abc import Iterator

    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.workspace import Workspace

COMMIT = "5afe" + "0" * 36
SECRETS = {
    "GITHUB_TOKEN": "ghs_job_token_value",
    "NPM_TOKEN": "npm_value",
    "ACTIONS_RUNTIME_TOKEN": "rt_value",
}
JOB_ONLY = ("AWS_", "GITHUB_", "ACTIONS_", "INPUT_", "NPM_", "PYTHON")


def only_error(run: Run) -> str:
    assert run.code != 0, run.log
    errors = run.error_lines()
    assert len(errors) == 1, run.log
    return errors[0]


# ------------------------------------- a. build-arg names the CLI or its children read


@pytest.mark.parametrize(
    "key",
    [
        "SSH_AUTH_SOCK",  # ssh, for an ssh:// engine: another agent
        "SSH_ASKPASS",  # ssh: a program it runs
        "SSH_ASKPASS_REQUIRE",
        "KUBECONFIG",  # buildx's kubernetes driver: another cluster
        "HOSTALIASES",  # libc's resolver: another address for a name
        "RES_OPTIONS",
        "LOCALDOMAIN",
        "GCONV_PATH",  # libc: modules it loads
        "GLIBC_TUNABLES",
        "MALLOC_ARENA_MAX",
        "NSS_WRAPPER_HOSTS",
    ],
)
def test_build_args_cannot_steer_the_clis_children(
    app: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
    key: str,
) -> None:
    repo = ecr_repository()
    run = publish_in(
        app.path, registry.host, tmp_path, "--build-args", f"GOOD=1\n{key}=/tmp/elsewhere", repository=repo
    )
    line = only_error(run)
    assert run.code == 2
    assert f"line 2 sets {key}, a name the docker CLI" in line
    assert "/tmp/elsewhere" not in line
    assert registry.tags(repo) == []


# ------------------------------------------------ b. every child gets the allow-list


def _recorder(folder: Path, records: Path, real_docker: str) -> Path:
    """`docker`, `ssh` and a credential helper for PATH that write down their environment
    exactly as they were started with it (/proc/self/environ), their argv and their parent's
    binary, then do their job: the docker CLI, an ssh to the local engine (as sshd would run
    `docker system dial-stdio` there), a store that knows no credentials."""
    folder.mkdir(parents=True)
    record = (
        f'r={records}/"$(basename "$0")"-$$\n'
        'cat /proc/$$/environ > "$r.env"\n'
        'printf "%s\\0" "$@" > "$r.argv"\n'
        'readlink /proc/$PPID/exe > "$r.parent"\n'
    )
    scripts = {
        "docker": f'exec {real_docker} "$@"\n',
        "ssh": (
            'case " $* " in *" 127.0.0.1 "*"docker system dial-stdio"*) ;; *) exit 255;; esac\n'
            f"exec env -u DOCKER_CONTEXT -u DOCKER_HOST {real_docker} -H unix:///var/run/docker.sock "
            "system dial-stdio\n"
        ),
        "docker-credential-recorder": (
            'cat > /dev/null\necho "credentials not found in native keychain"\nexit 1\n'
        ),
    }
    for name, body in scripts.items():
        path = folder / name
        path.write_text("#!/bin/sh\n" + record + body)
        path.chmod(0o755)
    return folder


def _records(records: Path) -> list[tuple[str, list[str], str, dict[str, str]]]:
    """(program, argv, parent binary, environment) of every recorded start."""
    found = []
    for env_file in sorted(records.glob("*.env")):
        stem = env_file.with_suffix("")
        raw = env_file.read_bytes()
        environ = dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)
        argv = [a.decode() for a in stem.with_suffix(".argv").read_bytes().split(b"\0") if a]
        parent = Path(stem.with_suffix(".parent").read_text().strip()).name
        found.append((stem.name.rsplit("-", 1)[0], argv, parent, environ))
    return found


def test_no_child_of_the_action_gets_its_aws_credentials_or_tokens(
    app: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """An engine reached over ssh through a Docker context, with a credential store in the
    job's Docker config: the context probe, the CLI's buildx/version probes, the build,
    docker-py's ssh and the CLI's ssh, and the store docker-py asks, each read back."""
    records = tmp_path / "records"
    records.mkdir()
    real_docker = docker_cli()
    tools = _recorder(tmp_path / "bin", records, real_docker)
    config = _ssh_engine_config(tmp_path / "docker-config", real_docker)
    settings = json.loads((config / "config.json").read_text()) if (config / "config.json").exists() else {}
    (config / "config.json").write_text(json.dumps(settings | {"credsStore": "recorder"}))
    env = {
        "PATH": f"{tools}:{os.environ['PATH']}",
        "DOCKER_CONFIG": str(config),
        "DOCKER_CONTEXT": "ssh-engine",
        "SSH_AUTH_SOCK": str(tmp_path / "agent.sock"),  # what ssh needs: kept
        **SECRETS,
    }
    repo = ecr_repository()
    run = publish_in(app.path, registry.host, tmp_path, repository=repo, env=env)
    assert run.code == 0, run.log
    assert "engine: ssh://root@127.0.0.1 (context ssh-engine, remote)" in run.log

    started = _records(records)
    kinds = {
        (program, "python" if parent.startswith("python") else parent) for program, _, parent, _ in started
    }
    assert ("ssh", "python") in kinds  # docker-py's
    assert ("ssh", "docker") in kinds  # the CLI's own
    assert ("docker-credential-recorder", "python") in kinds  # asked by docker-py
    docker_runs = [argv for program, argv, _, _ in started if program == "docker"]
    assert ["context", "inspect", "ssh-engine"] in docker_runs
    assert any(argv[:1] == ["build"] for argv in docker_runs)
    assert any(argv[:1] == ["version"] or argv[:2] == ["buildx", "version"] for argv in docker_runs)
    for program, argv, parent, environ in started:
        what = f"{program} {' '.join(argv)} (from {parent})"
        # docker-py can only lay values over os.environ for a credential helper: emptied.
        leaked = {k for k, v in environ.items() if v and k.startswith(JOB_ONLY)}
        assert leaked == set(), what
        assert not set(SECRETS.values()) & set(environ.values()), what
        assert ECR_PASSWORD not in "\0".join(environ.values()), what
        if program in ("ssh", "docker"):
            assert {k for k in environ if k.startswith(JOB_ONLY)} == set(), what
        if program == "ssh":
            assert environ["SSH_AUTH_SOCK"] == env["SSH_AUTH_SOCK"], what


def _ssh_engine_config(folder: Path, real_docker: str) -> Path:
    """A Docker config whose context `ssh-engine` reaches the local engine over ssh."""
    folder.mkdir()
    made = subprocess.run(
        [real_docker, "--config", str(folder), "context", "create", "ssh-engine",
         "--docker", "host=ssh://root@127.0.0.1"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return folder


def test_a_build_arg_cannot_hand_the_clis_ssh_another_agent(
    app: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """SSH_AUTH_SOCK as a build arg, with an engine reached over ssh: the build's CLI would
    run its ssh with that agent (a socket the build's author chose) for the engine's host."""
    records = tmp_path / "records"
    records.mkdir()
    real_docker = docker_cli()
    tools = _recorder(tmp_path / "bin", records, real_docker)
    config = _ssh_engine_config(tmp_path / "docker-config", real_docker)
    planted = str(tmp_path / "someone-elses-agent.sock")
    env = {
        "PATH": f"{tools}:{os.environ['PATH']}",
        "DOCKER_CONFIG": str(config),
        "DOCKER_CONTEXT": "ssh-engine",
    }
    repo = ecr_repository()
    run = publish_in(app.path, registry.host, tmp_path, "--build-args", f"SSH_AUTH_SOCK={planted}",
                     repository=repo, env=env)  # fmt: skip
    reached = [
        argv for program, argv, _, environ in _records(records) if environ.get("SSH_AUTH_SOCK") == planted
    ]
    assert reached == []
    line = only_error(run)
    assert run.code == 2
    assert "line 1 sets SSH_AUTH_SOCK, a name the docker CLI" in line
    assert registry.tags(repo) == []


# ------------------------------------- c. the ECR login only in builds that use the registry


@pytest.fixture
def private_base(registry: Registry, busybox_base: str, docker_client: DockerClient) -> str:
    """The busybox base in another repository of the ECR registry (which wants the login),
    and not in the engine under that name, so a build must pull it."""
    repository, tag = f"t{secrets.token_hex(3)}-private/base", "v1"
    remote = f"{registry.host}/{repository}"
    docker_client.api.tag(busybox_base, remote, tag)
    auth = {"username": ECR_USER, "password": ECR_PASSWORD}
    try:
        for event in docker_client.api.push(remote, tag, stream=True, decode=True, auth_config=auth):
            assert "error" not in event, event
    finally:
        docker_client.api.remove_image(f"{remote}:{tag}", noprune=True)
    return f"{remote}:{tag}"


@pytest.mark.parametrize(("cache", "pulls"), [("none", False), ("registry-inline", True)])
def test_only_a_build_that_uses_the_registry_cache_has_the_ecr_login(
    app: Workspace,
    registry: Registry,
    private_base: str,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
    cache: str,
    pulls: bool,
) -> None:
    """A Dockerfile FROM another repository the role may read: with cache none the build has
    no login to pull it with; registry-inline needs the login for its cache, so there it is."""
    app.commit_files({"Dockerfile": f'FROM {private_base}\nCOPY app.txt /app.txt\nCMD ["cat", "/app.txt"]\n'})
    config = tmp_path / "docker-config"  # the job's own Docker config: no logins
    config.mkdir()
    repo = ecr_repository()
    run = publish_in(app.path, registry.host, tmp_path, "--cache", cache, repository=repo,
                     env={"DOCKER_CONFIG": str(config)})  # fmt: skip
    if pulls:
        assert run.code == 0, run.log
        assert registry.manifest(repo, app.head)[0] == run.outputs["digest"]
        return
    line = only_error(run)
    assert "the build gets no ECR login" in run.log
    assert f"load metadata for {private_base}" in line
    assert "401 Unauthorized" in line
    assert registry.tags(repo) == []


# ------------------------------------------------ d. promote's source gets no ECR login


@pytest.fixture(scope="module")
def outside_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki")).make_ca()


def _outside_address() -> str:
    """An address of this machine that is not loopback: a registry host on another machine,
    as far as the action can tell (it is neither ECR, the target, nor the runner's loopback)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        address = line.split()[3].split("/")[0]
        if not address.startswith("127."):
            return address
    pytest.skip("no non-loopback IPv4 address on this machine")


def _trusting(ca: Path) -> dict[str, str]:
    """The test CA for the action's registry calls (SSL_CERT_FILE; the requests variables,
    which this machine sets to its system bundle, emptied so it applies)."""
    return {"SSL_CERT_FILE": str(ca), "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": "", "GITHUB_SHA": COMMIT}


def promote(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    return run_entrypoint(
        ["promote", "--region", REGION, *args],
        cwd=tmp_path,
        tmp=tmp_path,
        env={"GITHUB_SHA": COMMIT, **(env or {})},
    )


def _login_in(request: Request) -> bool:
    """Whether a request carried the ECR login (basic, as the transport sends it)."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return ECR_PASSWORD in header
    return ECR_PASSWORD in base64.b64decode(header.split(" ", 1)[1]).decode(errors="replace")


def test_promote_never_sends_the_ecr_login_to_another_source_host(
    registry: Registry,
    ecr_repository: MakeRepository,
    outside_pki: Pki,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A source on a host that is not ECR, not the target and not loopback: it is asked for
    the image (HTTPS, its certificate trusted), and never given the login."""
    address = _outside_address()
    cert, key = outside_pki.issue(f"source-{secrets.token_hex(2)}", ip=address)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def not_found(request: Request, server: FakeHttp) -> Reply:
        return Reply(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}')

    target = ecr_repository()
    with FakeHttp(not_found, address=address) as source:
        source._server.socket = context.wrap_socket(source._server.socket, server_side=True)
        run = promote(
            tmp_path,
            "--source", f"{source.host}/team/app@sha256:{'ab' * 32}",
            "--env", "prod", "--repository", target, "--registry", registry.host,
            env=_trusting(outside_pki.ca),
        )  # fmt: skip
        asked = list(source.requests)
    line = only_error(run)
    assert asked, run.log  # the source was asked
    assert [r.path for r in asked if _login_in(r)] == []
    # Anonymous: no Authorization header at all (an empty Basic login is still a login).
    assert [r.path for r in asked if "Authorization" in r.headers] == []
    assert "is not in its registry" in line or "without credentials" in line
    assert "read without credentials" in run.log
    assert registry.tags(target) == []


def _app(images: Images, busybox_base: str, adapter_image: str) -> str:
    return images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "COPY version.txt /var/task/version.txt\n"
        'CMD ["httpd", "-f", "-p", "8080"]\n',
        name="trust-env/app",
        files={"version.txt": secrets.token_hex(4)},
    )


@pytest.fixture(scope="module")
def images(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    made = Images(docker_client, tmp_path_factory.mktemp("trust-env"))
    yield made
    made.cleanup()


def _copy(source: Registry, repository: str, digest: str, target: Registry) -> None:
    """An image copied registry to registry through their HTTP APIs (the engine never holds it)."""
    _, media_type, body = source.manifest_raw(repository, digest)
    parsed = json.loads(body)
    for blob in (parsed["config"], *parsed["layers"]):
        target.put_blob(repository, source.blob(repository, blob["digest"]))
    target.put_manifest(repository, digest, body, media_type)


def test_promote_from_an_anonymous_registry_elsewhere_still_works(
    images: Images,
    busybox_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    outside_pki: Pki,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The other side of the test above: a source registry elsewhere that serves anonymous
    pulls is read without credentials, and the image reaches the target byte for byte."""
    address = _outside_address()
    cert, key = outside_pki.issue(f"public-{secrets.token_hex(2)}", ip=address)
    repository = f"t{secrets.token_hex(3)}-public/app"
    digest = images.push(_app(images, busybox_base, adapter_image), registry, repository)
    target = ecr_repository()
    with Registry(user=None, password=None, address=address, tls=(cert, key, outside_pki.ca)) as public:
        _copy(registry, repository, digest, public)
        run = promote(
            tmp_path,
            "--source", f"{public.host}/{repository}@{digest}",
            "--env", "prod", "--repository", target, "--registry", registry.host,
            env=_trusting(outside_pki.ca),
        )  # fmt: skip
    assert run.code == 0, run.log
    assert f"source registry {public.host} is read without credentials" in run.log
    assert run.outputs["digest"] == digest
    assert registry.manifest_raw(target, "prod")[2] == registry.manifest_raw(repository, digest)[2]


# --------------------------------------------- e. a planted history tag chooses nothing


def test_a_planted_history_tag_does_not_choose_the_rollback(
    images: Images,
    busybox_base: str,
    adapter_image: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    target = ecr_repository()
    first, second, planted = (_app(images, busybox_base, adapter_image) for _ in range(3))
    common = ("--env", "prod", "--repository", target, "--registry", registry.host)
    for image in (first, second):
        repository = f"t{secrets.token_hex(3)}-preprod/app"
        digest = images.push(image, registry, repository)
        moved = promote(tmp_path, "--source", f"{registry.host}/{repository}@{digest}", *common)
        assert moved.code == 0, moved.log
    first_digest = registry.manifest(
        target, next(t for t in registry.tags(target) if t.startswith("history-"))
    )[0]
    # Someone who may push to the repository plants an image and two history tags naming
    # it: one dated far in the future, one whose digits are no date at all.
    evil = images.push(planted, registry, target, "planted")
    _, media_type, body = registry.manifest_raw(target, evil)
    far, bogus = "history-prod-29991231-235959-000000", "history-prod-99991399-000000-000000"
    for tag in (far, bogus):
        registry.put_manifest(target, tag, body, media_type)

    back = run_entrypoint(["rollback", "--region", REGION, *common], cwd=tmp_path, tmp=tmp_path)
    assert back.code == 0, back.log
    assert back.outputs["digest"] == first_digest != evil
    assert registry.manifest(target, "prod")[0] == first_digest
    warnings = [line for line in back.log.splitlines() if line.startswith("::warning::")]
    assert len(warnings) == 1 and f"rollback ignores {far} in {target}" in warnings[0], back.log
    assert bogus not in back.stdout.replace(far, "")
    assert evil not in back.stdout


def test_history_keeps_only_real_times_up_to_now(
    registry: Registry, ecr_repository: MakeRepository, aws_env: dict[str, str]
) -> None:
    """The order rollback reads, against the real registry: newest real time first; names
    that are no time, or other environments', left out."""
    repository = f"t{secrets.token_hex(3)}-history/app"
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": registry.put_blob(repository, config), "size": len(config)},
        "layers": [],
    }).encode()  # fmt: skip
    names = [
        "history-prod-20250101-000000-000000",
        "history-prod-20250301-120000-000001",
        "history-prod-20251340-000000-000000",  # month 13
        "history-prod-29991231-235959-000000",  # the future
        "history-preprod-20260101-000000-000000",  # another environment
        "history-prod-20250301-120000-00000",  # not the format
    ]
    for name in names:
        registry.put_manifest(repository, name, manifest, "application/vnd.oci.image.manifest.v1+json")
    client = RegistryClient(
        Transport(registry.host, ECR_USER, ECR_PASSWORD, scope=CredentialScope(registry.host))
    )
    place = tags.Place(client, Repository(repository, f"{registry.host}/{repository}", "", "MUTABLE"), {})
    assert tags.history(place, "prod") == [names[1], names[0]]


def test_the_docker_cli_is_found_and_the_probes_run_with_the_allow_list(tmp_path: Path) -> None:
    """The allow-list is enough for the CLI to find itself and its engine (a sanity check of
    the list, with nothing of the job's environment around it)."""
    env = client_environment({**os.environ, "AWS_SECRET_ACCESS_KEY": "x", **SECRETS})
    assert not {k for k in env if k.startswith(JOB_ONLY)}
    done = subprocess.run([shutil.which("docker", path=env["PATH"]) or "docker", "version"],
                          env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
