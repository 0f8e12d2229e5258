"""The cap on open WebSockets per client address (``PINE_WS_MAX_PER_ADDRESS``).

This module owns one count: how many WebSockets each client address holds
open in this process, and whether one more may open. Each open WebSocket
holds a thread of the worker for its whole life (gthread), so without a cap
one address (one script, one machine) can take every thread with sockets
that merely answer pings, and every other client waits. Past the cap the
handshake is refused with HTTP 429 (Too Many Requests) and a ``Retry-After``,
before any thread is committed to a socket.

The address is ``request.remote_addr``: the peer of the TCP connection, or
the client's own address where the app trusts its proxy's
``X-Forwarded-For`` through Werkzeug's ``ProxyFix``. Behind a proxy without
``ProxyFix`` every client has the proxy's address, so the cap would hold for
all of them together: that is why it is off (``0``) unless set. The count is
per worker process, as the threads it protects are.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, request

#: Seconds a refused client is told to wait (``Retry-After``).
RETRY_AFTER = 5

_lock = threading.Lock()
_open: dict[str, int] = {}


class Slot:
    """One open WebSocket counted against its address; :meth:`release` it when it ends."""

    __slots__ = ("address", "_held")

    def __init__(self, address: str, held: bool) -> None:
        self.address = address
        self._held = held

    def release(self) -> None:
        """Give the slot back. Idempotent."""
        if not self._held:
            return
        self._held = False
        with _lock:
            left = _open.get(self.address, 0) - 1
            if left > 0:
                _open[self.address] = left
            else:
                _open.pop(self.address, None)


def take(address: str | None, cap: int) -> Slot | None:
    """Count one more WebSocket for ``address``, if it holds fewer than ``cap``.

    :param address: the client's address (``request.remote_addr``); ``None``
        (no address known, as under some test servers) is counted as ``""``.
    :param cap: the most open WebSockets per address; ``0`` or less: no cap
        (nothing is counted).
    :returns: the slot to release when the socket ends, or ``None``: refuse.
    """
    if cap <= 0:
        return Slot("", held=False)
    key = address or ""
    with _lock:
        count = _open.get(key, 0)
        if count >= cap:
            return None
        _open[key] = count + 1
    return Slot(key, held=True)


def refused() -> Response:
    """The answer to a handshake past the cap: 429, and when to try again."""
    return Response("Too many open WebSockets from this address.\n", status=429,
                    mimetype="text/plain", headers={"Retry-After": str(RETRY_AFTER)})


def capped(view: Callable[..., Response]) -> Callable[..., Response]:
    """Wrap a WebSocket route's view: refuse past the app's cap, count the socket while it runs.

    The count is taken before the view accepts the handshake and given back
    when the view returns, which is when the socket has ended.
    """

    @functools.wraps(view)
    def counted(**params: Any) -> Response:
        cap = int(current_app.config.get("PINE_WS_MAX_PER_ADDRESS", 0))
        slot = take(request.remote_addr, cap)
        if slot is None:
            return refused()
        try:
            return view(**params)
        finally:
            slot.release()

    return counted


def open_counts() -> dict[str, int]:
    """Open WebSockets per address in this process, for tests and debugging."""
    with _lock:
        return dict(_open)
