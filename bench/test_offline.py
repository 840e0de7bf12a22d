"""The Dockerfile variant of the sid-engine runs and the per-engine results files.

Run with `.venv/bin/pytest bench`. Pure: nothing is built or started.
"""

from __future__ import annotations

import pytest

from bench.cases import EXAMPLE
from bench.offline import offline_dockerfile
from bench.report import results_file
from bench.run import RESULTS, results_path


def test_only_the_pip_step_changes() -> None:
    original = (EXAMPLE / "Dockerfile").read_text()
    variant = offline_dockerfile(original)
    removed = [line for line in original.splitlines() if line not in variant.splitlines()]
    added = [line for line in variant.splitlines() if line not in original.splitlines()]
    assert len(removed) == len(added) == 2, (removed, added)
    assert added[0].startswith("RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse python3 -m venv")
    assert "pip install --no-index --find-links /wheelhouse --no-cache-dir -r requirements.txt" in added[1]
    # No layer more: the same number of instructions.
    assert variant.count("\nRUN ") == original.count("\nRUN ")
    assert variant.count("\nCOPY ") == original.count("\nCOPY ")


def test_a_dockerfile_without_one_pip_step_is_refused() -> None:
    with pytest.raises(RuntimeError, match="expected one"):
        offline_dockerfile("FROM scratch\nCOPY a /a\n")
    with pytest.raises(RuntimeError):
        offline_dockerfile("FROM x\nRUN pip install a\nRUN pip install b\n")


def test_results_files_per_engine() -> None:
    assert results_path("host") == RESULTS
    assert results_path("containerd").name == "results-containerd.md"
    host = results_file("block\n")
    assert host.startswith("# Benchmark results (issue 3)")
    assert "README.md" in host
    sid = results_file("block\n", engine="classic", cases=["clean", "code"], runs=3)
    assert "`bash bench/run.sh --engine classic --runs 3 --cases clean,code`" in sid
    assert sid.endswith("block\n")
