"""The benchmark runs: ``bench/run.py --smoke`` against the asyncio floor and flask-pine-ws.

Not a speed test (figures belong in docs/benchmarks.md): it checks that the
quick mode of the benchmark still works end to end against a real gunicorn,
and that what it measured is sane: every line and every byte arrived, in
order, and every client got the fan-out line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--smoke", "--no-docs", "--out", str(out)],
        capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert set(results["targets"]) == {"asyncio", "pine"}
    assert results["capacity"]["small"]["msgs_s"] > 0
    for name, target in results["targets"].items():
        assert "error" not in target, (name, target["error"])
        latency = target["latency"]
        assert latency["sent"] > 0
        assert latency["received"] == latency["sent"], (name, latency)
        assert latency["lost"] == 0 and latency["duplicates"] == 0 and latency["in_order"]
        assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        burst = target["burst"]
        assert burst["complete"] and burst["in_order"], (name, burst)
        assert burst["received"] == burst["bytes"] and burst["mb_s"] > 0
        assert set(target["fanout"]) == {"1", "10"}
        for n, fan in target["fanout"].items():
            assert fan["clients"] == int(n), (name, n, fan)
            assert fan["missing"] == fan["failed_connects"] == fan["never_followed"] == 0
            assert fan["last_ms"] > 0 and fan["rss_mb"] > 0
        rotation = target["rotation"]
        assert rotation["lost"] == 0, (name, rotation)
        assert rotation["rename_ms"] > 0 and rotation["truncate_ms"] > 0
        filesize = target["filesize"]
        assert "error" not in filesize, (name, filesize)
        assert filesize["lost"] == 0 and filesize["file_bytes"] == 10 * 2**30
