"""The viewer over a large file: search MB/s against grep, first and oldest lines, page memory.

Run from the repository root::

    python bench/viewer.py                 # a 1 GiB file, 5 runs each; writes bench/viewer.md
    python bench/viewer.py --mb 256 --runs 3
    python bench/viewer.py --search-only   # the search table only, printed (no file written)

- **Search**: the same file, page cache warm, ``grep -c`` against
  :func:`flask_pine_ws.search.scan` in-process, against
  :func:`~flask_pine_ws.search.stream_search` (what a search request runs:
  JSON lines, a regular expression in a child process) and against a
  ``GET <page>/search`` to ``flask-pine-ws serve`` (gunicorn, 127.0.0.1), the
  body read whole, for a literal with and without case and a regular
  expression. Medians of ``--runs``; MB/s is the file's size over the time.
- **Viewer**: ``flask-pine-ws serve`` on the file (127.0.0.1, a free port),
  Debian's headless Chromium: time until the page shows its first lines,
  until it shows the file's first line (the *Start* button: lines from byte
  0), and one page of scroll back (median of 10).
- **Memory**: an hour of 100 lines/s (360,000 lines of ~100 bytes) appended
  in ``--burst-seconds`` while the page follows; the page's JS heap (after a
  garbage collection, Chromium's ``Performance.getMetrics``) and DOM nodes
  before and after.

Writes the results as markdown to ``bench/viewer.md`` (and prints it);
``bench/report.py`` appends that file to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask_pine_ws.search import Query, scan, stream_search  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
LITERAL = "Traceback"
REGEX = r"order=[0-9]+ code=card"


def make_file(path: Path, size: int) -> None:
    """~100-byte lines, an error with a traceback every 1,000 lines."""
    block = []
    for i in range(10_000):
        if i % 1000 == 999:
            block.append(f"2025-03-14 09:26:{i % 60:02d}.{i % 1000:03d} ERROR [pay] charge "
                         f"failed order={i * 7919 % 100000} code=card_declined\n"
                         "Traceback (most recent call last):\n")
        else:
            block.append(f"2025-03-14 09:26:{i % 60:02d}.{i % 1000:03d} INFO  [http] GET "
                         f"/api/orders/{i * 7919 % 100000} 200 {i % 300}ms user={i % 977}\n")
    data = "".join(block).encode()
    with path.open("wb") as f:
        written = 0
        while written < size:
            f.write(data)
            written += len(data)


def median_time(fn: Callable[[], object], runs: int) -> tuple[float, object]:
    times = []
    result: object = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_search(path: Path, tmp: Path, runs: int) -> list[tuple[str, str, float, float, int]]:
    size = path.stat().st_size
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    proc, url = serve(path, tmp)
    try:
        return _bench_search(path, url, runs, size)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def _bench_search(path: Path, url: str, runs: int,
                  size: int) -> list[tuple[str, str, float, float, int]]:
    rows = []
    env = {**os.environ, "LC_ALL": "C"}
    for kind, pattern, grep_args in (("literal", LITERAL, ["-c", "-F"]),
                                     ("literal, any case", LITERAL.lower(), ["-c", "-F", "-i"]),
                                     ("regex", REGEX, ["-c", "-E"])):
        query = Query(pattern, regex=kind == "regex", ignore_case="any case" in kind)

        def grep(args: list[str] = grep_args, pat: str = pattern) -> int:
            out = subprocess.run(["grep", *args, pat, str(path)], capture_output=True,
                                 env=env, check=False)
            return int(out.stdout)

        def inproc(q: Query = query) -> int:
            return sum(1 for r in scan(str(path), q, limit=10**9) if "offset" in r)

        def child(q: Query = query) -> int:
            body = b"".join(stream_search(str(path), q, limit=10**9))
            return body.count(b'"offset"')

        def http(q: Query = query) -> int:
            args = urllib.parse.urlencode({"q": q.pattern, "re": "1" if q.regex else "0",
                                           "case": "0" if q.ignore_case else "1",
                                           "limit": "100000"})
            with urllib.request.urlopen(f"{url}{path.name}/search?{args}", timeout=600) as r:
                body: bytes = r.read()
            return body.count(b'"offset"')

        # Interleaved, round by round: a machine shared with other work slows
        # all three alike, not one of them.
        times: dict[str, list[float]] = {"grep": [], "scan": [], "child": [], "http": []}
        counts: dict[str, object] = {}
        for _ in range(runs):
            for name, fn in (("grep", grep), ("scan", inproc), ("child", child), ("http", http)):
                t, counts[name] = median_time(fn, 1)
                times[name].append(t)
        t_grep, t_scan, t_child, t_http = (statistics.median(times[k])
                                           for k in ("grep", "scan", "child", "http"))
        assert len(set(counts.values())) == 1, counts
        mb = size / 1e6
        matched = int(str(counts["grep"]))
        rows.append((kind, f"`{pattern}`", mb / t_grep, mb / t_scan, matched))
        rows.append((kind + ", as a request runs it", f"`{pattern}`", mb / t_grep,
                     mb / t_child, matched))
        rows.append((kind + ", over HTTP", f"`{pattern}`", mb / t_grep, mb / t_http, matched))
    return rows


def serve(path: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    out = tmp / "serve.txt"
    with out.open("wb") as fout:
        proc = subprocess.Popen([sys.executable, "-m", "flask_pine_ws", "serve", str(path),
                                 "--port", "0"], stdout=fout, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while not (match := re.search(r"(http://\S+/)", out.read_text())):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"the server did not start:\n{out.read_text()}")
        time.sleep(0.1)
    return proc, match[1]


def bench_viewer(path: Path, tmp: Path, burst_seconds: float) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    def until(page: object, script: str, timeout: float = 120) -> float:
        t0 = time.perf_counter()
        while not page.evaluate(script):  # type: ignore[attr-defined]
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"timed out: {script}")
            time.sleep(0.01)
        return time.perf_counter() - t0

    proc, url = serve(path, tmp)
    got: dict[str, float] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            t0 = time.perf_counter()
            page.goto(url + path.name)
            until(page, "Number(document.body.dataset.lines) > 0")
            got["first"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            page.click("#start")
            until(page, "document.body.dataset.top === '0' && "
                        "!!document.querySelector('#log .line.target')")
            got["oldest"] = time.perf_counter() - t0
            # One page of scroll back, from the middle of the file.
            page.click("#jump")
            until(page, "!document.body.dataset.paused && Number(document.body.dataset.lines) > 0")
            steps = []
            for _ in range(10):
                top = page.evaluate("document.body.dataset.top")
                t0 = time.perf_counter()
                page.evaluate("(() => { const l = document.getElementById('log');"
                              " l.scrollTop = 1; l.scrollTop = 0; })()")
                until(page, f"document.body.dataset.top !== '{top}' && "
                            "!document.body.dataset.loading")
                steps.append(time.perf_counter() - t0)
            got["page_back"] = statistics.median(steps)
            browser.close()

            # Memory: a fresh page on a fresh small file, an hour of lines in a burst.
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            small = tmp / "hour.log"
            small.write_text("start\n")
            proc2, url2 = serve(small, tmp)
            try:
                page.goto(url2 + small.name)
                until(page, "document.body.dataset.state === 'live'")

                def heap() -> tuple[float, float]:
                    cdp.send("HeapProfiler.collectGarbage")
                    metrics = {m["name"]: m["value"]
                               for m in cdp.send("Performance.getMetrics")["metrics"]}
                    return metrics["JSHeapUsedSize"] / 1e6, metrics["Nodes"]

                got["heap_before"], got["nodes_before"] = heap()
                lines = 360_000
                per_batch = 2000
                t0 = time.perf_counter()
                with small.open("a") as f:
                    for b in range(lines // per_batch):
                        f.write("".join(
                            f"2025-03-14 09:{(b * per_batch + i) // 6000 % 60:02d} INFO  [http] "
                            f"GET /api/orders/{b * per_batch + i} 200 12ms user=42 "
                            f"trace=0123456789abcdef\n" for i in range(per_batch)))
                        f.flush()
                        time.sleep(max(0.0, (b + 1) * burst_seconds * per_batch / lines
                                       - (time.perf_counter() - t0)))
                size = small.stat().st_size
                until(page, f"document.body.dataset.offset === '{size}'", timeout=600)
                got["burst_s"] = time.perf_counter() - t0
                time.sleep(1)
                got["heap_after"], got["nodes_after"] = heap()
                got["lines_kept"] = float(page.evaluate("Number(document.body.dataset.lines)"))
            finally:
                os.killpg(proc2.pid, signal.SIGTERM)
                proc2.wait(20)
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--burst-seconds", type=float, default=60.0)
    parser.add_argument("--dir", default=None, help="where to write the file (default: a temp dir)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "viewer.md"))
    parser.add_argument("--search-only", action="store_true",
                        help="measure the search only and print its table (writes no file)")
    args = parser.parse_args()
    command = "python bench/viewer.py" + "".join(
        f" {a}" for a in sys.argv[1:])
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        tmp = Path(name)
        path = tmp / "big.log"
        make_file(path, args.mb * 1024 * 1024)
        size = path.stat().st_size
        search_rows = bench_search(path, tmp, args.runs)
        viewer = {} if args.search_only else bench_viewer(path, tmp, args.burst_seconds)
    grep_version = subprocess.run(["grep", "--version"], capture_output=True,
                                  text=True, check=False).stdout.splitlines()[0]
    out = [
        "## The viewer over a large file",
        "",
        f"- Command: `{command}`; a file of {size / 2**20:,.0f} MiB of ~100-byte log lines "
        f"(`make_file` in `bench/viewer.py`), page cache warm.",
        f"- Date: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; "
        f"{os.cpu_count()} CPUs, Linux {platform.release()}, shared with other work; "
        f"Python {platform.python_version()}; {grep_version}, `LC_ALL=C`.",
        "",
        f"### Search (median of {args.runs} rounds, grep and ours in turn)",
        "",
        "| pattern | | grep -c MB/s | flask-pine-ws MB/s | ratio | matching lines |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for kind, pattern, g, p, n in search_rows:
        out.append(f"| {kind} | {pattern} | {g:,.0f} | {p:,.0f} | {p / g:.2f} | {n:,} |")
    if args.search_only:
        print("\n".join(out))
        return
    out += [
        "",
        "### The page",
        "",
        "| what | figure |",
        "|---|--:|",
        f"| first lines shown (page load to the last 1,000 lines) | {viewer['first']:.2f} s |",
        f"| oldest lines shown (*Start*: lines from byte 0) | {viewer['oldest']:.2f} s |",
        f"| one page of scroll back (median of 10) | {viewer['page_back'] * 1000:.0f} ms |",
        f"| JS heap after load | {viewer['heap_before']:.1f} MB |",
        f"| JS heap after an hour of 100 lines/s (360,000 lines, appended in "
        f"{viewer['burst_s']:.0f} s) | {viewer['heap_after']:.1f} MB |",
        f"| DOM nodes before / after | {viewer['nodes_before']:,.0f} / "
        f"{viewer['nodes_after']:,.0f} |",
        f"| lines kept in the page | {viewer['lines_kept']:,.0f} |",
        "",
    ]
    text = "\n".join(out)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
