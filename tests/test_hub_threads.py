"""The feeds of a worker share one thread, whatever the number of files followed.

Against a real gunicorn worker (tests/apps/watch_app.py): watchers of many
different files, each live on its file's feed, cost the worker the same
threads as as many watchers of one file (beside each socket's pool thread:
the watch table's, the doorbell's, and one thread for every feed), and every
append still reaches the watchers of its file, and only them, also while a
large append to one file is being sent. ``bench/threads_per_file.py`` gives
the figures for 100.
"""

from __future__ import annotations

import json
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.sync.client import ClientConnection

from conftest import ServerFactory
from helpers import connect, recv_text, wait_until
from server import Server

pytestmark = pytest.mark.integration

N = 20


def stats(srv: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.url}/stats", timeout=60) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def watch(stack: ExitStack, srv: Server, path: Path) -> ClientConnection:
    url = f"{srv.ws_url}/watch?" + urlencode({"path": str(path), "lines": "0"})
    ws: ClientConnection = stack.enter_context(connect(url, ping_interval=None, max_size=None))
    return ws


def threads_when_live(srv: Server, paths: list[Path]) -> tuple[int, int, list[str]]:
    """Watch each of ``paths``; once all are live: the worker's threads beside its pool.

    ``(threads, feed threads, names)``. gunicorn's gthread pool is left out of
    the count: each socket holds one of its threads, and it may also grow by
    one more at any request (a ThreadPoolExecutor starts a thread when a task
    is submitted before the thread that ran the last one has marked itself
    idle, up to ``--threads``): its size says nothing about files. Every
    other thread of the process counts, read from ``/proc`` in one request
    with the names that tell the pool's threads.
    """
    with ExitStack() as stack:
        for path in paths:
            watch(stack, srv, path)
        wait_until(lambda: stats(srv)["live_readers"] == len(paths), timeout=60,
                   message="every watcher live")
        now = stats(srv)
        pool = sum(1 for name in now["threads"] if name.startswith("ThreadPoolExecutor"))
        assert pool >= len(paths), now["threads"]  # a pool thread per socket, at least
        others = sorted(name for name in now["threads"]
                        if not name.startswith("ThreadPoolExecutor"))
        feeds = now["threads"].count("pine-ws-feed")
    wait_until(lambda: stats(srv)["live"] == 0, message="every socket closed")
    # Every thread these sockets brought ends: the feeds', the doorbell's, the
    # readers their closes started, and the table's (not joined by the last
    # watcher that leaves: it closes its inotify descriptor as it ends). One
    # still ending would be counted in the next round.
    wait_until(lambda: not [n for n in stats(srv)["threads"] if n.startswith("pine-ws-")],
               message="the extension's threads ended")
    return now["tasks"] - pool, feeds, others


def test_many_files_cost_no_more_threads_than_one(server: ServerFactory, tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}.log" for i in range(N)]
    for f in files:
        f.write_bytes(b"")
    srv = server("watch_app:app", threads=N + 10)
    one_file, one_feed, one_names = threads_when_live(srv, [files[0]] * N)
    many_files, many_feeds, many_names = threads_when_live(srv, files)
    assert (one_feed, many_feeds) == (1, 1)
    # nothing comes per file
    assert many_files <= one_file, f"one file: {one_names}\n{N} files: {many_names}"


def test_every_append_reaches_the_watchers_of_its_file_only(
        server: ServerFactory, tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}.log" for i in range(N)]
    for f in files:
        f.write_bytes(b"")
    srv = server("watch_app:app", threads=2 * N + 10)
    with ExitStack() as stack:
        clients = [(watch(stack, srv, f), watch(stack, srv, f)) for f in files]
        wait_until(lambda: stats(srv)["live_readers"] == 2 * N, timeout=60,
                   message="every watcher live")
        big = "b" * 99 + "\n"
        with open(files[0], "a") as out:
            out.write(big * 40_000)  # 4 MB for the first file's watchers
        for i, f in enumerate(files[1:], 1):
            with open(f, "a") as out:
                out.write(f"line of file {i}\n")
        for i, pair in enumerate(clients[1:], 1):
            for ws in pair:
                assert recv_text(ws, len(f"line of file {i}\n")) == f"line of file {i}\n"
        for ws in clients[0]:
            assert recv_text(ws, len(big) * 40_000, timeout=120) == big * 40_000
        # nothing else came to anyone
        for pair in clients:
            for ws in pair:
                with pytest.raises(TimeoutError):
                    ws.recv(timeout=0.2)
    wait_until(lambda: stats(srv)["live"] == 0, message="every socket closed")
