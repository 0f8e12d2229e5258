"""flask-pine-ws: WebSocket routes in one decorator, and live file streaming, for Flask.

A port of the websocket package of Pine, a Go web framework: ``new()`` turns a
``handler(conn, ctx)`` into a route, ``Conn`` is a connection safe to share
between threads, and ``watch_file`` streams a growing file (a server log) live
to a browser, following it by name as ``tail -F`` does.

Only the names below are public; everything else is private by omission.
"""

from __future__ import annotations

from .config import Config
from .conn import Conn
from .errors import (
    ChannelError,
    ConnectionClosed,
    HandshakeRefused,
    InvalidMessage,
    PineWSError,
)
from .extension import Ctx, FlaskPineWS
from .watch import watch_file

__all__ = [
    "ChannelError",
    "Config",
    "Conn",
    "ConnectionClosed",
    "Ctx",
    "FlaskPineWS",
    "HandshakeRefused",
    "InvalidMessage",
    "PineWSError",
    "watch_file",
]
