"""`python -m entrypoint [publish|verify|promote|rollback|deployed] [--input value ...]`: the one
place that turns failures into an `::error::` line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from pathlib import Path

from entrypoint import cancel, github
from entrypoint.errors import ActionError
from entrypoint.inputs import (
    DEPLOYED_INPUTS,
    PROMOTE_INPUTS,
    PUBLISH_INPUTS,
    ROLLBACK_INPUTS,
    VERIFY_INPUTS,
    parse_deployed,
    parse_promote,
    parse_release,
    parse_rollback,
    parse_verify,
    read_raw,
)

# (command, what it does, its inputs, what --workspace is for)
_COMMANDS = (
    ("publish", "build, push and tag the image, or the images of --config (the default)", PUBLISH_INPUTS,
     "folder paths are relative to"),
    ("verify", "check the images a Terraform plan deploys to Lambda", VERIFY_INPUTS,
     "the plan path is relative to"),
    ("promote", "copy a tested image into an environment, same digest, no build", PROMOTE_INPUTS,
     "the commit is read from"),
    ("rollback", "move an environment back to an earlier image", ROLLBACK_INPUTS,
     "unused; accepted like the other commands"),
    ("deployed", "after terraform apply: check Lambda runs the published digests (and streams)",
     DEPLOYED_INPUTS, "the plan and terraform-outputs paths are relative to"),
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m entrypoint",
        description="Build a Lambda container image with BuildKit and publish it to Amazon ECR. "
        "Each flag stands in for the action input of the same name (INPUT_<NAME>).",
    )
    commands = parser.add_subparsers(dest="command")
    for name, summary_line, inputs, workspace_use in _COMMANDS:
        command = commands.add_parser(name, help=summary_line)
        for input_name in inputs:
            command.add_argument(f"--{input_name}", dest=input_name, default=None, metavar="VALUE")
        command.add_argument(
            "--workspace",
            default=None,
            help=f"{workspace_use} (default: GITHUB_WORKSPACE, else the current folder)",
        )
    return parser


def _workspace(flag: str | None) -> Path:
    return Path(flag or os.environ.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()


def run(argv: list[str]) -> None:
    if argv in (["--help"], ["-h"]):
        _parser().print_help()
        return
    if not argv or argv[0].startswith("-"):
        argv = ["publish", *argv]
    args = _parser().parse_args(argv)
    flags = vars(args)
    github.check_runner_files()
    # Each command imports what it runs, here: a publish that skips its build takes well under
    # a second, and the other commands' modules (promote's, the plan reader's) are a tenth of it.
    if args.command == "verify":
        from entrypoint.commands.verify import verify  # noqa: PLC0415 - see above

        checked = verify(parse_verify(read_raw(VERIFY_INPUTS, flags), _workspace(args.workspace)))
        # Outputs and summary first: a failing gate still reports what it checked.
        github.set_outputs(checked.outputs())
        github.write_summary(checked.summary())
        checked.raise_for_failures()
        return
    if args.command == "deployed":
        from entrypoint.commands.deployed import deployed  # noqa: PLC0415 - see above

        report = deployed(parse_deployed(read_raw(DEPLOYED_INPUTS, flags), _workspace(args.workspace)))
        github.set_outputs(report.outputs())
        github.write_summary(report.summary())
        report.raise_for_failures()
        return
    if args.command in ("promote", "rollback"):
        from entrypoint.commands.promote import promote, rollback  # noqa: PLC0415
        from entrypoint.commands.publish import summary  # noqa: PLC0415
    if args.command == "promote":
        result = promote(
            parse_promote(read_raw(PROMOTE_INPUTS, flags), _workspace(args.workspace)), os.environ
        )
        github.set_outputs(result.outputs())
        github.write_summary(summary(result, "Lambda image promoted"))
        return
    if args.command == "rollback":
        result = rollback(parse_rollback(read_raw(ROLLBACK_INPUTS, flags)))
        github.set_outputs(result.outputs())
        github.write_summary(summary(result, "Lambda image rolled back"))
        return
    from entrypoint.commands.release import publish_release  # noqa: PLC0415

    raw = read_raw(PUBLISH_INPUTS, flags)
    runner_temp = os.environ.get("RUNNER_TEMP")
    release = parse_release(raw, _workspace(args.workspace), Path(runner_temp) if runner_temp else None)
    published = publish_release(release, os.environ)
    github.set_outputs(published.outputs())
    github.write_summary(published.summary())


def _private_temp() -> None:
    """Temporary files in the runner's own temp folder, which the runner empties after the job."""
    runner_temp = os.environ.get("RUNNER_TEMP", "")
    if runner_temp and Path(runner_temp).is_dir():
        tempfile.tempdir = runner_temp


def main(argv: list[str]) -> int:
    cancel.install()
    _private_temp()
    with github.commands_stopped():
        return _main(argv)


def _main(argv: list[str]) -> int:
    try:
        run(argv)
    except ActionError as exc:
        github.error(exc.line())
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line must still be one clear error
        with github.group("internal error traceback"):
            traceback.print_exc(file=sys.stdout)
        github.error(
            f"internal error: {type(exc).__name__}: {exc}. Fix: rerun; if it repeats, report it "
            "with the traceback above."
        )
        return 1
    return 0
