"""The app the extension's tests run: one route per behaviour under test."""

from __future__ import annotations

import base64
import faulthandler
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable

from flask import Blueprint, Flask, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_pine_ws import Config, Conn, ConnectionClosed, Ctx, FlaskPineWS, InvalidMessage

from common import base_app

pine = FlaskPineWS()
bp = Blueprint("bp", __name__, url_prefix="/bp")
errors: list[str] = []
#: What handlers saw, for the tests to read at GET /state (one worker process).
events: list[dict[str, object]] = []
_events_lock = threading.Lock()


def record(name: str, **details: object) -> None:
    with _events_lock:
        events.append({"event": name, **details})


@pine.new("/echo")
def echo(conn: Conn, ctx: Ctx) -> None:
    try:
        while True:
            conn.send(conn.receive())  # type: ignore[arg-type]
    finally:
        record("handler-ended", path=ctx.request.path, code=conn.close_code,
               reason=conn.close_reason)


@pine.new("/ctx/<int:num>/<name>")
def show_ctx(conn: Conn, ctx: Ctx) -> None:
    before = conn.viewed_bytes
    conn.add_viewed_bytes(5)
    conn.add_viewed_bytes(7)
    conn.send_json({"params": ctx.params, "query": ctx.query.to_dict(flat=False),
                    "path": ctx.request.path, "subprotocol": conn.subprotocol,
                    "header": ctx.request.headers.get("X-Test"),
                    "remote_addr": ctx.request.remote_addr,
                    "viewed_bytes": [before, conn.viewed_bytes]})


@pine.new("/json")
def json_echo(conn: Conn, ctx: Ctx) -> None:
    while True:
        try:
            value = conn.receive_json()
        except InvalidMessage as exc:
            conn.send_json({"error": str(exc)})
            continue
        conn.send_json({"got": value})


@pine.new("/close/<int:code>")
def close_with(conn: Conn, ctx: Ctx) -> None:
    conn.close(ctx.params["code"], ctx.query.get("reason", ""))
    conn.close(1000)  # a second close does nothing


@pine.new("/fail", config=Config(error=lambda exc: errors.append(repr(exc))))
def fail(conn: Conn, ctx: Ctx) -> None:
    raise ValueError("boom in handler")


@pine.new("/errors")
def list_errors(conn: Conn, ctx: Ctx) -> None:
    conn.send_json(errors)


@pine.new("/fail-unhandled")
def fail_unhandled(conn: Conn, ctx: Ctx) -> None:
    raise KeyError("no callback")


@pine.new("/proto", config=Config(subprotocols=["chat.v2", "chat.v1"]))
def proto(conn: Conn, ctx: Ctx) -> None:
    conn.send(conn.subprotocol or "")


@pine.new("/nocompress", config=Config(enable_compression=False))
def nocompress(conn: Conn, ctx: Ctx) -> None:
    conn.send("x" * 1000)


@pine.new("/small", config=Config(max_message_size=1024))
def small(conn: Conn, ctx: Ctx) -> None:
    echo(conn, ctx)


@pine.new("/origins",
          config=Config(allowed_origins=["https://ok.example", "https://*.trusted.example"]))
def origins(conn: Conn, ctx: Ctx) -> None:
    conn.send("in")


@pine.new("/anyorigin", config=Config(check_origin=False))
def anyorigin(conn: Conn, ctx: Ctx) -> None:
    conn.send("in")


@pine.new("/customorigin",
          config=Config(check_origin=lambda origin, req: origin.endswith(".custom")))
def customorigin(conn: Conn, ctx: Ctx) -> None:
    conn.send("in")


def storm_payload(tid: int, i: int, length: int) -> bytes:
    """Message ``i`` of sender ``tid``: ``{"t":..,"i":..}|`` then bytes that do not compress.

    Odd senders send it as binary (random bytes), even ones as text (base64
    of random bytes). tests/test_conn.py rebuilds it to compare.
    """
    head = json.dumps({"t": tid, "i": i}).encode() + b"|"
    body = random.Random(f"{tid}/{i}").randbytes(length)
    if tid % 2 == 0:
        body = base64.b64encode(body)
    return head + body[: length - len(head)]


@pine.new("/storm", config=Config(ping_interval=0.01))
def storm(conn: Conn, ctx: Ctx) -> None:
    """Several threads send large messages at once while pings fly every 10 ms.

    Message sizes grow from ``size`` to ``max`` bytes. A sender stops quietly
    on ConnectionClosed; any other error is a traceback in the server's log,
    which the tests read.
    """
    threads_n = int(ctx.query.get("threads", "4"))
    count = int(ctx.query.get("count", "20"))
    size = int(ctx.query.get("size", "16384"))
    largest = int(ctx.query.get("max", str(size)))

    def sender(tid: int) -> None:
        try:
            for i in range(count):
                length = size + (largest - size) * i // max(count - 1, 1)
                body = storm_payload(tid, i, length)
                conn.send(body if tid % 2 else body.decode())
        except ConnectionClosed:
            record("storm-sender-closed")

    workers = [threading.Thread(target=sender, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    conn.send("done")
    conn.receive(timeout=30)


# the same storm with permessage-deflate off: frames written as they are built
pine.new("/storm-plain", config=Config(ping_interval=0.01, enable_compression=False),
         endpoint="storm_plain")(storm)


@pine.new("/sendafter")
def send_after_close(conn: Conn, ctx: Ctx) -> None:
    """Keeps sending after the client left: must end quietly with ConnectionClosed."""
    try:
        while True:
            conn.send("tick " * 1000)
            time.sleep(0.01)
    except ConnectionClosed as exc:
        record("sendafter-closed", code=exc.code, connected=conn.connected)
        raise


@pine.new("/flood")
def flood(conn: Conn, ctx: Ctx) -> None:
    """Sends 64 KiB messages until the peer stops reading and is dropped."""
    started = time.monotonic()
    try:
        while True:
            conn.send(b"f" * 65536)
    except ConnectionClosed:
        record("flood-dropped", after=time.monotonic() - started)
        raise


@pine.new("/connected")
def connected(conn: Conn, ctx: Ctx) -> None:
    """Reports ``connected``, then what a handler sees once the client closed."""
    conn.send_json({"connected": conn.connected})
    try:
        conn.receive(timeout=30)
    except ConnectionClosed as exc:
        state: dict[str, object] = {"connected": conn.connected, "code": exc.code,
                                    "reason": exc.reason, "close_code": conn.close_code}
        calls: dict[str, Callable[[], object]] = {
            "send": lambda: conn.send("late"),
            "send_json": lambda: conn.send_json([1]),
            "receive": lambda: conn.receive(timeout=1),
        }
        for name, call in calls.items():
            try:
                call()
                state[name] = "no error"
            except Exception as err:  # noqa: BLE001 - the test asserts it is ConnectionClosed
                state[name] = type(err).__name__
        conn.close(1000)  # closing a closed connection does nothing
        record("connected-after-close", **state)


@pine.new("/badclose")
def bad_close(conn: Conn, ctx: Ctx) -> None:
    """Tries close codes and reasons a peer may not be sent; reports which were refused."""
    refused = {}
    for code, reason in ((999, ""), (1004, ""), (1005, ""), (1006, ""), (1015, ""),
                         (2999, ""), (5000, ""), (1000, "x" * 124), (1000, "é" * 62)):
        try:
            conn.close(code, reason)
            refused[f"{code}/{len(reason)}"] = "accepted"
        except ValueError as exc:
            refused[f"{code}/{len(reason)}"] = str(exc)
    conn.send_json({"refused": refused, "connected": conn.connected})
    conn.close(3000, "é" * 61)  # 122 bytes: allowed


@pine.new("/typed/<int:num>/<float:ratio>/<path:rest>", endpoint="typed_ep",
          defaults={"flag": "on"})
def typed(conn: Conn, ctx: Ctx) -> None:
    conn.send_json({"params": ctx.params, "endpoint": request.endpoint,
                    "types": {k: type(v).__name__ for k, v in ctx.params.items()},
                    "url": url_for("typed_ep", num=7, ratio=0.5, rest="x/y")})


@pine.new("/wait")
def wait(conn: Conn, ctx: Ctx) -> None:
    """Blocks in receive until the connection ends (a shutdown, a client leaving)."""
    conn.send("ready")
    while True:
        conn.receive()


@bp.route("/plain")
def bp_plain() -> str:
    return "plain"


@pine.new("/ws", blueprint=bp)
def bp_ws(conn: Conn, ctx: Ctx) -> None:
    conn.send("from blueprint")


# `kill -USR1 <worker>` prints every thread's stack to the server's log.
faulthandler.register(signal.SIGUSR1, all_threads=True)


def create_app() -> Flask:
    app = base_app(__name__, pine)
    if os.environ.get("PINE_TEST_PROXYFIX"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_host=1, x_proto=1)  # type: ignore[method-assign]
    app.register_blueprint(bp)

    @app.route("/state")
    def state() -> dict[str, object]:
        with _events_lock:
            return {"events": list(events), "errors": list(errors)}

    @app.route("/threads")
    def threads() -> dict[str, object]:
        return {"threads": [t.name for t in threading.enumerate()]}

    return app


app = create_app()


@pine.new("/late")
def late(conn: Conn, ctx: Ctx) -> None:
    """Declared after init_app: registered on every app the extension already has."""
    conn.send("late route")
