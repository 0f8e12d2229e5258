"""The two servers of ``bench/channels.py``, as gunicorn gthread loads them.

- ``channels_apps:pine_app``: flask-pine-ws, ``/member/<room>`` joins the room
  and waits; ``PINE_WS_MESSAGE_QUEUE`` from ``BENCH_REDIS``.
- ``channels_apps:socketio_app``: Flask-SocketIO in threading mode (its
  documented setup on gunicorn gthread, simple-websocket underneath), with
  ``message_queue`` on the same Redis; a ``join`` event joins a room.

Pings are off (flask-pine-ws) or far apart (Socket.IO's engine must ping):
the figures measure delivery, not keep-alives. Compression is off in both.
"""

from __future__ import annotations

import os

from flask import Flask, request

from flask_pine_ws import Conn, Ctx, FlaskPineWS

REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")

pine_app = Flask("pine")
pine_app.config.update(PINE_WS_MESSAGE_QUEUE=REDIS, PINE_WS_PING_INTERVAL=0,
                       PINE_WS_ENABLE_COMPRESSION=False)
pine = FlaskPineWS(pine_app)


@pine.new("/member/<room>")
def member(conn: Conn, ctx: Ctx) -> None:
    conn.join(ctx.params["room"])
    conn.send("joined")
    while True:
        conn.receive()


def _ready() -> str:
    return "ok"


pine_app.add_url_rule("/__ready", "ready", _ready)


def _socketio_app() -> Flask:
    from flask_socketio import SocketIO, join_room

    app = Flask("socketio")
    app.add_url_rule("/__ready", "ready", _ready)
    socketio = SocketIO(app, async_mode="threading", message_queue=REDIS,
                        ping_interval=120, ping_timeout=120, http_compression=False,
                        websocket_compression=False)

    @socketio.on("join")
    def on_join(room: str) -> str:
        join_room(room, sid=request.sid)  # type: ignore[attr-defined]
        return "joined"

    return app


socketio_app = _socketio_app() if os.environ.get("BENCH_TARGET") == "socketio" else None
