"""The connection handed to a handler: :class:`Conn`, safe to share between threads.

:class:`Conn` is the public face of one WebSocket connection; the protocol
under it (the handshake, the reader thread, the one send path, the bounded
inbound queue) is :mod:`.protocol`'s. Every method may be called from any
thread: frames never interleave and are never partial, a peer that stops
reading is dropped after ``PINE_WS_SEND_TIMEOUT`` seconds, and every failure
after a disconnect is :class:`ConnectionClosed`.

A file's feed and the channels write one ready-made frame to many
connections without ever waiting for one of them (:meth:`Conn.try_send_frame`,
:meth:`Conn.flush`).

A ``Conn`` knows nothing of files: :attr:`Conn.viewed_bytes` is a counter
that the one who sends a file's bytes adds to (:mod:`.watch` and
:mod:`.feed`). :meth:`Conn.join`, :meth:`Conn.leave` and
:meth:`Conn.watch_file` only hand the connection to :mod:`.channels` and
:mod:`.watch`, which own channels and files; those name ``Conn`` in
annotations only, so imports run one way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import channels, watch
from .errors import InvalidMessage
from .protocol import Mode, Protocol, Settings

if TYPE_CHECKING:
    from .compression import Choice
    from .config import Config

#: Close codes an endpoint may send (RFC 6455 section 7.4, IANA registry).
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})

SHUTDOWN_REASON = "server shutting down"


class Conn:
    """A WebSocket connection, as Pine's ``*websocket.Conn``.

    Every method may be called from any thread. Sends never interleave with
    each other nor with ping, pong and close frames, and are never partial.
    Once the connection is gone, every call that needs it raises
    :class:`ConnectionClosed`.

    Messages the client sends wait in a bounded queue until :meth:`receive`
    takes them: past ``PINE_WS_MAX_QUEUED_MESSAGES`` or
    ``PINE_WS_MAX_QUEUED_BYTES``, the server stops reading the socket until
    the handler catches up. A handler that never reads calls
    :meth:`discard_inbound`.

    Not built directly: a handler registered with :meth:`FlaskPineWS.new`
    receives one.
    """

    def __init__(self, environ: dict[str, Any], config: Config, *, send_timeout: float,
                 close_timeout: float, pong_timeout: float = 20.0,
                 max_queued_messages: int = 0, max_queued_bytes: int = 0,
                 deflate_choice: Choice = "auto") -> None:
        self._listeners: list[Callable[[], None]] = []
        self._close_timeout = close_timeout
        self._viewed_bytes = 0
        self._protocol = Protocol(environ, Settings(
            subprotocols=tuple(config.subprotocols or ()),
            compression=bool(config.enable_compression),
            max_message_size=config.max_message_size or 0,
            read_buffer_size=config.read_buffer_size or 4096,
            ping_interval=config.ping_interval or 0.0,
            pong_timeout=pong_timeout,
            send_timeout=send_timeout,
            close_timeout=close_timeout,
            max_queued_messages=max_queued_messages,
            max_queued_bytes=max_queued_bytes,
            deflate_choice=deflate_choice,
        ), self._notify)
        #: ``"gunicorn"`` or ``"werkzeug"``: the server this connection runs on.
        self.mode: Mode = self._protocol.mode

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    # -- state ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """``True`` until either side closes or the peer is gone."""
        return self._protocol.connected

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen in the handshake, or ``None``."""
        return self._protocol.subprotocol

    @property
    def viewed_bytes(self) -> int:
        """Bytes of watched files delivered on this connection (Pine's ``viewedBytesSize``)."""
        return self._viewed_bytes

    def add_viewed_bytes(self, count: int) -> None:
        """Count ``count`` more bytes of a watched file as delivered (by whoever sent them)."""
        self._viewed_bytes += count

    @property
    def close_code(self) -> int | None:
        """The close code once closed: ours if we closed, else the peer's (1006: no close frame)."""
        if self.connected:
            return None
        return self._protocol.close_code

    @property
    def close_reason(self) -> str:
        """The close reason once closed, or ``""``."""
        return self._protocol.close_reason

    # -- listeners -----------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a message arrives or the connection ends.

        It runs on another thread and must only signal (set an event, say).
        """
        self._listeners.append(callback)
        if not self.connected:
            callback()

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; a callback never added is ignored."""
        try:
            self._listeners.remove(callback)
        except ValueError:
            pass

    # -- sending -------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Send one message: text for ``str``, binary for bytes-like data.

        :raises ConnectionClosed: the connection is gone.
        :raises TypeError: ``data`` is neither text nor bytes.
        """
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        elif not isinstance(data, (str, bytes)):
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}; "
                            "use send_json() for other objects")
        self._protocol.send_message(data)

    def send_json(self, obj: Any) -> None:
        """Send ``obj`` encoded as JSON in one text message.

        :raises TypeError: ``obj`` cannot be encoded (nothing is sent).
        """
        self.send(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    # -- ready-made frames (a file's feed, the channels) ---------------------

    @property
    def shares_frames(self) -> bool:
        """Whether :meth:`try_send_frame` can write here (not over SSL: no write can be tried)."""
        return self._protocol.can_try_send

    def try_send_frame(self, frame: bytes) -> int:
        """Write one ready-made, whole frame without ever blocking (:mod:`.feed`, channels).

        The frame goes through the connection's one send path as it is: it
        must be a complete, unmasked, uncompressed data frame. Nothing is
        written (0) when another thread is sending here, when the connection
        is not open (closed, or a close frame sent), or when the socket takes
        nothing. A frame written in part is committed: its rest is written
        before anything else (see :meth:`flush`).

        :returns: the bytes of ``frame`` taken (0: none; the frame is not sent).
        """
        return self._protocol.try_send_frame(frame)

    def flush(self) -> None:
        """Write the rest of a frame :meth:`try_send_frame` wrote in part (bounded in time).

        :raises ConnectionClosed: the connection is gone.
        """
        self._protocol.flush()

    # -- receiving -----------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """Wait for the next message and return it (``str`` or ``bytes``).

        :param timeout: seconds to wait; ``None`` waits until a message comes
            or the connection ends; ``0`` does not wait.
        :returns: the message, or ``None`` when ``timeout`` passed first.
        :raises ConnectionClosed: the connection ended and no message is left.
        """
        return self._protocol.receive(timeout)

    def discard_inbound(self) -> None:
        """Drop every message the client sends from now on, without ever holding it.

        For a handler that never calls :meth:`receive` (``watch_file`` calls
        it): the client may send what it likes, nothing piles up, and the
        server still reads the socket, so pings, pongs and the client's
        close frame are seen. Messages already queued are dropped too;
        :meth:`receive` then only waits for the end of the connection.
        """
        self._protocol.discard_inbound()

    def receive_json(self, timeout: float | None = None) -> Any:
        """Receive one message and decode it as JSON.

        :returns: the decoded value, or ``None`` when ``timeout`` passed first
            (a JSON ``null`` also decodes to ``None``).
        :raises InvalidMessage: the message is not JSON; it is consumed and
            the connection stays open.
        :raises ConnectionClosed: the connection ended.
        """
        message = self.receive(timeout)
        if message is None:
            return None
        try:
            return json.loads(message)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidMessage(f"the message is not valid JSON: {exc}") from None

    # -- closing -------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``code`` and ``reason``, as the client sees them.

        Closing a closed connection does nothing.

        :raises ValueError: ``code`` may not be sent (RFC 6455 7.4: 1000-1003,
            1007-1014, 3000-4999) or ``reason`` exceeds 123 bytes in UTF-8.
        """
        if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
            raise ValueError(f"close code {code} may not be sent; use 1000-1003, "
                             "1007-1014 or 3000-4999")
        if len(reason.encode()) > 123:
            raise ValueError("a close reason is at most 123 bytes in UTF-8")
        self._protocol.close(code, reason)

    def finish(self) -> None:
        """End the connection for good: close it if open, and wait for its reader to end.

        Called when the handler returns. Waits ``close_timeout`` for the peer's
        close reply, then cuts the socket, so no thread outlives its request.
        """
        protocol = self._protocol
        if protocol.connected:
            protocol.close(1000, "", wait=self._close_timeout)
        if not protocol.join(self._close_timeout):
            protocol.abort()
            # A reader that never started (the doorbell still holds the
            # socket) is not waited for: the connection is ended here.
            if not protocol.end_unread():
                protocol.join(self._close_timeout)
        if self.mode == "werkzeug":
            # To Werkzeug's server the upgrade was a keep-alive HTTP/1.1
            # request: it would now wait on this socket for the next request,
            # holding the TCP connection (and its thread) until the client
            # gave up. Closing the socket is deferred while the server's rfile
            # holds it: shut it down, so the server reads EOF and closes at
            # once. gunicorn closes it by itself.
            protocol.abort()

    def abort_for_shutdown(self) -> None:
        """Close with 1001 as the server goes away, waiting at most about a second.

        A connection whose sender is stuck on a peer that does not read gets
        its socket cut instead (that peer sees 1006).
        """
        self._protocol.close(1001, SHUTDOWN_REASON, wait=1.0)

    def close_at_once_for_shutdown(self) -> bool:
        """Close with 1001 without waiting; ``False``: finish with :meth:`abort_for_shutdown`."""
        return self._protocol.close_at_once(1001, SHUTDOWN_REASON)

    # -- channels ------------------------------------------------------------

    def join(self, channel: str) -> None:
        """Join ``channel``: receive every message published to it from now on.

        Every message :meth:`FlaskPineWS.publish` sends to ``channel`` after
        this returns arrives here once, in the order its publisher sent it,
        from a sender of its own (the publisher never waits for this
        connection). Joining twice is joining once. The connection leaves
        every channel when it closes.

        :raises ConnectionClosed: the connection is already closed.
        """
        channels.join(self, channel)

    def leave(self, channel: str) -> None:
        """Leave ``channel``; a channel not joined is ignored."""
        channels.leave(self, channel)

    # -- watching ------------------------------------------------------------

    def watch_file(self, path: str, **options: Any) -> None:
        """Stream ``path`` here: :func:`flask_pine_ws.watch_file` with ``conn`` omitted."""
        watch.watch_file(path, self, **options)
