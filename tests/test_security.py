"""Each way a caller's files, plans, registries or build output could hijack the action,
tried for real against the stack, and shown to fail safely (issue: trustworthy to pin).

The README's Security section lists what each test here covers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
import pytest
import yaml

from entrypoint.build.buildkit import Builder, BuilderSettings, builder_settings, create_command
from entrypoint.errors import RegistryError
from entrypoint.registry.client import RegistryClient
from entrypoint.registry.transport import CredentialScope, Transport
from tests.support.act import CHECKOUT, consumer
from tests.support.fakehttp import FakeHttp, Reply, Request
from tests.support.run import REGION, REPO_ROOT, Run, read_until, run_entrypoint, start_publish
from tests.support.run import publish as publish_in
from tests.support.stack import ECR_PASSWORD, ECR_USER

if TYPE_CHECKING:
    from docker import DockerClient

    from tests.conftest import MakeRepository
    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

ECR_HOST = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32


def only_error(run: Run) -> str:
    assert run.code != 0, run.log
    errors = run.error_lines()
    assert len(errors) == 1, run.log
    return errors[0]


def never(request: Request, server: FakeHttp) -> Reply:
    return Reply(500, b"this host should never have been asked")


# --------------------------------------------------------------- only our code runs


HIJACKS = {
    # The names Python would import from the current folder, or the set-up would run.
    "venv.py": "venv",
    "boto3.py": "boto3",
    "requests.py": "requests",
    "docker.py": "docker",
    "entrypoint/__init__.py": "entrypoint",
    "entrypoint/__main__.py": "entrypoint-main",
    "pip/__init__.py": "pip",
    "pip/__main__.py": "pip-main",
    "sitecustomize.py": "sitecustomize",
    "usercustomize.py": "usercustomize",
    "startup.py": "pythonstartup",
}


def test_workspace_python_files_never_run_in_the_action(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    action_dir: Path,
    tmp_path: Path,
) -> None:
    """A checkout with boto3.py, venv.py, pip/ and friends at its root, PYTHONPATH and
    PYTHONSTARTUP pointing into it: set-up and publish run, none of them is imported."""
    markers = tmp_path / "markers"
    markers.mkdir()
    files = {path: f"open({str(markers / name)!r}, 'w').write('ran')\n" for path, name in HIJACKS.items()}
    files["Dockerfile"] = f'FROM {busybox_base}\nCMD ["true"]\n'
    workspace.commit_files(files, "hostile checkout")
    repo = ecr_repository()
    run = consumer(
        workspace,
        tmp_path,
        f"""\
        name: deploy
        on: push
        jobs:
          build:
            runs-on: ubuntu-latest
            env:
              PYTHONPATH: ${{{{ github.workspace }}}}
              PYTHONSTARTUP: ${{{{ github.workspace }}}}/startup.py
            steps:
              - uses: {CHECKOUT}
              - id: publish
                uses: owner/lambda-image-publish@v1
                with:
                  env: preprod
                  region: {REGION}
                  dockerfile: Dockerfile
                  repository: {repo}
                  registry: {registry.host}
              - run: echo "OUT digest=${{{{ steps.publish.outputs.digest }}}}"
        """,
        action_dir,
        aws_env,
    )
    assert run.code == 0, run.log
    assert run.values("build")["digest"].startswith("sha256:")
    assert sorted(p.name for p in markers.iterdir()) == []


# ------------------------------------------------- credentials go only where we logged in


def test_verify_never_sends_the_login_to_a_host_only_the_plan_names(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    with FakeHttp(never) as attacker:
        plan = {
            "format_version": "1.2",
            "planned_values": {"root_module": {}},
            "resource_changes": [
                {
                    "address": "aws_lambda_function.api",
                    "mode": "managed",
                    "type": "aws_lambda_function",
                    "change": {
                        "actions": ["update"],
                        "before": {"package_type": "Image"},
                        "after": {"package_type": "Image", "image_uri": f"{attacker.host}/app@{DIGEST}"},
                        "after_unknown": {},
                    },
                }
            ],
        }
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        run = run_entrypoint(
            [
                "verify",
                "--region",
                REGION,
                "--plan",
                "plan.json",
                "--image-uris",
                f"evil.example/app@{DIGEST}",
            ],
            cwd=tmp_path,
            tmp=tmp_path,
        )
        assert attacker.requests == []
    line = only_error(run)
    assert f"refused to send the ECR login to {attacker.host}" in line
    assert "refused to send the ECR login to evil.example" in line
    assert "set the 'registry' input" in line
    assert run.outputs == {"checked": "0"}


def bearer_registry(realm: str) -> FakeHttp:
    def answer(request: Request, server: FakeHttp) -> Reply:
        return Reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry"'})

    return FakeHttp(answer)


@pytest.mark.parametrize(
    ("realm_host", "scheme"),
    [("127.0.0.2", "http"), ("127.0.0.1", "ftp")],
    ids=["other-host", "not-http"],
)
def test_a_bearer_challenge_cannot_redirect_the_login(
    app: Workspace, aws_env: dict[str, str], tmp_path: Path, realm_host: str, scheme: str
) -> None:
    with FakeHttp(never, address=realm_host) as token_service:
        realm = f"{scheme}://{token_service.host}/token"
        with bearer_registry(realm) as hostile:
            run = publish_in(app.path, hostile.host, tmp_path, repository="app")
        assert list(token_service.requests) == []
    line = only_error(run)
    assert "asked for the login to be sent to the token service" in line
    assert "the login was not sent" in line
    # The registry itself got the basic login (it is the one the workflow named), nothing else.
    assert all(r.path == "/v2/" for r in hostile.requests)


def test_a_token_realm_on_the_registrys_own_host_still_works() -> None:
    """The positive side of the realm rule: token auth on the registry's own host."""
    token = "t-" + "x" * 20
    basic = "Basic " + base64.b64encode(f"{ECR_USER}:{ECR_PASSWORD}".encode()).decode()

    def answer(request: Request, server: FakeHttp) -> Reply:
        if request.path.startswith("/token"):
            ok = request.headers.get("Authorization") == basic
            return Reply(200, json.dumps({"token": token}).encode()) if ok else Reply(401)
        if request.headers.get("Authorization") == f"Bearer {token}":
            return Reply(200, b"{}")
        realm = f"http://{server.host}/token"
        return Reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="r"'})

    with FakeHttp(answer) as server:
        transport = Transport(server.host, ECR_USER, ECR_PASSWORD, scope=CredentialScope(server.host))
        RegistryClient(transport).ping()
        assert [r.path.split("?")[0] for r in server.requests] == ["/v2/", "/token", "/v2/"]


def test_content_fetched_by_digest_must_match_it(aws_env: dict[str, str], tmp_path: Path) -> None:
    """A registry (or proxy) answering other bytes for a digest is caught, not checked."""
    forged = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"})

    def answer(request: Request, server: FakeHttp) -> Reply:
        if request.path == "/v2/":
            return Reply(200, b"{}")
        headers = {
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Docker-Content-Digest": DIGEST,
        }
        return Reply(200, forged.encode(), headers)

    with FakeHttp(answer) as lying:
        run = run_entrypoint(
            [
                "verify",
                "--region",
                REGION,
                "--registry",
                lying.host,
                "--image-uris",
                f"{ECR_HOST}/app@{DIGEST}",
            ],
            cwd=tmp_path,
            tmp=tmp_path,
        )
    line = only_error(run)
    found = "sha256:" + hashlib.sha256(forged.encode()).hexdigest()
    assert f"content whose digest is {found}, not {DIGEST}" in line


def test_a_digest_from_an_untrusted_answer_cannot_address_another_path() -> None:
    with FakeHttp(never) as server:
        client = RegistryClient(Transport(server.host, "u", "p", scope=CredentialScope(server.host)))
        for reference in ("sha256:../../other", "latest\n", "sha256:" + "a" * 64 + "/x"):
            with pytest.raises(RegistryError, match="not a valid repository"):
                client.get_manifest("app", reference)
        assert server.requests == []


# ----------------------------------------------- children get an allow-listed environment


@pytest.mark.parametrize(
    "key",
    [
        "DOCKER_HOST",
        "LD_PRELOAD",
        "BUILDKIT_PROGRESS",
        "DOCKER_CONFIG",
        "PATH",
        "GIT_SSH_COMMAND",
        "http_proxy",
    ],
)
def test_build_args_cannot_steer_the_docker_cli(
    app: Workspace, registry: Registry, aws_env: dict[str, str], tmp_path: Path, key: str
) -> None:
    with FakeHttp(never) as elsewhere:
        run = publish_in(
            app.path,
            registry.host,
            tmp_path,
            "--build-args",
            f"GOOD=1\n{key}=tcp://{elsewhere.host}",
            repository="app",
        )
        assert elsewhere.requests == []
    line = only_error(run)
    assert run.code == 2
    assert f"line 2 sets {key}, a name the docker CLI" in line
    assert elsewhere.host not in line


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _docker_child(pid: int) -> int:
    """The docker CLI the entrypoint started (it may start short-lived ones too)."""
    for _ in range(50):
        for child in _children(pid):
            try:
                if Path(f"/proc/{child}/exe").resolve(strict=True).name == "docker":
                    return child
            except OSError:
                continue
        time.sleep(0.1)
    raise AssertionError("no docker CLI process under the entrypoint")


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


def test_the_docker_cli_gets_no_aws_credentials_or_job_tokens(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The docker CLI's real environment, read from /proc while it builds."""
    marker = f"building-{os.urandom(4).hex()}"  # a new step every run: never CACHED
    workspace.commit_files(
        {
            "Dockerfile": (
                f'FROM {busybox_base}\nARG NAME\nRUN echo {marker}-$((1+1)) && sleep 4\nCMD ["true"]\n'
            )
        }
    )
    secrets = {"ACTIONS_RUNTIME_TOKEN": "runtime-token-value", "GITHUB_TOKEN": "ghs_value", "NPM_TOKEN": "n"}
    process = start_publish(
        workspace.path, registry.host, tmp_path, "--repository", ecr_repository(), "--build-args", "NAME=x",
        env={**aws_env, **secrets, "DOCKER_BUILDKIT": "1"},
    )  # fmt: skip
    try:
        read_until(process, f"{marker}-2")  # the step's output: its header says $((1+1))
        seen = _environ(_docker_child(process.pid))
        rest, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert seen["NAME"] == "x"
    assert seen["DOCKER_BUILDKIT"] == "1"
    assert Path(seen["DOCKER_CONFIG"]).name.startswith("lambda-publish-docker-")
    leaked = {k for k in seen if k.startswith(("AWS_", "INPUT_", "GITHUB_", "ACTIONS_", "PYTHON"))}
    assert leaked == set()
    assert not set(secrets.values()) & set(seen.values())
    assert ECR_PASSWORD not in "\0".join(seen.values())


# ---------------------------------------------------------- secrets are BuildKit secrets


def test_secrets_reach_the_build_and_nothing_else(
    workspace: Workspace,
    busybox_base: str,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    value = "s3cr3t-" + os.urandom(6).hex()
    expected = hashlib.sha256(value.encode()).hexdigest()
    workspace.commit_files(
        {
            # The build proves the value arrived by its hash, so the value is nowhere but
            # in the step's environment.
            "Dockerfile": (
                f"FROM {busybox_base}\n"
                "RUN --mount=type=secret,id=npm "
                f'test "$(sha256sum < /run/secrets/npm | cut -c1-64)" = "{expected}"\n'
                'CMD ["true"]\n'
            )
        }
    )
    repo = ecr_repository()
    tmp_path.joinpath("a").mkdir()
    run = publish_in(
        workspace.path, registry.host, tmp_path / "a", "--secrets", "npm=NPM_TOKEN", repository=repo,
        env={"NPM_TOKEN": value},
    )  # fmt: skip
    assert run.code == 0, run.log
    assert "--secret id=npm,env=NPM_TOKEN" in run.log
    # Masked at once (the runner hides it from then on), and otherwise nowhere.
    assert run.stdout.count(value) == 1
    assert f"::add-mask::{value}" in run.stdout
    assert all(value not in v for v in run.outputs.values())
    assert all(value not in t for t in registry.tags(repo))
    manifest = registry.manifest(repo, run.outputs["digest"])[2]
    config = registry.blob(repo, manifest["config"]["digest"])
    assert value.encode() not in config

    # A rotated value is not a new image: the fingerprint holds the id, never the value.
    workspace.commit("empty")
    tmp_path.joinpath("b").mkdir()
    again = publish_in(
        workspace.path, registry.host, tmp_path / "b", "--secrets", "npm=NPM_TOKEN", repository=repo,
        env={"NPM_TOKEN": value + "-rotated"},
    )  # fmt: skip
    assert again.code == 0, again.log
    assert "build skipped" in again.stdout


def test_a_secret_whose_variable_is_unset_is_one_input_error(
    app: Workspace, registry: Registry, aws_env: dict[str, str], tmp_path: Path
) -> None:
    run = publish_in(
        app.path, registry.host, tmp_path, "--secrets", "npm=NPM_TOKEN_MISSING", repository="app"
    )
    line = only_error(run)
    assert "id 'npm' the variable NPM_TOKEN_MISSING, which is not set" in line
    assert run.code == 2


def test_errors_about_build_args_never_show_a_value(
    app: Workspace, registry: Registry, aws_env: dict[str, str], tmp_path: Path
) -> None:
    run = publish_in(
        app.path, registry.host, tmp_path, "--build-args", "A=1\nhunter2-not-a-key-value\n", repository="app"
    )
    line = only_error(run)
    assert "'build-args' line 2 is not KEY=VALUE" in line
    assert "hunter2" not in run.log


def test_secret_like_build_args_are_flagged(
    app: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    run = publish_in(
        app.path,
        registry.host,
        tmp_path,
        "--build-args",
        "API_TOKEN=abc\nREGION_NAME=x",
        repository=ecr_repository(),
    )
    assert run.code == 0, run.log
    warnings = [line for line in run.stdout.splitlines() if line.startswith("::warning::build arg")]
    assert len(warnings) == 1
    assert "build arg API_TOKEN reads like a credential" in warnings[0]
    assert "abc" not in warnings[0]


# -------------------------------------------------------------------- cancel is clean


def test_sigterm_during_the_build_removes_the_credentials_and_moves_nothing(
    app: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    tmp_path.joinpath("first").mkdir()
    first = publish_in(app.path, registry.host, tmp_path / "first", repository=repo)
    assert first.code == 0, first.log
    app.commit_files(
        {
            "Dockerfile": app.path.joinpath("Dockerfile").read_text()
            + "RUN echo long-$((1+1))-step && sleep 120\n"
        }
    )
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    process = start_publish(app.path, registry.host, runner_temp, "--repository", repo, env=aws_env)
    try:
        read_until(process, "long-2-step")  # running: only its output says 2
        assert list(runner_temp.glob("lambda-publish-docker-*")), (
            "the private Docker config exists while building"
        )
        cli = _children(process.pid)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert time.monotonic() - started < 20
    assert process.returncode == 143, rest
    errors = [line for line in rest.splitlines() if line.startswith("::error::")]
    assert len(errors) == 1 and "cancelled by SIGTERM" in errors[0], rest
    assert list(runner_temp.glob("lambda-publish-*")) == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in cli)
    assert registry.manifest(repo, "preprod")[0] == first.outputs["digest"]
    assert app.head not in registry.tags(repo)


def test_sigint_during_the_smoke_boot_removes_the_container(
    workspace: Workspace, busybox_base: str, registry: Registry, aws_env: dict[str, str],
    docker_client: DockerClient, tmp_path: Path,
) -> None:  # fmt: skip
    workspace.commit_files({"Dockerfile": f'FROM {busybox_base}\nCMD ["sleep", "600"]\n'})
    process = start_publish(
        workspace.path, registry.host, tmp_path, "--push", "false", "--smoke", "8080/health",
        "--smoke-timeout", "120", env=aws_env,
    )  # fmt: skip
    try:
        read_until(process, "smoke boot: GET")
        running = docker_client.containers.list(filters={"label": "lambda-image-publish.purpose=smoke-boot"})
        assert running
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, rest
    assert "cancelled by SIGINT" in rest
    for container in running:
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(container.id)


# ------------------------------------------------ relayed text cannot command the runner


def runner_commands(stdout: str) -> list[str]:
    """The workflow commands a runner would execute from this log: lines split on LF and
    CR, leading white space trimmed, nothing between ::stop-commands::T and ::T::."""
    commands: list[str] = []
    stop_token: str | None = None
    for raw in re.split(r"\r\n|\r|\n", stdout):
        line = raw.lstrip()
        if not line.startswith("::"):
            continue
        if stop_token is not None:
            if line == f"::{stop_token}::":
                stop_token = None
            continue
        match = re.match(r"::stop-commands::(.+)$", line)
        if match:
            stop_token = match.group(1)
            continue
        commands.append(line)
    return commands


def test_build_output_cannot_plant_workflow_commands(
    workspace: Workspace, busybox_base: str, registry: Registry, ecr_repository: MakeRepository,
    aws_env: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    workspace.commit_files(
        {
            "Dockerfile": (
                f"FROM {busybox_base}\n"
                "RUN printf 'x\\r::add-mask::sha256\\n::warning::planted\\n::stop-commands::abc\\n"
                f"::error::planted-error\\n'; echo {os.urandom(4).hex()}\n"  # never CACHED: it must print
                'CMD ["true"]\n'
            )
        }
    )
    run = publish_in(workspace.path, registry.host, tmp_path, repository=ecr_repository())
    assert run.code == 0, run.log
    assert "::add-mask::sha256" in run.stdout  # it was printed, as build output
    executed = runner_commands(run.stdout)
    assert [
        c for c in executed if "planted" in c or c.startswith(("::add-mask::sha256", "::stop-commands::abc"))
    ] == []
    # The action's own commands still work: its groups open and close.
    assert "::group::BuildKit build log" in executed
    assert executed.count("::endgroup::") == sum(c.startswith("::group::") for c in executed)
    assert run.outputs["digest"].startswith("sha256:")


def test_plan_values_with_control_characters_are_an_input_error(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    plan = {
        "format_version": "1.2",
        "resource_changes": [
            {
                "address": "aws_lambda_function.api",
                "mode": "managed",
                "type": "aws_lambda_function",
                "change": {
                    "actions": ["create"],
                    "after": {
                        "package_type": "Image",
                        "image_uri": f"{ECR_HOST}/app@{DIGEST}\n::add-mask::sha256",
                    },
                    "after_unknown": {},
                },
            }
        ],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    run = run_entrypoint(["verify", "--region", REGION, "--plan", "plan.json"], cwd=tmp_path, tmp=tmp_path)
    line = only_error(run)
    assert run.code == 2
    assert "holds control characters" in line
    assert runner_commands(run.stdout) == [line]


def test_the_summary_escapes_markdown_and_html_from_plans(
    registry: Registry, aws_env: dict[str, str], tmp_path: Path
) -> None:
    address = 'aws_lambda_function.x["<img src=x onerror=alert(1)>`|[link](https://evil.example)"]'
    plan = {
        "format_version": "1.2",
        "resource_changes": [
            {
                "address": address,
                "mode": "managed",
                "type": "aws_lambda_function",
                "change": {
                    "actions": ["create"],
                    "after": {"package_type": "Image", "image_uri": "not an image`<b>"},
                    "after_unknown": {},
                },
            }
        ],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    run = run_entrypoint(["verify", "--region", REGION, "--plan", "plan.json"], cwd=tmp_path, tmp=tmp_path)
    assert run.code == 1, run.log
    summary = run.summary
    assert "<img" not in summary and "<b>" not in summary and "`" not in summary
    assert "[link]" not in summary
    [row] = [line for line in summary.splitlines() if "evil.example" in line]
    assert row.count("|") == 5  # four cells: nothing broke out of its cell
    assert "&#60;img src=x onerror=alert(1)&#62;" in row


# --------------------------------------------------------------- paths stay in the workspace


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--dockerfile", "../outside/Dockerfile"], "dockerfile"),
        (["--dockerfile", "/etc/hostname"], "dockerfile"),
        (["--context", "home-link"], "context"),
        (["--dockerfile", "linked/Dockerfile"], "dockerfile"),
        (["--cache", "none", "--cache-dir", "/root"], "cache-dir"),
    ],
)
def test_paths_outside_the_workspace_are_refused(
    app: Workspace, registry: Registry, aws_env: dict[str, str], tmp_path: Path, args: list[str], name: str
) -> None:
    outside = app.path.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "Dockerfile").write_text("FROM scratch\n")
    (app.path / "home-link").symlink_to(Path.home())
    (app.path / "linked").symlink_to(outside)
    run = publish_in(app.path, registry.host, tmp_path, *args, repository="app")
    line = only_error(run)
    assert run.code == 2
    assert f"input '{name}'" in line and "outside the workspace" in line


def test_a_plan_outside_the_workspace_is_refused(aws_env: dict[str, str], tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (tmp_path / "plan.json").write_text("{}")
    (workspace / "linked.json").symlink_to(tmp_path / "plan.json")
    for value in ("../plan.json", str(tmp_path / "plan.json"), "linked.json"):
        run = run_entrypoint(["verify", "--region", REGION, "--plan", value], cwd=workspace, tmp=tmp_path)
        line = only_error(run)
        assert run.code == 2
        assert "input 'plan'" in line and "outside the workspace" in line


def test_git_in_the_build_context_is_warned_about(
    app: Workspace,
    registry: Registry,
    ecr_repository: MakeRepository,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    repo = ecr_repository()
    tmp_path.joinpath("a").mkdir()
    run = publish_in(app.path, registry.host, tmp_path / "a", repository=repo)
    assert run.code == 0, run.log
    assert "holds .git and no .dockerignore excludes it" in run.stdout
    app.commit_files({".dockerignore": ".git\n"})
    (tmp_path / "b").mkdir()
    quiet = publish_in(app.path, registry.host, tmp_path / "b", repository=repo)
    assert quiet.code == 0, quiet.log
    assert ".dockerignore excludes it" not in quiet.stdout


# -------------------------------------------------------- the builder is ours or left alone


@pytest.mark.parametrize(
    ("output", "settings"),
    [
        (
            "Name:   lambda-image-publish\nDriver: docker-container\n\nNodes:\nName: lambda-image-publish0\n"
            'Endpoint: unix:///var/run/docker.sock\nDriver Options: network="host"\nStatus: running\n',
            BuilderSettings("docker-container", "host"),
        ),
        (
            "Name:   lambda-image-publish\nDriver: docker-container\n\nNodes:\nName: lambda-image-publish0\n"
            "Status: inactive\n",
            BuilderSettings("docker-container", "default"),
        ),
        ("Name: lambda-image-publish\nDriver: remote\n", BuilderSettings("remote", "default")),
    ],
)
def test_an_existing_builder_is_read_for_its_settings(output: str, settings: BuilderSettings) -> None:
    # buildx is not packaged on Debian 12; this pins the reading of its inspect output.
    assert builder_settings(output) == settings


def test_the_builder_the_action_creates_uses_the_default_network() -> None:
    builder = Builder("buildx", "/usr/bin/docker", "v0.20.0", "docker")
    default = create_command(builder, BuilderSettings("docker-container", "default"))
    assert "--driver-opt" not in default and not any("network" in a for a in default)
    host = create_command(builder, BuilderSettings("docker-container", "host"))
    assert host[-2:] == ["--driver-opt", "network=host"]


# --------------------------------------------------------- no token in shared state; pins


def _yaml_files() -> list[Path]:
    skip = {".venv", ".stack", ".git", "node_modules", "build"}
    return [
        p
        for p in REPO_ROOT.rglob("*.y*ml")
        if not skip & set(p.relative_to(REPO_ROOT).parts) and p.suffix in (".yml", ".yaml")
    ]


def test_every_remote_action_is_pinned_by_full_commit_sha() -> None:
    uses = re.compile(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$")
    checked = 0
    for path in _yaml_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = uses.match(line)
            if not match or match.group(1).startswith("./"):
                continue
            ref = match.group(1)
            if ref.startswith(("your-org/lambda-image-publish", "docker://")):
                continue  # this action itself, as the examples show it to users
            where = f"{path.relative_to(REPO_ROOT)}:{number}"
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{where}: {ref} is not pinned by SHA"
            assert re.fullmatch(r"\s*# v\d+\.\d+\.\d+", match.group(2)), f"{where}: no '# vX.Y.Z' comment"
            checked += 1
    assert checked >= 4


def test_the_gha_cache_token_reaches_only_the_build_step(tmp_path: Path) -> None:
    """The github-script step's script, run by node: outputs (masked token), no GITHUB_ENV."""
    spec = yaml.safe_load((REPO_ROOT / "action.yml").read_text())
    steps = spec["runs"]["steps"]
    [gha] = [s for s in steps if "uses" in s]
    assert gha["if"] == "inputs.cache == 'gha'"
    assert "exportVariable" not in gha["with"]["script"]
    harness = (
        "const calls = [];\n"
        "const core = {setSecret: v => calls.push(['secret', v]),"
        " setOutput: (k, v) => calls.push(['output', k, v]),"
        " exportVariable: (k, v) => calls.push(['export', k, v])};\n"
        "(async () => {\n"
        + gha["with"]["script"]
        + "\n})().then(() => console.log(JSON.stringify(calls)));\n"
    )
    env = {"PATH": os.environ["PATH"], "ACTIONS_RUNTIME_TOKEN": "tok", "ACTIONS_CACHE_URL": "https://c/"}
    done = subprocess.run(["node", "-e", harness], env=env, capture_output=True, text=True, check=True)
    calls = json.loads(done.stdout)
    assert ["secret", "tok"] in calls
    assert ["output", "runtime-token", "tok"] in calls
    assert ["output", "cache-url", "https://c/"] in calls
    assert not [c for c in calls if c[0] == "export"]
    publish_env = steps[-1]["env"]
    assert publish_env["ACTIONS_RUNTIME_TOKEN"] == "${{ steps.gha.outputs.runtime-token }}"
    assert not [s for s in steps if "GITHUB_ENV" in s.get("run", "") + s.get("with", {}).get("script", "")]
