"""The deployed action (after `terraform apply`) against moto's Lambda API, real images and
local servers standing in for function URLs.

moto runs here with MOTO_LAMBDA_STUB_ECR=false, its own server: it then resolves a
function's ImageUri against its own ECR, into which the manifest of a real image pushed to
the local registry is put with its digest, so the digest moto's Lambda reports is the one
the registry computed. The states moto does not model (Pending, InProgress, Failed,
Inactive) come from tests.support.lambda_states, a proxy that rewrites GetFunction answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
import yaml
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from entrypoint.checks import url_probe
from entrypoint.checks.url_probe import EventCounter, Seen, StreamRules, judge, probe
from entrypoint.errors import CheckError, InputError
from entrypoint.inputs import DEPLOYED_INPUTS, parse_deployed
from tests.lambda_images import Images
from tests.support.lambda_states import IN_PROGRESS, PENDING, LambdaStates
from tests.support.run import Run, run_entrypoint
from tests.support.stack import MotoServer

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from docker import DockerClient

    from tests.support.stack import Registry

ROOT = Path(__file__).resolve().parents[1]
REGION = "eu-west-2"
ACCOUNT = "123456789012"
ECR_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
KEY_ID = SECRET = "testing"
DIGEST = "sha256:" + "ab" * 32
# Variables that could make boto3 look past this module's moto.
_AWS_VARS_TO_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_ENDPOINT_URL_LAMBDA",
    "AWS_ENDPOINT_URL_STS",
)


# ------------------------------------------------------------------------------ stack


@pytest.fixture(scope="module")
def lambda_moto() -> Iterator[MotoServer]:
    """moto of its own, resolving image URIs against its ECR (the session's stubs them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOTO_LAMBDA_STUB_ECR", "false")
        server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


def _client(server: MotoServer, service: str) -> Any:
    session: Any = boto3.session.Session()
    return session.client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def aws(
    lambda_moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for var in _AWS_VARS_TO_DROP:
        monkeypatch.delenv(var, raising=False)
    absent = tmp_path_factory.mktemp("aws") / "absent"
    env = {
        "AWS_ENDPOINT_URL": lambda_moto.endpoint,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(absent),
        "AWS_SHARED_CREDENTIALS_FILE": str(absent),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@dataclass(frozen=True)
class Published:
    repository: str
    old: str  # digest of the image deployed before
    new: str  # digest of the image just published

    def uri(self, digest: str) -> str:
        return f"{ECR_HOST}/{self.repository}@{digest}"


@pytest.fixture(scope="module")
def published(
    docker_client: DockerClient,
    registry: Registry,
    busybox_base: str,
    lambda_moto: MotoServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Published]:
    """Two real images pushed to the local registry, their manifests put into moto's ECR
    byte for byte with the registry's digests: v1 (old, tagged prod) and v2 (new)."""
    images = Images(docker_client, tmp_path_factory.mktemp("deployed"))
    repository = f"t{secrets.token_hex(4)}-app"
    ecr = _client(lambda_moto, "ecr")
    ecr.create_repository(repositoryName=repository)
    digests = []
    try:
        for version in ("v1", "v2"):
            image = images.build(
                f'FROM {busybox_base}\nRUN echo {version} > /version\nCMD ["httpd", "-f", "-p", "8080"]\n',
                name="deployed/app",
            )
            pushed = images.push(image, registry, repository, version)
            digest, media_type, body = registry.manifest_raw(repository, pushed)
            assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
            ecr.put_image(
                repositoryName=repository,
                imageManifest=body.decode(),
                imageManifestMediaType=media_type,
                imageDigest=digest,
                imageTag=version,
            )
            digests.append(digest)
        yield Published(repository, digests[0], digests[1])
    finally:
        images.cleanup()


@pytest.fixture(scope="module")
def role(lambda_moto: MotoServer) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    iam = _client(lambda_moto, "iam")
    return str(
        iam.create_role(RoleName="deployed-test", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    )


@pytest.fixture
def make_function(lambda_moto: MotoServer, role: str) -> Iterator[Any]:
    """Factory: ``make(image_uri, url_auth=None, invoke_mode=...) -> name``: an Image function in
    moto, with a function URL when `url_auth` is given; all are deleted afterwards."""
    client = _client(lambda_moto, "lambda")
    made: list[str] = []

    def make(image_uri: str, url_auth: str | None = None, invoke_mode: str = "RESPONSE_STREAM") -> str:
        name = f"fn-{secrets.token_hex(4)}"
        client.create_function(
            FunctionName=name, PackageType="Image", Code={"ImageUri": image_uri}, Role=role
        )
        made.append(name)
        if url_auth:
            client.create_function_url_config(FunctionName=name, AuthType=url_auth, InvokeMode=invoke_mode)
        return name

    yield make
    for name in made:
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_function(FunctionName=name)


def deployed(tmp_path: Path, *args: str, env: Mapping[str, str] | None = None) -> Run:
    return run_entrypoint(["deployed", "--region", REGION, *args], cwd=tmp_path, tmp=tmp_path, env=env)


def only_error(run: Run) -> str:
    assert run.code != 0, run.log
    errors = run.error_lines()
    assert len(errors) == 1, run.log
    return errors[0]


def checked(run: Run) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(run.outputs["checked"])
    return result


# ------------------------------------------------------------------ function URL stand-in


def sigv4_problem(method: str, path: str, headers: Mapping[str, str]) -> str:
    """Why the request's SigV4 signature is not one for service lambda in REGION made with
    the test's credentials ("" when it is), recomputed with botocore from what arrived."""
    auth = headers.get("Authorization", "")
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
        r"/aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})",
        auth,
    )
    if match is None:
        return f"no SigV4 Authorization header: {auth!r}"
    if (match["key"], match["region"], match["service"]) != (KEY_ID, REGION, "lambda"):
        return f"signed for {match['key']}/{match['region']}/{match['service']}"
    lower = {k.lower(): v for k, v in headers.items()}
    signed = match["signed"].split(";")
    request = AWSRequest(
        method=method, url=f"http://{lower['host']}{path}", headers={h: lower[h] for h in signed}
    )
    request.context["timestamp"] = lower["x-amz-date"]
    signer = SigV4Auth(Credentials(KEY_ID, SECRET), "lambda", REGION)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    return "" if expected == match["signature"] else "the signature does not match"


def event(number: int) -> bytes:
    return f'id: {number}\nevent: tick\ndata: {{"n": {number}}}\n\n'.encode()


class FunctionUrlStandIn:
    """A local server in place of a function URL: `mode` stream (chunked, one event per
    write, `gap` apart), buffered (every event in one late write, Content-Length), close (a
    stream without length, ended by closing), json (a stream of the wrong type), endless,
    late (one event after `gap`, then nothing), silent (headers, then nothing) or redirect.
    With `iam`, a request whose SigV4 signature does not check out gets Lambda's 403."""

    def __init__(self, mode: str, *, events: int = 4, gap: float = 0.3, iam: bool = False) -> None:
        self.connections = 0
        self.problems: list[str] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = dict(self.headers.items())
                outer.headers.append(headers)
                if iam:
                    problem = sigv4_problem("GET", self.path, headers)
                    outer.problems.append(problem)
                    if problem:
                        self._whole(403, "application/json", b'{"Message":"Forbidden"}')
                        return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._answer()

            def _answer(self) -> None:
                if mode == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif mode == "buffered":
                    time.sleep(gap * events)
                    self._whole(200, "text/event-stream", b"".join(event(n) for n in range(events)))
                elif mode == "close":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for n in range(events):
                        self.wfile.write(event(n))
                        self.wfile.flush()
                        time.sleep(gap)
                    self.close_connection = True
                elif mode == "late":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    time.sleep(gap)
                    self._chunk(event(0))
                    time.sleep(10)
                elif mode == "silent":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    time.sleep(10)
                else:
                    self.send_response(200)
                    self.send_header(
                        "Content-Type", "application/json" if mode == "json" else "text/event-stream"
                    )
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    n = 0
                    while n < events or mode == "endless":
                        self._chunk(event(n))
                        time.sleep(gap)
                        n += 1
                    self._chunk(b"")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _whole(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                outer.connections += 1  # every connection, TLS or not, an HTTP request or not
                return True

        self._server = _Server(("127.0.0.1", 0), _Handler)
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FunctionUrlStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- the action


def test_the_action_declares_every_input_its_command_reads() -> None:
    spec = yaml.safe_load((ROOT / "deployed" / "action.yml").read_text())
    assert list(spec["inputs"]) == list(DEPLOYED_INPUTS)
    steps = spec["runs"]["steps"]
    assert steps[0]["env"]["ACTION_PATH"] == "${{ github.action_path }}/.."
    for name in DEPLOYED_INPUTS:
        assert steps[-1]["env"][f"INPUT_{name.upper()}"] == f"${{{{ inputs.{name} }}}}"
    assert steps[-1]["run"] == '"$ACTION_PYTHON" -I -m entrypoint deployed'
    assert set(spec["outputs"]) == {"checked"}


# ------------------------------------------------------------------------ the digest


def write_plan(
    path: Path, functions: list[tuple[str, str, str, str]], unknown: Mapping[str, list[str]] | None = None
) -> Path:
    """A `terraform show -json` plan: (address, action, function_name, image_uri) per function;
    `unknown`: per address, the attributes known only after apply."""
    changes = []
    for address, action, name, image_uri in functions:
        after = {"function_name": name, "package_type": "Image", "image_uri": image_uri}
        later = (unknown or {}).get(address, [])
        for attribute in later:
            del after[attribute]
        changes.append(
            {
                "address": address,
                "mode": "managed",
                "type": "aws_lambda_function",
                "name": address.rsplit(".", 1)[-1],
                "change": {
                    "actions": [action],
                    "before": None if action == "create" else after,
                    "after": after,
                    "after_unknown": dict.fromkeys(later, True),
                },
            }
        )
    plan = {
        "format_version": "1.2",
        "terraform_version": "1.9.8",
        "planned_values": {"root_module": {}},
        "resource_changes": changes,
        "configuration": {"root_module": {}},
        "complete": True,
        "errored": False,
    }
    path.write_text(json.dumps(plan))
    return path


def test_functions_the_plan_deployed_run_the_published_digest(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    api = make_function(published.uri(published.new))
    # A function the plan leaves alone is not checked, whatever it runs.
    untouched = make_function(published.uri(published.old))
    write_plan(
        tmp_path / "plan.json",
        [
            ("aws_lambda_function.api", "update", api, published.uri(published.new)),
            ("aws_lambda_function.old", "no-op", untouched, published.uri(published.new)),
        ],
    )
    run = deployed(tmp_path, "--plan", "plan.json")
    assert run.code == 0, run.log
    assert checked(run) == {
        api: {
            "status": "ok",
            "digest": published.new,
            "expected": published.new,
            "state": "Active",
            "last-update-status": "Successful",
            "resolved-image-uri": checked(run)[api]["resolved-image-uri"],
            "url": None,
            "stream": None,
        }
    }
    assert checked(run)[api]["resolved-image-uri"].endswith(f"@{published.new}")
    assert (
        "1 Image function(s) the plan leaves alone or deletes, not checked: aws_lambda_function.old"
        in run.log
    )
    assert "Lambda functions run the published image" in run.summary
    assert f"<code>{published.new}</code>" in run.summary


def test_what_a_plan_cannot_say_is_taken_from_digest_or_refused(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    tagged = make_function(published.uri(published.new))
    write_plan(
        tmp_path / "plan.json",
        [
            # Pinned by tag in the plan: the digest input says what was published.
            ("aws_lambda_function.tagged", "update", tagged, f"{ECR_HOST}/{published.repository}:v2"),
            # A name computed at apply time: the plan cannot say which function to ask for.
            ("aws_lambda_function.unnamed", "create", "", published.uri(published.new)),
        ],
        unknown={"aws_lambda_function.unnamed": ["function_name"]},
    )
    run = deployed(tmp_path, "--plan", "plan.json", "--digest", published.new)
    error = only_error(run)
    assert "1 of 2 function(s) failed the after-apply check" in error
    assert "aws_lambda_function.unnamed: the plan's function_name is only known after apply" in error
    assert "name the function in 'functions'" in error
    assert {name: value["status"] for name, value in checked(run).items()} == {
        tagged: "ok",
        "aws_lambda_function.unnamed": "unknown",
    }


def test_a_plan_that_deploys_no_function_passes_and_probes_nothing(tmp_path: Path) -> None:
    """A plan that changes IAM only: the URL of a function it left alone is not probed, and
    the job does not fail for it (nor ask AWS anything: no credentials here)."""
    write_plan(
        tmp_path / "plan.json", [("aws_lambda_function.api", "no-op", "api", f"{ECR_HOST}/app@{DIGEST}")]
    )
    run = deployed(
        tmp_path,
        "--plan",
        "plan.json",
        "--function-urls",
        "api={lambda}/events",
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )
    assert run.code == 0, run.log
    assert "input 'function-urls' line 1: not probed, the plan deploys no Image function" in run.log
    assert "nothing to check" in run.log
    assert checked(run) == {}


def test_a_url_of_a_function_not_checked_is_an_input_error(published: Published, tmp_path: Path) -> None:
    run = deployed(
        tmp_path, "--functions", f"api={published.new}", "--function-urls", "worker={lambda}/events"
    )
    error = only_error(run)
    assert run.code == 2
    assert "names the function 'worker', which is not one of the functions checked (api)" in error


def test_functions_named_by_name_arn_and_digest_input(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    by_name, by_arn, by_uri = (make_function(published.uri(published.new)) for _ in range(3))
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{by_arn}"
    run = deployed(
        tmp_path,
        "--functions",
        f"{by_name}\n{arn}\n{by_uri}={published.uri(published.new)}",
        "--digest",
        published.new,
    )
    assert run.code == 0, run.log
    assert {name: value["status"] for name, value in checked(run).items()} == {
        by_name: "ok",
        arn: "ok",
        by_uri: "ok",
    }


def test_a_tag_that_moved_is_a_mismatch_naming_both_digests(
    aws: None, lambda_moto: MotoServer, published: Published, make_function: Any, tmp_path: Path
) -> None:
    ecr = _client(lambda_moto, "ecr")
    old_manifest = ecr.batch_get_image(
        repositoryName=published.repository, imageIds=[{"imageDigest": published.old}]
    )
    tag = f"prod-{secrets.token_hex(3)}"
    ecr.put_image(
        repositoryName=published.repository,
        imageManifest=old_manifest["images"][0]["imageManifest"],
        imageDigest=published.old,
        imageTag=tag,
    )
    name = make_function(f"{ECR_HOST}/{published.repository}:{tag}")
    # The tag moves to the new image after the function resolved it: Lambda keeps the old.
    new_manifest = ecr.batch_get_image(
        repositoryName=published.repository, imageIds=[{"imageDigest": published.new}]
    )
    ecr.put_image(
        repositoryName=published.repository,
        imageManifest=new_manifest["images"][0]["imageManifest"],
        imageDigest=published.new,
        imageTag=tag,
    )
    run = deployed(tmp_path, "--functions", f"{name}={published.new}")
    error = only_error(run)
    assert f"runs {published.old}, not the published {published.new}" in error
    assert "is a tag" in error and "moved" in error
    assert "deploy by digest" in error
    assert checked(run)[name]["status"] == "mismatch"
    assert checked(run)[name]["digest"] == published.old
    assert "Lambda functions not running the published image" in run.summary


def test_an_apply_that_did_not_update_the_function_is_a_mismatch(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.old))
    run = deployed(tmp_path, "--functions", f"{name}={published.uri(published.new)}")
    error = only_error(run)
    assert f"runs {published.old}, not the published {published.new}" in error
    assert "the apply did not update this function" in error
    assert "terraform apply ran the plan" in error


def test_a_function_that_does_not_exist(aws: None, published: Published, tmp_path: Path) -> None:
    run = deployed(tmp_path, "--functions", f"fn-absent={published.new}")
    error = only_error(run)
    assert "Lambda has no function 'fn-absent'" in error
    assert checked(run)["fn-absent"]["status"] == "missing"


# ---------------------------------------------------------------- states moto does not model


def test_waits_while_the_update_is_pending_then_checks_the_digest(
    aws: None, lambda_moto: MotoServer, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.old))
    _client(lambda_moto, "lambda").update_function_code(
        FunctionName=name, ImageUri=published.uri(published.new)
    )
    script = {name: [PENDING, PENDING, IN_PROGRESS, IN_PROGRESS]}
    with LambdaStates(lambda_moto.endpoint, script) as proxy:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            env={"AWS_ENDPOINT_URL_LAMBDA": proxy.endpoint},
        )
    assert run.code == 0, run.log
    assert proxy.calls[name] == 5  # four answers that were not ready, then moto's own
    assert f"{name}: State Pending (Creating: The function is being created.)" in run.log
    assert "LastUpdateStatus InProgress (Updating: The function is being updated.)" in run.log
    assert f"{name}: State Active, LastUpdateStatus Successful" in run.log
    assert checked(run)[name]["status"] == "ok"


FAILED_UPDATE = {
    "LastUpdateStatus": "Failed",
    "LastUpdateStatusReason": (
        "Lambda does not have permission to access the ECR image. Check the ECR permissions."
    ),
    "LastUpdateStatusReasonCode": "ImageAccessDenied",
}
FAILED_STATE = {
    "State": "Failed",
    "StateReason": "The image manifest, config or layer media type for the source image is not supported.",
    "StateReasonCode": "InvalidImage",
}
INACTIVE = {
    "State": "Inactive",
    "StateReason": "The function is inactive and its VPC connection is no longer available.",
    "StateReasonCode": "Idle",
}


@pytest.mark.parametrize(
    ("overlay", "status", "said", "fix"),
    [
        (FAILED_UPDATE, "failed", "its last update Failed", "ecr:BatchGetImage"),
        (FAILED_STATE, "failed", "it is in state Failed", "one image manifest"),
        (INACTIVE, "inactive", "it is Inactive", "invoke it once"),
    ],
    ids=["update-failed", "state-failed", "inactive"],
)
def test_a_failed_or_inactive_function_ends_with_lambdas_reason(
    aws: None,
    lambda_moto: MotoServer,
    published: Published,
    make_function: Any,
    tmp_path: Path,
    overlay: dict[str, str],
    status: str,
    said: str,
    fix: str,
) -> None:
    name = make_function(published.uri(published.new))
    with LambdaStates(lambda_moto.endpoint, {name: [IN_PROGRESS, overlay]}, repeat_last=True) as proxy:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            env={"AWS_ENDPOINT_URL_LAMBDA": proxy.endpoint},
        )
    error = only_error(run)
    assert said in error
    for value in overlay.values():
        assert value in error  # Lambda's own words: the status, the reason and its code
    assert f"Fix: {fix}" in error or fix in error.split("Fix: ", 1)[1]
    assert proxy.calls[name] == 2  # a final answer ends the wait at once
    assert checked(run)[name]["status"] == status


def test_a_timeout_says_what_state_the_function_was_last_in(
    aws: None, lambda_moto: MotoServer, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new))
    with LambdaStates(lambda_moto.endpoint, {name: [PENDING]}, repeat_last=True) as proxy:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            "--timeout",
            "7",
            env={"AWS_ENDPOINT_URL_LAMBDA": proxy.endpoint},
        )
    error = only_error(run)
    assert (
        f"{name}: was not ready after 7 s: last seen State Pending (Creating: The function is being created.)"
        in error
    )
    assert "raise 'timeout'" in error
    assert re.search(rf"still waiting \(\d s of 7 s\): {name} \(State Pending", run.log), run.log
    # Backing off: from half a second up, far fewer polls than seconds * 2.
    assert 4 <= proxy.calls[name] <= 10, proxy.calls
    assert 7 <= run.seconds < 20
    assert checked(run)[name]["status"] == "timeout"


def test_lambdas_reasons_cannot_inject_log_commands_or_markup(
    aws: None, lambda_moto: MotoServer, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new))
    hostile = {
        "LastUpdateStatus": "Failed",
        "LastUpdateStatusReason": "denied\n::warning::injected | <img src=x onerror=alert(1)> `code`",
        "LastUpdateStatusReasonCode": "ImageAccessDenied\r::notice::also",
    }
    with LambdaStates(lambda_moto.endpoint, {name: [hostile]}, repeat_last=True) as proxy:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            env={"AWS_ENDPOINT_URL_LAMBDA": proxy.endpoint},
        )
    only_error(run)
    lines = run.log.replace("\r", "\n").splitlines()
    assert not [line for line in lines if line.startswith(("::warning::", "::notice::"))], run.log
    assert "<img" not in run.summary and "`code`" not in run.summary
    assert "&#60;img src=x onerror=alert(1)&#62;" in run.summary
    assert "&#124;" in run.summary


# ----------------------------------------------------------------------- function URLs


def test_a_streaming_function_url_passes_and_stops_reading_once_proven(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new), url_auth="NONE")
    with FunctionUrlStandIn("endless", gap=0.3) as url:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            "--function-urls",
            f"{name}=http://{url.host}/events",
            "--url-hosts",
            url.host,
        )
    assert run.code == 0, run.log
    assert (
        "thresholds: 2xx, content type text/event-stream, at least 2 events, the last at least 0.20 s"
        in run.log
    )
    assert f"{name}: GET http://{url.host}/events (auth type NONE, invoke mode RESPONSE_STREAM)" in run.log
    assert "Authorization" not in url.headers[0]
    assert url.headers[0]["Accept"] == "text/event-stream"
    assert checked(run)[name]["stream"] == "streams"
    assert checked(run)[name]["url"] == f"http://{url.host}/events"
    assert run.seconds < 15  # an endless stream is left once two events showed it streams


def test_a_buffered_function_url_is_refused_with_what_was_seen(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new), url_auth="NONE")
    with FunctionUrlStandIn("buffered", events=4, gap=0.3) as url:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            "--function-urls",
            f"http://{url.host}/events",
            "--url-hosts",
            url.host,
        )
    error = only_error(run)
    assert f"http://{url.host}/events does not stream: all 4 events arrived within 0.000 s" in error
    assert "the body in one read of" in error
    assert "Content-Encoding (none)" in error
    assert "AWS_LWA_INVOKE_MODE=response_stream" in error and "GZip" in error
    assert checked(run)[name]["status"] == "no-stream"
    assert checked(run)[name]["digest"] == published.new  # the image was right; the stream was not


def test_a_buffered_invoke_mode_is_named_as_the_cause(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new), url_auth="NONE", invoke_mode="BUFFERED")
    with FunctionUrlStandIn("buffered", events=3, gap=0.1) as url:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            "--function-urls",
            f"{name}=http://{url.host}/",
            "--url-hosts",
            url.host,
        )
    error = only_error(run)
    assert "invoke mode is BUFFERED" in error and 'invoke_mode = "RESPONSE_STREAM"' in error


def test_an_aws_iam_function_url_gets_a_sigv4_request_for_lambda(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new), url_auth="AWS_IAM")
    with FunctionUrlStandIn("stream", iam=True) as url:
        outputs = {"api_url": {"value": f"http://{url.host}/", "type": "string", "sensitive": False}}
        (tmp_path / "outputs.json").write_text(json.dumps(outputs))
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            "--function-urls",
            f"{name}={{output:api_url}}/events?from=1",
            "--terraform-outputs",
            "outputs.json",
            "--url-hosts",
            url.host,
        )
    assert run.code == 0, run.log
    assert url.problems == [""]  # the stand-in recomputed the signature with botocore
    assert url.headers[0]["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert f"/{REGION}/lambda/aws4_request" in url.headers[0]["Authorization"]
    assert f"signed with SigV4 for lambda in {REGION}" in run.log
    assert checked(run)[name]["url"] == f"http://{url.host}/events?from=1"


def test_a_refused_signature_names_the_permission(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new), url_auth="AWS_IAM")
    with FunctionUrlStandIn("stream", iam=True) as url:
        run = deployed(
            tmp_path,
            "--functions",
            f"{name}={published.new}",
            "--function-urls",
            f"http://{url.host}/events",
            "--url-hosts",
            url.host,
            env={"AWS_SECRET_ACCESS_KEY": "another-secret"},
        )
    assert url.problems == ["the signature does not match"]
    error = only_error(run)
    assert 'does not stream: it answered HTTP 403: {"Message":"Forbidden"}' in error
    assert "the job's role needs lambda:InvokeFunctionUrl" in error


def test_the_stand_in_refuses_a_bad_signature(tmp_path: Path) -> None:
    """The check above can fail: a signature made with another secret is refused."""
    with FunctionUrlStandIn("stream", iam=True) as url:
        signer = url_probe.Signer(
            Credentials(KEY_ID, "not-the-secret").get_frozen_credentials(), REGION, (url.host,)
        )
        seen = probe(f"http://{url.host}/events", StreamRules(), signer)
    assert seen.status == 403
    assert url.problems == ["the signature does not match"]


@pytest.mark.parametrize("source", ["function-urls", "terraform-outputs"])
def test_credentials_never_go_to_a_host_that_is_not_a_function_url(
    aws: None, published: Published, make_function: Any, tmp_path: Path, source: str
) -> None:
    """An AWS_IAM function URL whose given URL points elsewhere (a typo, or Terraform outputs
    a pull request changed): the signed request is not made, not even a connection."""
    name = make_function(published.uri(published.new), url_auth="AWS_IAM")
    with FunctionUrlStandIn("stream", iam=True) as url:
        target = f"https://{url.host}/events"
        if source == "terraform-outputs":
            (tmp_path / "outputs.json").write_text(
                json.dumps({"api_url": {"value": target, "type": "string"}})
            )
            args = ["--function-urls", f"{name}={{output:api_url}}", "--terraform-outputs", "outputs.json"]
        else:
            args = ["--function-urls", f"{name}={target}"]
        run = deployed(tmp_path, "--functions", f"{name}={published.new}", *args)
    assert url.connections == 0
    error = only_error(run)
    assert f"the function URL {target} is not a Lambda function URL of {REGION}" in error
    assert "will not sign a request to it" in error
    assert checked(run)[name]["stream"] == "not probed"


def test_a_lambda_url_host_of_another_function_is_refused(
    aws: None, published: Published, make_function: Any, tmp_path: Path
) -> None:
    name = make_function(published.uri(published.new), url_auth="AWS_IAM")
    other = f"https://{'0' * 32}.lambda-url.{REGION}.on.aws/"
    run = deployed(tmp_path, "--functions", f"{name}={published.new}", "--function-urls", f"{name}={other}")
    error = only_error(run)
    assert f"the URL {other} is not the function URL of '{name}'" in error
    assert f".lambda-url.{REGION}.on.aws" in error.split("(Lambda gives ", 1)[1]


# ----------------------------------------------------------------- the probe, in process


def test_probe_passes_a_stream_without_length_ended_by_close() -> None:
    with FunctionUrlStandIn("close", events=3, gap=0.3) as url:
        seen = probe(f"http://{url.host}/", StreamRules())
    assert judge(seen, StreamRules()) == []
    assert seen.events.count >= 2
    assert seen.events.spread >= 0.2


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("json", "the content type is application/json, not text/event-stream"),
        ("redirect", "it answered HTTP 302"),
    ],
)
def test_probe_refuses(mode: str, problem: str) -> None:
    with FunctionUrlStandIn(mode, events=3, gap=0.3) as url:
        seen = probe(f"http://{url.host}/", StreamRules())
    assert any(p.startswith(problem) for p in judge(seen, StreamRules())), judge(seen, StreamRules())
    if mode == "redirect":
        assert url.connections == 1  # the redirect was not followed


def test_probe_stops_at_its_budget_when_nothing_arrives() -> None:
    with FunctionUrlStandIn("silent") as url:
        started = time.monotonic()
        seen = probe(f"http://{url.host}/", StreamRules(budget=1.5))
        took = time.monotonic() - started
    assert took < 4
    assert seen.stalled == "nothing more arrived until the probe stopped reading at 1.5 s"
    assert judge(seen, StreamRules()) == ["0 event(s) arrived, fewer than 2"]


def test_probe_budget_bounds_a_read_that_started_late() -> None:
    """requests' read timeout is per read: one event after 2 s, then silence, would hold a
    3 s probe until 5 s without the budget's own bound on each read."""
    with FunctionUrlStandIn("late", gap=2.0) as url:
        started = time.monotonic()
        seen = probe(f"http://{url.host}/", StreamRules(budget=3))
        took = time.monotonic() - started
    assert seen.events.count == 1
    assert took < 4.2, took
    assert seen.stalled == "nothing more arrived until the probe stopped reading at 3 s"


def test_probe_without_an_answer_is_one_check_error() -> None:
    with FunctionUrlStandIn("stream") as url:
        host = url.host
    with pytest.raises(CheckError, match=rf"the function URL http://{host}/ did not answer"):
        probe(f"http://{host}/", StreamRules(budget=2))


def test_probe_does_not_send_netrc_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FunctionUrlStandIn("stream", events=2, gap=0.3) as url:
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login user password secret\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        probe(f"http://{url.host}/", StreamRules())
    assert "Authorization" not in url.headers[0]


@pytest.mark.parametrize(
    ("pieces", "events"),
    [
        ([b"data: 1\n\n", b"data: 2\n\n"], 2),
        ([b"data: 1\r\n\r\n"], 1),
        ([b"data: 1\r", b"\n\r", b"\n"], 1),  # CRLF split between reads counts once
        ([b"data: 1\r\r"], 1),
        ([b": keep-alive\n\n", b"id: 3\n\n", b"event: x\n\n"], 0),  # no data: no event
        ([b"da", b"ta: 1\n", b"\n"], 1),
        ([b"data", b"\n\n"], 1),
        ([b"database: 1\n\n"], 0),
    ],
)
def test_event_counter(pieces: list[bytes], events: int) -> None:
    counter = EventCounter()
    assert sum(counter.feed(piece) for piece in pieces) == events


def test_judge_needs_the_last_event_clearly_after_the_first() -> None:
    seen = Seen("http://x/", status=200, content_type="text/event-stream; charset=utf-8")
    seen.events.add(1.0)
    seen.events.add(1.1)
    assert judge(seen, StreamRules()) == [
        "all 2 events arrived within 0.100 s (at 1.00 s), less than 0.20 s apart: the answer was "
        "buffered, not streamed"
    ]
    seen.events.add(1.25)
    assert judge(seen, StreamRules()) == []


# ----------------------------------------------------------------------------- inputs


def parse(tmp_path: Path, **values: str) -> Any:
    raw = dict.fromkeys(DEPLOYED_INPUTS, "") | {"region": REGION} | values
    return parse_deployed({k.replace("_", "-"): v for k, v in raw.items()}, tmp_path)


def test_parse_inputs(tmp_path: Path) -> None:
    (tmp_path / "outputs.json").write_text(
        json.dumps(
            {
                "url": {"value": f"https://{'a' * 32}.lambda-url.{REGION}.on.aws/", "type": "string"},
                "urls": {"value": {"api": "http://127.0.0.1:8080"}, "type": "map", "sensitive": True},
            }
        )
    )
    parsed = parse(
        tmp_path,
        functions=f"api\narn:aws:lambda:{REGION}:{ACCOUNT}:function:worker:live={ECR_HOST}/app@{DIGEST}",
        digest=DIGEST,
        timeout="5m",
        function_urls="api={output:url}/events\nworker={output:urls.api}\n{lambda}/stream",
        terraform_outputs="outputs.json",
        url_hosts="127.0.0.1:8080",
    )
    assert [(f.name, f.digest, f.short_name) for f in parsed.functions] == [
        ("api", DIGEST, "api"),
        (f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:worker:live", DIGEST, "worker"),
    ]
    assert parsed.timeout == 300
    assert [(u.function, u.url, u.path, u.sensitive) for u in parsed.urls] == [
        ("api", f"https://{'a' * 32}.lambda-url.{REGION}.on.aws/events", "", False),
        ("worker", "http://127.0.0.1:8080/", "", True),
        ("", None, "/stream", False),
    ]
    assert parsed.content_type == "text/event-stream"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "neither 'functions' nor 'plan' was given"),
        ({"functions": "api"}, "names 'api' without its image, and 'digest' is empty"),
        ({"functions": f"api={ECR_HOST}/app:prod"}, "which is pinned by tag"),
        ({"functions": "api;rm=" + DIGEST}, "not a function name or ARN"),
        ({"functions": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:api={DIGEST}"}, "in us-east-1, not in"),
        ({"functions": f"api={DIGEST}\napi={'sha256:' + 'cd' * 32}"}, "and an earlier line"),
        ({"functions": f"api={DIGEST}", "timeout": "0"}, "not a time from 1 s to 60 minutes"),
        ({"functions": f"api={DIGEST}", "timeout": "2h"}, "not a time from 1 s"),
        ({"functions": f"api={DIGEST}", "digest": "sha256:abc"}, "input 'digest' is 'sha256:abc'"),
        ({"functions": f"api={DIGEST}", "function_urls": "api=http://127.0.0.1:9/"}, "plain http to a host"),
        (
            {"functions": f"api={DIGEST}", "function_urls": "api=https://user:pw@example.com/"},
            "not an http(s) URL",
        ),
        ({"functions": f"api={DIGEST}", "function_urls": "api=ftp://example.com/"}, "not a URL"),
        ({"functions": f"api={DIGEST}", "function_urls": "api={output:url}"}, "'terraform-outputs' is empty"),
        ({"functions": f"api={DIGEST}", "function_urls": "api={lambda}events"}, "which is not a path"),
        (
            {
                "functions": f"api={DIGEST}",
                "function_urls": f"api=https://{'a' * 32}.lambda-url.us-east-1.on.aws/",
            },
            "a function URL in us-east-1",
        ),
        ({"functions": f"api={DIGEST}", "url_hosts": "http://127.0.0.1"}, "not a host[:port]"),
        (
            {"functions": f"api={DIGEST}", "content_type": "text/event-stream; charset=utf-8"},
            "not a media type",
        ),
        ({"plan": "../plan.json"}, "outside the workspace"),
        ({"plan": "absent.json"}, "plan file 'absent.json' does not exist"),
    ],
)
def test_parse_refuses(tmp_path: Path, values: dict[str, str], message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        parse(tmp_path, **values)


@pytest.mark.parametrize(
    ("outputs", "line", "message"),
    [
        ({"other": {"value": "x"}}, "api={output:url}", "does not have (it has: other)"),
        ({"url": {"value": ["x"]}}, "api={output:url}", "which is not a string"),
        ([1, 2], "api={output:url}", "is not terraform output -json's object"),
        (
            {"url": {"value": "https://evil.example.com/\n::warning::x"}},
            "api={output:url}",
            "control characters",
        ),
    ],
)
def test_parse_refuses_outputs(tmp_path: Path, outputs: Any, line: str, message: str) -> None:
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    with pytest.raises(InputError, match=re.escape(message)):
        parse(tmp_path, functions=f"api={DIGEST}", function_urls=line, terraform_outputs="outputs.json")
