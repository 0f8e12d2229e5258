"""The app the deployment, load, fault and fuzz tests run: viewers, an echo, and a debug route.

Configured from the environment, so that one module serves every test of
``tests/test_deploy_nginx.py``, ``test_workers_restart.py``, ``test_load.py``,
``test_faults.py`` and ``test_fuzz.py``:

- ``PINE_DEPLOY_FILES``: JSON name -> path, served by the viewer at ``/logs``
  (and by ``/secure``, the same viewer behind a ``before_request`` that wants
  the header ``X-Token: secret``).
- ``PINE_DEPLOY_PROXYFIX=1``: wrap the app in Werkzeug's ``ProxyFix`` as the
  docs say (``x_for=1, x_proto=1, x_host=1``).
- ``PINE_WS_*``: the extension's settings (JSON values).

Routes besides the viewers: ``/echo`` (sends back every message), ``/__ready``
and ``/debug/stats``: this worker's pid, threads, file descriptors, inotify
instances and watches (read from ``/proc/self/fdinfo``), open sockets, the
watchers a feed sends to (``feed_live``), the watch table, and its fd limit.
A test app only: a real app would not publish these.
"""

from __future__ import annotations

import json
import os
import resource
import threading
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_pine_ws import Conn, Ctx, FlaskPineWS, feed
from flask_pine_ws import shutdown as pine_shutdown
from flask_pine_ws.protocol import waiting_readers
from flask_pine_ws.watchtable import WatchTable

from common import base_app, token_viewer

pine = FlaskPineWS()


@pine.new("/echo")
def echo(conn: Conn, ctx: Ctx) -> None:
    while True:
        message = conn.receive()
        if message is not None:
            conn.send(message)


def inotify_counts() -> tuple[int, int]:
    """``(instances, watches)`` of this process: inotify fds, and their ``inotify wd:`` lines."""
    instances = watches = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                lines = info.read().splitlines()
        except OSError:
            continue  # closed meanwhile (the listing's own fd, a socket that ended)
        instances += 1
        watches += sum(1 for line in lines if line.startswith("inotify "))
    return instances, watches


def create_app() -> Flask:
    app = base_app(__name__, pine)
    files = json.loads(os.environ.get("PINE_DEPLOY_FILES", "{}"))
    if files:
        app.register_blueprint(pine.viewer(files, lines=None), url_prefix="/logs")
        app.register_blueprint(token_viewer(pine, files, cookie=False, lines=None),
                               url_prefix="/secure")

    @app.route("/debug/stats")
    def stats() -> dict[str, Any]:
        instances, watches = inotify_counts()
        return {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "threads": threading.active_count(),
            "thread_names": sorted(t.name for t in threading.enumerate()),
            "fds": len(os.listdir("/proc/self/fd")),
            "inotify_instances": instances,
            "inotify_watches": watches,
            "live": pine_shutdown.live_count(),
            "waiting_readers": waiting_readers(),
            "feed_live": feed.live_count(),
            "table": WatchTable.current().stats(),
            "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        }

    if os.environ.get("PINE_DEPLOY_PROXYFIX") == "1":
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    return app


app = create_app()
