"""The app the viewer's tests run: viewers configured from the environment.

- ``PINE_VIEWER_FILES``: JSON name -> path, the files of the viewer at ``/logs``.
- ``PINE_VIEWER_LINES``, ``PINE_VIEWER_MAX_LINES``: its ``lines`` and ``max_lines``.
- ``/secure``: a second viewer of the same files behind a ``before_request``
  that wants the cookie or header ``token=secret`` (the documented auth hook).
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response, request

from flask_pine_ws import FlaskPineWS

pine = FlaskPineWS()


def create_app() -> Flask:
    app = Flask(__name__)
    for key, value in os.environ.items():
        if key.startswith("PINE_WS_"):
            app.config[key] = json.loads(value)
    pine.init_app(app)
    files = json.loads(os.environ.get("PINE_VIEWER_FILES", "{}"))
    lines_env = os.environ.get("PINE_VIEWER_LINES", "1000")
    lines = None if lines_env == "none" else int(lines_env)
    max_lines = int(os.environ.get("PINE_VIEWER_MAX_LINES", "5000"))
    app.register_blueprint(pine.viewer(files, lines=lines, max_lines=max_lines),
                           url_prefix="/logs")

    secure = pine.viewer(files, name="secure", lines=lines, max_lines=max_lines)

    @secure.before_request
    def require_token() -> Response | None:
        token = request.cookies.get("token") or request.headers.get("X-Token")
        if token != "secret":
            return Response("login required\n", status=401, mimetype="text/plain")
        return None

    app.register_blueprint(secure, url_prefix="/secure")

    @app.route("/__ready")
    def ready() -> str:
        return "ok"

    return app


app = create_app()
