"""Quick figures for watch_file under gunicorn gthread (not a test: numbers for the notes).

Measures, against one worker serving tests/apps/watch_app.py:

- the write-to-receive latency of one line (median and p95 of many);
- the MB/s of a burst appended at once (binary mode; with and without
  permessage-deflate, which browsers always offer);
- the worker's threads and RSS with N idle watchers, and its CPU time
  (utime+stime from /proc/<pid>/stat) over 10 s idle with them.

Run from the repository root::

    python bench/watch_quick.py [--watchers 200] [--burst-mb 100] [--samples 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from websockets.sync.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server import Server, gunicorn_argv


def stats(srv: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.url}/stats", timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def open_ws(srv: Server, *, compression: bool = True, **params: Any) -> ClientConnection:
    url = f"{srv.ws_url}/watch?{urlencode(params)}"
    return connect(url, open_timeout=30, max_size=None,
                   compression="deflate" if compression else None)


def wait_subs(srv: Server, count: int) -> None:
    deadline = time.monotonic() + 120
    while stats(srv)["watchers"] != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"never reached {count} watchers")
        time.sleep(0.05)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def latency(srv: Server, log: Path, samples: int) -> list[float]:
    times = []
    with open_ws(srv, path=str(log), offset=log.stat().st_size) as ws:
        wait_subs(srv, 1)
        with log.open("ab", buffering=0) as out:
            for i in range(samples):
                line = f"latency probe {i}\n".encode()
                begin = time.perf_counter()
                out.write(line)
                got = ws.recv(timeout=30)
                times.append(time.perf_counter() - begin)
                assert got == line.decode(), got
                time.sleep(0.005)
    wait_subs(srv, 0)
    return times


def burst(srv: Server, log: Path, megabytes: int, compression: bool) -> float:
    block = os.urandom(1024 * 1024)
    total = megabytes * len(block)
    with open_ws(srv, compression=compression, path=str(log), offset=log.stat().st_size,
                 binary="1") as ws:
        wait_subs(srv, 1)
        begin = time.perf_counter()
        with log.open("ab") as out:
            for _ in range(megabytes):
                out.write(block)
        n = 0
        while n < total:
            msg = ws.recv(timeout=60)
            n += len(msg)
        elapsed = time.perf_counter() - begin
    wait_subs(srv, 0)
    return megabytes / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--burst-mb", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "bench.log"
        log.write_bytes(b"")
        threads = args.watchers + 50  # one pool thread per open socket, plus headroom
        srv = Server(gunicorn_argv("watch_app:app", threads=threads), {}, Path(tmp) / "srv.log")
        try:
            pid = srv.worker_pids()[0]
            lat = sorted(latency(srv, log, args.samples))
            print(f"latency of one line: median {statistics.median(lat) * 1000:.2f} ms, "
                  f"p95 {lat[int(len(lat) * 0.95)] * 1000:.2f} ms, max {lat[-1] * 1000:.2f} ms "
                  f"({len(lat)} samples)")
            for compression in (False, True):
                log.write_bytes(b"")
                rate = burst(srv, log, args.burst_mb, compression)
                label = "permessage-deflate" if compression else "no compression"
                print(f"burst of {args.burst_mb} MB (binary, {label}): {rate:.0f} MB/s")
            log.write_bytes(b"")
            base_threads = len(os.listdir(f"/proc/{pid}/task"))
            base_rss = rss_mib(pid)
            with contextlib.ExitStack() as stack:
                for _ in range(args.watchers):
                    stack.enter_context(open_ws(srv, path=str(log), offset=0))
                wait_subs(srv, args.watchers)
                time.sleep(1)
                s = stats(srv)["table"]
                n_threads = len(os.listdir(f"/proc/{pid}/task"))
                rss = rss_mib(pid)
                ticks = cpu_ticks(pid)
                time.sleep(10)
                cpu = (cpu_ticks(pid) - ticks) / os.sysconf("SC_CLK_TCK")
                print(f"{args.watchers} idle watchers: worker threads {n_threads} "
                      f"(idle worker: {base_threads}), RSS {rss:.1f} MiB "
                      f"(before: {base_rss:.1f} MiB), observers {s['observers']}, "
                      f"watches {s['watches']}, mode {s['mode']}")
                print(f"worker CPU over 10 s idle with them: {cpu:.2f} s "
                      f"({cpu / 10 * 100:.1f}% of a core)")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
