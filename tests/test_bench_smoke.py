"""The benchmark runs: ``bench/run.py --smoke`` against the asyncio floor and flask-pine-ws.

Not a speed test (figures belong in docs/benchmarks.md): it checks that the
quick mode of the benchmark still works end to end against a real gunicorn,
and that what it measured is sane: every line and every byte arrived, in
order, and every client got the fan-out line; in the crowds (small here),
every client got exactly the file's last 10 lines and then the appended
line, and every watcher every line once, in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# the benchmark starts gunicorn and the asyncio floor as child processes
pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--smoke", "--no-docs", "--out", str(out)],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert set(results["targets"]) == {"asyncio", "pine"}
    for name, run in results["capacity"].items():
        # every byte the floor was asked to send arrived (the rate is computed from them)
        assert run["received_bytes"] == run["messages"] * run["size"] > 0, (name, run)
        assert run["msgs_s"] > 0, (name, run)
    for name, target in results["targets"].items():
        assert "error" not in target, (name, target["error"])
        latency = target["latency"]
        assert latency["sent"] > 0
        assert latency["received"] == latency["sent"], (name, latency)
        assert latency["lost"] == 0 and latency["duplicates"] == 0 and latency["in_order"]
        # one write-to-receive time per line received, each a real (positive) delay
        assert len(latency["samples_ms"]) == latency["received"], (name, latency)
        assert all(v > 0 for v in latency["samples_ms"]), (name, latency)
        burst = target["burst"]
        assert burst["complete"] and burst["in_order"], (name, burst)
        assert burst["received"] == burst["bytes"] and burst["first_bad_byte"] is None
        assert burst["mb_s"] > 0
        assert set(target["fanout"]) == {"1", "10"}
        for n, fan in target["fanout"].items():
            assert fan["clients"] == int(n), (name, n, fan)
            assert fan["missing"] == fan["failed_connects"] == fan["never_followed"] == 0
            assert fan["last_ms"] > 0 and fan["rss_mb"] > 0
        rotation = target["rotation"]
        assert rotation["lost"] == 0, (name, rotation)
        assert rotation["rename_ms"] > 0 and rotation["truncate_ms"] > 0
        # lines appended to a 10 GiB (sparse) file reach the client: it began at the end
        filesize = target["filesize"]
        assert "error" not in filesize, (name, filesize)
        assert filesize["sent"] > 0 and filesize["received"] == filesize["sent"], (name, filesize)
        assert filesize["lost"] == 0 and filesize["duplicates"] == 0 and filesize["in_order"]
        backlog = target["backlog"]
        assert "error" not in backlog, (name, backlog)
        assert backlog["connected"] == backlog["clients"] == 20, (name, backlog)
        assert backlog["with_backlog"] == 20 and backlog["wrong_backlog"] == 0, (name, backlog)
        # each client: the file's last 10 lines, then the line appended, nothing else
        assert backlog["exact"] == 20 and backlog["line_missing"] == 0, (name, backlog)
        assert 0 < backlog["median_client_ms"] <= backlog["last_ms"], (name, backlog)
        assert backlog["line_last_ms"] > 0 and backlog["rss_mb"] > 0, (name, backlog)
        # two rounds, the median one shown: its figure is one of the rounds'
        rounds = backlog["rounds_last_ms"]
        assert len(rounds) == 2 and backlog["last_ms"] in rounds, (name, backlog)
        # the server worked for the burst, and its threads were switched
        assert backlog["cpu_ms_per_client"] > 0 and backlog["switches_per_client"] > 0, backlog
        watchers = target["watchers"]
        assert "error" not in watchers, (name, watchers)
        assert watchers["connected"] == watchers["clients"] == 50, (name, watchers)
        assert watchers["never_followed"] == 0 and watchers["missing"] == 0, (name, watchers)
        # every watcher got every line once, in order
        assert watchers["exact"] == 50 and watchers["appends"] == 5, (name, watchers)
        assert 0 < watchers["median_client_ms"] <= watchers["last_max_ms"], (name, watchers)
        assert watchers["rss_mb"] > 0 and watchers["threads"] > 0, (name, watchers)
    # the report prints the crowds' targets for flask-pine-ws
    assert "10 lines: all have them" in proc.stdout, proc.stdout
    assert "50 idle watchers on one worker: every line to every one" in proc.stdout
