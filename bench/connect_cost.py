"""What one WebSocket connection costs the server's process, without gunicorn.

Not a test: figures for the notes on the backlog case (``crowd.backlog``),
where a worker's CPU per connection decides how long a thousand clients
connecting at once wait. Here one process serves ``--connections``
connections one after the other, each on a socket pair, through the Flask
app (``FlaskPineWS``, a route like ``bench/pine_app.py``'s) on a thread of a
pool started beforehand, as ``flask_pine_ws.worker.ThreadWorker`` runs it;
the client end reads its 101 and its backlog of 10 lines, and the connection
stays open (as in the crowd). Two handlers:

- ``watch``: ``watch_file(path, conn, lines=10)``, the benchmark's route;
- ``send``: the handler sends the same 10 lines itself, then waits: the cost
  of Flask, the view and the protocol alone.

Prints the process's CPU per connection (user and system) and its context
switches per connection (summed over its threads), median of ``--rounds``.

    python bench/connect_cost.py --connections 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from crowd import BACKLOG_FILE_LINES, backlog_line
from flask import Flask
from werkzeug.test import EnvironBuilder

from flask_pine_ws import Conn, Ctx, FlaskPineWS, watch_file
from flask_pine_ws.threadpool import WarmPool

HEADERS = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}
#: Line breaks the client waits for: the 101's head (4 lines and a blank one), then 10 lines.
EXPECTED_BREAKS = 5 + 10


def make_app(path: Path, handler: str, stop: threading.Event) -> Flask:
    app = Flask(__name__)
    app.config["PINE_WS_PING_INTERVAL"] = 0
    app.config["PINE_WS_ENABLE_COMPRESSION"] = False
    pine = FlaskPineWS(app)
    last = b"".join(backlog_line(i) for i in range(BACKLOG_FILE_LINES - 10,
                                                   BACKLOG_FILE_LINES)).decode()

    @pine.new("/logs")
    def logs(conn: Conn, ctx: Ctx) -> None:
        if handler == "watch":
            watch_file(str(path), conn, lines=10)
        else:
            conn.send(last)
            stop.wait()

    return app


def switches() -> int:
    """Context switches so far, summed over this process's live threads."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/status") as status:
                total += sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def connect(app: Flask, pool: WarmPool) -> tuple[socket.socket, socket.socket]:
    """One connection, until its client holds the 101 and its 10 lines."""
    server, client = socket.socketpair()
    environ = EnvironBuilder(path="/logs", headers=HEADERS).get_environ()
    environ["gunicorn.socket"] = server

    def serve() -> None:
        body: Iterable[Any] = app(environ, lambda status, headers, exc_info=None: None)
        try:
            list(body)
        except StopIteration:  # the socket was taken over: nothing to iterate
            pass

    pool.submit(serve)
    client.settimeout(10)
    got = b""
    while got.count(b"\n") < EXPECTED_BREAKS:
        chunk = client.recv(65536)
        if not chunk:
            raise RuntimeError(f"the server closed the connection: {got[:200]!r}")
        got += chunk
    return server, client


def one_round(path: Path, handler: str, connections: int) -> tuple[float, float, float]:
    """(user ms, system ms, switches) per connection over ``connections`` kept open."""
    stop = threading.Event()
    app = make_app(path, handler, stop)
    pool = WarmPool(connections + 10, name="cost-pool")
    opened: list[tuple[socket.socket, socket.socket]] = []
    try:
        opened.append(connect(app, pool))  # the file's feed and the app, made once
        before, switched = os.times(), switches()
        for _ in range(connections):
            opened.append(connect(app, pool))
        after, switched = os.times(), switches() - switched
    finally:
        stop.set()
        for _, client in opened:
            client.close()
        pool.shutdown(wait=True)
        for server, _ in opened:
            server.close()
    return ((after.user - before.user) * 1000 / connections,
            (after.system - before.system) * 1000 / connections, switched / connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.connections + 256)),
                                                hard))
    with tempfile.TemporaryDirectory(prefix="pine-cost-") as tmp:
        path = Path(tmp) / "backlog.log"
        path.write_bytes(b"".join(backlog_line(i) for i in range(BACKLOG_FILE_LINES)))
        for handler in ("send", "watch"):
            runs = [one_round(path, handler, args.connections) for _ in range(args.rounds)]
            user, system, switched = (statistics.median(r[k] for r in runs) for k in range(3))
            print(f"{handler}: {user:.2f} ms user + {system:.2f} ms system CPU,"
                  f" {switched:.1f} context switches per connection"
                  f" (median of {args.rounds} rounds of {args.connections})")


if __name__ == "__main__":
    main()
