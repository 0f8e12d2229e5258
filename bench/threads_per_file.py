"""Threads of a worker with N watchers: on N different files, and on one file.

Not a test: figures for the sizing notes (docs/deployment.md). One gunicorn
gthread worker serves tests/apps/watch_app.py; N ``websockets`` clients
follow N files (``lines=0``), then N clients follow one file. Once every
watcher is live on its file's feed, the worker's threads are counted in
``/proc/<pid>/task`` (every thread: gunicorn's pool, the connections'
readers, the watch table's, the feeds'). The two figures should differ by
nothing: the feeds of a process share one thread.

Run from the repository root (about half a minute)::

    python bench/threads_per_file.py [--clients 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import connect
from server import Server, gunicorn_argv


def stats(srv: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.url}/stats", timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def measure(srv: Server, paths: list[Path]) -> dict[str, int]:
    """Connect one watcher per path, wait until all are live, count the worker's threads."""
    pid = srv.worker_pids()[0]
    idle = len(os.listdir(f"/proc/{pid}/task"))
    with ExitStack() as stack:
        for path in paths:
            url = f"{srv.ws_url}/watch?" + urlencode({"path": str(path), "lines": "0"})
            stack.enter_context(connect(url, ping_interval=None))
        deadline = time.monotonic() + 60
        while stats(srv)["live_readers"] < len(paths):
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all live: {stats(srv)['live_readers']}")
            time.sleep(0.1)
        busy = len(os.listdir(f"/proc/{pid}/task"))
        names = stats(srv)["threads"]
    return {"idle": idle, "watching": busy, "feed_threads": names.count("pine-ws-feed")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    n = args.clients
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"f{i}.log" for i in range(n)]
        for f in files:
            f.write_bytes(b"x\n")
        log = Path(tmp) / "server.log"
        srv = Server(gunicorn_argv("watch_app:app", threads=n + 20), {}, log)
        try:
            many = measure(srv, files)
            time.sleep(1)  # let the closed sockets' threads end
            one = measure(srv, [files[0]] * n)
        finally:
            srv.stop()
    print(f"{n} watchers on {n} files: {many['watching']} threads "
          f"(idle worker: {many['idle']}; feed threads: {many['feed_threads']})")
    print(f"{n} watchers on 1 file:    {one['watching']} threads "
          f"(idle worker: {one['idle']}; feed threads: {one['feed_threads']})")


if __name__ == "__main__":
    main()
