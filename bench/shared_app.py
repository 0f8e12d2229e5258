"""A prototype of the fan-out design proposed for flask-pine-ws, to measure it.

Not the project's code, and not a fix: it shows what the design buys. The
shipped ``watch_file`` wakes one thread per client on every append, and each
reads the same bytes, encodes its own frame and sends it; with 1,000 clients
that is 1,000 threads fighting for the GIL per line. Here one *hub* per file
does the work once:

- one :class:`~flask_pine_ws.follower.FileFollower` and one watch-table
  subscription per file, not per client: the new bytes are read once;
- each chunk is framed once (a server frame is not masked, so without
  compression the bytes on the wire are the same for every client) and the
  same bytes are written to every socket, through the connection's guarded
  socket (whole, serialised with the library's own writes, bounded in time);
- a client's own thread only waits for its connection to end: it is not
  woken by the file at all.

What a real implementation must add: a client that cannot take a frame at
once (full socket buffer) is handed back to its own thread to catch up from
the file (the file is the buffer); clients starting at other offsets (a
backlog, a resume) catch up on their own thread, then join the hub;
permessage-deflate needs per-socket frames (or ``server_no_context_takeover``).
It writes its frames with ``Conn.try_send_frame`` and ``Conn.flush``.
"""

from __future__ import annotations

import os
import struct
import threading
import time

from flask import Flask

from flask_pine_ws import Conn, ConnectionClosed, Ctx, FlaskPineWS
from flask_pine_ws.follower import Chunk, FileFollower
from flask_pine_ws.watchtable import WatchTable

app = Flask(__name__)
app.config["PINE_WS_ENABLE_COMPRESSION"] = False
app.config["PINE_WS_PING_INTERVAL"] = 0
pine = FlaskPineWS(app)
FILE = os.path.abspath(os.environ.get("BENCH_FILE", "bench.log"))


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame (RFC 6455 5.2), as a server sends it."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Hub:
    """One file, one reader thread, every client that follows it from the end."""

    def __init__(self, path: str) -> None:
        self.conns: set[Conn] = set()
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.follower = FileFollower(path)
        self.follower.start(lines=0)
        self.table = WatchTable.current()
        self.sub = self.table.subscribe(path, self.event)
        threading.Thread(target=self._run, name="hub", daemon=True).start()

    def _run(self) -> None:
        while True:
            self.event.wait(30)
            self.event.clear()
            if self.sub.needs_refresh or self.follower.position is None:
                self.table.refresh(self.sub)
            for item in self.follower.read():
                if isinstance(item, Chunk):
                    data = item.data.encode() if isinstance(item.data, str) else item.data
                    self._send_all(text_frame(data))
            self.sub.known = self.follower.position

    def _send_all(self, frame: bytes) -> None:
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                # blocking, as the prototype wrote: wait for the socket's turn,
                # then for the rest of a frame taken in part
                while conn.connected and not conn.try_send_frame(frame):
                    time.sleep(0.001)
                conn.flush()
            except ConnectionClosed:
                self.remove(conn)

    def add(self, conn: Conn) -> None:
        with self.lock:
            self.conns.add(conn)

    def remove(self, conn: Conn) -> None:
        with self.lock:
            self.conns.discard(conn)


_hub: Hub | None = None
_hub_lock = threading.Lock()


def hub() -> Hub:
    """The hub, created in the worker on first use (after gunicorn's fork)."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = Hub(FILE)
        return _hub


@pine.new("/logs")
def logs(conn: Conn, ctx: Ctx) -> None:
    done = threading.Event()
    conn.add_listener(done.set)
    shared = hub()
    shared.add(conn)
    try:
        while True:
            done.wait(60)
            done.clear()
            while conn.receive(timeout=0) is not None:  # raises once the client is gone
                pass
    except ConnectionClosed:
        pass
    finally:
        shared.remove(conn)
        conn.remove_listener(done.set)


@app.route("/__ready")
def ready() -> str:
    return "ok"
