"""The app the watch_file tests run: a watcher configured from the query string, and a debug route.

A test app only: it lets the test choose the path to follow, which a real
app must never let a client do (the viewer serves only files the app names).

- ``/watch?path=...&offset=&lines=&binary=1&file_id=&root=...&tag=...``:
  ``watch_file`` with those options; offers the ``pine.watch.v1`` subprotocol.
  With ``tag``, the connection's ``viewed_bytes`` is recorded when it ends.
- ``/conn-watch?path=...&offset=``: the same through ``Conn.watch_file``.
- ``/stats``: the process's watch table, threads (``threads``: the Python
  threads' names; ``tasks``: every thread of the process, read from
  ``/proc/self/task`` in the same request), live connections, viewed bytes,
  the watchers registered with a feed (``watchers``), those a feed sends to
  (``live_readers``) and the feeds.

``PINE_WS_*`` settings come from the environment (JSON values).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask

from flask_pine_ws import Config, Conn, Ctx, FlaskPineWS, feed, watch_file
from flask_pine_ws import shutdown as pine_shutdown
from flask_pine_ws.watchtable import WatchTable

from common import base_app

pine = FlaskPineWS()
viewed: dict[str, int] = {}


def _int(value: str | None) -> int | None:
    return None if value is None or value == "" else int(value)


@pine.new("/watch", config=Config(subprotocols=["pine.watch.v1"]))
def watch(conn: Conn, ctx: Ctx) -> None:
    q = ctx.query
    roots = q.getlist("root") or None
    try:
        watch_file(q["path"], conn, offset=_int(q.get("offset")), lines=_int(q.get("lines")),
                   binary=q.get("binary") == "1", root=roots, file_id=q.get("file_id") or None)
    finally:
        if "tag" in q:
            viewed[q["tag"]] = conn.viewed_bytes


@pine.new("/conn-watch")
def conn_watch(conn: Conn, ctx: Ctx) -> None:
    conn.watch_file(ctx.query["path"], offset=_int(ctx.query.get("offset")))


def create_app() -> Flask:
    app = base_app(__name__, pine)

    @app.route("/stats")
    def stats() -> dict[str, Any]:
        feeds = feed.stats()
        return {
            "table": WatchTable.current().stats(),
            "threads": sorted(t.name for t in threading.enumerate()),
            "tasks": len(os.listdir("/proc/self/task")),
            "live": pine_shutdown.live_count(),
            "viewed": viewed,
            "watchers": feeds["readers"],
            "live_readers": feeds["live"],
            "feed": feeds,
        }

    return app


app = create_app()
