"""The app the extension's tests run: one route per behaviour under test."""

from __future__ import annotations

import json
import os
import threading
import time

from flask import Blueprint, Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_pine_ws import Config, Conn, Ctx, FlaskPineWS, InvalidMessage

pine = FlaskPineWS()
bp = Blueprint("bp", __name__, url_prefix="/bp")
errors: list[str] = []


@pine.new("/echo")
def echo(conn: Conn, ctx: Ctx) -> None:
    while True:
        conn.send(conn.receive())  # type: ignore[arg-type]


@pine.new("/ctx/<int:num>/<name>")
def show_ctx(conn: Conn, ctx: Ctx) -> None:
    conn.send_json({"params": ctx.params, "query": ctx.query.to_dict(flat=False),
                    "path": ctx.request.path, "subprotocol": conn.subprotocol})


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
    while True:
        conn.send(conn.receive())  # type: ignore[arg-type]


@pine.new("/origins", config=Config(allowed_origins=["https://ok.example", "https://*.trusted.example"]))
def origins(conn: Conn, ctx: Ctx) -> None:
    conn.send("in")


@pine.new("/anyorigin", config=Config(check_origin=False))
def anyorigin(conn: Conn, ctx: Ctx) -> None:
    conn.send("in")


@pine.new("/customorigin", config=Config(check_origin=lambda origin, req: origin.endswith(".custom")))
def customorigin(conn: Conn, ctx: Ctx) -> None:
    conn.send("in")


@pine.new("/storm", config=Config(ping_interval=0.01))
def storm(conn: Conn, ctx: Ctx) -> None:
    """Several threads send large messages at once while pings fly."""
    threads_n = int(ctx.query.get("threads", "4"))
    count = int(ctx.query.get("count", "20"))
    size = int(ctx.query.get("size", "16384"))

    def sender(tid: int) -> None:
        for i in range(count):
            head = json.dumps({"t": tid, "i": i}).encode()
            body = head + b"|" + bytes([65 + tid % 26]) * (size - len(head) - 1)
            if tid % 2:
                conn.send(body)
            else:
                conn.send(body.decode())

    workers = [threading.Thread(target=sender, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    conn.send("done")
    conn.receive(timeout=30)


@pine.new("/sendafter")
def send_after_close(conn: Conn, ctx: Ctx) -> None:
    """Keeps sending after the client left: must end quietly with ConnectionClosed."""
    while True:
        conn.send("tick " * 1000)
        time.sleep(0.01)


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


def create_app() -> Flask:
    app = Flask(__name__)
    if os.environ.get("PINE_TEST_PROXYFIX"):
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_host=1, x_proto=1)  # type: ignore[method-assign]
    for key, value in os.environ.items():
        if key.startswith("PINE_WS_"):
            app.config[key] = json.loads(value)
    pine.init_app(app)
    app.register_blueprint(bp)

    @app.route("/__ready")
    def ready() -> str:
        return "ok"

    @app.route("/threads")
    def threads() -> dict[str, object]:
        return {"threads": [t.name for t in threading.enumerate()]}

    return app


app = create_app()
