"""bench/report.py's page: the shape docs/benchmarks.md has, kept by every regeneration.

The page is written by ``python bench/run.py`` from a run's results; a full run takes
minutes, so these tests render the page in-process from a run whose targets all failed
(every table then says so), which exercises the whole of the page's prose.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The page's sections, in order: a results page, with its history left out.
SECTIONS = ["# Benchmarks", "## How to run it", "## What is measured", "## The run shown",
            "## Summary: the project's targets", "## Results", "## Plots", "## What limits it"]


@pytest.fixture(scope="module")
def report() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import report as module
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


def _failed_run() -> dict[str, Any]:
    machine = {"date": "2026-01-01T00:00:00+00:00", "flask_pine_ws": "0000000", "nproc": 2,
               "cpu": "a CPU", "memory_gib": 1.0, "kernel": "6.0",
               "inotify_max_user_instances": 128, "python": "3.11.0",
               "packages": {"flask": "3"}, "websocketd": "websocketd 0", "node": "v0",
               "frontail": "0", "tail": "tail 0"}
    plan = {"rate": 200.0, "duration": 10.0, "burst_bytes": 50_000_000, "appends": 3,
            "idle": 10.0, "rotations": 5, "filesize_duration": 3.0, "fanout": [1, 1000],
            "cases": ["main"], "backlog_clients": 1000, "backlog_lines": 10,
            "watchers": 10_000}
    targets = {name: {"label": name, "error": "did not start"}
               for name in ("asyncio", "frontail", "pine", "pine-deflate")}
    return {"command": "python bench/run.py", "seconds": 1.0, "machine": machine,
            "plan": plan, "targets": targets}


def _headings(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^#{1,2} ", line)]


def test_the_page_is_a_results_page(report: Any) -> None:
    text = report.page(_failed_run())
    headings = _headings(text)
    assert [h for h in headings if h in SECTIONS] == SECTIONS, headings
    assert "did not start" in text  # the tables say why a target has no figures
    assert "| latency p50 ≤ 1.5x asyncio floor (ms) | n/a: " in text  # one targets table
    for diary in ("previous", "fixed twice", "the run before"):
        assert diary not in text.lower(), diary


def test_every_block_of_the_page_says_whether_it_runs(report: Any) -> None:
    """tests/test_docs.py's rule for every page: a fence follows a test or not-run marker."""
    lines = report.page(_failed_run()).splitlines()
    fences = [i for i, line in enumerate(lines) if line.startswith("```")][::2]
    assert fences
    for i in fences:
        assert re.match(r"^<!-- (test: [\w-]+|not run: .+) -->$", lines[i - 1]), lines[i - 1]


def test_the_committed_page_has_the_generators_shape() -> None:
    """docs/benchmarks.md as committed is what the generator writes, section for section."""
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    committed = _headings(text)
    assert [h for h in committed if h in SECTIONS] == SECTIONS, committed
    for diary in ("previous", "fixed twice", "the run before"):
        assert diary not in text.lower(), diary
    assert committed.index("## What limits it") < committed.index("## The viewer over a large file")
