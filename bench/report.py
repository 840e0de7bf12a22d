"""Pure part of the benchmark: what a log says happened, medians, goals, and the markdown.

No I/O here, so the table and the goal verdicts can be checked without running anything.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from entrypoint.build.buildlog import LogReader

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from bench.approaches import ApproachName
    from bench.cases import Case

# What happened to the `pip install` step: it ran, came from a cache, or no build ran at all.
DependencyStep = Literal["ran", "cached", "no build"]

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
README_SECTION = "## Benchmark"
RERUN_SENTENCE = (
    "Rerun it with `bash bench/run.sh` (`--runs N` for N samples per case, default 3); it "
    "rewrites `bench/results.md` and the block below."
)

_FROM_CACHE = re.compile(r"^\s*from cache: (.*)$", re.MULTILINE)
_STEP_HEADER = re.compile(r"^#(\d+) \[[^\]]*\] RUN .*pip install", re.MULTILINE)


@dataclass(frozen=True)
class Observation:
    skipped: bool
    dependencies: DependencyStep


def observe_action(log: str) -> Observation:
    """From the action's log: `build skipped`, and the steps it lists as `from cache: ...`."""
    if "build skipped" in log:
        return Observation(skipped=True, dependencies="no build")
    cached = " ".join(_FROM_CACHE.findall(log))
    return Observation(skipped=False, dependencies="cached" if "pip install" in cached else "ran")


def observe_plain(log: str) -> Observation:
    """From BuildKit's plain progress in `docker build`'s output: did the pip step come from
    the cache? Read as the action reads its own build (on the containerd store a step
    imported from the inline cache is unpacked, not marked CACHED)."""
    header = _STEP_HEADER.search(log)
    if header is None:
        return Observation(skipped=False, dependencies="no build")
    reader = LogReader()
    for line in log.splitlines():
        reader.feed(line)
    cached = reader.steps[header.group(1)].cached
    return Observation(skipped=False, dependencies="cached" if cached else "ran")


@dataclass(frozen=True)
class Sample:
    case: str
    approach: ApproachName
    run: int
    seconds: float
    observation: Observation
    load: float  # 1-minute load average just before the sample


@dataclass(frozen=True)
class CaseResult:
    case: Case
    action: tuple[Sample, ...]
    plain: tuple[Sample, ...]
    # plain docker with --cache-from the previous image and the inline cache ("careful plain")
    careful: tuple[Sample, ...] = ()

    @property
    def action_median(self) -> float:
        return statistics.median(s.seconds for s in self.action)

    @property
    def plain_median(self) -> float:
        return statistics.median(s.seconds for s in self.plain)

    @property
    def ratio(self) -> float:
        """action / plain: below 1 the action is faster."""
        return self.action_median / self.plain_median

    @property
    def careful_median(self) -> float | None:
        return statistics.median(s.seconds for s in self.careful) if self.careful else None

    @property
    def careful_ratio(self) -> float | None:
        """action / careful plain: below 1 the action is faster."""
        careful = self.careful_median
        return self.action_median / careful if careful else None

    def notes(self) -> str:
        parts = (
            _describe("action", self.action),
            _describe("plain", self.plain),
            _describe("careful", self.careful) if self.careful else "",
        )
        return "; ".join(part for part in parts if part)


def _what_happened(sample: Sample) -> str:
    if sample.observation.skipped:
        return "build skipped"
    return {
        "cached": "dependency layer cached",
        "ran": "pip install ran",
        "no build": "no dependency step seen",
    }[sample.observation.dependencies]


def _describe(approach: str, samples: Sequence[Sample]) -> str:
    n = len(samples)
    counts: dict[str, int] = {}
    for s in samples:
        what = _what_happened(s)
        counts[what] = counts.get(what, 0) + 1
    return f"{approach}: " + ", ".join(f"{what} {k}/{n}" for what, k in counts.items())


def group(cases: Sequence[Case], samples: Sequence[Sample]) -> list[CaseResult]:
    results = []
    for case in cases:
        action = tuple(s for s in samples if s.case == case.key and s.approach == "action")
        plain = tuple(s for s in samples if s.case == case.key and s.approach == "plain")
        careful = tuple(s for s in samples if s.case == case.key and s.approach == "careful")
        if action and plain:
            results.append(CaseResult(case, action, plain, careful))
    return results


@dataclass(frozen=True)
class Goal:
    text: str
    verdict: Literal["PASS", "MISS", "not measured"]
    measured: str


def goals(results: Sequence[CaseResult]) -> list[Goal]:
    by_key = {r.case.key: r for r in results}
    out: list[Goal] = []

    text = "no change: action under 3 s and at least 10x faster than plain"
    r = by_key.get("no-change")
    if r is None:
        out.append(Goal(text, "not measured", ""))
    else:
        speedup = r.plain_median / r.action_median
        ok = r.action_median < 3.0 and speedup >= 10.0
        out.append(Goal(text, _verdict(ok), f"{r.action_median:.1f} s, {speedup:.1f}x faster"))

    for key, title in (("code", "code changed"), ("chain", "three successive code changes")):
        out.append(
            _reuses_dependencies(
                f"{title}: action at least 2x faster than plain, dependency layer cached", by_key.get(key)
            )
        )

    text = (
        "every case: action never slower than careful plain (5 % allowed for the noise of a "
        "shared 2-core machine)"
    )
    with_careful = [r for r in results if r.careful_ratio is not None]
    if not with_careful:
        out.append(Goal(text, "not measured", ""))
    else:
        worst = max(with_careful, key=lambda r: r.careful_ratio or 0.0)
        ratio = worst.careful_ratio or 0.0
        out.append(
            Goal(text, _verdict(ratio <= 1.05), f"worst: {worst.case.title}, action/careful {ratio:.2f}")
        )

    text = "clean: action no more than 10 % slower than plain"
    r = by_key.get("clean")
    if r is None:
        out.append(Goal(text, "not measured", ""))
    else:
        slower = (r.ratio - 1.0) * 100.0
        word = "slower" if slower >= 0 else "faster"
        out.append(Goal(text, _verdict(r.ratio <= 1.10), f"{abs(slower):.0f} % {word}"))
    return out


def _reuses_dependencies(text: str, r: CaseResult | None) -> Goal:
    """Code-only changes: at least 2x faster than plain docker, the pip step cached every time."""
    if r is None:
        return Goal(text, "not measured", "")
    speedup = r.plain_median / r.action_median
    cached = sum(s.observation.dependencies == "cached" for s in r.action)
    ok = speedup >= 2.0 and cached == len(r.action)
    return Goal(text, _verdict(ok), f"{speedup:.1f}x faster, cached in {cached}/{len(r.action)} runs")


def _verdict(ok: bool) -> Literal["PASS", "MISS"]:
    return "PASS" if ok else "MISS"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A markdown table; ``align`` has one letter per column, l(eft) or r(ight)."""
    rule = "|".join({"l": "---", "r": "--:"}[a] for a in align)
    lines = ["| " + " | ".join(header) + " |", f"|{rule}|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(
    results: Sequence[CaseResult],
    samples: Sequence[Sample],
    machine: Mapping[str, str],
    runs: int,
    wall_seconds: float,
    engine_note: str = "",
) -> str:
    """The markdown block for bench/results.md and the README (no top-level heading);
    `engine_note`, a paragraph on the engine and what differs from the host run, goes
    after the first sentence (sid engines)."""
    summary = _table(
        (
            "case",
            "action median s",
            "plain median s",
            "careful median s",
            "action/plain",
            "action/careful",
            "notes",
        ),
        [
            (
                r.case.title,
                f"{r.action_median:.1f}",
                f"{r.plain_median:.1f}",
                f"{r.careful_median:.1f}" if r.careful_median is not None else "",
                f"{r.ratio:.2f}",
                f"{r.careful_ratio:.2f}" if r.careful_ratio is not None else "",
                r.notes(),
            )
            for r in results
        ],
        "lrrrrrl",
    )
    goal_table = _table(
        ("goal", "result", "measured"),
        [(g.text, f"**{g.verdict}**", g.measured) for g in goals(results)],
        "lll",
    )
    titles = {r.case.key: r.case.title for r in results}
    order = list(titles)
    sample_table = _table(
        ("case", "approach", "run", "seconds", "load before", "what happened"),
        [
            (
                titles.get(s.case, s.case),
                s.approach,
                str(s.run),
                f"{s.seconds:.2f}",
                f"{s.load:.2f}",
                _what_happened(s),
            )
            for s in sorted(
                samples,
                key=lambda s: (order.index(s.case) if s.case in order else len(order), s.approach, s.run),
            )
        ],
        "llrrrl",
    )
    cases = "\n".join(f"- **{r.case.title}**: {r.case.what}." for r in results)
    machine_lines = "\n".join(f"- {k}: {v}" for k, v in machine.items())
    minutes, seconds = divmod(round(wall_seconds), 60)
    return f"""Measured {machine.get("date", "")}: median of {runs} run(s) per case and approach, \
each on a freshly emptied Docker engine (our images and all build cache removed, base images \
kept), as on a new GitHub runner. The whole benchmark, untimed setups included, took \
{minutes} min {seconds:02d} s.
{f"{chr(10)}{engine_note.strip()}{chr(10)}" if engine_note else ""}
{summary}

{goal_table}

What is compared, on the example SSE Lambda (`examples/sse-streaming-lambda`, FastAPI and \
uvicorn installed by pip) in a temporary git repository:

- **action**: `python -m entrypoint publish` (its venv exists already); it builds with \
`--cache-from` the environment's previous image, and skips the build when an image from the \
same sources is in the repository.
- **plain**: an ECR token from a process of its own (boto3's GetAuthorizationToken, as `aws \
ecr get-login-password` gets it), `docker login --password-stdin`, `DOCKER_BUILDKIT=1 \
docker build`, `docker tag` to the environment and `latest`, `docker push` of the three tags.
- **careful**: plain, with the layer cache as careful build-push-action users set it up: \
`--cache-from` the environment's previous image and `BUILDKIT_INLINE_CACHE=1`.

{cases}

Each approach publishes to its own repository in each case, on its own freshly started \
registry (so no `docker push` mounts layers across repositories, which ECR does not do by \
default), and each "previous publish" is made by the same approach, untimed.

Samples:

{sample_table}

Machine:

{machine_lines}
"""


def results_file(block: str, engine: str = "host", cases: Sequence[str] = (), runs: int | None = None) -> str:
    """A results file: the host's (bench/results.md, copied into the README) or a sid
    engine's (bench/results-<engine>.md, which says how it was made)."""
    if engine == "host":
        return (
            "# Benchmark results (issue 3)\n\n"
            "Written by `bash bench/run.sh` (`--runs N` for N samples per case, default 3), which "
            "also copies it into the Benchmark section of README.md.\n\n"
            f"{block}"
        )
    command = f"bash bench/run.sh --engine {engine}"
    if runs is not None:
        command += f" --runs {runs}"
    if cases:
        command += f" --cases {','.join(cases)}"
    return (
        f"# Benchmark results on the {engine} engine (Docker 28.5)\n\n"
        f"Written by `{command}`: the same benchmark as `bench/results.md`, on Debian sid's "
        f"Docker 28.5 engine with the {engine} image store instead of the host's Docker 20.10; "
        "what differs is said below. README.md is not touched.\n\n"
        f"{block}"
    )


def replace_readme_block(readme: str, block: str) -> str:
    """README with the text between the bench markers replaced by ``block``.

    Without the markers, a `## Benchmark` section holding them is added at the end.
    """
    wrapped = f"{README_START}\n{block.strip()}\n{README_END}"
    start, end = readme.find(README_START), readme.find(README_END)
    if start != -1 and end > start:
        return readme[:start] + wrapped + readme[end + len(README_END) :]
    return readme.rstrip("\n") + f"\n\n{README_SECTION}\n\n{RERUN_SENTENCE}\n\n{wrapped}\n"


def write_block(block: str, results: Path, title: str, readme: Path, markers: tuple[str, str]) -> None:
    """`block` into its results file (under `title`) and between `markers` in the README."""
    results.write_text(f"# {title}\n\n{block}")
    start, end = markers
    head, _, rest = readme.read_text().partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{block}{end}{tail}")
