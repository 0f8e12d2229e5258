"""flask-sock beside flask-pine-ws in one app: ``Sock(app)`` routes and ``pine.new`` routes.

``/sock/log`` streams ``$SOCK_LOG`` with ``watch_file(path, ws)`` on flask-sock's ``ws``.
"""

from __future__ import annotations

import os
import threading

from flask_sock import Sock

from flask_pine_ws import Conn, Ctx, FlaskPineWS, watch_file

from common import base_app

pine = FlaskPineWS()
app = base_app(__name__, pine)
sock = Sock(app)
ended: list[str] = []
_lock = threading.Lock()


@sock.route("/sock/echo")
def sock_echo(ws) -> None:  # type: ignore[no-untyped-def]
    while True:
        ws.send(ws.receive())


@sock.route("/sock/log")
def sock_log(ws) -> None:  # type: ignore[no-untyped-def]
    try:
        watch_file(os.environ["SOCK_LOG"], ws)
    finally:
        with _lock:
            ended.append("sock-log")


@pine.new("/pine/echo")
def pine_echo(conn: Conn, ctx: Ctx) -> None:
    while True:
        conn.send(conn.receive())  # type: ignore[arg-type]


@app.get("/ended")
def show_ended() -> dict[str, list[str]]:
    with _lock:
        return {"ended": list(ended)}
