"""The app the viewer's tests run: viewers configured from the environment.

- ``PINE_VIEWER_FILES``: JSON name -> path, the files of the viewer at ``/logs``.
- ``PINE_VIEWER_LINES``, ``PINE_VIEWER_MAX_LINES``: its ``lines`` and ``max_lines``.
- ``/secure``: a second viewer of the same files behind a ``before_request``
  that wants the cookie or header ``token=secret`` (the documented auth hook).
"""

from __future__ import annotations

import json
import os

from flask import Flask

from flask_pine_ws import FlaskPineWS

from common import base_app, token_viewer

pine = FlaskPineWS()


def create_app() -> Flask:
    app = base_app(__name__, pine)
    files = json.loads(os.environ.get("PINE_VIEWER_FILES", "{}"))
    lines_env = os.environ.get("PINE_VIEWER_LINES", "1000")
    lines = None if lines_env == "none" else int(lines_env)
    max_lines = int(os.environ.get("PINE_VIEWER_MAX_LINES", "5000"))
    app.register_blueprint(pine.viewer(files, lines=lines, max_lines=max_lines),
                           url_prefix="/logs")

    app.register_blueprint(token_viewer(pine, files, cookie=True, lines=lines, max_lines=max_lines),
                           url_prefix="/secure")

    return app


app = create_app()
