"""One address against every thread: how long another client waits, with and without the guards.

Not a test (tests/test_address_limits.py asserts the behaviour): figures for
the deployment notes. One gunicorn worker with ``--threads 32`` (the CLI's
default) serves tests/apps/basic.py on 127.0.0.1.

- *stalled headers*: 100 connections each send one byte, then nothing.
  Another client then asks ``GET /__ready``: under plain ``gthread`` and
  under ``flask_pine_ws.worker.ThreadWorker`` (``PINE_WS_HEADER_TIMEOUT``
  10 s, its default).
- *idle WebSockets*: 110 WebSockets from 127.0.0.1 that only answer pings;
  another address (127.0.0.2) then opens one: with no cap, and with
  ``PINE_WS_MAX_PER_ADDRESS`` 16.

A client that is not answered within ``--patience`` seconds (60) counts as
denied. Run from the repository root (about 3 minutes)::

    python bench/one_address.py
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from websockets.exceptions import InvalidStatus

from helpers import connect, raised_fd_limit
from server import Server, gunicorn_argv

THREADS = 32


def ready_in(srv: Server, patience: float, source: str = "127.0.0.1") -> str:
    """Seconds until ``GET /__ready`` from ``source`` is answered, or "denied"."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", srv.port), patience,
                                      source_address=(source, 0)) as sock:
            sock.sendall(b"GET /__ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            answer = sock.recv(64)
            if b" 200 " not in answer.split(b"\r\n")[0]:
                return f"refused: {answer!r}"
    except OSError:
        return f"denied (no answer in {patience:.0f} s)"
    return f"answered in {time.monotonic() - started:.1f} s"


def stalled_headers(tmp: Path, worker: str, patience: float) -> str:
    extra = [] if worker == "gthread" else ["-k", worker]
    srv = Server(gunicorn_argv("basic:app", threads=THREADS, extra=extra), {},
                 tmp / f"stalled-{worker}.log")
    try:
        with ExitStack() as stack:
            for _ in range(100):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", srv.port)))
                sock.sendall(b"G")
            time.sleep(1)  # the worker has taken them
            return ready_in(srv, patience)
    finally:
        srv.stop()


def idle_websockets(tmp: Path, cap: int, patience: float) -> str:
    srv = Server(gunicorn_argv("basic:app", threads=THREADS),
                 {"PINE_WS_MAX_PER_ADDRESS": str(cap)}, tmp / f"idle-{cap}.log")
    try:
        with ExitStack() as stack:
            opened = refused = 0
            for _ in range(110):
                try:
                    stack.enter_context(connect(srv.ws_url + "/wait", open_timeout=3))
                    opened += 1
                except InvalidStatus:
                    refused += 1
                except TimeoutError:
                    break  # every thread is taken: the attacker has won already
            started = time.monotonic()
            try:
                sock = socket.create_connection(("127.0.0.1", srv.port), patience,
                                                source_address=("127.0.0.2", 0))
                with connect(srv.ws_url + "/echo", sock=sock, open_timeout=patience) as ws:
                    ws.send("hi")
                    ws.recv(timeout=patience)
                other = f"served in {time.monotonic() - started:.2f} s"
            except (OSError, TimeoutError):
                other = f"denied (no answer in {patience:.0f} s)"
            return f"{opened} opened, {refused} refused (429); another address: {other}"
    finally:
        srv.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patience", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, raised_fd_limit():
        path = Path(tmp)
        print(f"100 stalled one-byte connections, --threads {THREADS}; another client's GET:")
        for worker in ("gthread", "flask_pine_ws.worker.ThreadWorker"):
            print(f"  {worker}: {stalled_headers(path, worker, args.patience)}")
        print(f"110 idle WebSockets from 127.0.0.1, --threads {THREADS}:")
        for cap in (0, 16):
            print(f"  PINE_WS_MAX_PER_ADDRESS={cap}: {idle_websockets(path, cap, args.patience)}")


if __name__ == "__main__":
    main()
