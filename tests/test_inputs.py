"""Every action's inputs, parsed without running anything: each bad value is one InputError
naming the input, the value and the fix; good values become the frozen object the command
uses. (One end-to-end invalid-input test, in test_publish_errors, checks that such an error
stops a publish before any side effect.)"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from entrypoint.errors import InputError
from entrypoint.inputs import (
    parse_parallel,
    parse_promote,
    parse_publish,
    parse_release,
    parse_rollback,
    parse_verify,
)

if TYPE_CHECKING:
    from pathlib import Path

DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "plan.json").write_text("{}")
    return tmp_path


def _publish(workspace: Path, **overrides: str) -> dict[str, str]:
    return {"env": "preprod", "region": "eu-west-2", "dockerfile": "Dockerfile", **overrides}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"env": "Prod!"}, "input 'env' is 'Prod!'"),
        ({"env": ""}, "input 'env' is required"),
        ({"region": "europe"}, "input 'region' is 'europe'"),
        ({"platform": "linux/386"}, "which Lambda cannot run"),
        ({"push": "maybe"}, "not a boolean"),
        ({"build-args": "NOEQUALS"}, "not KEY=VALUE"),
        ({"tags": "src-abc"}, "prefix the action reserves"),
        ({"tags": "history-prod-1"}, "prefix the action reserves"),
        ({"tags": "bad tag"}, "not a valid image tag"),
        ({"repository": "Upper/Case"}, "not an ECR repository name"),
        ({"registry": "https://example.com/x"}, "not a host[:port]"),
        ({"dockerfile": "missing/Dockerfile"}, "Dockerfile 'missing/Dockerfile' does not exist"),
        ({"context": "nowhere"}, "build context 'nowhere' is not a directory"),
        ({"dockerfile": "../Dockerfile"}, "outside the workspace"),
        ({"cache": "s3"}, "input 'cache' is 's3', which is not a cache mode"),
        ({"smoke": "http://x"}, "input 'smoke' is 'http://x', which is not a smoke test"),
        ({"smoke-timeout": "0"}, "input 'smoke-timeout' is '0'"),
        ({"smoke-memory": "64"}, "input 'smoke-memory' is '64'"),
        ({"invoke-mode": "stream"}, "input 'invoke-mode' is 'stream', not a Lambda invoke mode"),
    ],
)
def test_bad_publish_inputs(workspace: Path, overrides: dict[str, str], expected: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_publish(_publish(workspace, **overrides), workspace)
    assert expected in raised.value.line()
    assert raised.value.exit_code == 2
    assert ". Fix: " in raised.value.line()


def test_publish_inputs_and_their_defaults(workspace: Path) -> None:
    inputs = parse_publish(
        _publish(
            workspace, tags="v1\nv1\nstable", **{"invoke-mode": "RESPONSE_STREAM", "smoke": "8080/health"}
        ),
        workspace,
    )
    assert inputs.repository == "preprod-sse-streaming-lambda"
    assert inputs.extra_tags == ("v1", "stable")
    assert (inputs.platform, inputs.push, inputs.cache) == ("linux/amd64", True, "registry-inline")
    assert inputs.invoke_mode == "response-stream"
    assert inputs.smoke is not None and (inputs.smoke.port, inputs.smoke.path) == (8080, "/health")
    assert inputs.context == workspace
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.env = "prod"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"source": f"h.example/app@{DIGEST}"}, "input 'env' is required"),
        ({"env": "prod"}, "input 'source' is required"),
        ({"env": "prod", "source": "not a reference"}, "input 'source' is 'not a reference'"),
        ({"env": "prod", "source": "host.example/app"}, "not an image reference with a digest or tag"),
        ({"env": "prod", "source": "h.example/app@sha256:abc"}, "not an image reference"),
        ({"env": "prod", "source": f"h.example/app@{DIGEST}", "platform": "linux/386"}, "Lambda cannot run"),
        ({"env": "prod", "source": f"h.example/app@{DIGEST}", "tags": "buildcache-x"}, "prefix the action"),
    ],
)
def test_bad_promote_inputs(workspace: Path, raw: dict[str, str], expected: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_promote({"region": "eu-west-2", **raw}, workspace)
    assert expected in raised.value.line()


def test_promote_sources_with_and_without_a_host(workspace: Path) -> None:
    full = parse_promote(
        {"env": "prod", "region": "eu-west-2", "source": f"h.example:5000/a/app@{DIGEST}"}, workspace
    )
    assert (full.source.host, full.source.repository, full.source.digest) == (
        "h.example:5000",
        "a/app",
        DIGEST,
    )
    assert full.repository == "prod-sse-streaming-lambda" and full.platform is None
    bare = parse_promote({"env": "prod", "region": "eu-west-2", "source": f"preprod-app@{DIGEST}"}, workspace)
    assert (bare.source.host, bare.source.repository, bare.source.text) == (
        "",
        "preprod-app",
        f"preprod-app@{DIGEST}",
    )
    tagged = parse_promote(
        {"env": "prod", "region": "eu-west-2", "source": "h.example/app:preprod"}, workspace
    )
    assert (tagged.source.tag, tagged.source.digest) == ("preprod", None)


@pytest.mark.parametrize(
    ("to", "ok"),
    [("", "previous"), ("previous", "previous"), (DIGEST, DIGEST), ("c" * 40, "c" * 40),
     ("sha256:abc", None), ("a b", None)],
)  # fmt: skip
def test_rollback_to(to: str, ok: str | None) -> None:
    raw = {"env": "prod", "region": "eu-west-2", "to": to}
    if ok is None:
        with pytest.raises(InputError, match="input 'to'"):
            parse_rollback(raw)
    else:
        assert parse_rollback(raw).to == ok


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, "nothing to verify"),
        ({"plan": "missing.json"}, "plan file 'missing.json' does not exist"),
        ({"plan": "../plan.json"}, "outside the workspace"),
        ({"image-uris": "a.example/x@" + DIGEST, "platform": "linux/386"}, "linux/386"),
        ({"image-uris": "a.example/x@" + DIGEST, "invoke-mode": "fast"}, "not a Lambda invoke mode"),
    ],
)
def test_bad_verify_inputs(workspace: Path, raw: dict[str, str], expected: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_verify({"region": "eu-west-2", **raw}, workspace)
    assert expected in raised.value.line()


# ----------------------------------------------------------------------- config (release)

GOOD_CONFIG = """\
images:
  - name: orders
    dockerfile: services/orders/Dockerfile
    build-args: {BASE: python, EXTRA: "1"}
    tags: [blue, green]
    smoke: 8080/health
  - name: billing
    dockerfile: services/billing/Dockerfile
    context: services
    repository: "{env}-billing-svc"
    platform: linux/arm64
    smoke-timeout: 12
"""


def edited(old: str, new: str) -> str:
    assert old in GOOD_CONFIG
    return GOOD_CONFIG.replace(old, new)


@pytest.fixture
def services(workspace: Path) -> Path:
    for name in ("orders", "billing"):
        (workspace / "services" / name).mkdir(parents=True)
        (workspace / "services" / name / "Dockerfile").write_text("FROM scratch\n")
    return workspace


def _release(workspace: Path, text: str, **overrides: str) -> dict[str, str]:
    """The inputs of a release of `text`; the workflow lets the file add any tag (what a file
    may ask for is tests/test_trust.py's)."""
    (workspace / "lambdas.yml").write_text(text)
    return {"env": "prod", "region": "eu-west-2", "config": "lambdas.yml", "config-tags": "*", **overrides}


NESTED = "images:\n  - name: x\n    dockerfile: Dockerfile\n    build-args: [1, [2]]\n"


@pytest.mark.parametrize(
    ("config", "overrides", "expected"),
    [
        (GOOD_CONFIG + "    push: false\n", {},
         "lambdas.yml line 13: 'push' is set for one image, but it holds for the whole run"),
        (GOOD_CONFIG + "    dockerfil: x\n", {}, "line 13: unknown key 'dockerfil'"),
        (edited("name: billing", "name: orders"), {},
         "line 7: the name 'orders' is already used by the image on line 2"),
        (edited("    dockerfile: services/billing/Dockerfile\n", ""), {},
         "line 7: image 'billing' has no dockerfile"),
        (edited("services/billing/Dockerfile", "services/gone/Dockerfile"), {},
         "lambdas.yml line 8, image 'billing': Dockerfile 'services/gone/Dockerfile' does not exist"),
        (edited("8080/health", "http://x"), {},
         "lambdas.yml line 6, image 'orders': 'smoke' is 'http://x', which is not a smoke test"),
        (GOOD_CONFIG + "    smoke-timeout: 13\n", {},
         "line 13 is not valid YAML: the key 'smoke-timeout' is given twice"),
        (GOOD_CONFIG, {"dockerfile": "Dockerfile"}, "inputs 'config' and 'dockerfile' are both given"),
        (GOOD_CONFIG, {"repository": "{env}-all"}, "would give every image of lambdas.yml the same"),
        (edited('"{env}-billing-svc"', '"{env}-orders"'), {},
         "line 10, image 'billing': repository prod-orders is image 'orders''s too"),
        ("images: [\n", {}, "lambdas.yml line 2 is not valid YAML"),
        ("services: []\n", {}, "lambdas.yml has no 'images' list at its top level"),
        ("images: []\n", {}, "'images' is not a list of images"),
        ("images:\n  - name: Orders!\n    dockerfile: Dockerfile\n", {},
         "line 2: image 1 has the name 'Orders!'"),
        (NESTED, {}, "'build-args' holds a nested list or mapping"),
        ("images:\n  - !!python/object:os.system {}\n", {},
         "lambdas.yml line 2: the tag '!!python/object:os.system' is not read"),
        (GOOD_CONFIG, {"parallel": "0"}, "input 'parallel' is '0'"),
        (GOOD_CONFIG, {"config": "nothere.yml"}, "config file 'nothere.yml' does not exist"),
    ],
)  # fmt: skip
def test_bad_configs(services: Path, config: str, overrides: dict[str, str], expected: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_release(_release(services, config, **overrides), services)
    assert expected in raised.value.line()


def test_a_config_gives_each_image_its_inputs_over_the_defaults(services: Path) -> None:
    raw = _release(services, GOOD_CONFIG, **{"build-args": "BASE=debian\nSHARED=1", "smoke-memory": "1024"})
    release = parse_release(raw, services)
    assert not release.single
    assert release.config == services / "lambdas.yml"
    (orders_name, orders), (billing_name, billing) = release.images
    assert (orders_name, billing_name) == ("orders", "billing")
    assert orders.repository == "prod-orders"
    assert billing.repository == "prod-billing-svc"
    assert orders.dockerfile == services / "services" / "orders" / "Dockerfile"
    assert orders.context == orders.dockerfile.parent
    assert billing.context == services / "services"
    # build-args merge by key (the image's win); other keys replace the input.
    assert orders.build_args == (("BASE", "python"), ("SHARED", "1"), ("EXTRA", "1"))
    assert billing.build_args == (("BASE", "debian"), ("SHARED", "1"))
    assert orders.extra_tags == ("blue", "green")
    assert billing.extra_tags == ()
    assert (orders.platform, billing.platform) == ("linux/amd64", "linux/arm64")
    assert orders.smoke is not None and orders.smoke.port == 8080 and billing.smoke is None
    assert (orders.smoke_timeout, billing.smoke_timeout) == (30.0, 12.0)
    assert orders.smoke_memory == billing.smoke_memory == 1024
    assert orders.env == billing.env == "prod"


def _one_image(keys: str) -> str:
    return "images:\n  - name: orders\n    dockerfile: services/orders/Dockerfile\n" + keys


# (as written in the file, the text that must reach the build). Unquoted, YAML 1.1 reads each
# as something else: 3.10 and 1.10 as 3.1 and 1.1, 0755 and 010 as octal 493 and 8, 12:30 as
# sexagesimal 750, on/no/true as booleans, ~ and null as null, 1e3 and .inf as floats, 0x1F
# as 31, 2026-01-01 as a date.
WRITTEN_AS_TEXT = [
    ("3.10", "3.10"),
    ('"3.10"', "3.10"),
    ("0755", "0755"),
    ('"0755"', "0755"),
    ("12:30", "12:30"),
    ('"12:30"', "12:30"),
    ("on", "on"),
    ('"on"', "on"),
    ("no", "no"),
    ('"no"', "no"),
    ("1e3", "1e3"),
    ('"1e3"', "1e3"),
    ("~", "~"),
    ('"~"', "~"),
    ("010", "010"),
    ('"010"', "010"),
    ("1.10", "1.10"),
    ('"1.10"', "1.10"),
    ("true", "true"),
    ('"true"', "true"),
    ("null", "null"),
    ('"null"', "null"),
    ("0x1F", "0x1F"),
    ('"0x1F"', "0x1F"),
    (".inf", ".inf"),
    ('".inf"', ".inf"),
    ("2026-01-01", "2026-01-01"),
    ('"2026-01-01"', "2026-01-01"),
]
NOT_IMAGE_TAGS = ("12:30", "~", ".inf")


@pytest.mark.parametrize(("written", "text"), WRITTEN_AS_TEXT)
def test_a_build_arg_reaches_the_build_as_written(services: Path, written: str, text: str) -> None:
    config = _one_image(f"    build-args:\n      PYTHON_VERSION: {written}\n")
    ((_, orders),) = parse_release(_release(services, config), services).images
    assert orders.build_args == (("PYTHON_VERSION", text),)


@pytest.mark.parametrize(("written", "text"), WRITTEN_AS_TEXT)
def test_a_tag_reaches_the_tag_parser_as_written(services: Path, written: str, text: str) -> None:
    config = _one_image(f"    tags: [{written}, stable]\n")
    raw = _release(services, config)
    if text in NOT_IMAGE_TAGS:
        # Not tags Docker takes; the refusal quotes the value as written, not 750, None or inf.
        with pytest.raises(InputError) as raised:
            parse_release(raw, services)
        assert f"line 4, image 'orders': 'tags' has '{text}', which is not a valid" in raised.value.line()
    else:
        ((_, orders),) = parse_release(raw, services).images
        assert orders.extra_tags == (text, "stable")


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("    build-args: !!str 3.10\n", "'build-args' line 1 is not KEY=VALUE"),  # text: allowed
        ("    smoke-timeout: !!int 12\n", "line 4: the tag '!!int' is not read"),
        ("    build-args: {A: !!float 3.10}\n", "line 4: the tag '!!float' is not read"),
        ("    tags: [!!bool on]\n", "line 4: the tag '!!bool' is not read"),
        ("    tags: [!!timestamp 2026-01-01]\n", "line 4: the tag '!!timestamp' is not read"),
        ("    build-args:\n      A: 1\n      B: !!binary aGk=\n", "line 6: the tag '!!binary' is not read"),
        ("    build-args: !!set {A: 1}\n", "line 4: the tag '!!set' is not read"),
        ("    platform: !local linux/arm64\n", "line 4: the tag '!local' is not read"),
        ("    platform: !!map linux/arm64\n", "line 4 is not valid YAML: a mapping was expected"),
        ("    build-args: &args {A: 1}\n    secrets: {<<: *args}\n", "line 5: a merge key (<<) is not read"),
        ("    <<: {platform: linux/arm64}\n", "line 4: a merge key (<<) is not read"),
        ('    build-args: {"<<": x}\n', "'build-args' line 1 is not KEY=VALUE"),  # quoted: a key
        ("    tags: [<<]\n", "'tags' has '<<', which is not a valid image tag"),  # a value: text
        ("    context:\n", "line 4: 'context' has no value"),
        ('    context: ""\n', "line 4: 'context' has no value"),
        ("    tags:\n", "line 4: 'tags' has no value"),
        ('    build-args: {A: "x\\nPROXY=y"}\n', "line 4: 'build-args' has a value of several lines"),
        ("    tags:\n      - |\n        a\n        b\n", "line 4: 'tags' has a value of several lines"),
    ],
)  # fmt: skip
def test_tags_merge_keys_and_empty_values_in_a_config(services: Path, keys: str, expected: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_release(_release(services, _one_image(keys)), services)
    assert expected in raised.value.line()


def test_keys_and_empty_entries_are_text_too(services: Path) -> None:
    config = _one_image("    build-args: {ON: yes, NO: , Y: 1.0}\n    tags: []\n    smoke-timeout: 1e1\n")
    ((_, orders),) = parse_release(_release(services, config, tags="v1"), services).images
    assert orders.build_args == (("ON", "yes"), ("NO", ""), ("Y", "1.0"))
    assert orders.extra_tags == ()
    assert orders.smoke_timeout == 10.0  # the inputs parser reads the number from the text
    named = parse_release(_release(services, config.replace("name: orders", "name: 0755")), services)
    assert [name for name, _ in named.images] == ["0755"]


def test_a_python_tag_is_refused_and_nothing_runs(services: Path) -> None:
    marker = services / "ran"
    config = _one_image(f'    build-args: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(InputError) as raised:
        parse_release(_release(services, config), services)
    assert raised.value.line().startswith(
        "lambdas.yml line 4: the tag '!!python/object/apply:os.system' is not read. Fix: remove it"
    )
    assert not marker.exists()


def test_without_config_one_image_and_parallel_sized_to_the_machine(workspace: Path) -> None:
    release = parse_release(_publish(workspace), workspace)
    assert release.single
    assert [name for name, _ in release.images] == [""]
    assert parse_parallel({}, cores=2) == 2
    assert parse_parallel({}, cores=64) == 16
    assert parse_parallel({"parallel": "3"}, cores=2) == 3
