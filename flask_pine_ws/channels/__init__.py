"""Channels: publish a message to every connection that joined, in this process or all.

This package owns ``conn.join``/``conn.leave`` and ``pine.publish``; the
connection and the extension only call the four functions below.

- :mod:`.local`: the members of this process, a bounded queue and a sender per
  member (a slow client never blocks a publisher or the others).
- :mod:`.redis`: Redis pub/sub between processes and hosts (optional).
- :mod:`.backend`: which of the two ``PINE_WS_MESSAGE_QUEUE`` chooses.
- :mod:`.message`: ``str``, ``bytes`` or JSON, and how Redis carries them.
"""

from __future__ import annotations

from typing import Any

from ..config import setting
from ..errors import ConnectionClosed
from .backend import current, existing
from .local import Sink
from .message import encode

__all__ = ["join", "leave", "leave_all", "publish"]


def _check(channel: object) -> str:
    if not isinstance(channel, str) or not channel:
        raise TypeError(f"a channel is a non-empty str, not {channel!r}")
    return channel


def join(conn: Sink, channel: str) -> None:
    """Make ``conn`` a member of ``channel`` (see :meth:`flask_pine_ws.Conn.join`)."""
    _check(channel)
    if not getattr(conn, "connected", True):
        raise ConnectionClosed(getattr(conn, "close_code", None) or 1006)
    backend = current()
    backend.registry.join(conn, channel, int(setting("PINE_WS_CHANNEL_QUEUE")))
    backend.joined(channel)


def leave(conn: Sink, channel: str) -> None:
    """Take ``conn`` out of ``channel`` (see :meth:`flask_pine_ws.Conn.leave`)."""
    _check(channel)
    for backend in existing():
        backend.registry.leave(conn, channel)


def leave_all(conn: Sink) -> None:
    """Take ``conn`` out of every channel: its connection is closing."""
    for backend in existing():
        backend.registry.leave_all(conn)


def publish(channel: str, message: Any) -> None:
    """Send ``message`` to every member of ``channel`` (see :meth:`FlaskPineWS.publish`)."""
    current().publish(_check(channel), encode(message))
