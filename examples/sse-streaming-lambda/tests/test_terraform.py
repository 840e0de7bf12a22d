"""Static checks of terraform/ (parsed with python-hcl2; no providers, no AWS).

python-hcl2 renders values differently across versions: 4.x gives ``name = "a-${b}"``
as ``a-${b}`` and labels bare, while 7.x/8.x keep the quotes (``"a-${b}"``), quote
block labels and add ``__is_block__``/``__comments__`` keys. ``normalize`` maps both to
the 4.x form, so literal strings compare unquoted and references read ``${var.x}``.
"""

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

EXAMPLE_DIR = Path(__file__).resolve().parent.parent
TF_DIR = EXAMPLE_DIR / "terraform"

# The repository name lambda-image-publish derives by default from its `env` input.
ACTION_DEFAULT_REPOSITORY = "{env}-sse-streaming-lambda"
ENVS = ("preprod", "prod")
GOOD_DIGEST = "sha256:" + "0123456789abcdef" * 4


def _unquote(value: str) -> str:
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    return value


def normalize(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            _unquote(key): normalize(value)
            for key, value in node.items()
            if not (key.startswith("__") and key.endswith("__"))
        }
    if isinstance(node, list):
        return [normalize(item) for item in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


@cache
def load(name: str) -> dict[str, Any]:
    with (TF_DIR / name).open() as handle:
        return normalize(hcl2.load(handle))


def blocks(kind: str, type_: str, file: str = "main.tf") -> dict[str, dict[str, Any]]:
    """All ``kind "type_" "name" {...}`` blocks of a file, by name."""
    found: dict[str, dict[str, Any]] = {}
    for entry in load(file).get(kind, []):
        found.update(entry.get(type_, {}))
    return found


def resource(type_: str, name: str = "this") -> dict[str, Any]:
    resources = blocks("resource", type_)
    assert name in resources, f"no resource {type_}.{name} in main.tf"
    return resources[name]


def variable(name: str) -> dict[str, Any]:
    for entry in load("variables.tf")["variable"]:
        if name in entry:
            return entry[name]
    raise AssertionError(f"no variable {name!r} in variables.tf")


def single_block(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body[key]
    # Nested blocks parse as a list of bodies.
    assert isinstance(value, list), f"{key} should be a block"
    assert len(value) == 1, f"expected one {key} block"
    return value[0]


def test_all_files_parse() -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        assert load(name), name


def test_repository_name_matches_action_default() -> None:
    name = resource("aws_ecr_repository")["name"]
    assert name == "${var.env}-sse-streaming-lambda"
    for env in ENVS:
        assert name.replace("${var.env}", env) == ACTION_DEFAULT_REPOSITORY.format(env=env)


def test_repository_scans_on_push_and_is_mutable() -> None:
    repo = resource("aws_ecr_repository")
    assert single_block(repo, "image_scanning_configuration")["scan_on_push"] is True
    assert repo["image_tag_mutability"] == "MUTABLE"


def test_lifecycle_policy_keeps_recent_images() -> None:
    lifecycle = resource("aws_ecr_lifecycle_policy")
    assert lifecycle["repository"] == "${aws_ecr_repository.this.name}"
    match = re.search(r'file\("\$\{path\.module\}/([^"]+)"\)', lifecycle["policy"])
    assert match, f'policy should be file("${{path.module}}/..."): {lifecycle["policy"]}'

    policy = json.loads((TF_DIR / match.group(1)).read_text())
    rules = policy["rules"]
    priorities = [rule["rulePriority"] for rule in rules]
    assert len(set(priorities)) == len(priorities), "rulePriority values must be unique"
    assert all(rule["action"] == {"type": "expire"} for rule in rules)

    keep = [r for r in rules if r["selection"]["tagStatus"] == "any"]
    assert len(keep) == 1
    assert keep[0]["selection"]["countType"] == "imageCountMoreThan"
    # Enough history to roll back, and to not expire the image the function runs.
    assert keep[0]["selection"]["countNumber"] >= 10
    # ECR rejects a policy whose tagStatus "any" rule is not the last to be evaluated.
    assert keep[0]["rulePriority"] == max(priorities)

    untagged = [r for r in rules if r["selection"]["tagStatus"] == "untagged"]
    assert len(untagged) == 1
    assert untagged[0]["selection"]["countType"] == "sinceImagePushed"
    assert untagged[0]["selection"]["countUnit"] == "days"
    assert 1 <= untagged[0]["selection"]["countNumber"] <= 30


def test_function_runs_the_published_image() -> None:
    function = resource("aws_lambda_function")
    assert function["package_type"] == "Image"
    assert function["image_uri"] == "${var.image_uri}"
    assert function["architectures"] == ["x86_64"]
    assert function["memory_size"] == "${var.memory_size}"
    assert function["timeout"] == "${var.timeout}"
    variables = single_block(function, "environment")["variables"]
    assert variables["AWS_LWA_INVOKE_MODE"] == "response_stream"


def test_function_requires_image_uri() -> None:
    lifecycle = single_block(resource("aws_lambda_function"), "lifecycle")
    conditions = [p["condition"] for p in lifecycle["precondition"]]
    assert "${var.image_uri != null}" in conditions


def test_function_url_streams_and_requires_iam() -> None:
    url = resource("aws_lambda_function_url")
    assert url["function_name"] == "${aws_lambda_function.this.function_name}"
    assert url["invoke_mode"] == "RESPONSE_STREAM"
    assert url["authorization_type"] == "AWS_IAM"


def test_execution_role() -> None:
    role = resource("aws_iam_role")
    assert role["assume_role_policy"] == "${data.aws_iam_policy_document.lambda_assume_role.json}"
    assume = blocks("data", "aws_iam_policy_document")["lambda_assume_role"]
    statement = single_block(assume, "statement")
    assert statement["actions"] == ["sts:AssumeRole"]
    assert single_block(statement, "principals")["identifiers"] == ["lambda.amazonaws.com"]

    attachment = resource("aws_iam_role_policy_attachment", "basic_execution")
    assert attachment["role"] == "${aws_iam_role.this.name}"
    managed_policy = ":iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    assert attachment["policy_arn"].endswith(managed_policy)
    assert resource("aws_lambda_function")["role"] == "${aws_iam_role.this.arn}"


def _image_uri_pattern() -> re.Pattern[str]:
    validation = single_block(variable("image_uri"), "validation")
    match = re.search(r'regex\("((?:[^"\\]|\\.)*)"', validation["condition"])
    assert match, validation["condition"]
    # HCL string escapes (\\ and \") are a subset of JSON's.
    return re.compile(json.loads(f'"{match.group(1)}"'))


@pytest.mark.parametrize(
    "uri",
    [
        f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/prod-sse-streaming-lambda@{GOOD_DIGEST}",
        f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/preprod-sse-streaming-lambda@{GOOD_DIGEST}",
    ],
)
def test_image_uri_validation_accepts_digests(uri: str) -> None:
    # Terraform's regex() searches, like re.search; the pattern carries its own anchors.
    assert _image_uri_pattern().search(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prod-sse-streaming-lambda:latest",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prod-sse-streaming-lambda:abc123",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prod-sse-streaming-lambda@sha256:abc",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prod@" + GOOD_DIGEST.upper(),
        f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/prod@{GOOD_DIGEST}0",
        f"@{GOOD_DIGEST}",
        "",
    ],
)
def test_image_uri_validation_rejects_tags_and_bad_digests(uri: str) -> None:
    assert not _image_uri_pattern().search(uri)


def test_image_uri_validation_explains_tags() -> None:
    image_uri = variable("image_uri")
    validation = single_block(image_uri, "validation")
    assert "tag" in validation["error_message"]
    assert "redeploy" in validation["error_message"]
    # null is only for the bootstrap apply of the repository (see main.tf).
    assert image_uri["default"] is None
    assert validation["condition"].startswith("${var.image_uri == null ||")


def test_variables_declared() -> None:
    for name in ("env", "region", "image_uri", "memory_size", "timeout"):
        assert variable(name)
    env_validation = single_block(variable("env"), "validation")["condition"]
    assert all(f'\\"{env}\\"' in env_validation or f'"{env}"' in env_validation for env in ENVS)


def test_outputs() -> None:
    outputs: dict[str, Any] = {}
    for entry in load("outputs.tf")["output"]:
        outputs.update(entry)
    assert outputs["repository_url"]["value"] == "${aws_ecr_repository.this.repository_url}"
    assert outputs["function_name"]["value"] == "${aws_lambda_function.this.function_name}"
    assert outputs["function_url"]["value"] == "${aws_lambda_function_url.this.function_url}"


def test_aws_provider_pinned() -> None:
    terraform = load("versions.tf")["terraform"][0]
    providers: dict[str, Any] = {}
    for entry in terraform["required_providers"]:
        providers.update(entry)
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert providers["aws"]["version"] == "~> 5.0"


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform not installed")
def test_terraform_fmt() -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-diff", "-recursive", str(TF_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lifecycle_policy_protects_the_layer_cache_images() -> None:
    """The publish action's inline-cache anchor (buildcache-inline-<env>) must outlive the
    count rule, or the layer cache chain breaks once when it expires."""
    lifecycle = resource("aws_ecr_lifecycle_policy")
    match = re.search(r'file\("\$\{path\.module\}/([^"]+)"\)', lifecycle["policy"])
    assert match
    rules = json.loads((TF_DIR / match.group(1)).read_text())["rules"]
    [cache] = [r for r in rules if "buildcache-" in r["selection"].get("tagPrefixList", [])]
    [count] = [r for r in rules if r["selection"]["tagStatus"] == "any"]
    # ECR: an image a rule selects cannot be expired by a rule of lower priority (higher number).
    assert cache["rulePriority"] < count["rulePriority"]
    assert cache["selection"]["countType"] == "imageCountMoreThan"
