"""Several apps in one process, built by a factory, sharing one extension object.

``app`` mounts two apps made by ``create_app`` at ``/a`` and ``/b``: each has
its own ``PINE_WS_*`` settings, and a route declared on the extension after
both ``init_app`` calls reaches both. A second, separate extension serves a
third app at ``/c``, so that two extension objects live side by side too.
"""

from __future__ import annotations

from flask import Flask, current_app
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_pine_ws import Conn, Ctx, FlaskPineWS
from flask_pine_ws.config import setting

pine = FlaskPineWS()


@pine.new("/who")
def who(conn: Conn, ctx: Ctx) -> None:
    conn.send_json({"app": current_app.name, "subprotocol": conn.subprotocol,
                    "max": setting("PINE_WS_MAX_MESSAGE_SIZE")})


def create_app(name: str, subprotocols: list[str], max_size: int) -> Flask:
    app = Flask(name)
    app.config["PINE_WS_SUBPROTOCOLS"] = subprotocols
    pine.init_app(app)
    # set after init_app: setdefault left it alone, the app's value wins
    app.config["PINE_WS_MAX_MESSAGE_SIZE"] = max_size
    return app


app_a = create_app("app_a", ["proto.a"], 1000)
app_b = create_app("app_b", ["proto.b"], 2000)


@pine.new("/after")
def after(conn: Conn, ctx: Ctx) -> None:
    """Declared after both init_app calls."""
    conn.send(f"after on {current_app.name}")


other = FlaskPineWS()
app_c = Flask("app_c")
other.init_app(app_c)


@other.new("/who")
def who_c(conn: Conn, ctx: Ctx) -> None:
    conn.send_json({"app": current_app.name, "extension": "other"})


root = Flask("root")


@root.route("/__ready")
def ready() -> str:
    return "ok"


app = DispatcherMiddleware(root, {"/a": app_a, "/b": app_b, "/c": app_c})
