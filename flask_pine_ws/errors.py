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


class InvalidMessage(PineWSError, ValueError):
    """A received message is not what was asked for (bad JSON, say).

    The message is consumed; the connection stays open.
    """
