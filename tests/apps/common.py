"""What every test app under tests/apps shares: the app skeleton and the token-guarded viewer.

The test apps differ in their routes, not in how they start: each reads the
extension's ``PINE_WS_*`` settings from the environment (JSON values, so a
test can pass numbers, lists and booleans through ``server(..., env=...)``),
installs its extension, and answers ``/__ready`` (what tests/server.py polls
before a test may use the server). Kept in one place so that a change to that
contract reaches every app.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Blueprint, Flask, Response, request

from flask_pine_ws import FlaskPineWS


def base_app(import_name: str, pine: FlaskPineWS) -> Flask:
    """A Flask app with ``PINE_WS_*`` from the environment, ``pine`` installed, and ``/__ready``."""
    app = Flask(import_name)
    for key, value in os.environ.items():
        if key.startswith("PINE_WS_"):
            app.config[key] = json.loads(value)
    pine.init_app(app)

    @app.route("/__ready")
    def ready() -> str:
        return "ok"

    return app


def token_viewer(pine: FlaskPineWS, files: dict[str, str], *, cookie: bool,
                 **options: Any) -> Blueprint:
    """The viewer ``secure`` behind the documented auth hook: ``X-Token: secret`` or a 401.

    :param cookie: also accept the cookie ``token=secret`` (checked first), as a
        browser sends it.
    """
    secure = pine.viewer(files, name="secure", **options)

    @secure.before_request
    def require_token() -> Response | None:
        token = (request.cookies.get("token") if cookie else None) or request.headers.get("X-Token")
        if token != "secret":
            return Response("login required\n", status=401, mimetype="text/plain")
        return None

    return secure
