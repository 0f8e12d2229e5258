"""The baseline of the conformance run: an echo route on plain simple-websocket, no extension.

What flask-sock does, in a few lines: ``simple_websocket.Server`` on the
WSGI environ, echo until the peer leaves, then end the request without
writing anything (gunicorn: ``StopIteration`` from the response). Run under
the same gunicorn (gthread) as the extension's echo route, so that the two
results differ only by what the extension adds.
"""

from __future__ import annotations

from typing import Any

import simple_websocket
from flask import Flask, Response, request

app = Flask(__name__)


class _Done(Response):
    def __call__(self, environ: Any, start_response: Any) -> Any:
        raise StopIteration()  # gunicorn writes nothing more on the socket


@app.route("/echo", websocket=True)
def echo() -> Response:
    ws = simple_websocket.Server(request.environ, max_message_size=None)
    try:
        while True:
            ws.send(ws.receive())
    except simple_websocket.ConnectionClosed:
        pass
    return _Done()


@app.route("/__ready")
def ready() -> str:
    return "ok"
