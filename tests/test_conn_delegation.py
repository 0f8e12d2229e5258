"""``Conn.watch_file``, ``Conn.join`` and ``Conn.leave`` hand the connection to the
modules that own files and channels, and what the client receives is theirs
(in-process, through ``pine.test_client``: the fast tier)."""

from __future__ import annotations

import threading
from pathlib import Path

from flask import Flask

from flask_pine_ws import Conn, Ctx, FlaskPineWS


def test_conn_watch_file_streams_the_file_with_its_options(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\ntwo\n")
    app = Flask(__name__)
    pine = FlaskPineWS(app)

    @pine.new("/log")
    def follow(conn: Conn, ctx: Ctx) -> None:
        conn.watch_file(str(log), offset=4)

    with pine.test_client(app).connect("/log") as conn:
        assert conn.receive(timeout=10) == "two\n"  # from the offset given, not the start
        with log.open("a") as f:
            f.write("three\n")
        assert conn.receive(timeout=10) == "three\n"


def test_conn_join_and_leave_reach_the_channel() -> None:
    app = Flask(__name__)
    pine = FlaskPineWS(app)
    joined = threading.Event()

    @pine.new("/room")
    def room(conn: Conn, ctx: Ctx) -> None:
        conn.join("room")
        conn.join("other")
        conn.leave("other")
        joined.set()
        while True:
            conn.receive()

    with pine.test_client(app).connect("/room") as conn:
        assert joined.wait(10)
        with app.app_context():
            pine.publish("other", "not for you")
            pine.publish("room", "hello")
        # one sender per member delivers in publishing order: had the leave
        # failed, "not for you" would come first
        assert conn.receive(timeout=10) == "hello"
