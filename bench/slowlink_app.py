"""The app ``bench/slowlink.py`` serves: one file's whole backlog, and the viewer of it.

gunicorn (gthread) loads ``slowlink_app:app``; the file comes from
``BENCH_FILE``, and ``PINE_WS_ENABLE_COMPRESSION`` / ``PINE_WS_DEFLATE_CHOICE``
from the environment (JSON values). ``/watch``: ``watch_file(path, conn)``
with neither ``offset`` nor ``lines``, so the whole file (up to
``PINE_WS_BACKLOG_BYTES``) is the backlog, in the framed protocol the viewer
speaks; ``/logs/app``: the viewer of the same file, reading its whole backlog (and keeping
its default 5,000 lines).
"""

from __future__ import annotations

import json
import os

from flask import Flask

from flask_pine_ws import Config, Conn, Ctx, FlaskPineWS, watch_file

app = Flask(__name__)
app.config["PINE_WS_PING_INTERVAL"] = 0
for key in ("PINE_WS_ENABLE_COMPRESSION", "PINE_WS_DEFLATE_CHOICE"):
    if key in os.environ:
        app.config[key] = json.loads(os.environ[key])
pine = FlaskPineWS(app)
FILE = os.environ.get("BENCH_FILE", "bench.log")


@pine.new("/watch", config=Config(subprotocols=["pine.watch.v1"]))
def watch(conn: Conn, ctx: Ctx) -> None:
    watch_file(FILE, conn)


app.register_blueprint(pine.viewer({"app": FILE}, lines=None),
                       url_prefix="/logs")


@app.route("/__ready")
def ready() -> str:
    return "ok"
