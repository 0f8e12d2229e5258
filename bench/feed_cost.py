"""The cost of one appended line to N watchers live on a file's feed, in-process.

Not a test: a figure for the fan-out notes that a shared machine's noise
moves less than end-to-end times. N real ``Conn``\\ s on
``socket.socketpair()`` (tests/wspeer.py), each followed by the real
``watch_file`` on its own thread, all live on the file's feed; one line is
appended at a time, and this process's CPU time (``time.process_time``: the
feed's thread, the watchers', and the one thread here that reads every
client socket) and wall time until every client socket holds the line's
frame are taken. Prints the medians.

Run from the repository root (a few seconds)::

    python bench/feed_cost.py [--clients 1000] [--appends 25]

Run it before and after a change to the feed, one right after the other,
and compare the medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
import types
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import wspeer  # noqa: E402 - from tests/, after the path is set

from flask_pine_ws import feed, watch_file  # noqa: E402

LINE = b"fan-out line .................................................\n"
FRAME = 2 + len(LINE)  # an unmasked binary frame of fewer than 126 bytes: 2 bytes of header


def _select(read: list[Any], write: list[Any], error: list[Any],
            timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
    """``select.select`` for the peers' handshakes, by ``poll``: past 1,024 fds select fails."""
    poll = select.poll()
    for sock in read:
        poll.register(sock, select.POLLIN)
    ready = {fd for fd, _ in poll.poll(None if timeout is None else timeout * 1000)}
    return [s for s in read if s.fileno() in ready], [], []


def measure(clients: int, appends: int) -> tuple[float, float]:
    """Median CPU and wall seconds from one append to its frame in every client socket."""
    wspeer.select = types.SimpleNamespace(select=_select)  # type: ignore[assignment]
    log = Path(tempfile.mkdtemp()) / "a.log"
    log.write_bytes(b"")
    with ExitStack() as stack:
        pairs = [stack.enter_context(wspeer.conn_pair()) for _ in range(clients)]
        threads = [threading.Thread(target=watch_file, args=(str(log), conn),
                                    kwargs={"binary": True, "offset": 0}, daemon=True)
                   for conn, _ in pairs]
        for thread in threads:
            thread.start()
        selector = selectors.DefaultSelector()
        stack.callback(selector.close)
        got: dict[socket.socket, int] = {}
        for _, peer in pairs:
            peer.sock.setblocking(False)
            selector.register(peer.sock, selectors.EVENT_READ)
            got[peer.sock] = 0
        cpu: list[float] = []
        wall: list[float] = []
        for n in range(appends):
            deadline = time.monotonic() + 120
            time.sleep(0.05)
            while feed.live_count() < clients:  # idle: every watcher live again
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {feed.live_count()} of {clients} live")
                time.sleep(0.01)
            want = FRAME * (n + 1)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            with log.open("ab") as out:
                out.write(LINE)
            short = clients
            while short:
                for key, _ in selector.select(10):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    got[sock] += len(sock.recv(65536))
                    if got[sock] == want:
                        short -= 1
            cpu.append(time.process_time() - cpu0)
            wall.append(time.perf_counter() - wall0)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--appends", type=int, default=25)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # two sockets per client
    cpu, wall = measure(args.clients, args.appends)
    print(f"{args.clients} live watchers, {args.appends} appends: per line, median CPU "
          f"{cpu * 1000:.1f} ms, median wall {wall * 1000:.1f} ms ({os.getcwd()})")


if __name__ == "__main__":
    main()
