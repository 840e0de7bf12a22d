"""The ECR scan gate against the real stack: images pushed to the CNCF registry reach moto's
ECR through the registry's push notifications (tests/support/ecrsync.py) with the registry's
digest, and moto answers DescribeImageScanFindings as each test configures it through its
API. Nothing of the gate is replaced: the scan is started, polled and read over HTTP."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from entrypoint.checks.scan import ScanResult, ScanRule, parse_scan_rule, require_clean, scan_image
from entrypoint.errors import AwsError, CheckError, InputError
from entrypoint.registry.ecr import Ecr
from tests.support.ecrsync import basic_finding, enhanced_finding
from tests.support.oci import push_image
from tests.support.run import Run, run_entrypoint
from tests.support.stack import MotoServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from tests.conftest import MakeRepository
    from tests.support.ecrsync import EcrSync

REGION = "eu-west-2"
ECR_HOST = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"
HIGH = ScanRule(fail_on="HIGH", ignore=frozenset(), timeout=60)


@dataclass(frozen=True)
class Pushed:
    repository: str
    digest: str

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"

    @property
    def uri(self) -> str:
        return f"{ECR_HOST}/{self.repository}@{self.digest}"


@pytest.fixture
def push(ecr_sync: EcrSync, ecr_repository: MakeRepository) -> Callable[..., Pushed]:
    """Push a new small image to a new repository (created in moto first, as Terraform would),
    through the registry that syncs into moto's ECR."""

    def push(*, scan_on_push: bool = False, wait: bool = True) -> Pushed:
        repository = ecr_repository()
        if scan_on_push:
            boto3.client("ecr").put_image_scanning_configuration(
                repositoryName=repository, imageScanningConfiguration={"scanOnPush": True}
            )
        unique = secrets.token_hex(8).encode()
        digest = push_image(ecr_sync.registry, repository, "v1", {"app/main.sh": b"#!/bin/sh\n#" + unique})
        if wait:
            ecr_sync.wait(repository, digest)
        return Pushed(repository, digest)

    return push


def scan(pushed: Pushed, rule: ScanRule = HIGH, *, reuse: bool = False) -> ScanResult:
    ecr = Ecr(REGION)
    return scan_image(
        ecr, ecr.repository(pushed.repository), pushed.digest, rule, pushed.reference, reuse=reuse
    )


# ---------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("inputs", "rule"),
    [
        (("true", "", "", ""), ScanRule("HIGH", frozenset(), 600.0)),
        (
            ("TRUE", "Critical", "CVE-2024-1, cve-2024-2\n GHSA-abcd-efgh-ijkl,,", "30"),
            ScanRule("CRITICAL", frozenset({"CVE-2024-1", "CVE-2024-2", "GHSA-ABCD-EFGH-IJKL"}), 30.0),
        ),
        (
            ("true", "informational", "ALAS2-2024:1 debian_bug.1", "1"),
            ScanRule("INFORMATIONAL", frozenset({"ALAS2-2024:1", "DEBIAN_BUG.1"}), 1.0),
        ),
        (("true", "NONE", "", "3600"), ScanRule(None, frozenset(), 3600.0)),
        ((" true ", "low", "", " 45 "), ScanRule("LOW", frozenset(), 45.0)),
        (("false", "high", "CVE-2024-1", "60"), None),
        (("", "", "", ""), None),
    ],
)
def test_parse_scan_rule(inputs: tuple[str, str, str, str], rule: ScanRule | None) -> None:
    assert parse_scan_rule(*inputs) == rule


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        (("yes", "", "", ""), "scan"),
        (("true", "severe", "", ""), "scan-fail-on"),
        (("true", "undefined", "", ""), "scan-fail-on"),
        (("true", "", "CVE-2024-1;rm -rf", ""), "scan-ignore"),
        (("true", "", "$(id)", ""), "scan-ignore"),
        (("true", "", "-CVE", ""), "scan-ignore"),
        (("true", "", "", "0"), "scan-timeout"),
        (("true", "", "", "3601"), "scan-timeout"),
        (("true", "", "", "10s"), "scan-timeout"),
        (("true", "", "", "-5"), "scan-timeout"),
        (("true", "", "", "\uff11\uff10"), "scan-timeout"),  # fullwidth digits: isdigit() says yes
        # A typo is caught before the gate is turned on.
        (("false", "hihg", "", ""), "scan-fail-on"),
    ],
)
def test_parse_scan_rule_refuses(inputs: tuple[str, str, str, str], named: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_scan_rule(*inputs)
    assert caught.value.line().startswith(f"input '{named}' ")
    assert caught.value.exit_code == 2
    assert "\n" not in caught.value.line()


# ---------------------------------------------------------------------------- the gate


def test_a_clean_image_passes(
    push: Callable[..., Pushed], ecr_sync: EcrSync, capsys: pytest.CaptureFixture[str]
) -> None:
    # No wait for the sync: right after the push ECR may not know the image yet, and the
    # gate asks again until it does.
    pushed = push(wait=False)
    ecr_sync.set_findings(pushed.repository, pushed.digest)
    result = scan(pushed)
    require_clean(result, HIGH)
    assert (result.status, result.findings, result.blocking, result.counts) == ("COMPLETE", (), (), ())
    assert result.reference == pushed.reference
    out = capsys.readouterr().out
    assert f"scan: started ECR's basic scan of {pushed.reference}" in out
    assert "scan: COMPLETE at 2026-01-01T00:00:00+00:00: no findings" in out


def test_a_high_finding_blocks_with_one_line(
    push: Callable[..., Pushed], ecr_sync: EcrSync, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push()
    ecr_sync.set_findings(
        pushed.repository,
        pushed.digest,
        findings=[
            basic_finding("CVE-2024-0001", "HIGH", "openssl", "3.0.1"),
            basic_finding("CVE-2024-0002", "CRITICAL", "zlib", "1.2.11"),
            basic_finding("CVE-2024-0003", "LOW", "bash", "5.1"),
            basic_finding("CVE-2024-0004", "HIGH", "curl", "7.88"),
        ],
    )
    result = scan(pushed)
    assert [f.name for f in result.findings] == [
        "CVE-2024-0002",
        "CVE-2024-0001",
        "CVE-2024-0004",
        "CVE-2024-0003",
    ]
    assert result.counts == (("CRITICAL", 1), ("HIGH", 2), ("LOW", 1))
    assert [f.name for f in result.blocking] == ["CVE-2024-0002", "CVE-2024-0001", "CVE-2024-0004"]
    with pytest.raises(CheckError) as caught:
        require_clean(result, HIGH)
    line = caught.value.line()
    assert "\n" not in line
    assert line.startswith(
        f"{pushed.reference} has 3 finding(s) at or above HIGH that scan-ignore does not accept "
        "(1 CRITICAL, 2 HIGH): CVE-2024-0002 (CRITICAL, zlib 1.2.11), CVE-2024-0001 (HIGH, openssl 3.0.1), "
        "CVE-2024-0004 (HIGH, curl 7.88). Fix: update the affected packages"
    )
    assert "scan-ignore" in caught.value.fix
    out = capsys.readouterr().out
    for name in ("CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0004"):
        assert f"✘ {name} (" in out
    assert "✘ CVE-2024-0003" not in out


def test_an_accepted_finding_passes(
    push: Callable[..., Pushed], ecr_sync: EcrSync, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push()
    ecr_sync.set_findings(
        pushed.repository, pushed.digest, findings=[basic_finding("CVE-2024-0001", "CRITICAL")]
    )
    rule = parse_scan_rule("true", "high", "cve-2024-0001", "60")
    assert rule is not None
    result = scan(pushed, rule)
    require_clean(result, rule)
    assert [f.name for f in result.ignored] == ["CVE-2024-0001"]
    assert result.blocking == ()
    assert "accepted by scan-ignore: CVE-2024-0001 (CRITICAL, openssl 3.0.1)" in capsys.readouterr().out


def test_a_low_finding_passes_a_high_rule(push: Callable[..., Pushed], ecr_sync: EcrSync) -> None:
    pushed = push()
    ecr_sync.set_findings(pushed.repository, pushed.digest, findings=[basic_finding("CVE-2024-0005", "LOW")])
    result = scan(pushed)
    require_clean(result, HIGH)
    assert result.counts == (("LOW", 1),)
    assert (result.blocking, result.ignored) == ((), ())


def test_report_only_never_blocks(push: Callable[..., Pushed], ecr_sync: EcrSync) -> None:
    pushed = push()
    ecr_sync.set_findings(
        pushed.repository, pushed.digest, findings=[basic_finding("CVE-2024-0006", "CRITICAL")]
    )
    rule = ScanRule(fail_on=None, ignore=frozenset(), timeout=60)
    result = scan(pushed, rule)
    require_clean(result, rule)
    assert result.counted() == "1 CRITICAL"


def test_enhanced_findings_are_read(push: Callable[..., Pushed], ecr_sync: EcrSync) -> None:
    pushed = push()
    ecr_sync.set_findings(
        pushed.repository,
        pushed.digest,
        status="ACTIVE",
        enhanced=[
            enhanced_finding("CVE-2024-0007", "CRITICAL", "zlib", "1.2.13"),
            enhanced_finding("GHSA-aaaa-bbbb-cccc", "UNTRIAGED", "left-pad", "1.0.0"),
        ],
    )
    result = scan(pushed)
    assert [(f.name, f.severity, f.package, f.version) for f in result.findings] == [
        ("CVE-2024-0007", "CRITICAL", "zlib", "1.2.13"),
        ("GHSA-aaaa-bbbb-cccc", "UNDEFINED", "left-pad", "1.0.0"),
    ]
    assert result.findings[0].uri == "https://nvd.nist.gov/vuln/detail/CVE-2024-0007"
    with pytest.raises(CheckError, match=r"1 CRITICAL\): CVE-2024-0007 \(CRITICAL, zlib 1.2.13\)"):
        require_clean(result, HIGH)


@pytest.mark.parametrize(
    ("status", "cause", "fix"),
    [
        ("UNSUPPORTED_IMAGE", "is not possible: ECR does not support scanning this image", "build on a base"),
        ("SCAN_ELIGIBILITY_EXPIRED", "is no longer kept", "publish the image again"),
        (
            "FINDINGS_UNAVAILABLE",
            "has no findings to give",
            "check that the image is still in the repository",
        ),
        ("FAILED", "failed", "rerun the job"),
        ("SOMETHING_NEW", "ended with the status 'SOMETHING_NEW', which the gate does not know", "rerun"),
    ],
)
def test_scans_that_cannot_say_the_image_is_clean_fail_the_gate(
    push: Callable[..., Pushed], ecr_sync: EcrSync, status: str, cause: str, fix: str
) -> None:
    pushed = push()
    ecr_sync.set_findings(pushed.repository, pushed.digest, status=status, description="ECR's own words")
    with pytest.raises(CheckError) as caught:
        scan(pushed)
    line = caught.value.line()
    assert line.startswith(f"ECR's scan of {pushed.reference} {cause}")
    assert f" (ECR's own words). Fix: {fix}" in line
    assert "set scan to false" in line
    assert "\n" not in line


def test_a_scan_that_stays_in_progress_stops_at_the_timeout(
    push: Callable[..., Pushed], ecr_sync: EcrSync, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push()
    ecr_sync.set_findings(pushed.repository, pushed.digest, status="IN_PROGRESS")
    started = time.monotonic()
    with pytest.raises(CheckError) as caught:
        scan(pushed, ScanRule("HIGH", frozenset(), timeout=11))
    took = time.monotonic() - started
    assert 11 <= took < 14
    assert caught.value.line().startswith(
        f"ECR's scan of {pushed.reference} did not complete in 11 s (status IN_PROGRESS). "
        "Fix: raise scan-timeout"
    )
    assert "  scan: IN_PROGRESS after 10 s" in capsys.readouterr().out


def test_a_second_scan_the_same_day_reads_the_existing_findings(
    push: Callable[..., Pushed], ecr_sync: EcrSync, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push()
    ecr_sync.set_findings(pushed.repository, pushed.digest, findings=[basic_finding("CVE-2024-0008", "HIGH")])
    first = scan(pushed)
    # ECR allows one scan per image a day: StartImageScan now says LimitExceededException.
    second = scan(pushed)
    assert second == first
    assert [f.name for f in second.blocking] == ["CVE-2024-0008"]
    out = capsys.readouterr().out
    assert out.count("started ECR's basic scan") == 1
    assert f"ECR scanned {pushed.reference} within the last 24 h (one scan per image a day)" in out


def test_a_repository_that_scans_on_push_is_read_not_scanned_again(
    push: Callable[..., Pushed], ecr_sync: EcrSync, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push(scan_on_push=True)
    # What ECR does on a push to such a repository (moto does not): start the scan.
    boto3.client("ecr").start_image_scan(
        repositoryName=pushed.repository, imageId={"imageDigest": pushed.digest}
    )
    ecr_sync.set_findings(
        pushed.repository, pushed.digest, findings=[basic_finding("CVE-2024-0009", "MEDIUM")]
    )
    assert Ecr(REGION).repository(pushed.repository).scan_on_push is True
    result = scan(pushed)
    assert result.counts == (("MEDIUM", 1),)
    out = capsys.readouterr().out
    assert f"reading the scan ECR started on push of {pushed.reference}" in out
    assert "started ECR's basic scan" not in out


def test_a_repository_that_scans_on_push_but_did_not_gets_a_scan_after_the_grace(
    push: Callable[..., Pushed], ecr_sync: EcrSync, capsys: pytest.CaptureFixture[str]
) -> None:
    pushed = push(scan_on_push=True)
    ecr_sync.set_findings(pushed.repository, pushed.digest)
    started = time.monotonic()
    result = scan(pushed)
    assert 20 <= time.monotonic() - started < 30
    assert result.status == "COMPLETE"
    out = capsys.readouterr().out
    assert "ECR started no scan on push within 20 s; starting one" in out
    assert f"started ECR's basic scan of {pushed.reference}" in out


def test_counts_that_list_fewer_findings_than_they_count_fail_closed(
    push: Callable[..., Pushed], ecr_sync: EcrSync
) -> None:
    pushed = push()
    ecr_sync.set_findings(
        pushed.repository,
        pushed.digest,
        findings=[basic_finding("CVE-2024-0010", "HIGH")],
        counts={"CRITICAL": 2, "HIGH": 1},
    )
    with pytest.raises(CheckError, match=r"counts 3 finding\(s\) at or above HIGH but lists 1"):
        scan(pushed)


def test_ecrs_text_is_escaped_and_capped(push: Callable[..., Pushed], ecr_sync: EcrSync) -> None:
    pushed = push()
    planted = "CVE-1\n::error::planted\r::add-mask::x" + "A" * 500
    ecr_sync.set_findings(
        pushed.repository,
        pushed.digest,
        findings=[basic_finding(planted, "HIGH", package="pkg\n::warning::x", version="1\x1b[31m")],
    )
    result = scan(pushed)
    finding = result.findings[0]
    assert "\n" not in finding.name
    assert "\r" not in finding.name
    assert finding.name.startswith("CVE-1\\n::error::planted\\r")
    assert len(finding.name) <= 128
    assert (finding.package, finding.version) == ("pkg\\n::warning::x", "1\\x1b[31m")
    with pytest.raises(CheckError) as caught:
        require_clean(result, HIGH)
    assert "\n" not in caught.value.line()
    assert "\r" not in caught.value.line()


def test_an_image_ecr_does_not_have_is_one_line(ecr_repository: MakeRepository) -> None:
    repository = ecr_repository()
    digest = "sha256:" + "0" * 64
    ecr = Ecr(REGION)
    started = time.monotonic()
    with pytest.raises(AwsError) as caught:
        scan_image(ecr, ecr.repository(repository), digest, HIGH, f"{repository}@{digest}")
    assert time.monotonic() - started < 40
    assert caught.value.line().startswith(f"ECR has no image {repository}@{digest} in {REGION}")


# ---------------------------------------------------------------------------- permissions


@pytest.fixture
def moto_with_iam(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    """A moto that checks every call against IAM after the first five (the set-up's)."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "5")
    with MotoServer() as server:
        monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
        yield server


@pytest.mark.parametrize(
    ("allowed", "denied"),
    [
        (["ecr:DescribeRepositories", "ecr:DescribeImageScanFindings"], "ecr:StartImageScan"),
        (["ecr:DescribeRepositories", "ecr:StartImageScan"], "ecr:DescribeImageScanFindings"),
    ],
)
def test_a_denied_scan_call_names_the_iam_action(
    aws_env: dict[str, str], moto_with_iam: MotoServer, allowed: list[str], denied: str
) -> None:
    endpoint = moto_with_iam.endpoint
    ecr = boto3.client("ecr", endpoint_url=endpoint, region_name=REGION)
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "layers": []}
    ecr.create_repository(repositoryName="denied")
    put = ecr.put_image(repositoryName="denied", imageManifest=json.dumps(manifest), imageTag="v1")
    iam.create_user(UserName="deployer")
    policy: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}],
    }
    iam.put_user_policy(UserName="deployer", PolicyName="scan", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="deployer")["AccessKey"]
    # A session of its own: boto3's default one keeps the credentials it first found.
    deployer = boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"], region_name=REGION
    )
    as_deployer = Ecr(REGION, client=deployer.client("ecr", endpoint_url=endpoint))
    digest = put["image"]["imageId"]["imageDigest"]
    with pytest.raises(AwsError) as caught:
        scan_image(
            as_deployer,
            as_deployer.repository("denied"),
            digest,
            ScanRule("HIGH", frozenset(), timeout=5),
            f"denied@{digest}",
            reuse=True,
        )
    line = caught.value.line()
    assert f"AWS denied {denied}" in line
    assert f"allow {denied} to the role this job assumes" in line


# ---------------------------------------------------------------------------- the verify gate


def verify(tmp_path: Path, registry: str, *args: str) -> Run:
    return run_entrypoint(
        ["verify", "--region", REGION, "--registry", registry, *args], cwd=tmp_path, tmp=tmp_path
    )


def test_the_verify_gate_refuses_an_image_with_findings(
    push: Callable[..., Pushed], ecr_sync: EcrSync, aws_env: dict[str, str], tmp_path: Path
) -> None:
    clean, vulnerable, accepted = push(), push(), push()
    ecr_sync.set_findings(clean.repository, clean.digest, findings=[basic_finding("CVE-2024-0011", "LOW")])
    ecr_sync.set_findings(
        vulnerable.repository,
        vulnerable.digest,
        findings=[basic_finding("CVE-2024-0012", "CRITICAL", "glibc", "2.36")],
    )
    ecr_sync.set_findings(
        accepted.repository, accepted.digest, findings=[basic_finding("CVE-2024-0013", "HIGH")]
    )
    images = "\n".join(p.uri for p in (clean, vulnerable, accepted))
    run = verify(
        tmp_path,
        ecr_sync.registry.host,
        "--image-uris", images,
        "--scan", "true",
        "--scan-ignore", "CVE-2024-0013",
    )  # fmt: skip
    assert run.code == 1, run.log
    assert run.outputs == {"checked": "2"}
    [line] = run.error_lines()
    assert line.startswith(
        f"::error::1 of 3 image(s) must not be deployed: image-uris: {vulnerable.uri} is refused by the scan "
        f"gate: {vulnerable.repository}@{vulnerable.digest[:19]}… has 1 finding(s) at or above HIGH that "
        "scan-ignore does not accept (1 CRITICAL): CVE-2024-0012 (CRITICAL, glibc 2.36). Fix: update"
    )
    assert "ECR scan: 1 LOW (none at or above HIGH)" in run.summary
    assert "ECR scan: 1 HIGH (none at or above HIGH, 1 accepted by scan-ignore)" in run.summary
    assert "✘ vulnerable" in run.stdout
    assert "✘ CVE-2024-0012 (CRITICAL, glibc 2.36)" in run.stdout

    # The same images with the gate off: only the registry checks, which they all pass.
    off = verify(tmp_path, ecr_sync.registry.host, "--image-uris", images)
    assert off.code == 0, off.log
    assert "ECR scan" not in off.stdout


def test_the_verify_gate_refuses_an_image_it_cannot_scan(
    push: Callable[..., Pushed], ecr_sync: EcrSync, aws_env: dict[str, str], tmp_path: Path
) -> None:
    pushed = push()
    ecr_sync.set_findings(pushed.repository, pushed.digest, status="UNSUPPORTED_IMAGE", description="no OS")
    run = verify(tmp_path, ecr_sync.registry.host, "--image-uris", pushed.uri, "--scan", "true")
    assert run.code == 1, run.log
    [line] = run.error_lines()
    assert f"image-uris: {pushed.uri} could not be scanned: ECR's scan of " in line
    assert "ECR does not support scanning this image (no OS). Fix: build on a base" in line
