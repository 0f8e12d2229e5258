"""The exceptions of flask-pine-ws: one base class, one error per failure kind.

A handler sees :class:`ConnectionClosed` for every way a connection can end
under it (a close frame, a reset, a write on a dead socket), never the
``OSError`` or wsproto error the socket and the protocol library raise.
"""

from __future__ import annotations


class PineWSError(RuntimeError):
    """The base class of every error raised by flask-pine-ws."""


class ConnectionClosed(PineWSError):
    """The connection is closed: the peer left, or it was closed here.

    Raising it out of a handler ends the handler quietly: no 500, no
    traceback in the server's log.

    :ivar code: the close code (1000 normal, 1001 going away, 1006 abnormal
        closure without a close frame, ...).
    :ivar reason: the close reason sent with it, or ``""``.
    """

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")


class ChannelError(PineWSError):
    """A message could not be published: the message queue (Redis) is unreachable.

    Raised at once by :meth:`FlaskPineWS.publish`, never after a hang; nothing
    was published.
    """


class InvalidMessage(PineWSError, ValueError):
    """A received message is not what was asked for (bad JSON, say).

    The message is consumed; the connection stays open.
    """


class HandshakeRefused(PineWSError):
    """The server answered a handshake with an HTTP error instead of accepting it.

    Raised by the test client (:mod:`flask_pine_ws.testing`) for a route that
    refused the upgrade: a bad origin (403), no such route (404), a guard of
    the app (401), a server shutting down (503).

    :ivar status: the HTTP status code.
    :ivar body: the response body, as text.
    :ivar headers: the response headers, as ``(name, value)`` pairs.
    """

    def __init__(self, status: int, body: str = "",
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        detail = body.strip().splitlines()[0] if body.strip() else ""
        super().__init__(f"handshake refused with HTTP {status}{': ' + detail if detail else ''}")
