"""The app the protocol hardening tests attack: handlers that do not read, and bystanders.

- ``/idle``: sends ``ready``, then never calls ``receive`` (a handler busy
  elsewhere); returns when the connection ends.
- ``/watch?path=...``: ``watch_file`` on the path (a test app only: a real app
  never lets the client choose the path).
- ``/echo``: echoes every message (the bystander that must stay served).
- ``/wait``: blocks in ``receive`` until the connection ends.
- ``/push``: sends 64 KiB messages for ever (to a client that never reads,
  it blocks in ``send``, holding the connection's send lock).

``PINE_WS_*`` settings come from the environment (JSON values).
"""

from __future__ import annotations

import time

from flask import Flask

from flask_pine_ws import Conn, Ctx, FlaskPineWS, watch_file

from common import base_app

pine = FlaskPineWS()


@pine.new("/idle")
def idle(conn: Conn, ctx: Ctx) -> None:
    conn.send("ready")
    while conn.connected:
        time.sleep(0.2)


@pine.new("/watch")
def watch(conn: Conn, ctx: Ctx) -> None:
    watch_file(ctx.query["path"], conn)


@pine.new("/echo")
def echo(conn: Conn, ctx: Ctx) -> None:
    while True:
        message = conn.receive()
        if message is not None:
            conn.send(message)


@pine.new("/wait")
def wait(conn: Conn, ctx: Ctx) -> None:
    conn.send("ready")
    while True:
        conn.receive()


@pine.new("/push")
def push(conn: Conn, ctx: Ctx) -> None:
    conn.send("ready")
    while True:
        conn.send(b"p" * 65536)


def create_app() -> Flask:
    return base_app(__name__, pine)


app = create_app()
