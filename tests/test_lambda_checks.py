"""Lambda's image rules: a table of facts for `check_image`, then real images read from
the engine and from the registry."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from entrypoint.checks.imagefacts import ImageFacts, facts_from_engine
from entrypoint.checks.lambda_rules import (
    MAX_IMAGE_BYTES,
    WEB_ADAPTER_PATH,
    FunctionSetting,
    check_image,
    facts_from_registry,
    invoke_mode_notice,
    require_lambda_compatible,
)
from entrypoint.engine import Engine
from entrypoint.errors import CheckError, InputError
from entrypoint.inputs import parse_invoke_mode
from entrypoint.registry.client import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient
from entrypoint.registry.transport import CredentialScope, Transport
from tests.lambda_images import Images
from tests.support.stack import ECR_PASSWORD, ECR_USER

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from docker import DockerClient

    from tests.support.stack import Registry

GOOD = ImageFacts(
    reference="registry.example/app@sha256:" + "a" * 64,
    media_type=OCI_MANIFEST,
    os="linux",
    architecture="amd64",
    size=300 * 1024**2,
    size_compressed=True,
    entrypoint=(),
    cmd=("python3", "-m", "app"),
    env={"PATH": "/usr/bin"},
    has_web_adapter=False,
)
ADAPTER = dataclasses.replace(GOOD, has_web_adapter=True)


def facts(base: ImageFacts = GOOD, **changes: object) -> ImageFacts:
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# (id, facts, platform, invoke mode, rules broken: a word from each, in order)
CASES: list[tuple[str, ImageFacts, str, str | None, list[str]]] = [
    ("oci manifest", GOOD, "linux/amd64", None, []),
    ("docker schema 2", facts(media_type=DOCKER_MANIFEST), "linux/amd64", None, []),
    ("engine image", facts(media_type=None, size_compressed=False), "linux/amd64", None, []),
    ("arm64 on arm64", facts(architecture="arm64"), "linux/arm64", None, []),
    (
        "index with attestation",
        facts(media_type=OCI_INDEX, is_index=True, index_platforms=("linux/amd64",), attestation_manifests=1),
        "linux/amd64",
        None,
        ["single image manifest"],
    ),
    (
        "manifest list",
        facts(media_type=DOCKER_LIST, is_index=True, index_platforms=("linux/amd64", "linux/arm64")),
        "linux/amd64",
        None,
        ["single image manifest"],
    ),
    (
        "index without a readable image",
        facts(media_type=OCI_INDEX, is_index=True, os="", architecture="", cmd=()),
        "linux/amd64",
        None,
        ["single image manifest"],
    ),
    (
        "schema 1",
        facts(media_type="application/vnd.docker.distribution.manifest.v1+prettyjws"),
        "linux/amd64",
        None,
        ["single image manifest"],
    ),
    ("windows", facts(os="windows"), "linux/amd64", None, ["os must be linux"]),
    ("arm64 for amd64", facts(architecture="arm64"), "linux/amd64", None, ["architecture must be amd64"]),
    ("amd64 for arm64", GOOD, "linux/arm64", None, ["architecture must be arm64"]),
    ("exactly 10 GB", facts(size=MAX_IMAGE_BYTES, size_compressed=False), "linux/amd64", None, []),
    ("over 10 GB", facts(size=MAX_IMAGE_BYTES + 1, size_compressed=False), "linux/amd64", None, ["size"]),
    ("over 10 GB compressed", facts(size=MAX_IMAGE_BYTES + 1), "linux/amd64", None, ["size"]),
    ("no entrypoint, no cmd", facts(cmd=()), "linux/amd64", None, ["ENTRYPOINT or CMD"]),
    ("entrypoint only", facts(cmd=(), entrypoint=("/lambda-entrypoint.sh",)), "linux/amd64", None, []),
    (
        "adapter streams",
        facts(ADAPTER, env={"AWS_LWA_INVOKE_MODE": "response_stream"}),
        "linux/amd64",
        "response-stream",
        [],
    ),
    (
        "adapter streams, any case",
        facts(ADAPTER, env={"AWS_LWA_INVOKE_MODE": "RESPONSE_STREAM"}),
        "linux/amd64",
        "RESPONSE_STREAM",
        [],
    ),
    # The function may set it: publish cannot tell, so it gives a notice, not a refusal.
    ("adapter unset for streaming", ADAPTER, "linux/amd64", "response-stream", []),
    (
        "adapter buffers for streaming",
        facts(ADAPTER, env={"AWS_LWA_INVOKE_MODE": "buffered"}),
        "linux/amd64",
        "response-stream",
        ["must stream"],
    ),
    ("adapter unset for buffered", ADAPTER, "linux/amd64", "buffered", []),
    (
        "adapter buffered for buffered",
        facts(ADAPTER, env={"AWS_LWA_INVOKE_MODE": "Buffered"}),
        "linux/amd64",
        "buffered",
        [],
    ),
    (
        "adapter streams for buffered",
        facts(ADAPTER, env={"AWS_LWA_INVOKE_MODE": "response_stream"}),
        "linux/amd64",
        "buffered",
        ["must buffer"],
    ),
    (
        "no invoke mode, no check",
        facts(ADAPTER, env={"AWS_LWA_INVOKE_MODE": "nonsense"}),
        "linux/amd64",
        "",
        [],
    ),
    ("no adapter, no check", GOOD, "linux/amd64", "response-stream", []),
    ("adapter not looked for", facts(has_web_adapter=None), "linux/amd64", "response-stream", []),
    (
        "everything wrong",
        facts(
            ADAPTER,
            media_type=OCI_INDEX,
            is_index=True,
            index_platforms=("linux/arm64",),
            attestation_manifests=1,
            architecture="arm64",
            size=MAX_IMAGE_BYTES * 2,
            cmd=(),
            env={"AWS_LWA_INVOKE_MODE": "buffered"},
        ),
        "linux/amd64",
        "response-stream",
        ["single image manifest", "architecture", "size", "ENTRYPOINT or CMD", "must stream"],
    ),
]


@pytest.mark.parametrize(
    ("image", "platform", "mode", "broken"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_check_image(image: ImageFacts, platform: str, mode: str | None, broken: list[str]) -> None:
    violations = check_image(image, platform, mode)
    assert len(violations) == len(broken), violations
    for violation, word in zip(violations, broken, strict=True):
        assert word in violation.rule
        assert violation.found
        assert violation.fix


def test_index_message_explains_lambdas_error_and_the_buildx_flags() -> None:
    index = facts(
        media_type=OCI_INDEX, is_index=True, index_platforms=("linux/amd64",), attestation_manifests=2
    )
    (violation,) = check_image(index, "linux/amd64", None)
    assert (
        violation.found
        == "an OCI image index with 1 image manifest(s) (linux/amd64) and 2 attestation manifest(s)"
    )
    assert "The image manifest, config or layer media type" in violation.fix
    assert "is not supported" in violation.fix
    assert "--provenance=false --sbom=false" in violation.fix


def test_index_without_images_says_so() -> None:
    (violation,) = check_image(
        facts(media_type=DOCKER_LIST, is_index=True, attestation_manifests=1, os="", architecture=""),
        "linux/amd64",
        None,
    )
    assert violation.found == "a Docker manifest list with no image and 1 attestation manifest(s)"


def test_size_wording_says_which_size() -> None:
    (uncompressed,) = check_image(facts(size=11 * 1024**3, size_compressed=False), "linux/amd64", None)
    assert uncompressed.found == "11.00 GB uncompressed"
    (compressed,) = check_image(facts(size=11 * 1024**3), "linux/amd64", None)
    assert "compressed layers" in compressed.found
    assert "larger still" in compressed.found


def test_require_names_every_rule_in_one_line() -> None:
    wrong = facts(ADAPTER, architecture="arm64", cmd=(), env={"AWS_LWA_INVOKE_MODE": "buffered"})
    with pytest.raises(CheckError) as caught:
        require_lambda_compatible(wrong, "linux/amd64", "response-stream")
    line = caught.value.line()
    assert "\n" not in line
    assert line.startswith(f"Lambda would refuse {GOOD.reference}, which breaks 3 rule(s): (1) architecture")
    assert "found 'arm64'" in line
    assert "(2) ENTRYPOINT or CMD must be set: found neither" in line
    assert "found AWS_LWA_INVOKE_MODE=buffered" in line
    assert "Fix: (1) build with --platform linux/amd64" in line
    assert "(3) set AWS_LWA_INVOKE_MODE=response_stream in the function's environment" in line
    assert "or add ENV AWS_LWA_INVOKE_MODE=response_stream to the Dockerfile" in line
    require_lambda_compatible(GOOD, "linux/amd64", "response-stream")


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("", None),
        ("  ", None),
        (None, None),
        ("buffered", "buffered"),
        ("BUFFERED", "buffered"),
        ("response-stream", "response-stream"),
        ("RESPONSE_STREAM", "response-stream"),
        ("response_stream", "response-stream"),
    ],
)
def test_parse_invoke_mode(value: str | None, mode: str | None) -> None:
    assert parse_invoke_mode(value) == mode


@pytest.mark.parametrize("value", ["stream", "response", "sync"])
def test_parse_invoke_mode_refuses(value: str) -> None:
    with pytest.raises(InputError, match=f"input 'invoke-mode' is '{value}', not a Lambda invoke mode"):
        parse_invoke_mode(value)


def test_unknown_platform_is_an_input_error() -> None:
    with pytest.raises(InputError, match="linux/386"):
        check_image(GOOD, "linux/386", None)


# ------------------------------------------------------------------- real images


@pytest.fixture
def images(docker_client: DockerClient, tmp_path: Path) -> Iterator[Images]:
    made = Images(docker_client, tmp_path)
    yield made
    made.cleanup()


def test_arm64_image_is_refused_for_amd64(images: Images) -> None:
    # FROM scratch with COPY only: BuildKit makes an arm64 image without emulating anything.
    image = images.build(
        'FROM --platform=linux/arm64 scratch\nCOPY hello.txt /hello.txt\nCMD ["/hello"]\n',
        files={"hello.txt": "hi\n"},
        platform="linux/arm64",
    )
    found = facts_from_engine(Engine(images.client), image, WEB_ADAPTER_PATH)
    assert (found.os, found.architecture) == ("linux", "arm64")
    with pytest.raises(
        CheckError, match=r"architecture must be amd64 for linux/amd64 \(Lambda x86_64\): found 'arm64'"
    ):
        require_lambda_compatible(found, "linux/amd64", None)
    require_lambda_compatible(found, "linux/arm64", None)


def test_image_without_entrypoint_or_cmd_is_refused(images: Images) -> None:
    image = images.build("FROM scratch\nCOPY hello.txt /hello.txt\n", files={"hello.txt": "hi\n"})
    found = facts_from_engine(Engine(images.client), image, WEB_ADAPTER_PATH)
    assert (found.entrypoint, found.cmd, found.has_web_adapter) == ((), (), False)
    with pytest.raises(CheckError, match="ENTRYPOINT or CMD must be set: found neither"):
        require_lambda_compatible(found, "linux/amd64", None)
    assert images.containers_of(image) == []


def test_engine_finds_the_adapter_and_the_wrong_invoke_mode(
    images: Images, busybox_base: str, adapter_image: str
) -> None:
    image = images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "ENV AWS_LWA_INVOKE_MODE=buffered\n"
        'CMD ["httpd", "-f", "-p", "8080"]\n'
    )
    found = facts_from_engine(Engine(images.client), image, WEB_ADAPTER_PATH)
    assert found.media_type is None
    assert not found.size_compressed
    assert found.size > 1024**2
    assert found.has_web_adapter is True
    assert found.env["AWS_LWA_INVOKE_MODE"] == "buffered"
    assert found.cmd == ("httpd", "-f", "-p", "8080")
    with pytest.raises(CheckError) as caught:
        require_lambda_compatible(found, "linux/amd64", "response-stream")
    assert "found AWS_LWA_INVOKE_MODE=buffered" in caught.value.line()
    assert "add ENV AWS_LWA_INVOKE_MODE=response_stream" in caught.value.line()
    require_lambda_compatible(found, "linux/amd64", "buffered")
    # The container made to look for the file never ran and is gone.
    assert images.containers_of(image) == []

    removed = images.build(f"FROM {image}\nRUN rm /opt/extensions/lambda-adapter\n")
    assert facts_from_engine(Engine(images.client), removed, WEB_ADAPTER_PATH).has_web_adapter is False
    plain = facts_from_engine(Engine(images.client), busybox_base, WEB_ADAPTER_PATH)
    assert plain.has_web_adapter is False
    require_lambda_compatible(plain, "linux/amd64", "response-stream")


def test_registry_facts_read_config_and_layers_without_pulling(
    images: Images, registry: Registry, busybox_base: str, adapter_image: str
) -> None:
    image = images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "RUN echo more > /more.txt\n"
        'ENV AWS_LWA_INVOKE_MODE=response_stream\nENTRYPOINT ["httpd"]\nCMD ["-f"]\n'
    )
    digest = images.push(image, registry, "checks/adapter")
    client = RegistryClient(
        Transport(registry.host, ECR_USER, ECR_PASSWORD, scope=CredentialScope(registry.host))
    )
    found = facts_from_registry(client, "checks/adapter", digest)
    assert found.reference == f"{registry.host}/checks/adapter@{digest}"
    assert found.media_type in (DOCKER_MANIFEST, OCI_MANIFEST)
    assert (found.os, found.architecture, found.is_index) == ("linux", "amd64", False)
    assert (found.entrypoint, found.cmd) == (("httpd",), ("-f",))
    assert found.size_compressed
    assert 0 < found.size < facts_from_engine(Engine(images.client), image, WEB_ADAPTER_PATH).size
    assert found.has_web_adapter is True
    assert check_image(found, "linux/amd64", "response-stream") == []
    assert facts_from_registry(client, "checks/adapter", "v1", find_adapter=False).has_web_adapter is None

    # A whiteout in a later layer deletes the adapter: the top-down scan must see it.
    removed = images.build(f"FROM {image}\nRUN rm /opt/extensions/lambda-adapter\n")
    gone = images.push(removed, registry, "checks/adapter", "removed")
    assert facts_from_registry(client, "checks/adapter", gone).has_web_adapter is False


# (id, image env, what the function sets, URL mode, rules broken)
FUNCTION_CASES = [
    ("unset everywhere, function known", {}, FunctionSetting(known=True), "response-stream", ["must stream"]),
    (
        "function streams over a buffering image",
        {"AWS_LWA_INVOKE_MODE": "buffered"},
        FunctionSetting(known=True, value="RESPONSE_STREAM", where="the plan"),
        "response-stream",
        [],
    ),
    (
        "function buffers over a streaming image",
        {"AWS_LWA_INVOKE_MODE": "response_stream"},
        FunctionSetting(known=True, value="buffered", where="the plan"),
        "response-stream",
        ["must stream"],
    ),
    (
        "image streams, function silent",
        {"AWS_LWA_INVOKE_MODE": "response_stream"},
        FunctionSetting(known=True),
        "response-stream",
        [],
    ),
    (
        "buffered URL, function streams",
        {},
        FunctionSetting(known=True, value="response_stream", where="the plan"),
        "buffered",
        ["must buffer"],
    ),
]


@pytest.mark.parametrize(
    ("env", "function", "mode", "broken"), [c[1:] for c in FUNCTION_CASES], ids=[c[0] for c in FUNCTION_CASES]
)
def test_the_functions_own_setting_wins_over_the_image(
    env: dict[str, str], function: FunctionSetting, mode: str, broken: list[str]
) -> None:
    found = check_image(facts(ADAPTER, env=env), "linux/amd64", mode, function)
    assert [next(word for word in broken if word in v.rule) for v in found] == broken
    if function.value is not None and found:
        assert function.where in found[0].found


def test_publish_gives_a_notice_when_the_image_leaves_the_mode_to_the_function() -> None:
    notice = invoke_mode_notice(facts(ADAPTER), "response-stream")
    assert notice is not None and "the function must set AWS_LWA_INVOKE_MODE=response_stream" in notice
    assert (
        invoke_mode_notice(facts(ADAPTER, env={"AWS_LWA_INVOKE_MODE": "RESPONSE_STREAM"}), "RESPONSE_STREAM")
        is None
    )
    assert invoke_mode_notice(facts(ADAPTER), "buffered") is None
    assert invoke_mode_notice(GOOD, "response-stream") is None  # no adapter, nothing to say
