"""flask-pine-ws as the benchmark runs it: one route that follows one file.

gunicorn (``flask_pine_ws.worker.ThreadWorker``) loads ``pine_app:app``; the
file comes from ``BENCH_FILE`` and compression from ``BENCH_COMPRESSION`` ("1"
or "0"). Pings are off, as in every other target, so that idle CPU measures
the watch, not keep-alives.
``/logs?lines=10`` begins at the file's last 10 lines (the backlog case);
``/logs`` at its end.
"""

from __future__ import annotations

import os

from flask import Flask

from flask_pine_ws import Conn, Ctx, FlaskPineWS, watch_file

app = Flask(__name__)
app.config["PINE_WS_ENABLE_COMPRESSION"] = os.environ.get("BENCH_COMPRESSION", "0") == "1"
app.config["PINE_WS_PING_INTERVAL"] = 0
pine = FlaskPineWS(app)
FILE = os.environ.get("BENCH_FILE", "bench.log")


@pine.new("/logs")
def logs(conn: Conn, ctx: Ctx) -> None:
    watch_file(FILE, conn, lines=int(ctx.query.get("lines", "0")))


@app.route("/__ready")
def ready() -> str:
    return "ok"
