"""The benchmark's pure parts: reading logs, goal verdicts, the README block.

Run with `.venv/bin/pytest bench`. Made-up numbers only: no real timing is asserted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.cases import CASES
from bench.report import (
    README_END,
    README_START,
    Observation,
    Sample,
    goals,
    group,
    observe_action,
    observe_plain,
    render,
    replace_readme_block,
)

if TYPE_CHECKING:
    from bench.approaches import ApproachName

PIP = "RUN python3 -m venv /opt/venv     && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt"


def test_action_log_skipped_cached_or_ran() -> None:
    assert observe_action("note: build skipped: nothing that goes into the image changed") == Observation(
        True, "no build"
    )
    cached = f"  from cache: [stage-1 3/6] WORKDIR /var/task; [stage-1 5/6] {PIP}\n"
    assert observe_action(cached) == Observation(False, "cached")
    assert observe_action("  from cache: [stage-1 3/6] WORKDIR /var/task\n") == Observation(False, "ran")
    assert observe_action("#10 DONE 5.8s\n") == Observation(False, "ran")


def test_plain_log_pip_step_cached_or_ran() -> None:
    header = f"#10 [stage-1 5/6] {PIP}\n#10 sha256:e057\n"
    assert observe_plain(header + "#10 DONE 5.8s\n") == Observation(False, "ran")
    assert observe_plain(header + "#10 CACHED\n") == Observation(False, "cached")
    assert observe_plain("Login Succeeded\n") == Observation(False, "no build")
    # The containerd store: the step's layers fetched and unpacked from the inline cache, nothing run.
    imported = (
        "#10 sha256:7e9105dccf1e 12.90MB / 12.90MB 0.2s done\n#10 extracting sha256:7e9105dccf1e 3.2s done\n"
    )
    assert observe_plain(header + imported + "#10 DONE 3.5s\n") == Observation(False, "cached")
    assert observe_plain(header + imported + "#10 0.512 Collecting fastapi\n") == Observation(False, "ran")


def sample(case: str, approach: ApproachName, seconds: float, obs: Observation) -> Sample:
    return Sample(case, approach, 1, seconds, obs, 0.5)


SKIP = Observation(True, "no build")
CACHED = Observation(False, "cached")
RAN = Observation(False, "ran")


def test_goals_pass_and_miss() -> None:
    samples = [
        sample("no-change", "action", 1.0, SKIP),
        sample("no-change", "plain", 12.0, RAN),
        sample("code", "action", 3.0, CACHED),
        sample("code", "plain", 9.0, RAN),
        sample("clean", "action", 22.0, RAN),
        sample("clean", "plain", 20.0, RAN),
    ]
    verdicts = [g.verdict for g in goals(group(CASES, samples))]
    # no change, code changed, three changes (not measured here), vs careful (none), clean
    assert verdicts == ["PASS", "PASS", "not measured", "not measured", "PASS"]

    samples[0] = sample("no-change", "action", 1.5, SKIP)  # 8x: not 10x
    samples[2] = sample("code", "action", 3.0, RAN)  # fast enough, but pip ran
    samples[4] = sample("clean", "action", 22.5, RAN)  # 12.5 % slower
    verdicts = [g.verdict for g in goals(group(CASES, samples))]
    assert verdicts == ["MISS", "MISS", "not measured", "not measured", "MISS"]


def test_the_chain_and_careful_plain_goals() -> None:
    samples = [
        sample("chain", "action", 2.0, CACHED),
        sample("chain", "plain", 9.0, RAN),
        sample("chain", "careful", 2.5, CACHED),
        sample("clean", "action", 21.0, RAN),
        sample("clean", "plain", 20.0, RAN),
        sample("clean", "careful", 20.5, RAN),
    ]
    found = {g.text.split(":")[0]: g for g in goals(group(CASES, samples))}
    assert found["three successive code changes"].verdict == "PASS"
    careful = found["every case"]
    assert careful.verdict == "PASS"
    assert careful.measured == "worst: clean, action/careful 1.02"
    samples[3] = sample("clean", "action", 22.0, RAN)  # 7 % slower than careful
    assert {g.text.split(":")[0]: g for g in goals(group(CASES, samples))}["every case"].verdict == "MISS"
    samples[0] = sample("chain", "action", 2.0, RAN)  # the chain broke: pip ran
    assert {g.text.split(":")[0]: g for g in goals(group(CASES, samples))}[
        "three successive code changes"
    ].verdict == "MISS"


def test_unmeasured_cases_are_said_so() -> None:
    samples = [sample("deps", "action", 9.0, RAN), sample("deps", "plain", 9.0, RAN)]
    assert {g.verdict for g in goals(group(CASES, samples))} == {"not measured"}


def test_render_has_table_samples_and_machine() -> None:
    samples = [sample("code", "action", 3.0, CACHED), sample("code", "plain", 9.0, RAN)]
    text = render(group(CASES, samples), samples, {"CPUs (nproc)": "2"}, 1, 125.0)
    notes = "action: dependency layer cached 1/1; plain: pip install ran 1/1"
    assert f"| code changed | 3.0 | 9.0 |  | 0.33 |  | {notes} |" in text
    assert "| code changed | action | 1 | 3.00 | 0.50 | dependency layer cached |" in text
    assert "- CPUs (nproc): 2" in text
    assert "2 min 05 s" in text


def test_readme_block_added_once_then_replaced() -> None:
    readme = "# Project\n\nText.\n"
    first = replace_readme_block(readme, "old results")
    assert first.startswith(readme.rstrip("\n"))
    assert first.count("## Benchmark") == 1
    assert f"{README_START}\nold results\n{README_END}" in first
    second = replace_readme_block(first + "\n## Later section\n", "new results")
    assert "old results" not in second
    assert f"{README_START}\nnew results\n{README_END}" in second
    assert second.count("## Benchmark") == 1
    assert second.endswith("## Later section\n")
