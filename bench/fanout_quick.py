"""Fan-out: one line appended to a file that N clients follow; time until the last one has it.

Not a test: figures for the fan-out notes. One gunicorn gthread worker
serves tests/apps/watch_app.py with enough ``--threads`` for every client;
the clients are ``websockets`` asyncio connections in this one process
(``lines=0``: only what is appended), with permessage-deflate offered or
not. For each N, ``--appends`` lines are appended one at a time (each once
the previous one reached every client); the figure is the median (and max)
of the time from the write to the moment the last client holds the line.
The worker's ``/stats`` says how many watchers were live on the file's feed
(sent to by its one thread) when the line was written.

Run from the repository root (about a minute)::

    python bench/fanout_quick.py [--clients 100 500 1000] [--appends 7] [--no-broadcast]

``--no-broadcast`` sets ``PINE_WS_BROADCAST`` off: every watcher reads and
sends for itself, as before the feed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server import Server, gunicorn_argv


def stats(srv: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.url}/stats", timeout=60) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


async def _open(url: str, compression: bool, gate: asyncio.Semaphore) -> ClientConnection:
    async with gate:
        return await connect(url, open_timeout=120, close_timeout=10, ping_interval=None,
                             compression="deflate" if compression else None, max_size=None,
                             proxy=None)


async def _receive(ws: ClientConnection, want: int) -> None:
    got = 0
    while got < want:
        message = await asyncio.wait_for(ws.recv(), 60)
        got += len(message)


async def run(srv: Server, log: Path, count: int, appends: int,
              compression: bool) -> dict[str, Any]:
    url = f"{srv.ws_url}/watch?{urlencode({'path': str(log), 'lines': 0})}"
    gate = asyncio.Semaphore(64)
    clients = await asyncio.gather(*(_open(url, compression, gate) for _ in range(count)))
    try:
        deadline = time.monotonic() + 120
        while (await asyncio.to_thread(stats, srv))["watchers"] < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the watchers never all subscribed")
            await asyncio.sleep(0.1)
        times = []
        live = []
        for n in range(appends):
            await asyncio.sleep(0.3)  # idle: every watcher back to waiting (and live)
            live.append((await asyncio.to_thread(stats, srv)).get("live_readers"))
            line = b"fan-out line %04d .................................................\n" % n
            began = time.monotonic()
            with open(log, "ab") as f:
                f.write(line)
            await asyncio.gather(*(_receive(ws, len(line)) for ws in clients))
            times.append(time.monotonic() - began)
        return {"clients": count, "compression": compression,
                "median_ms": round(statistics.median(times) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1), "live": live}
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--appends", type=int, default=7)
    parser.add_argument("--no-broadcast", action="store_true",
                        help="PINE_WS_BROADCAST off: each watcher reads for itself")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per client
    top = max(args.clients)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "bench.log"
        log.write_bytes(b"")
        argv = gunicorn_argv("watch_app:app", threads=top + 50,
                             extra=["--worker-connections", str(2 * top + 100),
                                    "--backlog", "2048"])
        env = {"PINE_WS_BROADCAST": "false"} if args.no_broadcast else {}
        srv = Server(argv, env, Path(tmp) / "srv.log")
        try:
            for compression in (False, True):
                for count in args.clients:
                    figures = asyncio.run(run(srv, log, count, args.appends, compression))
                    print(json.dumps(figures), flush=True)
                    deadline = time.monotonic() + 60
                    while stats(srv)["watchers"]:
                        if time.monotonic() > deadline:
                            raise RuntimeError("watchers still subscribed after the clients left")
                        time.sleep(0.2)
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
