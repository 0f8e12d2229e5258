"""``pine.test_client(app)``: the real route, in the test's process, on a socket pair.

In-process by design (it is the tool for tests without a server): each test
runs a route through the test client and asserts what its client receives,
and the autouse ``no_leaks`` fixture checks that closing leaves no thread and
no descriptor behind.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from flask import Flask, abort, request

from flask_pine_ws import (
    Config,
    Conn,
    ConnectionClosed,
    Ctx,
    FlaskPineWS,
    HandshakeRefused,
    PineWSError,
    watch_file,
)
from flask_pine_ws.testing import TestClient


def make_app(log: Path | None = None) -> tuple[Flask, FlaskPineWS]:
    app = Flask(__name__)
    pine = FlaskPineWS(app)
    app.config["PINE_WS_ALLOWED_ORIGINS"] = ["https://partner.example"]

    @app.before_request
    def guard() -> None:
        if request.path.startswith("/private") and request.headers.get("Cookie") != "ok=1":
            abort(401)

    @pine.new("/echo", config=Config(subprotocols=["chat.v2", "chat.v1"]))
    def echo(conn: Conn, ctx: Ctx) -> None:
        while True:
            conn.send(conn.receive())  # type: ignore[arg-type]

    @pine.new("/rooms/<int:room>")
    def rooms(conn: Conn, ctx: Ctx) -> None:
        conn.send_json({"room": ctx.params["room"], "nick": ctx.query.get("nick"),
                        "from": ctx.request.remote_addr})

    @pine.new("/refuse")
    def refuse(conn: Conn, ctx: Ctx) -> None:
        conn.send("no")
        conn.close(4003, "not today")

    @pine.new("/private/feed")
    def private(conn: Conn, ctx: Ctx) -> None:
        conn.send("secret")

    @pine.new("/small", config=Config(max_message_size=10))
    def small(conn: Conn, ctx: Ctx) -> None:
        while True:
            conn.receive()

    @pine.new("/fails")
    def fails(conn: Conn, ctx: Ctx) -> None:
        raise ValueError("boom")

    @pine.new("/log")
    def follow(conn: Conn, ctx: Ctx) -> None:
        assert log is not None
        watch_file(log, conn)

    return app, pine


def test_echo_text_binary_and_a_large_message() -> None:
    app, pine = make_app()
    client = pine.test_client(app)
    assert isinstance(client, TestClient)
    big = bytes(range(256)) * 2000  # 512 kB: fragmented and deflated on the way
    with client.connect("/echo") as conn:
        conn.send("héllo")
        assert conn.receive() == "héllo"
        conn.send(big)
        assert conn.receive() == big
        assert conn.close_code is None
    assert conn.close_code == 1000


def test_params_query_and_remote_addr_reach_the_handler() -> None:
    app, pine = make_app()
    with pine.test_client(app).connect("/rooms/7?nick=ann") as conn:
        assert json.loads(conn.receive()) == {"room": 7, "nick": "ann", "from": "127.0.0.1"}
        with pytest.raises(ConnectionClosed) as closed:
            conn.receive()
        assert closed.value.code == 1000
    assert conn.close_code == 1000


def test_subprotocol_is_the_clients_first_the_route_allows() -> None:
    app, pine = make_app()
    client = pine.test_client(app)
    with client.connect("/echo", subprotocols=["other", "chat.v1", "chat.v2"]) as conn:
        assert conn.subprotocol == "chat.v1"
    with client.connect("/echo", subprotocols=["other"]) as conn:
        assert conn.subprotocol is None


def test_the_handlers_close_code_and_reason() -> None:
    app, pine = make_app()
    with pine.test_client(app).connect("/refuse") as conn:
        assert conn.receive() == "no"
        with pytest.raises(ConnectionClosed) as closed:
            conn.receive()
        assert (closed.value.code, closed.value.reason) == (4003, "not today")
        assert (conn.close_code, conn.close_reason) == (4003, "not today")
        with pytest.raises(ConnectionClosed):
            conn.send("too late")


def test_a_message_too_big_closes_with_1009() -> None:
    app, pine = make_app()
    with pine.test_client(app).connect("/small") as conn:
        conn.send("x" * 11)
        with pytest.raises(ConnectionClosed):
            conn.receive()
    assert conn.close_code == 1009


def test_a_failing_handler_closes_with_1011() -> None:
    app, pine = make_app()
    with pine.test_client(app).connect("/fails") as conn:
        with pytest.raises(ConnectionClosed):
            conn.receive()
    assert conn.close_code == 1011


@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/echo", {"Origin": "https://evil.example"}, 403),
    ("/private/feed", None, 401),
    ("/nowhere", None, 404),
])
def test_a_refused_handshake_raises_with_its_status(path: str, headers: dict[str, str] | None,
                                                    status: int) -> None:
    app, pine = make_app()
    with pytest.raises(HandshakeRefused) as refused:
        pine.test_client(app).connect(path, headers=headers)
    assert refused.value.status == status
    assert isinstance(refused.value, PineWSError)
    if status == 403:
        assert "https://evil.example" in refused.value.body


def test_origins_the_route_allows_and_headers_the_app_checks() -> None:
    app, pine = make_app()
    client = pine.test_client(app)
    for origin in ("http://localhost", "https://partner.example"):
        with client.connect("/echo", headers={"Origin": origin}) as conn:
            conn.send(origin)
            assert conn.receive() == origin
    with client.connect("/private/feed", headers=[("Cookie", "ok=1")]) as conn:
        assert conn.receive() == "secret"


def test_receive_times_out_when_nothing_comes() -> None:
    app, pine = make_app()
    with pine.test_client(app).connect("/echo") as conn:
        with pytest.raises(TimeoutError):
            conn.receive(timeout=0.2)
        conn.send("still here")
        assert conn.receive() == "still here"


def test_closing_with_a_code_the_handler_sees() -> None:
    seen: list[int | None] = []
    app = Flask(__name__)
    pine = FlaskPineWS(app)

    @pine.new("/wait")
    def wait(conn: Conn, ctx: Ctx) -> None:
        try:
            conn.receive()
        finally:
            seen.append(conn.close_code)

    conn = pine.test_client(app).connect("/wait")
    conn.close(4000, "bye")
    conn.close()  # a second close does nothing
    assert seen == [4000]
    assert conn.close_code == 4000


def test_watch_file_streams_appends_and_stops_when_the_client_leaves(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\n")
    app, pine = make_app(log)
    with pine.test_client(app).connect("/log") as conn:
        assert conn.receive() == "one\n"
        with log.open("a") as f:
            f.write("two\n")
        assert conn.receive() == "two\n"
    # no_leaks: the watcher's thread, its watch and the file are released


def test_a_handler_that_never_returns_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flask_pine_ws.testing._RETURN_TIMEOUT", 0.5)
    release = threading.Event()
    app = Flask(__name__)
    pine = FlaskPineWS(app)

    @pine.new("/stuck")
    def stuck(conn: Conn, ctx: Ctx) -> None:
        release.wait(30)  # neither receives nor watches: never learns of the close

    conn = pine.test_client(app).connect("/stuck")
    try:
        with pytest.raises(RuntimeError, match="did not return"):
            conn.close()
    finally:
        release.set()


def test_flask_sock_routes_and_watch_file_over_their_ws(tmp_path: Path) -> None:
    from flask_sock import Sock

    log = tmp_path / "app.log"
    log.write_text("one\n")
    app = Flask(__name__)
    pine = FlaskPineWS(app)
    sock = Sock(app)
    ended = threading.Event()

    @sock.route("/sock/log")
    def sock_log(ws: object) -> None:
        try:
            watch_file(log, ws)  # type: ignore[arg-type]
        finally:
            ended.set()

    with pine.test_client(app).connect("/sock/log") as conn:
        assert conn.receive() == "one\n"
        with log.open("a") as f:
            f.write("two\n")
        assert conn.receive() == "two\n"
    assert ended.wait(5)  # the client left: watch_file returned


def test_a_session_ends_with_one_access_line(caplog: pytest.LogCaptureFixture) -> None:
    """Under Werkzeug's conventions (the test client's), through the ``werkzeug`` logger."""
    app, pine = make_app()
    with caplog.at_level("INFO", logger="werkzeug"):
        with pine.test_client(app).connect("/echo?x=1") as conn:
            conn.send("hi")
            assert conn.receive() == "hi"
            conn.close(4002)
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert len(lines) == 1, lines
    assert '"GET /echo?x=1 HTTP/1.1" 101 - websocket ' in lines[0]
    assert lines[0].startswith("127.0.0.1 - - [")
    # a socket pair has no TCP counters: the bytes are unknown, said as "-"
    assert lines[0].endswith(" in=- out=- close=4002"), lines[0]
