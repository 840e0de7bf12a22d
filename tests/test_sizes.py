"""Image anatomy, size diff and size budget: tables for the parsers, the diff and the budget;
layers made by hand and put into the registry for each compression; two real BuildKit images
pushed by the engine, the second with one layer changed and one added; and a registry that
ignores Range, which must not make anything download a whole layer."""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import pytest

from entrypoint.checks.sizes import (
    Anatomy,
    BudgetFinding,
    Growth,
    LayerInfo,
    SizeBudget,
    _gzip_size,
    _zstd_size,
    check_budget,
    diff,
    human_bytes,
    parse_growth,
    parse_size,
    read_anatomy,
    require_within_budget,
)
from entrypoint.errors import CheckError, InputError, RegistryError
from entrypoint.registry.client import RANGE_FALLBACK_BYTES, Manifest, RegistryClient
from entrypoint.registry.transport import CredentialScope, Transport
from tests.lambda_images import Images
from tests.support.oci import image_manifest, tar_of
from tests.support.stack import ECR_PASSWORD, ECR_USER, MEDIA_OCI_MANIFEST

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from docker import DockerClient

    from tests.support.stack import Registry

GB, MB = 10**9, 10**6


# ------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", None),
        ("   ", None),
        ("123456", 123456),
        ("1.5GB", 1_500_000_000),
        ("800MB", 800_000_000),
        ("800 mb", 800_000_000),
        ("750MiB", 750 * 2**20),
        ("2G", 2_000_000_000),
        ("2GiB", 2 * 2**30),
        ("10kB", 10_000),
        ("4KiB", 4096),
        ("12B", 12),
        ("0.5MB", 500_000),
    ],
)
def test_parse_size(text: str, size: int | None) -> None:
    assert parse_size(text, "size-limit") == size


@pytest.mark.parametrize("text", ["big", "-1GB", "1.5 XB", "1e9", "10%", "1,000", "GB", "1.2.3MB"])
def test_parse_size_refuses_with_the_input_name(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_size(text, "size-limit")
    assert caught.value.line().startswith(
        f"input 'size-limit' is '{text.strip()}', not a size. Fix: write it"
    )
    assert "1.5GB" in caught.value.fix


@pytest.mark.parametrize(
    ("text", "growth"),
    [
        ("", None),
        ("10%", Growth(percent=10.0)),
        ("2.5 %", Growth(percent=2.5)),
        ("200MB", Growth(bytes=200_000_000)),
        ("1GiB", Growth(bytes=2**30)),
    ],
)
def test_parse_growth(text: str, growth: Growth | None) -> None:
    assert parse_growth(text, "size-growth-limit") == growth


@pytest.mark.parametrize("text", ["ten percent", "%", "10%%", "-5%", "5MB%"])
def test_parse_growth_refuses_with_the_input_name(text: str) -> None:
    with pytest.raises(InputError, match=f"input 'size-growth-limit' is '{text}', neither a percentage"):
        parse_growth(text, "size-growth-limit")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (4000, "4.00 kB"),
        (45_600, "45.6 kB"),
        (999_600, "1.00 MB"),
        (812_000_000, "812 MB"),
        (1_234_000_000, "1.23 GB"),
        (10 * 2**30, "10.7 GB"),
        (-2_500_000, "-2.50 MB"),
    ],
)
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


# ------------------------------------------------------------- trailers, headers


def test_gzip_size_reads_the_trailer() -> None:
    data = secrets.token_bytes(5000) + b"\0" * 100_000
    blob = gzip.compress(data)
    assert _gzip_size(len(blob), blob[-64:]) == len(data)
    assert _gzip_size(len(blob), blob[-8:]) == len(data)
    assert _gzip_size(len(blob), blob[-7:]) is None


STORED = 2**32 + 10**6
STORED_DATA = STORED - 18 - 5 * (STORED // 65535 + 1)


@pytest.mark.parametrize(
    ("compressed", "isize", "size"),
    [
        # Small layers: the trailer is the size.
        (1000, 4000, 4000),
        (30, 1024, 1024),
        # 4 GB of compressed layer cannot hold 100 MB: the size wrapped once; 5 GB, twice.
        (4 * GB, 100 * MB, 100 * MB + 2**32),
        (5 * GB, 100 * MB, 100 * MB + 2 * 2**32),
        # A 3 GB layer 6 GB uncompressed: ISIZE holds 6 GB - 4 GiB.
        (3 * GB, 6 * GB - 2**32, 6 * GB),
        # Incompressible data, stored: the data is a little smaller than the stream, by exactly
        # the header, trailer and block headers at most.
        (STORED, STORED_DATA - 2**32, STORED_DATA),
    ],
)
def test_gzip_size_undoes_the_wrap(compressed: int, isize: int, size: int) -> None:
    trailer = (0).to_bytes(4, "little") + isize.to_bytes(4, "little")
    assert _gzip_size(compressed, b"\0" * 56 + trailer) == size


def test_gzip_size_of_an_estargz_footer_is_unknown() -> None:
    # The estargz footer: an empty gzip member whose extra field names the format.
    footer = bytes.fromhex("1f8b08040000000000ff1a00") + b"SG" + b"\x16\x00" + b"0" * 16 + b"STARGZ"
    footer += bytes.fromhex("010000ffff") + b"\0" * 8
    assert _gzip_size(10_000, footer) is None


def _zstd_header(descriptor: int, *fields: bytes) -> bytes:
    return b"\x28\xb5\x2f\xfd" + bytes([descriptor]) + b"".join(fields)


@pytest.mark.parametrize(
    ("head", "compressed", "size"),
    [
        # Single segment, 1-byte size field.
        (_zstd_header(0b0010_0000, b"\x64"), 50, 100),
        # Window byte, 2-byte field (its value is offset by 256).
        (_zstd_header(0b0100_0000, b"\x58", (1000 - 256).to_bytes(2, "little")), 300, 1000),
        # Window byte, 4-byte dictionary id, 4-byte field.
        (_zstd_header(0b1000_0011, b"\x58", b"abcd", (10**8).to_bytes(4, "little")), 10**6, 10**8),
        # Window byte, 8-byte field.
        (_zstd_header(0b1100_0000, b"\x58", (2**33).to_bytes(8, "little")), 10**9, 2**33),
        # No size written (a streaming encoder).
        (_zstd_header(0b0000_0000, b"\x58"), 1000, None),
        # A first frame smaller than the stream could hold: more frames follow.
        (_zstd_header(0b1000_0000, b"\x58", (100).to_bytes(4, "little")), 10_000, None),
        # Not zstd at all, or cut short.
        (b"\x1f\x8b\x08\x00" + b"\0" * 14, 1000, None),
        (_zstd_header(0b1100_0000, b"\x58", b"\1\2"), 1000, None),
    ],
)
def test_zstd_size_reads_the_frame_header(head: bytes, compressed: int, size: int | None) -> None:
    assert _zstd_size(compressed, head) == size


# ------------------------------------------------------------------- diff


def layer(name: str, size: int, made_by: str = "", uncompressed: int | None = -1) -> LayerInfo:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return LayerInfo(digest, size, size * 2 if uncompressed == -1 else uncompressed, made_by)


BASE = layer("base", 3 * MB, "")
DEPS = layer("deps", 100 * MB, "RUN pip install -r requirements.txt")
APP = layer("app", 1 * MB, "COPY . /var/task")
APP2 = layer("app2", 2 * MB, "COPY . /var/task")
MODEL = layer("model", 200 * MB, "COPY model.bin /opt/model.bin")
OLD = layer("old", 5 * MB, "RUN apt-get install -y curl")


def anatomy(name: str, *layers: LayerInfo) -> Anatomy:
    return Anatomy("sha256:" + hashlib.sha256(name.encode()).hexdigest(), layers)


@pytest.mark.parametrize(
    ("before", "now", "statuses", "counterparts", "removed"),
    [
        pytest.param(None, (BASE, APP), ("new", "new"), (None, None), (), id="first publish"),
        pytest.param((BASE, APP), (BASE, APP), ("reused", "reused"), (None, None), (), id="same image"),
        pytest.param((BASE, APP), (BASE, APP2), ("reused", "rebuilt"), (None, APP), (), id="app rebuilt"),
        pytest.param(
            (BASE, OLD, APP), (BASE, APP2), ("reused", "rebuilt"), (None, APP), (OLD,), id="one gone"
        ),
        pytest.param(
            (BASE, APP),
            (BASE, MODEL, APP2),
            ("reused", "new", "rebuilt"),
            (None, None, APP),
            (),
            id="one added",
        ),
        pytest.param((APP, BASE), (BASE, APP), ("reused", "reused"), (None, None), (), id="reordered"),
        pytest.param((BASE, DEPS), (BASE,), ("reused",), (None,), (DEPS,), id="shrunk"),
    ],
)
def test_diff_statuses(
    before: tuple[LayerInfo, ...] | None,
    now: tuple[LayerInfo, ...],
    statuses: tuple[str, ...],
    counterparts: tuple[LayerInfo | None, ...],
    removed: tuple[LayerInfo, ...],
) -> None:
    found = diff(None if before is None else anatomy("before", *before), anatomy("now", *now))
    assert tuple(c.status for c in found.changes) == statuses
    assert tuple(c.layer for c in found.changes) == now
    assert tuple(c.previous for c in found.changes) == counterparts
    assert found.removed == removed


def test_diff_reused_rebuilt_new_removed_at_once() -> None:
    before = anatomy("before", BASE, OLD, DEPS, APP)
    now = anatomy("now", BASE, DEPS, APP2, MODEL)
    found = diff(before, now)
    assert [(c.layer, c.status, c.previous) for c in found.changes] == [
        (BASE, "reused", None),
        (DEPS, "reused", None),
        (APP2, "rebuilt", APP),
        (MODEL, "new", None),
    ]
    assert found.removed == (OLD,)
    assert found.growth == now.uncompressed - before.uncompressed == 2 * (2 * MB + 200 * MB - MB - 5 * MB)  # type: ignore[operator]
    assert found.growth_percent == pytest.approx(found.growth * 100 / before.uncompressed)  # type: ignore[operator]
    assert found.compared_uncompressed


def test_diff_matches_each_previous_layer_once_and_never_by_an_unknown_instruction() -> None:
    twice_a, twice_b = layer("a1", MB, "RUN make"), layer("b1", MB, "RUN make")
    unknown = layer("u", MB, "")
    before = anatomy("before", twice_a, unknown)
    now = anatomy("now", layer("a2", MB, "RUN make"), layer("b2", MB, "RUN make"), layer("u2", MB, ""))
    found = diff(before, now)
    assert [c.status for c in found.changes] == ["rebuilt", "new", "new"]
    assert found.changes[0].previous == twice_a
    assert found.removed == (unknown,)
    assert twice_b not in found.removed


def test_growth_falls_back_to_compressed_when_either_side_is_unknown() -> None:
    before = anatomy("before", BASE, layer("x", 10 * MB, "RUN x", uncompressed=None))
    now = anatomy("now", BASE, layer("y", 15 * MB, "RUN x"))
    found = diff(before, now)
    assert before.uncompressed is None
    assert not found.compared_uncompressed
    assert found.growth == 5 * MB
    assert found.growth_percent == pytest.approx(5 / 13 * 100)
    first = diff(None, now)
    assert (first.growth, first.growth_percent) == (None, None)


# ------------------------------------------------------------------- budget

BEFORE = anatomy("before", BASE, OLD, DEPS, APP)  # 218 MB uncompressed
AFTER = anatomy("after", BASE, DEPS, APP2, MODEL)  # 610 MB uncompressed
GREW = diff(BEFORE, AFTER)


@pytest.mark.parametrize(
    ("budget", "found"),
    [
        (SizeBudget(), []),
        (SizeBudget(limit=1 * GB, warn=700 * MB), []),
        (
            SizeBudget(limit=600 * MB),
            [("fail", "the image is 610 MB uncompressed, over size-limit 600 MB")],
        ),
        (SizeBudget(limit=600 * MB, warn=500 * MB), [("fail", "over size-limit 600 MB")]),
        (
            SizeBudget(warn=500 * MB),
            [("warn", "the image is 610 MB uncompressed, over size-warn 500 MB")],
        ),
        (
            SizeBudget(growth_limit=Growth(percent=50)),
            [
                (
                    "fail",
                    "the image grew by 392 MB (+179.8%) uncompressed against the environment's previous",
                )
            ],
        ),
        (SizeBudget(growth_limit=Growth(percent=200)), []),
        (SizeBudget(growth_limit=Growth(bytes=400 * MB)), []),
        (SizeBudget(growth_limit=Growth(bytes=300 * MB)), [("fail", "more than size-growth-limit 300 MB")]),
        (
            SizeBudget(growth_limit=Growth(bytes=300 * MB), growth_warn=Growth(percent=10)),
            [("fail", "more than size-growth-limit 300 MB")],
        ),
        (
            SizeBudget(growth_limit=Growth(bytes=1 * GB), growth_warn=Growth(percent=10)),
            [("warn", "more than size-growth-warn 10%")],
        ),
        (
            SizeBudget(warn=500 * MB, growth_limit=Growth(percent=50)),
            [("fail", "size-growth-limit 50%"), ("warn", "size-warn 500 MB")],
        ),
    ],
)
def test_check_budget(budget: SizeBudget, found: list[tuple[str, str]]) -> None:
    findings = check_budget(GREW, budget)
    assert [f.level for f in findings] == [level for level, _ in found]
    for finding, (_, words) in zip(findings, found, strict=True):
        assert words in finding.message
    for finding in findings:
        assert "\n" not in finding.message


def test_budget_names_the_layers_that_grew_most_with_their_lines() -> None:
    (finding,) = check_budget(GREW, SizeBudget(growth_limit=Growth(bytes=100 * MB)))
    assert finding.message.endswith(
        "; grew most: 'COPY model.bin /opt/model.bin' new, 400 MB, "
        "'COPY . /var/task' +2.00 MB (2.00 MB to 4.00 MB)"
    )
    # A first publish has no growth to judge; a size limit then names the largest layers.
    first = diff(None, AFTER)
    assert check_budget(first, SizeBudget(growth_limit=Growth(percent=1))) == ()
    (limit,) = check_budget(first, SizeBudget(limit=100 * MB))
    assert limit.message.endswith(
        "; largest layers: 'COPY model.bin /opt/model.bin' 400 MB, "
        "'RUN pip install -r requirements.txt' 200 MB, "
        f"layer {BASE.digest[:19]} 6.00 MB"
    )


def test_budget_on_compressed_sizes_says_so() -> None:
    unknown = anatomy("now", layer("z", 700 * MB, "RUN fetch", uncompressed=None))
    (finding,) = check_budget(diff(None, unknown), SizeBudget(limit=600 * MB))
    assert finding == BudgetFinding(
        "fail",
        "the image is 700 MB compressed (its uncompressed size, unknown, is larger), over size-limit "
        "600 MB; largest layers: 'RUN fetch' 700 MB",
        "size-limit",
    )


def test_require_within_budget_warns_then_fails_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    budget = SizeBudget(warn=500 * MB, growth_limit=Growth(percent=50))
    with pytest.raises(CheckError) as caught:
        require_within_budget(GREW, budget, "registry.example/app:prod")
    line = caught.value.line()
    assert line.startswith("registry.example/app:prod breaks its size budget: the image grew by 392 MB")
    assert "'COPY model.bin /opt/model.bin' new, 400 MB" in line
    assert "Fix: make the layers that grew smaller" in line
    assert "raise size-growth-limit" in line
    assert "\n" not in line
    assert "warning: registry.example/app:prod: the image is 610 MB uncompressed, over size-warn" in (
        capsys.readouterr().err
    )
    require_within_budget(GREW, SizeBudget(limit=GB), "registry.example/app:prod")
    assert SizeBudget().empty
    assert not SizeBudget(growth_warn=Growth(percent=5)).empty


# ------------------------------------------------------- layers made by hand


def _client(host: str, user: str = ECR_USER, password: str = ECR_PASSWORD) -> RegistryClient:
    return RegistryClient(Transport(host, user, password, scope=CredentialScope(host)))


def _zstd(data: bytes, *, streamed: bool) -> bytes:
    """zstd's own CLI: from a pipe it cannot know the size, so it writes none."""
    if streamed:
        return subprocess.run(["zstd", "-q", "-c", "-"], input=data, capture_output=True, check=True).stdout
    return subprocess.run(
        ["zstd", "-q", "-c", f"--stream-size={len(data)}", "-"], input=data, capture_output=True, check=True
    ).stdout


def _put_image(
    registry: Registry, repo: str, layers: list[tuple[str, bytes]], history: list[dict[str, object]]
) -> str:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": history,
    }
    return registry.put_manifest(
        repo, "v1", image_manifest(registry, repo, config, layers), MEDIA_OCI_MANIFEST
    )


def test_read_anatomy_of_each_compression(registry: Registry) -> None:
    data = tar_of({"a": secrets.token_bytes(20_000), "b": b"x" * 300_000})
    oci = "application/vnd.oci.image.layer.v1.tar"
    layers = [
        (oci + "+gzip", gzip.compress(data)),
        (oci, data),
        (oci + "+zstd", _zstd(data, streamed=False)),
        (oci + "+zstd", _zstd(data, streamed=True)),
    ]
    history: list[dict[str, object]] = [
        {"created_by": "/bin/sh -c #(nop) ADD file:abc in / "},
        {"created_by": 'CMD ["sh"]', "empty_layer": True},
        {"created_by": "COPY data /data # buildkit"},
        {"created_by": "RUN |1 V=2 /bin/sh -c zstd data # buildkit"},
        {"created_by": "RUN /bin/sh -c cat data | zstd # buildkit"},
    ]
    repo = f"sizes/hand{secrets.token_hex(3)}"
    digest = _put_image(registry, repo, layers, history)
    client = _client(registry.host)
    found = read_anatomy(client, repo, client.get_manifest(repo, digest))
    assert found.digest == digest
    assert [(x.compressed, x.uncompressed, x.made_by) for x in found.layers] == [
        (len(layers[0][1]), len(data), "ADD file:abc in /"),
        (len(data), len(data), "COPY data /data"),
        (len(layers[2][1]), len(data), "RUN zstd data"),
        (len(layers[3][1]), None, "RUN cat data | zstd"),
    ]
    assert found.compressed == sum(len(blob) for _, blob in layers)
    assert found.uncompressed is None

    # A history that does not account for every layer is matched to none of them.
    repo2 = f"{repo}-short"
    digest2 = _put_image(registry, repo2, layers[:2], history[:1])
    short = read_anatomy(client, repo2, client.get_manifest(repo2, digest2))
    assert [x.made_by for x in short.layers] == ["", ""]
    assert short.uncompressed == 2 * len(data)


def test_read_anatomy_refuses_an_index_and_bad_numbers(registry: Registry) -> None:
    client = _client(registry.host)
    index = Manifest("sha256:" + "a" * 64, "application/vnd.oci.image.index.v1+json", b'{"manifests": []}')
    with pytest.raises(RegistryError, match="is an image index, not an image manifest"):
        read_anatomy(client, "sizes/none", index)
    config = {"digest": "sha256:" + "b" * 64, "size": 10}
    for layers, words in (
        ([{"digest": "sha256:" + "c" * 64, "size": True}], "no valid digest and size for layer 1"),
        ([{"digest": "sha256:" + "c" * 64, "size": -1}], "no valid digest and size for layer 1"),
        ([{"digest": "../../x", "size": 1}], "no valid digest and size for layer 1"),
    ):
        raw = json.dumps({"config": config, "layers": layers}).encode()
        with pytest.raises(RegistryError, match=words):
            read_anatomy(client, "sizes/none", Manifest("sha256:" + "d" * 64, MEDIA_OCI_MANIFEST, raw))
    raw = json.dumps({"config": {**config, "size": 10**9}, "layers": []}).encode()
    with pytest.raises(RegistryError, match="gives its config a size of 1000000000 bytes"):
        read_anatomy(client, "sizes/none", Manifest("sha256:" + "d" * 64, MEDIA_OCI_MANIFEST, raw))


# ------------------------------------------- a registry that ignores Range


class _WholeBlobRegistry:
    """Answers every blob GET with 200 and the whole blob, whatever its Range header says,
    and counts the bytes it got to send before the client hung up. The layer is `size`
    bytes of zeros, made as it is sent; the config is served as it is, or without end."""

    def __init__(self, config: bytes, layer_size: int, *, endless_config: bool = False) -> None:
        self.config = config
        self.config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.layer_size = layer_size
        self.endless_config = endless_config
        self.sent = 0
        self.ranges: list[str] = []
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.ranges.append(self.headers.get("Range", ""))
                if self.path.endswith(outer.config_digest) and not outer.endless_config:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(outer.config)))
                    self.end_headers()
                    self.wfile.write(outer.config)
                    return
                size = 10**12 if outer.endless_config else outer.layer_size
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"\0" * 65536
                try:
                    for _ in range(size // len(chunk)):
                        self.wfile.write(chunk)
                        outer.sent += len(chunk)
                except OSError:
                    return  # the client hung up, as it should

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _WholeBlobRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _manifest_of(config: bytes, layer_digest: str, layer_size: int) -> Manifest:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest,
                    "size": layer_size,
                }
            ],
        }
    ).encode()
    return Manifest("sha256:" + hashlib.sha256(raw).hexdigest(), MEDIA_OCI_MANIFEST, raw)


def test_registry_that_ignores_range_is_not_downloaded_whole() -> None:
    layer_size = 2 * GB
    config = json.dumps({"history": [{"created_by": "RUN /bin/sh -c big"}]}).encode()
    with _WholeBlobRegistry(config, layer_size) as server:
        client = _client(server.host, "", "")
        found = read_anatomy(client, "sizes/whole", _manifest_of(config, "sha256:" + "e" * 64, layer_size))
        assert found.layers == (LayerInfo("sha256:" + "e" * 64, layer_size, None, "RUN big"),)
        assert f"bytes={layer_size - 64}-{layer_size - 1}" in server.ranges
        time.sleep(0.2)  # the server notices the hang-up on its next write
    # What was sent beyond the few bytes read sat in the sockets' buffers when the client hung up.
    assert server.sent < RANGE_FALLBACK_BYTES + 32 * MB, server.sent


def test_a_config_without_end_is_cut_at_the_limit() -> None:
    config = json.dumps({"history": []}).encode()
    with _WholeBlobRegistry(config, 0, endless_config=True) as server:
        client = _client(server.host, "", "")
        with pytest.raises(RegistryError, match=r"with more than 8388608 bytes, the most read of it"):
            read_anatomy(client, "sizes/whole", _manifest_of(config, "sha256:" + "e" * 64, 100))
        time.sleep(0.2)
    assert server.sent < 8 * 2**20 + 32 * MB, server.sent


# ------------------------------------------------------------- real images


@pytest.fixture
def images(docker_client: DockerClient, tmp_path: Path) -> Iterator[Images]:
    made = Images(docker_client, tmp_path)
    yield made
    made.cleanup()


ZEROS = "RUN head -c 3000000 /dev/zero > /zeros"
COPY = "COPY data.txt /data.txt"
MORE = "RUN head -c 700000 /dev/urandom > /more"


def test_real_images_anatomy_and_diff(images: Images, registry: Registry, busybox_base: str) -> None:
    v1 = images.build(
        f'FROM {busybox_base}\n{ZEROS}\n{COPY}\nCMD ["cat", "/data.txt"]\n',
        files={"data.txt": secrets.token_hex(100_000)},
    )
    v2 = images.build(
        f'FROM {busybox_base}\n{ZEROS}\n{COPY}\n{MORE}\nCMD ["cat", "/data.txt"]\n',
        files={"data.txt": secrets.token_hex(150_000)},
    )
    repo = f"sizes/real{secrets.token_hex(3)}"
    d1, d2 = images.push(v1, registry, repo, "v1"), images.push(v2, registry, repo, "v2")
    client = _client(registry.host)
    before = read_anatomy(client, repo, client.get_manifest(repo, d1))
    after = read_anatomy(client, repo, client.get_manifest(repo, d2))

    for image, found in ((d1, before), (d2, after)):
        _, _, manifest = registry.manifest(repo, image)
        assert found.digest == image
        assert [x.digest for x in found.layers] == [x["digest"] for x in manifest["layers"]]
        assert [x.compressed for x in found.layers] == [x["size"] for x in manifest["layers"]]
        # The tar each layer holds, downloaded here and inflated, is the uncompressed size.
        assert [x.uncompressed for x in found.layers] == [
            len(gzip.decompress(registry.blob(repo, x["digest"]))) for x in manifest["layers"]
        ]
    assert [x.made_by for x in before.layers] == ["", ZEROS, COPY]
    assert [x.made_by for x in after.layers] == ["", ZEROS, COPY, MORE]
    assert 3_000_000 < before.layers[1].uncompressed < 3_010_000  # type: ignore[operator]
    assert 200_000 < before.layers[2].uncompressed < 210_000  # type: ignore[operator]
    assert 300_000 < after.layers[2].uncompressed < 310_000  # type: ignore[operator]
    assert 700_000 < after.layers[3].uncompressed < 710_000  # type: ignore[operator]

    changes = diff(before, after)
    assert [c.status for c in changes.changes] == ["reused", "reused", "rebuilt", "new"]
    assert changes.changes[2].previous == before.layers[2]
    assert changes.removed == ()
    assert changes.growth == after.uncompressed - before.uncompressed  # type: ignore[operator]
    assert 800_000 < changes.growth < 820_000  # type: ignore[operator]

    (finding,) = check_budget(changes, SizeBudget(growth_limit=Growth(bytes=500_000)))
    assert finding.level == "fail"
    assert f"more than size-growth-limit 500 kB; grew most: '{MORE}' new, 7" in finding.message
    assert f"'{COPY}' +99" in finding.message  # 100 kB more data, and the tar's padding
