"""What a publish shows when it ends: the job summary (GitHub-flavoured Markdown with Mermaid
charts, which GitHub draws in summaries) and the same facts as JSON for other tools.

Per image: its size against Lambda's 10 GB, the diff against the environment's previous
image layer by layer (the Dockerfile line that made each layer; reused, rebuilt or new;
bytes pushed), cache hits, the scan's findings, its links; then the stages as a timeline.
Every value from outside (repository names, Dockerfile lines, finding names) is escaped
with `github.markdown_text`; Mermaid blocks get only numbers and names reduced to a safe
alphabet, as Mermaid has no escaping of its own that GitHub's renderer would honour.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from entrypoint import github
from entrypoint.checks.lambda_rules import MAX_IMAGE_BYTES
from entrypoint.checks.sizes import human_bytes
from entrypoint.registry.reference import ecr_account_region

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from entrypoint.checks.scan import ScanResult
    from entrypoint.checks.sizes import LayerChange, SizeDiff
    from entrypoint.commands.publish import Job
    from entrypoint.github import Stage

# Findings and layers listed in the summary; the JSON has them all.
SHOWN_FINDINGS = 10
SHOWN_LAYERS = 40
_MERMAID_UNSAFE = re.compile(r"[^A-Za-z0-9 ._/@+-]")
# BuildKit's name of a Dockerfile step, `[2/5] RUN …` or `[build 2/5] RUN …` (not `[internal] …`).
_DOCKERFILE_STEP = re.compile(r"\[(?:[\w.-]+ )?\d+/\d+\] ")


def report(
    jobs: Sequence[Job], stages: Sequence[Stage], refused: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The facts of the summary as data (the `report` output). `refused`: image name -> why
    its gate refused it."""
    refused = refused or {}
    began = min((stage.started for stage in stages), default=0.0)
    return {
        "images": [_image_report(job, refused.get(job.name, ""), bool(refused)) for job in jobs],
        "stages": [
            {
                "name": stage.name,
                "image": stage.image,
                "start": round(stage.started - began, 3),
                "seconds": round(stage.seconds, 3),
                "ok": stage.ok,
            }
            for stage in stages
        ],
        "lambda_limit_bytes": MAX_IMAGE_BYTES,
    }


def markdown(jobs: Sequence[Job], stages: Sequence[Stage], refused: Mapping[str, str] | None = None) -> str:
    """The job summary: one section per image, then the timeline of the stages. `refused`:
    image name -> why its gate refused it (then no image of the run was deployed)."""
    refused = refused or {}
    parts = []
    if len(jobs) > 1:
        parts.append(_overview(jobs, bool(refused)))
    for job in jobs:
        parts.append(_image_section(job, refused, heading="####" if len(jobs) > 1 else "###"))
    if stages:
        parts.append(_timeline(stages))
    return "\n".join(parts)


def _references(job: Job, held: bool) -> list[str]:
    """The references that name the image: only its commit tag when a gate held the release."""
    result = job.result()
    if held and result.references:
        return [job.plan.reference(job.plan.commit_tag)]
    return list(result.references)


def _image_report(job: Job, refused: str, held: bool) -> dict[str, Any]:
    result = job.result()
    diff = job.sizes
    return {
        "name": job.name,
        "repository": result.repository,
        "registry": result.registry,
        "digest": result.digest,
        "image_uri": result.image_uri,
        "references": _references(job, bool(refused)),
        "outcome": job.outcome,
        "refused": refused or None,
        "size": _size_report(diff),
        "layers": [_layer_report(change, job) for change in diff.changes] if diff else [],
        "removed_layers": [
            {"digest": layer.digest, "made_by": layer.made_by, "compressed": layer.compressed}
            for layer in (diff.removed if diff else ())
        ],
        "pushed_bytes": _pushed_bytes(job),
        "cache": _cache_report(job),
        "scan": _scan_report(job.scan),
        "links": dict(_links(job)),
    }


def _size_report(diff: SizeDiff | None) -> dict[str, Any] | None:
    if diff is None:
        return None
    previous = diff.previous
    return {
        "compressed": diff.current.compressed,
        "uncompressed": diff.current.uncompressed,
        "previous_digest": previous.digest if previous else None,
        "previous_compressed": previous.compressed if previous else None,
        "previous_uncompressed": previous.uncompressed if previous else None,
        "growth": diff.growth,
        "growth_percent": round(diff.growth_percent, 2) if diff.growth_percent is not None else None,
    }


def _layer_report(change: LayerChange, job: Job) -> dict[str, Any]:
    layer = change.layer
    return {
        "digest": layer.digest,
        "made_by": layer.made_by,
        "compressed": layer.compressed,
        "uncompressed": layer.uncompressed,
        "status": change.status,
        "previous_digest": change.previous.digest if change.previous else None,
        "pushed": _was_pushed(change, job),
    }


def _cache_report(job: Job) -> dict[str, Any] | None:
    if job.built is None:
        return None
    steps = [step for step in job.built.steps if _DOCKERFILE_STEP.match(step.name)]
    return {
        "steps": len(steps),
        "cached": sum(1 for step in steps if step.cached),
        "cached_steps": [step.name for step in steps if step.cached],
    }


def _scan_report(scan: ScanResult | None) -> dict[str, Any] | None:
    if scan is None:
        return None
    return {
        "status": scan.status,
        "counts": dict(scan.counts),
        "completed_at": scan.completed_at,
        "blocking": [_finding(f) for f in scan.blocking],
        "ignored": [_finding(f) for f in scan.ignored],
        "findings": [_finding(f) for f in scan.findings],
    }


def _finding(finding: Any) -> dict[str, str]:
    return {
        "name": finding.name,
        "severity": finding.severity,
        "package": finding.package,
        "version": finding.version,
        "uri": finding.uri,
    }


def _was_pushed(change: LayerChange, job: Job) -> bool:
    """Whether this run's push uploaded the layer: the engine names layers by a short id,
    the blob digest's on the containerd store and the diff ID's on the classic one."""
    if not job.uploaded:
        return False
    ids = {
        change.layer.digest.removeprefix("sha256:")[:12],
        change.layer.diff_id.removeprefix("sha256:")[:12],
    }
    return bool(ids & {short.removeprefix("sha256:")[:12] for short in job.uploaded})


def _pushed_bytes(job: Job) -> int:
    if job.sizes is None:
        return 0
    return sum(c.layer.compressed for c in job.sizes.changes if _was_pushed(c, job))


def _links(job: Job) -> list[tuple[str, str]]:
    """The ECR console's pages of the image and its repository (a registry of AWS only)."""
    result = job.result()
    ecr = ecr_account_region(result.registry)
    if not result.digest or ecr is None:
        return []
    account, region = ecr
    console = (
        f"https://{region}.console.aws.amazon.com/ecr/repositories/private/{account}/{result.repository}"
    )
    return [
        ("image", f"{console}/_/image/{result.digest}/details?region={region}"),
        ("repository", f"{console}?region={region}"),
    ]


def _overview(jobs: Sequence[Job], refused: bool) -> str:
    rows = []
    for job in jobs:
        result, diff = job.result(), job.sizes
        rows.append(
            (
                github.markdown_text(job.name),
                github.markdown_code(result.repository),
                github.markdown_text(job.outcome),
                _size_cell(diff),
                _growth_cell(diff),
                github.markdown_code(result.digest),
            )
        )
    title = "### Lambda images not deployed" if refused else "### Lambda images published"
    header = ("image", "repository", "result", "size", "against the previous image", "digest")
    return f"{title}\n\n" + github.markdown_table(header, rows)


def _image_section(job: Job, refused: Mapping[str, str], heading: str) -> str:
    result, diff = job.result(), job.sizes
    name = job.name or result.repository
    if job.name in refused:
        title = f"{heading} ⛔ {github.markdown_text(name)}: not deployed"
        lead = f"> {github.markdown_text(refused[job.name])}\n>\n> No environment tag moved.\n\n"
    elif refused:
        title = f"{heading} ⏸ {github.markdown_text(name)}: passed, not deployed"
        lead = "> Another image of this release was refused, so no environment tag moved.\n\n"
    else:
        title = f"{heading} ✅ {github.markdown_text(name)}: {github.markdown_text(job.outcome)}"
        lead = ""
    rows: list[tuple[str, str]] = [
        (
            "tags",
            ", ".join(
                github.markdown_code(ref.rsplit(":", 1)[-1]) for ref in _references(job, bool(refused))
            ),
        ),
    ]
    if diff is not None:
        rows.append(("size", _size_cell(diff)))
        rows.append((f"against {_env(job)}'s previous image", _growth_cell(diff)))
        rows.append(("pushed", _pushed_cell(job)))
    cache = _cache_report(job)
    if cache is not None:
        rows.append(("build cache", f"{cache['cached']} of {cache['steps']} Dockerfile steps from cache"))
    if job.scan is not None:
        rows.append(("scan", _scan_cell(job.scan)))
    links = _links(job)
    if links:
        rows.append(("links", " · ".join(f"[{text}]({url})" for text, url in links)))
    # The image heads the table (a GitHub table must have a header): its cell is escaped already.
    table = (
        f"| image | {github.markdown_code(result.image_uri or result.repository)} |\n|---|---|\n"
        + "".join(f"| **{github.markdown_text(key)}** | {value} |\n" for key, value in rows)
    )
    parts = [title, "", lead + table]
    if diff is not None and diff.changes:
        parts.append(_layer_table(job, diff))
        parts.append(_layer_chart(diff))
    if job.scan is not None and (job.scan.blocking or job.scan.ignored):
        parts.append(_findings_table(job.scan))
    return "\n".join(parts)


def _env(job: Job) -> str:
    return github.markdown_text(job.plan.inputs.env)


def _size_cell(diff: SizeDiff | None) -> str:
    if diff is None:
        return ""
    current = diff.current
    compressed = f"{human_bytes(current.compressed)} compressed"
    if current.uncompressed is None:
        return f"{compressed} (uncompressed size unknown)"
    share = current.uncompressed / MAX_IMAGE_BYTES
    bar = "█" * round(share * 20) + "░" * (20 - round(share * 20))
    return (
        f"**{human_bytes(current.uncompressed)}** uncompressed · {compressed}<br>"
        f"<code>{bar}</code> {share:.1%} of Lambda's 10 GB"
    )


def _growth_cell(diff: SizeDiff | None) -> str:
    if diff is None:
        return ""
    if diff.previous is None:
        return "first image under this environment tag"
    growth = diff.growth or 0
    percent = f" ({diff.growth_percent:+.1f}%)" if diff.growth_percent is not None else ""
    sign = "+" if growth > 0 else "-" if growth < 0 else "±"
    changed = (
        f"{diff.count('reused')} reused, {diff.count('rebuilt')} rebuilt, {diff.count('new')} new, "
        f"{len(diff.removed)} removed"
    )
    same = " (the same image)" if diff.previous.digest == diff.current.digest else ""
    return f"**{sign}{human_bytes(abs(growth))}**{percent}{same} · layers: {changed}"


def _pushed_cell(job: Job) -> str:
    if not job.built_here:
        return "nothing: the registry had the image"
    pushed = [c for c in job.sizes.changes if _was_pushed(c, job)] if job.sizes else []
    if not pushed:
        return "no layer: the registry had them all"
    return f"{human_bytes(sum(c.layer.compressed for c in pushed))} in {len(pushed)} layer(s)"


def _scan_cell(scan: ScanResult) -> str:
    counts = ", ".join(f"{n} {github.markdown_text(s.lower())}" for s, n in scan.counts if n) or "no findings"
    verdict = (
        f"**{len(scan.blocking)} blocking**"
        if scan.blocking
        else "passed" + (f" ({len(scan.ignored)} accepted)" if scan.ignored else "")
    )
    return f"{verdict} · {counts} · {github.markdown_text(scan.status.lower())}"


def _layer_table(job: Job, diff: SizeDiff) -> str:
    rows = []
    for number, change in enumerate(diff.changes[:SHOWN_LAYERS], start=1):
        layer = change.layer
        size = human_bytes(layer.uncompressed) if layer.uncompressed is not None else "?"
        before = ""
        if change.status == "rebuilt" and change.previous is not None:
            delta = _layer_size(change.layer) - _layer_size(change.previous)
            before = f"{'+' if delta >= 0 else '-'}{human_bytes(abs(delta))}"
        elif change.status == "new":
            before = f"+{human_bytes(_layer_size(layer))}"
        status = {"reused": "reused", "rebuilt": "🔁 rebuilt", "new": "🆕 new"}[change.status]
        rows.append(
            (
                str(number),
                github.markdown_code(_short(layer.made_by) or "(no history)"),
                size,
                human_bytes(layer.compressed),
                status,
                before,
                "⬆" if _was_pushed(change, job) else "",
            )
        )
    for layer in diff.removed[:SHOWN_LAYERS]:
        rows.append(
            ("", github.markdown_code(_short(layer.made_by) or "(no history)"), "", "", "✖ removed", "", "")
        )
    more = len(diff.changes) - SHOWN_LAYERS
    note = f"\n{more} more layers are in the `report` output.\n" if more > 0 else ""
    header = ("#", "Dockerfile line", "size", "compressed", "change", "size change", "pushed")
    table = github.markdown_table(header, rows)
    return f"<details open><summary>Layers ({len(diff.changes)})</summary>\n\n{table}{note}\n</details>\n"


def _layer_size(layer: Any) -> int:
    return int(layer.uncompressed if layer.uncompressed is not None else layer.compressed)


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _layer_chart(diff: SizeDiff) -> str:
    """Layer sizes as bars, the previous image's counterparts as a line."""
    unit, scale = _chart_unit(max(_layer_size(c.layer) for c in diff.changes))
    bars = [round(_layer_size(c.layer) / scale, 2) for c in diff.changes]
    lines = [
        "```mermaid",
        # A short chart: it sits between the layer table and the timeline.
        "---",
        "config:",
        "  xyChart:",
        "    height: 320",
        "---",
        "xychart-beta",
        f'    title "Layer sizes ({unit}, {_kind(diff)})"',
        "    x-axis [" + ", ".join(f'"L{n}"' for n in range(1, len(bars) + 1)) + "]",
        f'    y-axis "{unit}"',
        "    bar [" + ", ".join(str(b) for b in bars) + "]",
    ]
    if diff.previous is not None:
        before = [
            round(_layer_size(c.previous) / scale, 2)
            if c.previous is not None
            else (bars[i] if c.status == "reused" else 0)
            for i, c in enumerate(diff.changes)
        ]
        lines.append("    line [" + ", ".join(str(b) for b in before) + "]")
    lines.append("```")
    legend = "Bars: this image's layers (L1 is the first); line: the previous image's counterpart."
    return "\n".join(lines) + "\n\n" + (legend if diff.previous is not None else "") + "\n"


def _kind(diff: SizeDiff) -> str:
    return "uncompressed" if all(c.layer.uncompressed is not None for c in diff.changes) else "compressed"


def _chart_unit(biggest: int) -> tuple[str, float]:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if biggest >= scale:
            return unit, scale
    return "bytes", 1.0


def _findings_table(scan: ScanResult) -> str:
    rows = []
    for finding, verdict in [
        *((f, "blocking") for f in scan.blocking),
        *((f, "accepted") for f in scan.ignored),
    ][:SHOWN_FINDINGS]:
        name = github.markdown_text(finding.name)
        if finding.uri.startswith("https://"):
            name = f"[{name}]({finding.uri.replace(')', '%29').replace(' ', '%20')})"
        rows.append(
            (
                name,
                github.markdown_text(finding.severity.lower()),
                github.markdown_code(f"{finding.package} {finding.version}".strip()),
                verdict,
            )
        )
    return "Findings at or above the gate:\n\n" + github.markdown_table(
        ("finding", "severity", "package", "verdict"), rows
    )


def _timeline(stages: Sequence[Stage]) -> str:
    """The stages as a Gantt chart: milliseconds from the first stage, one section per image."""
    began = min(stage.started for stage in stages)
    sections: dict[str, list[Stage]] = {}
    for stage in stages:
        sections.setdefault(stage.image, []).append(stage)
    total = max(stage.started + stage.seconds for stage in stages) - began
    # A tick a second, or fewer for longer runs: the axis reads minutes:seconds.
    tick = next(
        (t for limit, t in ((12, "1second"), (60, "5second"), (300, "30second")) if total <= limit), "1minute"
    )
    lines = [
        "```mermaid",
        "gantt",
        f"    title Publish stages ({total:.1f} s)",
        "    dateFormat x",
        "    axisFormat %M:%S",
        f"    tickInterval {tick}",
    ]
    for image, own in sections.items():
        lines.append(f"    section {_mermaid_name(image) or 'run'}")
        for number, stage in enumerate(own):
            start = round((stage.started - began) * 1000)
            end = start + max(1, round(stage.seconds * 1000))
            state = "done" if stage.ok else "crit"
            label = f"{_mermaid_name(stage.name)} {stage.seconds:.1f}s"
            lines.append(f"    {label} :{state}, s{number}{_mermaid_id(image)}, {start}, {end}")
    lines.append("```")
    return "#### Timeline\n\n" + "\n".join(lines) + "\n"


def _mermaid_name(text: str, limit: int = 60) -> str:
    """Text for a Mermaid label: its own syntax characters (`:`, `;`, `#`, quotes) would end
    or change the line, so only a safe alphabet is kept."""
    cleaned = " ".join(_MERMAID_UNSAFE.sub(" ", text).split())
    return cleaned[:limit]


def _mermaid_id(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())[:20]


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
