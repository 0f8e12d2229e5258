"""flask-sock's ``ws`` where flask-pine-ws wants a :class:`~flask_pine_ws.Conn`.

An app that already has flask-sock routes gets ``watch_file(path, ws)``
without rewriting them: :func:`as_conn` wraps the ``ws`` object flask-sock
hands its handlers (a simple-websocket ``Server``) in :class:`SockConn`, which
gives ``watch_file`` the part of ``Conn`` it uses. Recognised by its shape
(``send``, ``receive``, ``close``, ``connected``, ``event``, ``sock``), not by
its class: simple-websocket is imported by the protocol layer only.

What the wrapper adds to the library's object, for as long as the watch runs
and after it:

- every write, the library's own pings, pongs and close frames included, is
  one whole ``sendall`` under one lock (the library writes with ``send``,
  which may write part of a frame, and its reader thread writes without any
  lock);
- the library's wake-up event also calls listeners, so that a watcher learns
  at once that the client left, without polling;
- its exceptions after a disconnect surface as
  :class:`~flask_pine_ws.ConnectionClosed`, which ``watch_file`` treats as
  the end of the stream.

Not given: the shutdown hook (flask-sock routes are not closed with 1001 when
gunicorn stops a worker) and a file's feed (each watcher reads on its own).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from .errors import ConnectionClosed

#: What a flask-sock ``ws`` has, and a Conn has not all of.
_SHAPE = ("send", "receive", "close", "connected", "event", "sock")


def looks_like_flask_sock(obj: object) -> bool:
    """Whether ``obj`` is a simple-websocket connection, as flask-sock hands its handlers."""
    return all(hasattr(obj, name) for name in _SHAPE)


def as_conn(conn: Any) -> Any:
    """A :class:`SockConn` around a flask-sock ``ws`` (one per ``ws``); anything else unchanged."""
    if not looks_like_flask_sock(conn):
        return conn
    wrapped = getattr(conn, "_pine_ws_conn", None)
    if wrapped is None:
        wrapped = SockConn(conn)
        conn._pine_ws_conn = wrapped
    return wrapped


class _WholeWrites:
    """The library's socket, whose writes are whole and serialised."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes, flags: int = 0) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        with self._lock:
            self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _NotifyingEvent(threading.Event):
    """The library's wake-up event, which also calls listeners (they must only signal)."""

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[], None]] = []

        #: Set by :meth:`SockConn.discard_inbound`: the library's queue of
        #: received messages, emptied at every wake-up (on its reader thread,
        #: right after it appended), so unread messages are never held.
        self.discard: list[Any] | None = None

    def set(self) -> None:
        if self.discard is not None:
            self.discard.clear()
        super().set()
        for listener in list(self.listeners):
            listener()


class SockConn:
    """What ``watch_file`` uses of a :class:`~flask_pine_ws.Conn`, over flask-sock's ``ws``."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._lock = threading.Lock()
        self._viewed_bytes = 0
        self._local_close: tuple[int, str] | None = None
        if not isinstance(ws.sock, _WholeWrites):
            ws.sock = _WholeWrites(ws.sock)
        event = _NotifyingEvent()
        previous, ws.event = ws.event, event
        if previous.is_set() or not ws.connected:
            event.set()  # a wake-up that came before the swap is not lost

    # -- state ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._ws.connected)

    @property
    def subprotocol(self) -> str | None:
        chosen = getattr(self._ws, "subprotocol", None)
        return None if chosen is None else str(chosen)

    @property
    def viewed_bytes(self) -> int:
        return self._viewed_bytes

    def add_viewed_bytes(self, count: int) -> None:
        self._viewed_bytes += count

    @property
    def close_code(self) -> int | None:
        if self.connected:
            return None
        if self._local_close is not None:
            return self._local_close[0]
        return int(self._ws.close_reason)

    @property
    def close_reason(self) -> str:
        if self._local_close is not None:
            return self._local_close[1]
        return str(self._ws.close_message or "")

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or 1006, self.close_reason)

    # -- listeners -----------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        self._ws.event.listeners.append(callback)
        if not self.connected:
            callback()

    def remove_listener(self, callback: Callable[[], None]) -> None:
        try:
            self._ws.event.listeners.remove(callback)
        except ValueError:
            pass

    # -- messages ------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        with self._lock:
            if not self._ws.connected:
                raise self._closed()
            try:
                self._ws.send(data)
            except Exception:  # noqa: BLE001 - the library's ConnectionClosed, OSError, wsproto's
                self._ws.connected = False
                raise self._closed() from None

    def send_json(self, obj: Any) -> None:
        self.send(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    def discard_inbound(self) -> None:
        """Drop what the client sends from now on (``watch_file`` never reads).

        The library appends every message to its ``input_buffer`` without a
        bound; that list is emptied at each wake-up, so it holds at most the
        message just received.
        """
        buffer = getattr(self._ws, "input_buffer", None)
        if isinstance(buffer, list):
            buffer.clear()
            self._ws.event.discard = buffer

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        try:
            message = self._ws.receive(timeout=timeout)
        except Exception:  # noqa: BLE001 - the library's ConnectionClosed, OSError
            raise self._closed() from None
        if message is None and not self._ws.connected:
            raise self._closed()
        return message  # type: ignore[no-any-return]

    def close(self, code: int = 1000, reason: str = "") -> None:
        with self._lock:
            if not self._ws.connected:
                return
            self._local_close = (code, reason)
            try:
                self._ws.close(code, reason)
            except Exception:  # noqa: BLE001 - gone already: closed either way
                pass
        self._ws.event.set()

    # -- what a feed or a channel asks of a connection: no shared frames here -

    @property
    def shares_frames(self) -> bool:
        return False

    def try_send_frame(self, frame: bytes) -> int:
        return 0

    def flush(self) -> None:
        pass
