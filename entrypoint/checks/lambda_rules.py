"""The rules Lambda enforces on a container image, checked before Lambda refuses it.

`imagefacts.ImageFacts` is what the rules need to know about one image, read either from
the engine (`imagefacts.facts_from_engine`, after a build) or from the registry (`facts_from_registry`,
before a deploy). `check_image` is pure: facts, platform and invoke mode in, violations out.
`require_lambda_compatible` turns the violations into one `CheckError` line.

The rules come from Lambda's documentation on container images (image manifest formats,
x86_64/arm64, 10 GB uncompressed) and from the error messages Lambda gives at deploy time
or at the first invoke, which is too late to learn of them.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import requests
import urllib3.exceptions

from entrypoint.checks.imagefacts import ImageFacts, env_of
from entrypoint.errors import CheckError, InputError, RegistryError, shown
from entrypoint.registry.client import (
    DOCKER_LIST,
    IMAGE_MANIFESTS,
    OCI_INDEX,
    index_entries,
    index_images,
    platform_of,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from entrypoint.registry.client import Manifest, RegistryClient

# Lambda's quota is on the uncompressed image, all layers included.
MAX_IMAGE_BYTES = 10 * 1024**3
# Past this a warning: one more dependency away from a deploy that Lambda refuses.
WARN_IMAGE_BYTES = 8 * 1024**3
# Lambda starts every executable in /opt/extensions as an extension; this is where the
# Lambda Web Adapter's Dockerfile instructions put it.
WEB_ADAPTER_PATH = "/opt/extensions/lambda-adapter"
WEB_ADAPTER_ENV = "AWS_LWA_INVOKE_MODE"

# The function URL's invoke modes, as the inputs and the plan spell them.
INVOKE_MODES = ("buffered", "response-stream")

# platform input -> (architecture in the image config, Lambda's name in `architectures`)
LAMBDA_PLATFORMS: dict[str, tuple[str, str]] = {
    "linux/amd64": ("amd64", "x86_64"),
    "linux/arm64": ("arm64", "arm64"),
}

_KIND = {
    OCI_INDEX: "an OCI image index",
    DOCKER_LIST: "a Docker manifest list",
}


@dataclass(frozen=True)
class Violation:
    rule: str
    found: str
    fix: str

    def line(self) -> str:
        return f"{self.rule}: found {self.found}"


@dataclass(frozen=True)
class FunctionSetting:
    """What the function itself sets for the adapter's invoke mode (its `environment`), as
    far as anyone knows: publish does not know the function; verify reads it from the plan."""

    known: bool = False
    value: str | None = None  # AWS_LWA_INVOKE_MODE in the function's environment, if set
    where: str = ""  # e.g. "aws_lambda_function.api's environment in the plan"


UNKNOWN_FUNCTION = FunctionSetting()


def check_image(
    facts: ImageFacts,
    platform: str,
    invoke_mode: str | None,
    function: FunctionSetting = UNKNOWN_FUNCTION,
) -> list[Violation]:
    """Every Lambda rule the image breaks, in the order Lambda would meet them.

    `invoke_mode` is what the function URL needs; `function` says whether the function's
    own environment sets the adapter's mode (it wins over the image's ENV, as in Lambda)."""
    if platform not in LAMBDA_PLATFORMS:
        raise InputError(
            f"platform '{platform}' is not one Lambda runs",
            f"use one of {', '.join(LAMBDA_PLATFORMS)}",
        )
    mode = parse_invoke_mode(invoke_mode)
    found: list[Violation] = []

    manifest = _manifest_violation(facts)
    if manifest:
        found.append(manifest)
        if not facts.os and not facts.architecture:
            # Nothing inside could be read (no image manifest in the index, or a format we
            # cannot parse): the other rules would only repeat the same problem.
            return found

    arch, lambda_arch = LAMBDA_PLATFORMS[platform]
    if facts.os != "linux":
        found.append(
            Violation(
                "os must be linux",
                f"'{facts.os or 'none'}'",
                f"build a Linux image: docker build --platform {platform}",
            )
        )
    if facts.architecture != arch:
        found.append(
            Violation(
                f"architecture must be {arch} for {platform} (Lambda {lambda_arch})",
                f"'{facts.architecture or 'none'}'",
                f"build with --platform {platform}, or if the image is right, set 'platform' and "
                f"the function's architectures to match it ({_other_platforms(platform)})",
            )
        )
    if facts.size > MAX_IMAGE_BYTES:
        what = (
            f"{_gb(facts.size)} of compressed layers, and the uncompressed image Lambda counts "
            "is larger still"
            if facts.size_compressed
            else f"{_gb(facts.size)} uncompressed"
        ) + _largest(facts)
        found.append(
            Violation(
                f"image size must be at most {_gb(MAX_IMAGE_BYTES)} uncompressed",
                what,
                "make the image smaller: a multi-stage build, a slimmer base image, and a "
                ".dockerignore that keeps data and caches out of the build context",
            )
        )
    if not facts.entrypoint and not facts.cmd:
        found.append(
            Violation(
                "ENTRYPOINT or CMD must be set",
                "neither",
                "add CMD (or ENTRYPOINT) to the Dockerfile: the AWS base images set ENTRYPOINT "
                "and take the handler as CMD; with the Lambda Web Adapter, CMD starts the web server",
            )
        )
    adapter = _adapter_violation(facts, mode, function)
    if adapter:
        found.append(adapter)
    return found


def parse_invoke_mode(value: str | None, name: str = "invoke-mode") -> str | None:
    """'buffered' or 'response-stream' (Terraform's BUFFERED / RESPONSE_STREAM too), else None."""
    text = (value or "").strip()
    if not text:
        return None
    mode = text.lower().replace("_", "-")
    if mode not in INVOKE_MODES:
        raise InputError(
            f"input '{name}' is '{text}', not a Lambda invoke mode",
            "use response-stream (function URL invoke_mode RESPONSE_STREAM) or buffered, or leave "
            "it empty to skip the check",
        )
    return mode


def _manifest_violation(facts: ImageFacts) -> Violation | None:
    rule = "a single image manifest (Docker v2 schema 2 or OCI)"
    why = (
        "Lambda refuses anything else with 'The image manifest, config or layer media type "
        "for the source image ... is not supported'"
    )
    if facts.is_index:
        kind = _KIND.get(facts.media_type or "", "an image index")
        platforms = facts.index_platforms
        parts = [f"{len(platforms)} image manifest(s) ({', '.join(platforms)})" if platforms else "no image"]
        if facts.attestation_manifests:
            parts.append(f"{facts.attestation_manifests} attestation manifest(s)")
        return Violation(
            rule,
            f"{kind} with {' and '.join(parts)}",
            f"{why}: build with provenance and SBOM attestations off (docker buildx build "
            "--provenance=false --sbom=false; provenance: false and sbom: false in "
            "docker/build-push-action) and a single --platform, so the tag names one image manifest",
        )
    if facts.media_type is not None and facts.media_type not in IMAGE_MANIFESTS:
        return Violation(
            rule,
            f"media type '{facts.media_type or 'none'}'",
            f"{why}: push the image with a current docker or buildx, which write Docker v2 "
            "schema 2 or OCI image manifests",
        )
    return None


def _adapter_setting(facts: ImageFacts, function: FunctionSetting) -> tuple[str | None, str]:
    """The AWS_LWA_INVOKE_MODE the adapter will run with, and where it comes from: the
    function's environment overrides the image's ENV."""
    if function.value is not None:
        return function.value, function.where
    value = facts.env.get(WEB_ADAPTER_ENV)
    return value, "the image's ENV" if value is not None else ""


def _adapter_violation(facts: ImageFacts, mode: str | None, function: FunctionSetting) -> Violation | None:
    """The Lambda Web Adapter must use the invoke mode the function URL is configured with.

    Unset everywhere it buffers. That is only known to be wrong when the function is known
    (verify, from the plan); publish, which cannot see the function, gives a notice instead
    (`invoke_mode_notice`), since deployments often set it on the function."""
    if not facts.has_web_adapter or mode is None:
        return None
    value, where = _adapter_setting(facts, function)
    shown = f"{WEB_ADAPTER_ENV}={value} (from {where})" if value is not None else f"{WEB_ADAPTER_ENV} unset"
    streams = (value or "").lower() == "response_stream"
    if mode == "response-stream" and not streams and (value is not None or function.known):
        unset_where = " in the function's environment and in the image" if value is None else ""
        return Violation(
            f"the Lambda Web Adapter must stream ({WEB_ADAPTER_ENV}=response_stream) for "
            "invoke mode response-stream",
            f"{shown}{unset_where} (the adapter then buffers the whole response)",
            f"set {WEB_ADAPTER_ENV}=response_stream in the function's environment (Terraform: "
            'environment { variables = { AWS_LWA_INVOKE_MODE = "response_stream" } }) or add '
            f"ENV {WEB_ADAPTER_ENV}=response_stream to the Dockerfile: a RESPONSE_STREAM function "
            "URL needs the adapter to answer in the streaming protocol",
        )
    if mode == "buffered" and value is not None and value.lower() != "buffered":
        return Violation(
            f"the Lambda Web Adapter must buffer ({WEB_ADAPTER_ENV} unset or buffered) for "
            "invoke mode buffered",
            shown,
            f"remove {WEB_ADAPTER_ENV} from {where or 'the image'}, or set the function URL's "
            "invoke_mode to RESPONSE_STREAM and 'invoke-mode' to response-stream",
        )
    return None


def invoke_mode_notice(facts: ImageFacts, invoke_mode: str | None) -> str | None:
    """What publish tells a streaming image's user when the image leaves the mode to the
    function: right if the function sets it, a silent buffering URL if not."""
    mode = parse_invoke_mode(invoke_mode)
    if mode != "response-stream" or not facts.has_web_adapter or WEB_ADAPTER_ENV in facts.env:
        return None
    return (
        f"the image has the Lambda Web Adapter but does not set {WEB_ADAPTER_ENV}: the function "
        f"must set {WEB_ADAPTER_ENV}=response_stream in its environment, or the adapter buffers "
        "and the RESPONSE_STREAM function URL never streams (the verify gate checks the plan's "
        "function for it)"
    )


def require_lambda_compatible(facts: ImageFacts, platform: str, invoke_mode: str | None) -> None:
    """Raise one `CheckError` naming every broken rule, what was found and each fix."""
    violations = check_image(facts, platform, invoke_mode)
    if violations:
        raise lambda_check_error(facts.reference, violations)


def lambda_check_error(reference: str, violations: Iterable[Violation]) -> CheckError:
    found = list(violations)
    return CheckError(
        f"Lambda would refuse {reference}, which breaks {len(found)} rule(s): "
        + "; ".join(f"({n}) {v.line()}" for n, v in enumerate(found, 1)),
        "; ".join(f"({n}) {v.fix}" for n, v in enumerate(found, 1)),
    )


def size_warning(facts: ImageFacts) -> str | None:
    """A warning for an image that passes Lambda's size limit with little room left."""
    if not WARN_IMAGE_BYTES < facts.size <= MAX_IMAGE_BYTES:
        return None
    return (
        f"{facts.reference} is {_gb(facts.size)} uncompressed, near Lambda's "
        f"{_gb(MAX_IMAGE_BYTES)} limit{_largest(facts)}: a multi-stage build or a slimmer base "
        "keeps the next deploy under it, and a smaller image starts faster"
    )


def _largest(facts: ImageFacts) -> str:
    if not facts.largest_layers:
        return ""
    shown_layers = ", ".join(
        f"{_gb(layer.size)} from '{shown(layer.made_by, 70)}'" for layer in facts.largest_layers
    )
    return f" (largest layers: {shown_layers})"


def _gb(size: int) -> str:
    return f"{size / 1024**3:.2f} GB" if size >= 1024**3 / 10 else f"{size / 1024**2:.1f} MB"


def _other_platforms(platform: str) -> str:
    return ", ".join(f"{p} = Lambda {LAMBDA_PLATFORMS[p][1]}" for p in LAMBDA_PLATFORMS if p != platform)


# ---------------------------------------------------------------------------- registry


def facts_from_registry(
    registry: RegistryClient,
    repository: str,
    reference: str,
    *,
    platform: str | None = None,
    find_adapter: bool = True,
) -> ImageFacts:
    """Facts of an image in the registry, read through the HTTP API without pulling it.

    For an index the facts describe the image manifest inside it for `platform` (else
    its first image), so that the report says what else, if anything, is wrong.
    `find_adapter=False` skips reading the layers and leaves has_web_adapter None.
    """
    top = registry.get_manifest(repository, reference)
    label = f"{registry.host}/{repository}{'@' if reference.startswith('sha256:') else ':'}{reference}"
    facts: dict[str, Any] = {
        "reference": label,
        "media_type": top.media_type,
        "os": "",
        "architecture": "",
        "size": 0,
        "size_compressed": True,
        "entrypoint": (),
        "cmd": (),
    }
    image: Manifest | None = top
    if top.is_index:
        entries = index_entries(top)
        images = index_images(top)
        attestations = [e for e in entries if e not in images]
        facts["is_index"] = True
        facts["attestation_manifests"] = len(attestations)
        facts["index_platforms"] = tuple(platform_of(e) for e in images)
        chosen = next((e for e in images if platform_of(e) == platform), images[0] if images else None)
        image = registry.get_manifest(repository, str(chosen["digest"])) if chosen else None
    if image is None or image.media_type not in IMAGE_MANIFESTS:
        return ImageFacts(**facts)

    body = image.json()
    config_digest = str((body.get("config") or {}).get("digest", ""))
    config = _json_blob(registry, repository, config_digest)
    runtime = config.get("config") or {}
    layers = [layer for layer in body.get("layers") or [] if isinstance(layer, dict)]
    facts.update(
        os=str(config.get("os", "")),
        architecture=str(config.get("architecture", "")),
        size=sum(int(layer.get("size", 0)) for layer in layers),
        entrypoint=tuple(runtime.get("Entrypoint") or ()),
        cmd=tuple(runtime.get("Cmd") or ()),
        env=env_of(runtime.get("Env") or ()),
        has_web_adapter=_layers_have_adapter(registry, repository, layers) if find_adapter else None,
    )
    return ImageFacts(**facts)


def _json_blob(registry: RegistryClient, repository: str, digest: str) -> dict[str, Any]:
    raw = registry.get_blob(repository, digest)
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(
            f"the image config {digest[:19]} in {registry.host}/{repository} is not JSON",
            "push the image again with docker or buildx",
        ) from exc
    if not isinstance(parsed, dict):
        raise RegistryError(
            f"the image config {digest[:19]} in {registry.host}/{repository} is not an object",
            "push the image again with docker or buildx",
        )
    return parsed


# Paths inside a layer tar, without the leading "/" or "./".
_ADAPTER = WEB_ADAPTER_PATH.lstrip("/")
_ADAPTER_DIR, _, _ADAPTER_NAME = _ADAPTER.rpartition("/")
# OCI whiteouts (image-spec layer.md): ".wh.<name>" deletes <name> from the layers below,
# ".wh..wh..opq" empties its directory of everything the layers below put there.
_DELETES = {f"{_ADAPTER_DIR}/.wh.{_ADAPTER_NAME}", "opt/.wh.extensions", ".wh.opt"}
_OPAQUE = {f"{_ADAPTER_DIR}/.wh..wh..opq", "opt/.wh..wh..opq"}
# Exceptions a layer may raise half-way: the connection, the compression, the tar format.
_STREAM_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    tarfile.TarError,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
)


def _layers_have_adapter(registry: RegistryClient, repository: str, layers: list[dict[str, Any]]) -> bool:
    """Read the layers top-down and stop at the first that settles it: the adapter's file,
    or a whiteout that removed it. The adapter is copied in late, so this reads little."""
    for layer in reversed(layers):
        media_type = str(layer.get("mediaType", ""))
        if "zstd" in media_type or "foreign" in media_type:
            # The standard library cannot inflate zstd; foreign layers live elsewhere.
            continue
        digest = str(layer.get("digest", ""))
        try:
            with registry.stream_blob(repository, digest) as stream:
                verdict = _adapter_in_layer(stream)
        except _STREAM_ERRORS as exc:
            raise RegistryError(
                f"layer {digest[:19]} of {registry.host}/{repository} could not be read as a tar "
                f"archive: {type(exc).__name__}: {exc}",
                "rerun; if it repeats, push the image again",
            ) from exc
        if verdict is not None:
            return verdict
    return False


def _adapter_in_layer(stream: IO[bytes]) -> bool | None:
    """True: this layer adds the adapter; False: it deletes it; None: it does not touch it."""
    opaque = False
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            name = member.name.removeprefix("./").strip("/")
            if name == _ADAPTER:
                return not member.isdir()
            if name in _DELETES:
                return False
            if name in _OPAQUE:
                # The adapter may still come later in this same layer.
                opaque = True
    return False if opaque else None
