"""The action's own supply chain (issue 23): what each workflow job may write, how a release
is made (draft, files, attestation, then publish, so it can be immutable), what keeps the
pinned actions and the lock current, and where a vulnerability is reported.

The workflows cannot run here (no GitHub), so the rules are read from the files as GitHub
reads them, and the release steps that are plain shell are run for real."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tarfile
from typing import TYPE_CHECKING, Any

import pytest
import tomllib
import yaml

from scripts.lock import LOCK
from tests.support.run import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
ATTEST = "actions/attest-build-provenance@"

# Every job of every workflow, with the writes it needs and why. A job missing here, or
# holding another write, fails; so does a row whose job no longer uses the write.
WRITES: dict[tuple[str, str], frozenset[str]] = {
    ("ci.yml", "test"): frozenset(),
    ("release.yml", "test"): frozenset(),
    # pushes the action image to ghcr.io
    ("release.yml", "image"): frozenset({"packages"}),
    # the draft, its files, publishing it and the vX tag; the Sigstore certificate (OIDC
    # token) and the stored attestations
    ("release.yml", "release"): frozenset({"contents", "id-token", "attestations"}),
}
LEVELS = {"read", "write", "none"}


def _workflows() -> dict[str, dict[str, Any]]:
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    return {p.name: yaml.safe_load(p.read_text()) for p in files}


def _writes(permissions: object, where: str) -> set[str]:
    """The scopes `permissions` grants write on; anything but read/write/none is refused."""
    if permissions == "write-all":
        return {"write-all"}
    if permissions == "read-all":
        return set()
    assert isinstance(permissions, dict), f"{where}: permissions {permissions!r}"
    assert set(permissions.values()) <= LEVELS, f"{where}: {permissions}"
    return {scope for scope, level in permissions.items() if level == "write"}


def _writes_used(steps: list[dict[str, Any]]) -> set[str]:
    """The writes the steps show they use, from what each step runs."""
    used: set[str] = set()
    for step in steps:
        run, uses = step.get("run", ""), step.get("uses", "")
        if re.search(r"\bgh release (create|upload|edit|delete)\b|\bgit push\b", run):
            used.add("contents")
        if re.search(r"\bdocker login ghcr\.io\b", run):
            used.add("packages")
        if uses.startswith(ATTEST):
            used |= {"id-token", "attestations"}
    return used


def test_every_workflow_reads_by_default_and_each_job_writes_only_what_it_uses() -> None:
    seen = set()
    for name, workflow in _workflows().items():
        assert "permissions" in workflow, f"{name}: no top-level permissions (the default token writes)"
        assert not _writes(workflow["permissions"], name), f"{name}: top-level permissions write"
        for job_name, job in workflow["jobs"].items():
            where = f"{name} job {job_name}"
            # Explicit on every job: with `permissions: {}` above, a job without its own gets
            # nothing, and under `read-all` it would get every read.
            assert "permissions" in job, f"{where}: no permissions of its own"
            assert (name, job_name) in WRITES, f"{where}: not in WRITES (say what it writes and why)"
            declared = _writes(job["permissions"], where)
            assert declared == WRITES[name, job_name], f"{where}: writes {declared}"
            assert _writes_used(job.get("steps", [])) == declared, f"{where}: writes {declared} unused"
            seen.add((name, job_name))
    assert seen == set(WRITES), f"WRITES lists jobs that are gone: {set(WRITES) - seen}"


def test_a_checkout_keeps_the_job_token_only_where_git_pushes() -> None:
    """actions/checkout leaves the token in .git/config unless told not to, where every later
    step (QEMU's container, the build, the tests) can read it."""
    checked = 0
    for name, workflow in _workflows().items():
        for job_name, job in workflow["jobs"].items():
            steps = job.get("steps", [])
            pushes = any(re.search(r"\bgit push\b", s.get("run", "")) for s in steps)
            for step in steps:
                if step.get("uses", "").startswith("actions/checkout@"):
                    persisted = step.get("with", {}).get("persist-credentials", True) is not False
                    assert persisted == pushes, f"{name} job {job_name}: persist-credentials {persisted}"
                    checked += 1
    assert checked >= 3


def test_jobs_that_can_change_the_repository_or_sign_run_only_githubs_own_actions() -> None:
    """A job with contents or id-token write can rewrite a release or sign an attestation that
    this workflow built anything: it runs no third-party action (QEMU's starts a privileged
    container) and builds no image (the Dockerfile's steps run there)."""
    checked = 0
    for name, workflow in _workflows().items():
        for job_name, job in workflow["jobs"].items():
            if not _writes(job.get("permissions", {}), name) & {"contents", "id-token", "write-all"}:
                continue
            for step in job.get("steps", []):
                uses = step.get("uses", "")
                assert not uses or uses.startswith("actions/"), f"{name} job {job_name}: {uses}"
                assert not re.search(r"\bdocker (buildx )?build\b", step.get("run", "")), (
                    f"{name} job {job_name} builds an image"
                )
            checked += 1
    assert checked >= 1


def _release_steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = _workflows()["release.yml"]["jobs"]["release"]["steps"]
    return steps


def _index(steps: list[dict[str, Any]], pattern: str) -> int:
    found = [i for i, s in enumerate(steps) if re.search(pattern, s.get("run", ""))]
    assert len(found) == 1, f"{len(found)} release steps run {pattern!r}"
    return found[0]


def _normal_path(text: str) -> str:
    return text.replace("${{ runner.temp }}", "$RUNNER_TEMP").replace('"$RUNNER_TEMP"', "$RUNNER_TEMP")


def test_a_release_stays_a_draft_until_its_files_are_uploaded_and_attested() -> None:
    steps = _release_steps()
    create = _index(steps, r"\bgh release create\b")
    upload = _index(steps, r"\bgh release upload\b")
    publish = _index(steps, r"\bgh release edit\b")
    move_major = _index(steps, r"\bgit push\b")
    attests = [i for i, s in enumerate(steps) if s.get("uses", "").startswith(ATTEST)]
    create_run, upload_run = steps[create]["run"], steps[upload]["run"]
    assert re.search(r"\s--draft(\s|$)", create_run), create_run
    assert "dist" not in create_run  # files go up while it is a draft, none with the create
    assert "--draft=false" in steps[publish]["run"]
    assert create < upload < publish, (create, upload, publish)
    assert attests and all(create < i < publish for i in attests), attests
    assert publish < move_major  # vX points only at a published release
    # The files attested are the files uploaded.
    uploaded = re.search(r'gh release upload "\$GITHUB_REF_NAME" (\S+)$', upload_run)
    assert uploaded, upload_run
    subjects = [_normal_path(steps[i]["with"].get("subject-path", "")) for i in attests]
    assert _normal_path(uploaded.group(1)) in subjects, subjects
    # The action image is attested by the digest its own job pushed.
    image = [steps[i]["with"] for i in attests if "subject-digest" in steps[i]["with"]]
    assert image == [
        {
            "subject-name": "${{ needs.image.outputs.image }}",
            "subject-digest": "${{ needs.image.outputs.digest }}",
        }
    ]


# What the expressions in the release job's `env:` stand for here.
EXPRESSIONS = {
    "${{ github.repository }}": "owner/lambda-image-publish",
    "${{ needs.image.outputs.image }}": "ghcr.io/owner/lambda-image-publish",
    "${{ needs.image.outputs.digest }}": "sha256:" + "ab" * 32,
}


def _run_step(
    step: dict[str, Any], env: dict[str, str], values: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The step's script as a runner runs it (bash -eo pipefail), with the job's and the
    step's `env:` expressions replaced from EXPRESSIONS and `values` (an expression with no
    value fails the test)."""
    job_env = _workflows()["release.yml"]["jobs"]["release"].get("env", {})
    known = {**EXPRESSIONS, **(values or {})}
    resolved = {}
    for key, value in {**job_env, **step.get("env", {})}.items():
        assert value in known or "${{" not in value, f"no test value for {value}"
        resolved[key] = known.get(value, value)
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        cwd=REPO_ROOT,
        env={"PATH": os.environ["PATH"], **env, **resolved},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_release_files_are_the_tagged_tree_and_its_sums(tmp_path: Path) -> None:
    steps = _release_steps()
    [build] = [s for s in steps if "git archive" in s.get("run", "")]
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {"GITHUB_REF_NAME": "v9.8.7", "GITHUB_SHA": head, "RUNNER_TEMP": str(tmp_path)}
    done = _run_step(build, env)
    assert done.returncode == 0, done.stdout + done.stderr
    dist = tmp_path / "dist"
    assert sorted(p.name for p in dist.iterdir()) == ["SHA256SUMS", "lambda-image-publish-v9.8.7.tar.gz"]
    tarball = dist / "lambda-image-publish-v9.8.7.tar.gz"
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert (dist / "SHA256SUMS").read_text() == f"{digest}  lambda-image-publish-v9.8.7.tar.gz\n"
    tracked = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-tree", "-r", "--name-only", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    with tarfile.open(tarball) as archive:
        files = sorted(m.name for m in archive.getmembers() if not m.isdir())
    assert files == sorted(f"lambda-image-publish-v9.8.7/{name}" for name in tracked)
    assert "lambda-image-publish-v9.8.7/action.yml" in files
    assert "lambda-image-publish-v9.8.7/lock/runtime.txt" in files


@pytest.mark.parametrize(
    ("digest", "ok"),
    [("sha256:" + "ab" * 32, True), ("", False), ("sha256:" + "ab" * 32 + "\n### pwned", False)],
)
def test_the_release_notes_name_the_image_by_a_checked_digest(tmp_path: Path, digest: str, ok: bool) -> None:
    [notes_step] = [
        s for s in _release_steps() if "notes.md" in s.get("run", "") and "release_check" in s["run"]
    ]
    env = {"GITHUB_REF_NAME": f"v{VERSION}", "RUNNER_TEMP": str(tmp_path)}
    done = _run_step(notes_step, env, {"${{ needs.image.outputs.digest }}": digest})
    if not ok:
        assert done.returncode == 1, done.stdout
        assert done.stdout.startswith("::error::no image digest"), done.stdout
        return
    assert done.returncode == 0, done.stdout + done.stderr
    notes = (tmp_path / "notes.md").read_text()
    assert f"`ghcr.io/owner/lambda-image-publish@{digest}`" in notes
    assert (
        f"gh attestation verify lambda-image-publish-v{VERSION}.tar.gz --repo owner/lambda-image-publish"
        in notes
    )
    assert f"gh attestation verify oci://ghcr.io/owner/lambda-image-publish@{digest}" in notes


def _directories(entry: dict[str, Any]) -> set[str]:
    found = set(entry.get("directories", []))
    if "directory" in entry:
        found.add(entry["directory"])
    return found


def _actions_with_remote_uses() -> set[str]:
    """Folders of this repository's action.yml files that use a remote action (Dependabot's
    "/" covers the root one and .github/workflows; any other needs its own folder)."""
    skip = {".venv", ".stack", ".git", "node_modules", "tests", "examples"}
    folders = set()
    for path in REPO_ROOT.rglob("action.y*ml"):
        relative = path.relative_to(REPO_ROOT)
        if skip & set(relative.parts):
            continue
        remote = re.search(r"^\s*(?:-\s*)?uses:\s*(?!\./)[\w.-]+/", path.read_text(), re.MULTILINE)
        if remote:
            folders.add("/" + relative.parent.as_posix().removeprefix("."))
    return folders


def test_dependabot_keeps_the_pinned_actions_and_the_lock_current() -> None:
    text = (REPO_ROOT / ".github" / "dependabot.yml").read_text()
    config = yaml.safe_load(text)
    assert config["version"] == 2
    by_ecosystem: dict[str, list[dict[str, Any]]] = {}
    for entry in config["updates"]:
        by_ecosystem.setdefault(entry["package-ecosystem"], []).append(entry)
        assert entry["schedule"]["interval"] == "weekly", entry
        groups = entry.get("groups", {})
        assert any(g.get("patterns") == ["*"] for g in groups.values()), f"not grouped: {entry}"
    assert sorted(by_ecosystem) == ["github-actions", "pip"], sorted(by_ecosystem)
    [actions] = by_ecosystem["github-actions"]
    assert {"/"} | _actions_with_remote_uses() <= _directories(actions)
    # The lock: its folder, and only once (an entry for "/" reads lock/*.txt too).
    lock_folder = "/" + LOCK.relative_to(REPO_ROOT).as_posix()
    pip_folders = [d for entry in by_ecosystem["pip"] for d in _directories(entry)]
    assert pip_folders == [lock_folder], pip_folders
    assert sorted(p.name for p in LOCK.glob("*.txt")) == ["runtime.txt", "setup.txt", "ssh.txt"]
    assert "python scripts/lock.py" in text  # how a bumped pin gets lock.py's hashes


def test_the_security_policy_says_how_to_report_privately() -> None:
    path = REPO_ROOT / "SECURITY.md"
    assert path.is_file(), "no SECURITY.md at the top of the repository (where GitHub looks)"
    policy = path.read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "private vulnerability reporting" in policy
    assert "Report a vulnerability" in policy
    assert "## Supported versions" in policy
    # It links to the README's list of promises, which must be there to link to.
    assert "(README.md#security)" in policy
    assert re.search(r"^## Security$", readme, re.MULTILINE)
    # One answer time, said the same way in both places.
    promised = re.search(r"within \*{0,2}(\w+ working days)", policy)
    assert promised and f"within {promised.group(1)}" in readme, promised
