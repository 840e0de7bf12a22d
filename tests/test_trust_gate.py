"""Trust, second pass, finding 4 (issue 23): the verify gate must fail closed. Each attack is
a plan that the gate used to pass without seeing the image it deploys: a package type known
only at apply time, a function of the Cloud Control provider (awscc), a function URL or an
environment whose invoke mode the plan leaves open, a Lambda resource type the gate does not
read. Each is run through the real command against moto's ECR login and the local registry,
with real pushed images.

The plan shapes are the ones `terraform show -json` writes (checked against Terraform 1.11
with hashicorp/aws 5.100): a computed package_type is missing from `after` and true in
`after_unknown`; a computed invoke_mode likewise; a computed environment is `[{}]` in `after`
and `[{"variables": true}]` in `after_unknown`. awscc's attributes are objects, not block
lists: `code.image_uri`, `environment.variables`, and an unset optional one is computed.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest

from tests.lambda_images import Images
from tests.test_verify import ECR_HOST, change, function, verify, write_plan

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from docker import DockerClient

    from tests.support.run import Run
    from tests.support.stack import Registry

AWSCC = "registry.terraform.io/hashicorp/awscc"
MISSING = "sha256:" + hashlib.sha256(b"never pushed by the trust gate tests").hexdigest()


@pytest.fixture(scope="module")
def images(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    made = Images(docker_client, tmp_path_factory.mktemp("trust-gate"))
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def streams(images: Images, busybox_base: str, adapter_image: str, registry: Registry) -> str:
    """URI of an adapter image whose ENV streams."""
    image = images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "ENV AWS_LWA_INVOKE_MODE=response_stream\n"
        'CMD ["httpd", "-f", "-p", "8080"]\n',
        name="trust-gate/streams",
    )
    return f"{ECR_HOST}/trust-gate/streams@{images.push(image, registry, 'trust-gate/streams')}"


@pytest.fixture(scope="module")
def unset(images: Images, busybox_base: str, adapter_image: str, registry: Registry) -> str:
    """URI of an adapter image that leaves AWS_LWA_INVOKE_MODE to the function: it buffers."""
    image = images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        'CMD ["httpd", "-f", "-p", "8080"]\n',
        name="trust-gate/unset",
    )
    return f"{ECR_HOST}/trust-gate/unset@{images.push(image, registry, 'trust-gate/unset')}"


@pytest.fixture(scope="module")
def plain(images: Images, busybox_base: str, registry: Registry) -> str:
    """URI of an image without the Lambda Web Adapter: no invoke mode concerns it."""
    image = images.build(f'FROM {busybox_base}\nCMD ["httpd", "-f", "-p", "8080"]\n', name="trust-gate/plain")
    return f"{ECR_HOST}/trust-gate/plain@{images.push(image, registry, 'trust-gate/plain')}"


def awscc_change(
    address: str,
    actions: list[str],
    after: dict[str, Any] | None,
    *,
    after_unknown: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    kind: str = "awscc_lambda_function",
) -> dict[str, Any]:
    entry = change(address, actions, after, after_unknown=after_unknown, before=before, kind=kind)
    entry["provider_name"] = AWSCC
    return entry


def awscc_function(
    image_uri: str | None, package_type: str | None = "Image", environment: dict[str, str] | None = None
) -> dict[str, Any]:
    """How the awscc provider plans AWS::Lambda::Function: the image inside `code`."""
    after: dict[str, Any] = {"function_name": "api", "architectures": ["x86_64"], "code": {}}
    if image_uri is not None:
        after["code"]["image_uri"] = image_uri
    if package_type is not None:
        after["package_type"] = package_type
    if environment is not None:
        after["environment"] = {"variables": environment}
    return after


def url_entry(kind: str, mode: str | None, target: str | None = "api") -> dict[str, Any]:
    """A function URL; None: the plan leaves invoke_mode (or the function it names) to the apply."""
    name = "function_name" if kind == "aws_lambda_function_url" else "target_function_arn"
    after: dict[str, Any] = {"auth_type" if "awscc" in kind else "authorization_type": "NONE"}
    unknown: dict[str, Any] = {"function_url": True}
    if target is None:
        unknown[name] = True
    else:
        after[name] = target
    if mode is None:
        unknown["invoke_mode"] = True
    else:
        after["invoke_mode"] = mode
    entry = change(f"{kind}.stream", ["create"], after, after_unknown=unknown, kind=kind)
    if "awscc" in kind:
        entry["provider_name"] = AWSCC
    return entry


def url_reference(kind: str, function_address: str) -> list[dict[str, Any]]:
    """The configuration's record of `function_name = <function>.function_name` (aws) or
    `target_function_arn = <function>.arn` (awscc)."""
    name, attribute = (
        ("function_name", "function_name")
        if kind == "aws_lambda_function_url"
        else ("target_function_arn", "arn")
    )
    return [
        {
            "address": f"{kind}.stream",
            "mode": "managed",
            "type": kind,
            "name": "stream",
            "expressions": {name: {"references": [f"{function_address}.{attribute}", function_address]}},
        }
    ]


def gate(tmp_path: Path, registry: Registry) -> Run:
    return verify(tmp_path, "--plan", "plan.json", "--registry", registry.host)


def refused(run: Run, source: str, *words: str) -> str:
    """The one ::error:: line, naming `source` and each of `words`; the row in log and summary."""
    assert run.code == 1, run.log
    [error] = run.error_lines()
    assert error.startswith("::error::"), error
    assert f"{source}: " in error, error
    for word in words:
        assert word in error, (word, error)
    assert f"  ✘ {source}: " in run.stdout
    assert f"| {source} |" in run.summary
    return error


# ------------------------------------------------------- 1. a package type the plan leaves open


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (
            # package_type = (a value computed from a resource of the same apply)
            change(
                "aws_lambda_function.api",
                ["create"],
                {"function_name": "api", "image_uri": f"{ECR_HOST}/trust-gate/streams:latest"},
                after_unknown={"package_type": True, "arn": True},
            ),
            "its package_type is only known at apply time",
        ),
        (
            # A Zip function replaced by one of computed type: the old "Zip" says nothing.
            change(
                "module.app.aws_lambda_function.this",
                ["delete", "create"],
                {"function_name": "api"},
                before={"function_name": "api", "package_type": "Zip", "filename": "app.zip"},
                after_unknown={"package_type": True, "image_uri": True},
            ),
            "its package_type is only known at apply time",
        ),
        (
            change(
                "aws_lambda_function.api",
                ["create"],
                {"function_name": "api"},
                after_unknown={"image_uri": True},
            ),
            "the plan gives it no package_type",
        ),
        (
            # awscc's package_type is optional and computed: left out, it is unknown at create.
            awscc_change(
                "module.app.awscc_lambda_function.this",
                ["create"],
                awscc_function(f"{ECR_HOST}/trust-gate/streams:latest", package_type=None),
                after_unknown={"package_type": True, "code": {"s3_bucket": True, "zip_file": True}},
            ),
            "its package_type is only known at apply time",
        ),
    ],
    ids=["computed", "zip-before", "absent", "awscc-omitted"],
)
def test_a_function_whose_package_type_the_plan_leaves_open_is_refused(
    aws_env: dict[str, str], tmp_path: Path, entry: dict[str, Any], why: str
) -> None:
    """It could be an Image function; counted as Zip, its image went unchecked and the gate passed."""
    write_plan(
        tmp_path / "plan.json", [entry, change("aws_lambda_function.zip", ["update"], function(None, "Zip"))]
    )
    run = verify(tmp_path, "--plan", "plan.json")
    error = refused(
        run,
        entry["address"],
        f"{entry['address']}: (package_type unknown) may run an image: {why}",
        "the gate cannot tell an Image function from a Zip one",
        'Fix: pin package_type = "Image" (or "Zip") in the configuration so the plan knows it',
    )
    assert error.startswith("::error::1 of 1 image(s) must not be deployed: "), error
    assert run.outputs == {"checked": "0"}
    assert "✘ unknown" in run.summary
    assert (
        f"1 resource(s) may deploy an image the plan does not let the gate check: {entry['address']}"
        in run.stdout
    )
    # The known Zip function is not what failed it.
    assert "aws_lambda_function.zip" not in error


# ---------------------------------------------------------- 2. the Cloud Control provider


def test_awscc_functions_are_checked_like_aws_ones_in_modules_too(
    registry: Registry, aws_env: dict[str, str], streams: str, tmp_path: Path
) -> None:
    """awscc_lambda_function was not read at all: any image it deployed passed unseen."""
    good = awscc_change("module.app.awscc_lambda_function.this", ["create"], awscc_function(streams))
    write_plan(tmp_path / "plan.json", [good])
    run = gate(tmp_path, registry)
    assert run.code == 0, run.log
    assert run.outputs == {"checked": "1"}
    assert "the plan creates or updates 1 Image function(s)" in run.stdout
    assert "| module.app.awscc_lambda_function.this | <code>" in run.summary
    assert "✔ ok" in run.summary

    missing = f"{ECR_HOST}/trust-gate/streams@{MISSING}"
    unpinned = f"{ECR_HOST}/trust-gate/streams:latest"
    write_plan(
        tmp_path / "plan.json",
        [
            good,
            awscc_change("awscc_lambda_function.stale", ["update"], awscc_function(missing)),
            awscc_change(
                "module.app.module.inner.awscc_lambda_function.f", ["create"], awscc_function(unpinned)
            ),
        ],
    )
    run = gate(tmp_path, registry)
    assert run.code == 1, run.log
    assert run.outputs == {"checked": "1"}
    [error] = run.error_lines()
    assert error.startswith("::error::2 of 3 image(s) must not be deployed: "), error
    assert f"awscc_lambda_function.stale: {missing} is missing: " in error
    assert (
        f"module.app.module.inner.awscc_lambda_function.f: {unpinned} is pinned by tag, not by digest"
        in error
    )
    assert "module.app.awscc_lambda_function.this" not in error


@pytest.mark.parametrize("linked_by", ["configuration", "arn"])
def test_an_awscc_function_url_sets_the_mode_its_awscc_function_must_speak(
    registry: Registry, aws_env: dict[str, str], streams: str, tmp_path: Path, linked_by: str
) -> None:
    """A RESPONSE_STREAM awscc_lambda_url in front of a function whose environment makes
    its adapter buffer: the stream never streams."""
    url = url_entry(
        "awscc_lambda_url",
        "RESPONSE_STREAM",
        "arn:aws:lambda:eu-west-2:123456789012:function:api" if linked_by == "arn" else None,
    )
    write_plan(
        tmp_path / "plan.json",
        [
            awscc_change(
                "awscc_lambda_function.api",
                ["create"],
                awscc_function(streams, environment={"AWS_LWA_INVOKE_MODE": "buffered"}),
            ),
            url,
        ],
        url_reference("awscc_lambda_url", "awscc_lambda_function.api")
        if linked_by == "configuration"
        else None,
    )
    run = gate(tmp_path, registry)
    refused(
        run,
        "awscc_lambda_function.api",
        "served by awscc_lambda_url.stream, invoke mode response-stream",
        "AWS_LWA_INVOKE_MODE=buffered (from awscc_lambda_function.api's environment in the plan)",
    )


# ---------------------------------------------------- 3. an invoke mode the plan leaves open


@pytest.mark.parametrize("url_kind", ["aws_lambda_function_url", "awscc_lambda_url"])
def test_an_invoke_mode_only_known_at_apply_is_judged_for_both_modes(
    registry: Registry, aws_env: dict[str, str], unset: str, tmp_path: Path, url_kind: str
) -> None:
    """The adapter buffers, which is right for BUFFERED only. Read as BUFFERED (aws) or
    not read (awscc), an unknown invoke_mode let it pass; it may well be RESPONSE_STREAM."""
    write_plan(
        tmp_path / "plan.json",
        [change("aws_lambda_function.api", ["create"], function(unset)), url_entry(url_kind, None)],
        url_reference(url_kind, "aws_lambda_function.api"),
    )
    run = gate(tmp_path, registry)
    refused(
        run,
        "aws_lambda_function.api",
        f"cannot be judged from the plan, which leaves the invoke_mode of {url_kind}.stream to the apply",
        f"served by {url_kind}.stream, invoke mode unknown until apply",
        "for invoke mode response-stream",
        'Fix: make invoke_mode a literal ("RESPONSE_STREAM" or "BUFFERED") on '
        f"{url_kind}.stream so the plan knows it",
    )
    assert "served by a function URL whose invoke_mode is only known at apply time" in run.stdout


def test_an_image_right_for_both_modes_passes_an_open_invoke_mode(
    registry: Registry, aws_env: dict[str, str], plain: str, tmp_path: Path
) -> None:
    """Worst case, judged: without the adapter no invoke mode concerns the image, so
    whatever the apply picks, the gate would have passed it."""
    write_plan(
        tmp_path / "plan.json",
        [
            change("aws_lambda_function.api", ["create"], function(plain)),
            url_entry("aws_lambda_function_url", None),
        ],
        url_reference("aws_lambda_function_url", "aws_lambda_function.api"),
    )
    run = gate(tmp_path, registry)
    assert run.code == 0, run.log
    assert run.outputs == {"checked": "1"}
    assert (
        "no Lambda Web Adapter, right whatever the apply makes of the invoke_mode of "
        "aws_lambda_function_url.stream"
    ) in run.summary


# ---------------------------------------------------- 4. an environment the plan leaves open


@pytest.mark.parametrize("provider", ["aws", "awscc"])
def test_an_environment_only_known_at_apply_is_judged_for_every_mode_it_may_set(
    registry: Registry, aws_env: dict[str, str], streams: str, tmp_path: Path, provider: str
) -> None:
    """The image streams, the URL streams, but the function's environment (which Lambda
    applies over the image) is computed: it may set the adapter to buffer. aws's was read as
    "sets nothing", awscc's not at all; both passed."""
    if provider == "aws":
        after = function(streams)
        after["environment"] = [{}]
        entry = change(
            "aws_lambda_function.api", ["create"], after, after_unknown={"environment": [{"variables": True}]}
        )
    else:
        entry = awscc_change(
            "awscc_lambda_function.api",
            ["create"],
            awscc_function(streams),
            after_unknown={"environment": True},
        )
    address = entry["address"]
    write_plan(
        tmp_path / "plan.json",
        [entry, url_entry("aws_lambda_function_url", "RESPONSE_STREAM")],
        url_reference("aws_lambda_function_url", address),
    )
    run = gate(tmp_path, registry)
    refused(
        run,
        address,
        f"cannot be judged from the plan, which leaves the environment of {address} to the apply",
        "served by aws_lambda_function_url.stream, invoke mode response-stream",
        f"AWS_LWA_INVOKE_MODE=buffered (from {address}'s environment, if the apply sets it so)",
        f"Fix: make the environment of {address} known at plan time",
    )


# ------------------------------------------- 5. a Lambda resource type the gate does not read


@pytest.mark.parametrize(
    ("kind", "after", "after_unknown", "shown", "keys"),
    [
        (
            "awscc_lambda_container_function",
            {"name": "api", "image_uri": f"{ECR_HOST}/trust-gate/streams:latest"},
            {},
            f"{ECR_HOST}/trust-gate/streams:latest",
            "image_uri",
        ),
        (
            "aws_lambda_image_function",
            {"image_config": [{"command": ["app"]}]},
            {"image_uri": True},
            "(image)",
            "image_config, image_uri",
        ),
        (
            "awscc_lambda_web_app",
            {"code": {"image_uri": f"{ECR_HOST}/x@{MISSING}"}},
            {},
            f"{ECR_HOST}/x@{MISSING}",
            "image_uri",
        ),
    ],
    ids=["top-level", "computed", "nested"],
)
def test_a_lambda_resource_type_the_gate_does_not_read_is_refused_when_it_carries_an_image(
    aws_env: dict[str, str],
    tmp_path: Path,
    kind: str,
    after: dict[str, Any],
    after_unknown: dict[str, Any],
    shown: str,
    keys: str,
) -> None:
    """A provider adds a resource that deploys an image to Lambda: ignored, it passed unseen."""
    address = f"module.app.{kind}.this"
    write_plan(
        tmp_path / "plan.json", [change(address, ["create"], after, after_unknown=after_unknown, kind=kind)]
    )
    run = verify(tmp_path, "--plan", "plan.json")
    refused(
        run,
        address,
        f"{address}: {shown} is a {kind}, a resource type the gate does not read, and the plan gives it "
        f"an image ({keys}), so what it deploys cannot be checked",
        "Fix: deploy Lambda container images with aws_lambda_function or awscc_lambda_function",
    )
    assert "✘ unsupported" in run.summary


# -------------------------------------------------------------- what must still pass


def test_known_zip_functions_and_unrelated_resources_still_pass(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    """Failing closed is not failing everything: Zip known for certain, Lambda resources
    without an image, images outside Lambda and resources the plan does not deploy pass."""
    image = f"{ECR_HOST}/trust-gate/streams:latest"
    write_plan(
        tmp_path / "plan.json",
        [
            change("aws_lambda_function.zip", ["create"], function(None, "Zip")),
            awscc_change("awscc_lambda_function.zip", ["create"], awscc_function(None, "Zip")),
            # Known from the state, though awscc computes it.
            awscc_change("awscc_lambda_function.old", ["update"], awscc_function(None, "Zip")),
            awscc_change("awscc_lambda_function.gone", ["delete"], None, before=awscc_function(image)),
            change("aws_lambda_function.same", ["no-op"], function(image)),
            change(
                "data.aws_lambda_function.read", ["read"], {}, after_unknown={"image_uri": True}, mode="data"
            ),
            change(
                "aws_lambda_layer_version.deps",
                ["create"],
                {"layer_name": "deps", "filename": "deps.zip"},
                after_unknown={"arn": True},
                kind="aws_lambda_layer_version",
            ),
            change(
                "aws_lambda_permission.url",
                ["create"],
                {"action": "lambda:InvokeFunctionUrl"},
                kind="aws_lambda_permission",
            ),
            awscc_change(
                "awscc_lambda_version.v",
                ["create"],
                {"function_name": "api"},
                after_unknown={"version": True},
                kind="awscc_lambda_version",
            ),
            change(
                "aws_sagemaker_model.m",
                ["create"],
                {"primary_container": [{"image": image}]},
                kind="aws_sagemaker_model",
            ),
            change("aws_apprunner_service.s", ["create"], {"image_uri": image}, kind="aws_apprunner_service"),
            # A URL whose mode is open, in front of a Zip function: no image to judge.
            url_entry("aws_lambda_function_url", None, target="zip"),
        ],
    )
    run = verify(tmp_path, "--plan", "plan.json")
    assert run.code == 0, run.log
    assert run.error_lines() == []
    assert run.outputs == {"checked": "0"}
    assert (
        "::notice::nothing to verify: the plan creates or updates no aws_lambda_function with "
        "package_type Image; 2 Image function(s) the plan leaves alone or deletes, not checked: "
        "awscc_lambda_function.gone, aws_lambda_function.same; 3 Zip function(s) have no image to check"
    ) in run.stdout
