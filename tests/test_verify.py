"""The verify gate against a real registry with moto's ECR login: plans written as
`terraform show -json` writes them, images pushed by the engine or through the API."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from entrypoint.checks.tfplan import images_in_plan
from entrypoint.commands.cli import main
from entrypoint.inputs import VERIFY_INPUTS, parse_verify, read_raw
from entrypoint.registry.reference import parse_image_uri
from tests.lambda_images import Images
from tests.support.act import CHECKOUT, consumer
from tests.support.oci import push_index_with_attestation
from tests.support.run import Run, run_entrypoint
from tests.support.stack import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from docker import DockerClient

    from tests.support.stack import Registry
    from tests.support.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
REGION = "eu-west-2"
# How the plan names images: the account's ECR host, read through the 'registry' override.
ECR_HOST = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"


def change(
    address: str,
    actions: list[str],
    after: dict[str, Any] | None,
    *,
    after_unknown: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    kind: str = "aws_lambda_function",
    mode: str = "managed",
) -> dict[str, Any]:
    module, _, _ = address.rpartition(f"{kind}.")
    entry: dict[str, Any] = {
        "address": address,
        "mode": mode,
        "type": kind,
        "name": address.rsplit(".", 1)[-1],
        "provider_name": "registry.terraform.io/hashicorp/aws",
        "change": {
            "actions": actions,
            "before": before if before is not None or actions[0] == "create" else after,
            "after": after,
            "after_unknown": after_unknown or {},
            "before_sensitive": False,
            "after_sensitive": {},
        },
    }
    if module:
        entry["module_address"] = module.rstrip(".")
    return entry


def function(image_uri: str | None, package_type: str = "Image") -> dict[str, Any]:
    after: dict[str, Any] = {
        "function_name": "api",
        "package_type": package_type,
        "architectures": ["x86_64"],
    }
    if image_uri is not None:
        after["image_uri"] = image_uri
    return after


def write_plan(
    path: Path, changes: list[dict[str, Any]], configuration: list[dict[str, Any]] | None = None
) -> Path:
    plan = {
        "format_version": "1.2",
        "terraform_version": "1.9.8",
        "planned_values": {"root_module": {}},
        "resource_changes": changes,
        "configuration": {"root_module": {"resources": configuration or []}},
        "complete": True,
        "errored": False,
    }
    path.write_text(json.dumps(plan, indent=2))
    return path


def verify(tmp_path: Path, *args: str) -> Run:
    return run_entrypoint(["verify", "--region", REGION, *args], cwd=tmp_path, tmp=tmp_path)


@pytest.fixture(scope="module")
def images(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    made = Images(docker_client, tmp_path_factory.mktemp("verify"))
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def app_image(images: Images, busybox_base: str, adapter_image: str) -> str:
    return images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "ENV AWS_LWA_INVOKE_MODE=response_stream\n"
        'CMD ["httpd", "-f", "-p", "8080"]\n',
        name="verify/app",
    )


@pytest.fixture(scope="module")
def pushed(images: Images, app_image: str, registry: Registry) -> str:
    """The digest of the app image in the registry as verify/app."""
    return images.push(app_image, registry, "verify/app", "v1")


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (f"{ECR_HOST}/app@sha256:{'a' * 64}", (ECR_HOST, "app", None, f"sha256:{'a' * 64}")),
        (f"{ECR_HOST}/team/app:v1", (ECR_HOST, "team/app", "v1", None)),
        (f"{ECR_HOST}/app", (ECR_HOST, "app", None, None)),
        ("127.0.0.1:5000/app:v1@sha256:" + "b" * 64, ("127.0.0.1:5000", "app", "v1", "sha256:" + "b" * 64)),
        ("localhost/app:latest", ("localhost", "app", "latest", None)),
    ],
)
def test_parse_image_uri(text: str, parts: tuple[str, str, str | None, str | None]) -> None:
    uri = parse_image_uri(text)
    assert uri is not None
    assert (uri.host, uri.repository, uri.tag, uri.digest) == parts


@pytest.mark.parametrize(
    "text",
    ["app:latest", "library/app@sha256:" + "a" * 64, f"{ECR_HOST}/App", f"{ECR_HOST}/app@sha256:abc", ""],
)
def test_parse_image_uri_refuses(text: str) -> None:
    assert parse_image_uri(text) is None


def test_plan_walk_takes_image_functions_the_plan_deploys() -> None:
    plan = {
        "resource_changes": [
            change("aws_lambda_function.api", ["create"], function("x/a@sha256:1")),
            change("module.app.aws_lambda_function.this", ["update"], function("x/b@sha256:2")),
            change("module.app.module.inner.aws_lambda_function.f", ["delete", "create"], function("x/c:v1")),
            change(
                "aws_lambda_function.later",
                ["create"],
                function(None),
                after_unknown={"image_uri": True, "arn": True},
            ),
            change("aws_lambda_function.zip", ["create"], function(None, "Zip")),
            change("aws_lambda_function.same", ["no-op"], function("x/d@sha256:3")),
            change("aws_lambda_function.gone", ["delete"], None, before=function("x/f@sha256:4")),
            change("data.aws_lambda_function.read", ["read"], function("x/e:v1"), mode="data"),
            change("aws_ecr_repository.repo", ["create"], {"name": "repo"}, kind="aws_ecr_repository"),
        ]
    }
    found = images_in_plan(plan)
    assert [(i.address, i.image_uri, i.unknown) for i in found.deployed] == [
        ("aws_lambda_function.api", "x/a@sha256:1", False),
        ("module.app.aws_lambda_function.this", "x/b@sha256:2", False),
        ("module.app.module.inner.aws_lambda_function.f", "x/c:v1", False),
        ("aws_lambda_function.later", None, True),
    ]
    assert found.not_deployed == ("aws_lambda_function.same", "aws_lambda_function.gone")
    assert found.other_functions == 1


def test_action_declares_every_input_verify_reads() -> None:
    spec = yaml.safe_load((ROOT / "verify" / "action.yml").read_text())
    assert list(spec["inputs"]) == list(VERIFY_INPUTS)
    steps = spec["runs"]["steps"]
    assert steps[0]["env"]["ACTION_PATH"] == "${{ github.action_path }}/.."
    for name in VERIFY_INPUTS:
        assert steps[-1]["env"][f"INPUT_{name.upper()}"] == f"${{{{ inputs.{name} }}}}"
    assert steps[-1]["run"] == '"$ACTION_PYTHON" -I -m entrypoint verify'
    assert set(spec["outputs"]) == {"checked"}


def test_inputs_come_from_the_runners_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text("{}")
    monkeypatch.setenv("INPUT_IMAGE-URIS", "a.example/x@sha256:1\n\n  a.example/x@sha256:1\nb.example/y:v1\n")
    monkeypatch.setenv("INPUT_PLAN", "plan.json")
    monkeypatch.setenv("INPUT_REGION", REGION)
    monkeypatch.setenv("INPUT_INVOKE-MODE", "RESPONSE_STREAM")
    flags = dict.fromkeys(VERIFY_INPUTS)
    inputs = parse_verify(read_raw(VERIFY_INPUTS, flags), tmp_path)
    assert inputs.image_uris == ("a.example/x@sha256:1", "b.example/y:v1")
    assert inputs.plan == tmp_path / "plan.json"
    assert (inputs.region, inputs.registry, inputs.platform) == (REGION, None, "linux/amd64")
    assert inputs.invoke_mode == "response-stream"


# ---------------------------------------------------------------------- the gate


def test_all_images_exist_and_pass(
    registry: Registry, aws_env: dict[str, str], pushed: str, tmp_path: Path
) -> None:
    in_ecr = f"{ECR_HOST}/verify/app@{pushed}"
    write_plan(
        tmp_path / "plan.json",
        [
            change("aws_lambda_function.api", ["create"], function(in_ecr)),
            change("module.worker.aws_lambda_function.this", ["update"], function(in_ecr)),
            change("aws_lambda_function.zip", ["update"], function(None, "Zip")),
            change("aws_lambda_function.old", ["no-op"], function(f"{ECR_HOST}/verify/app:old")),
        ],
    )
    run = verify(
        tmp_path,
        "--plan", "plan.json",
        "--registry", registry.host,
        "--invoke-mode", "response-stream",
        "--image-uris", in_ecr,
    )  # fmt: skip
    assert run.code == 0, run.log
    assert run.outputs == {"checked": "1"}
    assert run.error_lines() == []
    assert "the plan creates or updates 2 Image function(s)" in run.stdout
    assert (
        "1 Image function(s) the plan leaves alone or deletes, not checked: aws_lambda_function.old"
    ) in run.stdout
    table = run.stdout[run.stdout.index("source ") :]
    for source in ("image-uris", "aws_lambda_function.api", "module.worker.aws_lambda_function.this"):
        assert f"{source} " in table
    assert table.count("✔ ok") == 3
    assert f"{ECR_HOST}/verify/app@{pushed[:19]}… " in table
    assert "| aws_lambda_function.api | <code>" in run.summary
    assert "linux/amd64, " in run.summary
    assert "Lambda Web Adapter" in run.summary


def test_one_missing_image_fails_naming_it(
    registry: Registry, aws_env: dict[str, str], pushed: str, tmp_path: Path
) -> None:
    missing = "sha256:" + hashlib.sha256(b"never pushed").hexdigest()
    write_plan(
        tmp_path / "plan.json",
        [
            change("aws_lambda_function.api", ["create"], function(f"{registry.host}/verify/app@{pushed}")),
            change("aws_lambda_function.next", ["create"], function(f"{registry.host}/verify/app@{missing}")),
            change(
                "aws_lambda_function.other", ["create"], function(f"{registry.host}/verify/nope@{missing}")
            ),
        ],
    )
    # The plan names the registry itself, so the workflow must name it for the login to go there.
    run = verify(tmp_path, "--plan", "plan.json", "--registry", registry.host)
    assert run.code == 1, run.log
    assert run.outputs == {"checked": "1"}
    (error,) = run.error_lines()
    assert error.startswith("::error::2 of 3 image(s) must not be deployed: ")
    assert f"aws_lambda_function.next: {registry.host}/verify/app@{missing} is missing: " in error
    assert f"{registry.host}/verify/nope has no manifest {missing}" in error
    assert "aws_lambda_function.api" not in error
    assert "Fix: publish the image before planning" in error
    # The report keeps the plan's order, whatever order the checks ran in.
    order = [run.summary.index(f"| aws_lambda_function.{name} |") for name in ("api", "next", "other")]
    assert order == sorted(order)
    assert "✘ missing" in run.summary


def test_unknown_image_uri_explains_the_chicken_and_egg(aws_env: dict[str, str], tmp_path: Path) -> None:
    write_plan(
        tmp_path / "plan.json",
        [
            change("aws_ecr_repository.app", ["create"], {"name": "app"}, kind="aws_ecr_repository"),
            change(
                "aws_lambda_function.api",
                ["create"],
                function(None),
                after_unknown={"image_uri": True, "arn": True},
            ),
        ],
    )
    run = verify(tmp_path, "--plan", "plan.json")
    assert run.code == 1, run.log
    assert run.outputs == {"checked": "0"}
    (error,) = run.error_lines()
    assert "aws_lambda_function.api: (known after apply) image_uri is only known at apply time" in error
    assert "repository or the image is created in the same apply" in error
    assert "chicken-and-egg" in error
    assert "terraform apply -target=aws_ecr_repository.<name>" in error
    assert "image-uri output" in error


def test_tag_only_image_uri_explains_why_it_does_not_redeploy(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    write_plan(
        tmp_path / "plan.json",
        [change("aws_lambda_function.api", ["update"], function(f"{ECR_HOST}/verify/app:latest"))],
    )
    run = verify(tmp_path, "--plan", "plan.json")
    assert run.code == 1, run.log
    (error,) = run.error_lines()
    assert f"aws_lambda_function.api: {ECR_HOST}/verify/app:latest is pinned by tag, not by digest" in error
    assert "Terraform plans no update" in error
    assert "Lambda keeps running the image it resolved at the last deploy" in error
    assert "Fix: pass the publish action's image-uri output" in error
    assert "pinned by digest" in error


def test_index_with_an_attestation_is_refused(
    registry: Registry, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """What `docker buildx build --push` makes by default: an index holding the image and
    a provenance attestation manifest."""
    repo = "verify/index"
    pushed = push_index_with_attestation(registry, repo)
    index_digest, image_digest = pushed.index_digest, pushed.image_digest

    run = verify(
        tmp_path,
        "--registry", registry.host,
        "--image-uris", f"{ECR_HOST}/{repo}@{index_digest}\n{ECR_HOST}/{repo}@{image_digest}",
    )  # fmt: skip
    assert run.code == 1, run.log
    assert run.outputs == {"checked": "1"}
    (error,) = run.error_lines()
    assert error.startswith("::error::1 of 2 image(s) must not be deployed: ")
    assert (
        f"image-uris: {ECR_HOST}/{repo}@{index_digest} breaks Lambda's rules: (1) a single image manifest"
        in error
    )
    assert (
        "found an OCI image index with 1 image manifest(s) (linux/amd64) and 1 attestation manifest(s)"
        in error
    )
    assert "The image manifest, config or layer media type for the source image ... is not supported" in error
    assert "--provenance=false --sbom=false" in error
    # Only the index is wrong: the image inside it passes every other rule.
    assert "(2)" not in error


def test_wrong_invoke_mode_is_found_in_the_registrys_layers(
    registry: Registry, aws_env: dict[str, str], images: Images, pushed: str, tmp_path: Path
) -> None:
    run = verify(
        tmp_path,
        "--image-uris", f"{registry.host}/verify/app@{pushed}",
        "--registry", registry.host,
        "--invoke-mode", "buffered",
    )  # fmt: skip
    assert run.code == 1, run.log
    (error,) = run.error_lines()
    assert "the Lambda Web Adapter must buffer" in error
    assert "found AWS_LWA_INVOKE_MODE=response_stream" in error


def test_unreachable_registry_fails_every_image_once(aws_env: dict[str, str], tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    digests = ["sha256:" + hashlib.sha256(n).hexdigest() for n in (b"one", b"two")]
    run = verify(
        tmp_path,
        "--registry", f"127.0.0.1:{dead}",
        "--image-uris", "\n".join(f"{ECR_HOST}/verify/app@{d}" for d in digests),
    )  # fmt: skip
    assert run.code == 1, run.log
    # One retry budget (20 s) for the host, not one per image.
    assert run.seconds < 35
    (error,) = run.error_lines()
    assert error.count(f"could not be checked: registry 127.0.0.1:{dead} is unreachable") == 2
    assert "Fix: check that the registry host '127.0.0.1:" in error


def test_plan_without_image_functions_passes_and_says_so(aws_env: dict[str, str], tmp_path: Path) -> None:
    write_plan(
        tmp_path / "plan.json",
        [
            change("aws_iam_role.api", ["update"], {"name": "api"}, kind="aws_iam_role"),
            change("aws_lambda_function.zip", ["update"], function(None, "Zip")),
        ],
    )
    run = verify(tmp_path, "--plan", "plan.json")
    assert run.code == 0, run.log
    assert run.outputs == {"checked": "0"}
    assert (
        "::notice::nothing to verify: the plan creates or updates no aws_lambda_function with "
        "package_type Image; 1 Zip function(s) have no image to check"
    ) in run.stdout
    assert "the plan creates or updates no aws_lambda_function with package_type Image" in run.summary


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "plan file 'plan.json' does not exist (looked for "),
        (b"", "is not JSON"),
        (b"PK\x03\x04 binary plan", "is a binary Terraform plan, not JSON"),
        (b"not json at all", "is not JSON"),
        (b'{"@level":"info","@message":"Terraform 1.9.8","type":"version"}\n{"@level":"info"}\n',
         "is the log stream of terraform plan -json, not a plan"),
        (b"[1, 2]", "is JSON but not a Terraform plan"),
        (b'{"format_version": "1.0", "values": {}}', "is a state (terraform show -json without a plan file)"),
        (b'{"format_version": "1.2", "planned_values": {}, "errored": true}', "is a plan that errored"),
    ],
)  # fmt: skip
def test_malformed_plan_is_a_clear_input_error(
    content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if content is not None:
        (tmp_path / "plan.json").write_bytes(content)
    code = main(["verify", "--region", REGION, "--plan", "plan.json", "--workspace", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert message in errors[0]
    assert "Fix: " in errors[0]


def test_nothing_to_verify_is_an_input_error(tmp_path: Path) -> None:
    run = verify(tmp_path, "--image-uris", "\n \n")
    assert run.code == 2
    assert run.error_lines() == [
        "::error::neither 'image-uris' nor 'plan' was given, so there is nothing to verify. Fix: pass the "
        "plan (terraform show -json output) as 'plan', or the images as 'image-uris'."
    ]


def test_the_verify_action_gates_a_plan_in_a_consumer_workflow(
    registry: Registry,
    aws_env: dict[str, str],
    pushed: str,
    workspace: Workspace,
    action_dir: Path,
    tmp_path: Path,
) -> None:
    (workspace.path / "terraform").mkdir()
    write_plan(
        workspace.path / "terraform" / "plan.json",
        [change("aws_lambda_function.api", ["create"], function(f"{ECR_HOST}/verify/app@{pushed}"))],
    )
    workspace.commit("plan")
    run = consumer(
        workspace,
        tmp_path,
        f"""\
        name: gate
        on: push
        jobs:
          plan:
            runs-on: ubuntu-latest
            steps:
              - uses: {CHECKOUT}
              - id: verify
                uses: owner/lambda-image-publish/verify@v1
                with:
                  plan: terraform/plan.json
                  region: {REGION}
                  registry: {registry.host}
              - run: echo "OUT checked=${{{{ steps.verify.outputs.checked }}}}"
        """,
        action_dir,
        aws_env,
    )
    assert run.code == 0, run.log
    assert run.values("plan") == {"checked": "1"}
    assert run.commands("plan", "error") == []


# ------------------------------------------------------- invoke mode from the plan


def streaming_function(image_uri: str, env_mode: str | None = None, name: str = "api") -> dict[str, Any]:
    after = function(image_uri)
    after["function_name"] = name
    if env_mode is not None:
        after["environment"] = [{"variables": {"AWS_LWA_INVOKE_MODE": env_mode, "OTHER": "x"}}]
    return after


def url_change(
    function_name: str, mode: str = "RESPONSE_STREAM", address: str = "aws_lambda_function_url.stream"
) -> dict[str, Any]:
    return change(
        address,
        ["create"],
        {"function_name": function_name, "invoke_mode": mode, "authorization_type": "NONE"},
        kind="aws_lambda_function_url",
    )


def url_configuration(function_address: str = "aws_lambda_function.api") -> list[dict[str, Any]]:
    """How `terraform show -json` records `function_name = aws_lambda_function.api.function_name`."""
    return [
        {
            "address": "aws_lambda_function_url.stream",
            "mode": "managed",
            "type": "aws_lambda_function_url",
            "name": "stream",
            "expressions": {
                "function_name": {"references": [f"{function_address}.function_name", function_address]},
                "invoke_mode": {"constant_value": "RESPONSE_STREAM"},
            },
        }
    ]


@pytest.fixture(scope="module")
def unset_pushed(images: Images, busybox_base: str, adapter_image: str, registry: Registry) -> str:
    """An adapter image that leaves AWS_LWA_INVOKE_MODE to the function."""
    image = images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        'CMD ["httpd", "-f", "-p", "8080"]\n',
        name="verify/unset",
    )
    return images.push(image, registry, "verify/unset", "v1")


@pytest.mark.parametrize(
    ("image", "env_mode", "linked_by", "ok", "words"),
    [
        ("unset", "response_stream", "configuration", True, ["streams"]),
        ("unset", "RESPONSE_STREAM", "function_name", True, ["streams"]),
        ("streams", None, "configuration", True, ["streams"]),
        (
            "unset",
            None,
            "configuration",
            False,
            ["served by aws_lambda_function_url.stream, invoke mode response-stream",
             "AWS_LWA_INVOKE_MODE unset in the function's environment and in the image"],
        ),
        (
            "streams",
            "buffered",
            "function_name",
            False,
            ["AWS_LWA_INVOKE_MODE=buffered (from aws_lambda_function.api's environment in the plan)"],
        ),
    ],
    ids=["function-streams", "by-name", "image-streams", "nobody-streams", "function-buffers"],
)  # fmt: skip
def test_the_gate_takes_the_invoke_mode_from_the_plans_function_url(
    registry: Registry,
    aws_env: dict[str, str],
    pushed: str,
    unset_pushed: str,
    tmp_path: Path,
    image: str,
    env_mode: str | None,
    linked_by: str,
    ok: bool,
    words: list[str],
) -> None:
    """No invoke-mode input: the URL in the plan says the function streams, the function's
    environment (else the image) says whether its adapter does."""
    uri = f"{ECR_HOST}/verify/unset@{unset_pushed}" if image == "unset" else f"{ECR_HOST}/verify/app@{pushed}"
    write_plan(
        tmp_path / "plan.json",
        [
            change("aws_lambda_function.api", ["create"], streaming_function(uri, env_mode)),
            url_change("api" if linked_by == "function_name" else "(known after apply)"),
        ],
        url_configuration() if linked_by == "configuration" else None,
    )
    run = verify(tmp_path, "--plan", "plan.json", "--registry", registry.host)
    assert "served by a RESPONSE_STREAM function URL" in run.stdout, run.log
    if ok:
        assert run.code == 0, run.log
        assert run.outputs == {"checked": "1"}
        assert all(word in run.summary for word in words)
    else:
        assert run.code == 1, run.log
        [error] = run.error_lines()
        assert "aws_lambda_function.api:" in error
        assert all(word in error for word in words), error


def test_a_plan_without_function_urls_uses_the_invoke_mode_input(
    registry: Registry, aws_env: dict[str, str], unset_pushed: str, tmp_path: Path
) -> None:
    uri = f"{ECR_HOST}/verify/unset@{unset_pushed}"
    write_plan(
        tmp_path / "plan.json", [change("aws_lambda_function.api", ["create"], streaming_function(uri))]
    )
    run = verify(
        tmp_path, "--plan", "plan.json", "--registry", registry.host, "--invoke-mode", "response-stream"
    )
    assert run.code == 1, run.log
    assert "unset in the function's environment and in the image" in run.error_lines()[0]
    # Without a URL or the input there is no mode to check: the gate passes on the other rules.
    quiet = verify(tmp_path, "--plan", "plan.json", "--registry", registry.host)
    assert quiet.code == 0, quiet.log
