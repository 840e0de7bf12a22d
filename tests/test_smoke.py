"""Smoke boot against real containers: an HTTP server that answers, one that exits at
start, one that never answers, and a stand-in for the Runtime Interface Emulator."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from entrypoint.checks.smoke import RIE_PATH, SmokeSpec, smoke_boot
from entrypoint.engine import Engine
from entrypoint.errors import CheckError, InputError
from entrypoint.inputs import parse_smoke
from tests.lambda_images import Images
from tests.support.run import REGION

if TYPE_CHECKING:
    from collections.abc import Iterator

    from docker import DockerClient


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("", None),
        ("  ", None),
        ("none", None),
        ("None", None),
        ("8080/health", SmokeSpec("http", 8080, "/health")),
        ("/health", SmokeSpec("http", 8080, "/health")),
        ("9000/", SmokeSpec("http", 9000, "/")),
        ("9000", SmokeSpec("http", 9000, "/")),
        ("/api/health?deep=1", SmokeSpec("http", 8080, "/api/health?deep=1")),
        ("invoke", SmokeSpec("invoke")),
        ('invoke:{"path": "/health"}', SmokeSpec("invoke", event='{"path": "/health"}')),
        ("invoke:", SmokeSpec("invoke")),
    ],
)
def test_parse_smoke(value: str, spec: SmokeSpec | None) -> None:
    assert parse_smoke(value) == spec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("health", "input 'smoke' is 'health', which is not a smoke test"),
        ("http://localhost/health", "not a smoke test"),
        ("8080 /health", "not a smoke test"),
        ("70000/health", "input 'smoke' has the port 70000, outside 1-65535"),
        ("invoke:{nope", "input 'smoke' has the event '{nope', which is not JSON"),
        ("invoked", "not a smoke test"),
    ],
)
def test_parse_smoke_refuses(value: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_smoke(value)
    assert message in caught.value.line()
    assert "8080/health" in caught.value.fix or "JSON" in caught.value.fix


@pytest.fixture(scope="module")
def images(docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    made = Images(docker_client, tmp_path_factory.mktemp("smoke"))
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def httpd_image(images: Images, busybox_base: str) -> str:
    return images.build(
        f"FROM {busybox_base}\n"
        "RUN mkdir /www && echo ok > /www/health\n"
        'CMD ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"]\n',
        name="smoke/httpd",
    )


def test_the_smoke_boot_runs_in_the_region_of_the_region_input(images: Images, busybox_base: str) -> None:
    """Lambda sets AWS_REGION to the function's region; the boot gives the 'region' input."""
    image = images.build(
        f"FROM {busybox_base}\n"
        "RUN mkdir /www && echo ok > /www/health\n"
        'CMD ["sh", "-c", "test \\"$AWS_REGION/$AWS_DEFAULT_REGION\\" = eu-west-2/eu-west-2 '
        '&& exec httpd -f -p 8080 -h /www"]\n',
        name="smoke/region",
    )
    spec = SmokeSpec("http", 8080, "/health")
    assert smoke_boot(Engine(images.client), image, spec, timeout_s=20, region="eu-west-2").detail.endswith(
        "HTTP 200"
    )
    with pytest.raises(CheckError, match="exited with code 1"):
        smoke_boot(Engine(images.client), image, spec, timeout_s=20, region="us-east-1")


def test_http_probe_passes(images: Images, httpd_image: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = smoke_boot(
        Engine(images.client), httpd_image, SmokeSpec("http", 8080, "/health"), timeout_s=20, region=REGION
    )
    assert result.detail == "GET :8080/health answered HTTP 200"
    assert result.seconds < 20
    assert "GET :8080/health answered HTTP 200 after" in capsys.readouterr().out
    assert images.containers_of(httpd_image) == []


def test_http_probe_fails_fast_on_a_client_error(images: Images, httpd_image: str) -> None:
    started = time.monotonic()
    with pytest.raises(CheckError) as caught:
        smoke_boot(
            Engine(images.client),
            httpd_image,
            SmokeSpec("http", 8080, "/missing"),
            timeout_s=20,
            region=REGION,
        )
    assert time.monotonic() - started < 10
    assert "GET :8080/missing answered HTTP 404" in caught.value.line()
    assert images.containers_of(httpd_image) == []


def test_image_that_exits_fails_with_its_code_and_log(
    images: Images, busybox_base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = images.build(
        # One stream: the engine keeps each stream's order, not their order against each other.
        f'FROM {busybox_base}\nCMD ["sh", "-c", "echo starting >&2; echo boom: no config >&2; exit 3"]\n',
        name="smoke/exits",
    )
    with pytest.raises(CheckError) as caught:
        smoke_boot(
            Engine(images.client), image, SmokeSpec("http", 8080, "/health"), timeout_s=20, region=REGION
        )
    line = caught.value.line()
    assert "the container exited with code 3" in line
    assert "its last log line: boom: no config" in line
    out = capsys.readouterr().out
    assert "| starting" in out
    assert "| boom: no config" in out
    assert out.index("| boom: no config") > out.index("container log (last 30 lines)")
    assert images.containers_of(image) == []


def test_image_that_never_answers_fails_within_the_timeout(images: Images, busybox_base: str) -> None:
    image = images.build(f'FROM {busybox_base}\nCMD ["sleep", "3600"]\n', name="smoke/silent")
    started = time.monotonic()
    with pytest.raises(CheckError) as caught:
        smoke_boot(
            Engine(images.client), image, SmokeSpec("http", 8080, "/health"), timeout_s=3, region=REGION
        )
    took = time.monotonic() - started
    assert 3 <= took < 15
    assert "no answer in 3 s (last try: connection refused or reset)" in caught.value.line()
    assert images.containers_of(image) == []


def test_image_without_a_command_fails_and_leaves_nothing(images: Images, busybox_base: str) -> None:
    image = images.build("FROM scratch\nCOPY hello.txt /hello.txt\n", files={"hello.txt": "hi\n"})
    with pytest.raises(CheckError, match="could not create its container"):
        smoke_boot(
            Engine(images.client), image, SmokeSpec("http", 8080, "/health"), timeout_s=3, region=REGION
        )
    assert images.containers_of(image) == []


# A stand-in for the Runtime Interface Emulator that the AWS base images start outside
# Lambda: same path and port, and like the RIE it answers 200 with the handler's error.
FAKE_RIE = f'''
import json
from http.server import BaseHTTPRequestHandler, HTTPServer

class Rie(BaseHTTPRequestHandler):
    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "{RIE_PATH}":
            self.send_response(404)
            body = b"not found"
        elif event.get("fail"):
            self.send_response(200)
            body = json.dumps({{"errorType": "KeyError", "errorMessage": "'user'"}}).encode()
        else:
            self.send_response(200)
            body = json.dumps({{"statusCode": 200, "echo": event}}).encode()
        self.end_headers()
        self.wfile.write(body)

print("fake RIE listening", flush=True)
HTTPServer(("0.0.0.0", 8080), Rie).serve_forever()
'''


@pytest.fixture(scope="module")
def rie_image(images: Images, python_base: str) -> str:
    return images.build(
        f'FROM {python_base}\nCOPY rie.py /rie.py\nCMD ["python3", "/rie.py"]\n',
        files={"rie.py": FAKE_RIE},
        name="smoke/rie",
    )


def test_invoke_probe_posts_the_event(images: Images, rie_image: str) -> None:
    spec = parse_smoke('invoke:{"path": "/health"}')
    assert spec is not None
    result = smoke_boot(Engine(images.client), rie_image, spec, timeout_s=30, region=REGION)
    assert result.detail == "invoke through the Runtime Interface Emulator on :8080 answered HTTP 200"
    assert images.containers_of(rie_image) == []


def test_invoke_probe_fails_on_a_function_error(images: Images, rie_image: str) -> None:
    spec = parse_smoke('invoke:{"fail": true}')
    assert spec is not None
    with pytest.raises(CheckError) as caught:
        smoke_boot(Engine(images.client), rie_image, spec, timeout_s=30, region=REGION)
    assert "the invoke returned a function error: KeyError: 'user'" in caught.value.line()
    assert "Runtime Interface Emulator" in caught.value.fix
    assert images.containers_of(rie_image) == []


# ------------------------------------------------------------- as Lambda runs it


def adapter_app(images: Images, busybox_base: str, adapter_image: str, name: str, *lines: str) -> str:
    """A Lambda Web Adapter image (the stand-in adapter) around a busybox httpd app."""
    return images.build(
        f"FROM {busybox_base}\n"
        f"COPY --from={adapter_image} /lambda-adapter /opt/extensions/lambda-adapter\n"
        "RUN mkdir -p /var/task/www && echo ok > /var/task/www/health && echo ok > /var/task/www/ready\n"
        "WORKDIR /var/task\n" + "".join(f"{line}\n" for line in lines),
        name=f"smoke/{name}",
    )


def test_a_server_bound_to_loopback_only_answers_the_probe_from_inside(
    images: Images, busybox_base: str, adapter_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The adapter reaches the app on 127.0.0.1 inside the sandbox, so this image is right."""
    image = adapter_app(
        images,
        busybox_base,
        adapter_image,
        "loopback",
        'CMD ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "www"]',
    )
    result = smoke_boot(
        Engine(images.client),
        image,
        SmokeSpec("http", 8080, "/health"),
        timeout_s=20,
        region=REGION,
        lambda_like=True,
    )
    assert result.detail == "GET :8080/health answered HTTP 200"
    assert "probing from inside the container (wget)" in capsys.readouterr().out


def test_auto_takes_the_adapters_port_and_readiness_path(
    images: Images, busybox_base: str, adapter_image: str
) -> None:
    image = adapter_app(
        images, busybox_base, adapter_image, "auto",
        "ENV AWS_LWA_PORT=9000 AWS_LWA_READINESS_CHECK_PATH=/ready",
        'CMD ["httpd", "-f", "-p", "127.0.0.1:9000", "-h", "www"]',
    )  # fmt: skip
    env = dict(e.split("=", 1) for e in images.client.api.inspect_image(image)["Config"]["Env"])
    spec, why = SmokeSpec("auto").resolve(env)
    assert (spec.kind, spec.port, spec.path) == ("http", 9000, "/ready")
    assert why == (
        "smoke: auto chose GET :9000/ready (port from AWS_LWA_PORT, path from AWS_LWA_READINESS_CHECK_PATH)"
    )
    assert smoke_boot(
        Engine(images.client), image, spec, timeout_s=20, region=REGION, lambda_like=True
    ).detail.startswith("GET :9000/ready answered HTTP 200")
    default, why = SmokeSpec("auto").resolve({"PORT": "3000"})
    assert (default.port, default.path) == (3000, "/") and "port from PORT, path from the default /" in why


def test_writing_beside_the_code_fails_as_in_lambda_with_the_fix(
    images: Images, busybox_base: str, adapter_image: str
) -> None:
    image = adapter_app(
        images, busybox_base, adapter_image, "writes",
        'CMD ["sh", "-c", "echo started > /var/task/state && exec httpd -f -p 8080 -h www"]',
    )  # fmt: skip
    with pytest.raises(CheckError) as caught:
        smoke_boot(
            Engine(images.client),
            image,
            SmokeSpec("http", 8080, "/health"),
            timeout_s=20,
            region=REGION,
            lambda_like=True,
        )
    line = caught.value.line()
    assert "it wrote outside /tmp, and Lambda's file system is read-only but for /tmp" in line
    assert "Read-only file system" in line
    assert "Fix: write only under /tmp" in line
    # The same image boots where nothing is confined: the difference is Lambda's, not the app's.
    assert smoke_boot(
        Engine(images.client), image, SmokeSpec("http", 8080, "/health"), timeout_s=20, region=REGION
    )


def test_files_only_root_can_read_fail_as_in_lambda_with_the_fix(
    images: Images, busybox_base: str, adapter_image: str
) -> None:
    image = adapter_app(
        images, busybox_base, adapter_image, "root-only",
        "RUN echo key=1 > /var/task/app.conf && chmod 600 /var/task/app.conf",
        'CMD ["sh", "-c", "cat /var/task/app.conf && exec httpd -f -p 8080 -h www"]',
    )  # fmt: skip
    with pytest.raises(CheckError) as caught:
        smoke_boot(
            Engine(images.client),
            image,
            SmokeSpec("http", 8080, "/health"),
            timeout_s=20,
            region=REGION,
            lambda_like=True,
        )
    line = caught.value.line()
    assert "not readable by Lambda's unprivileged user" in line
    assert "Permission denied" in line
    assert "COPY --chmod=644" in line
