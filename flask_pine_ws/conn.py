"""The connection handed to a handler: :class:`Conn`, safe to share between threads.

simple-websocket does the protocol; this module makes it safe to use, which
it is not as it stands (read from its 1.1 sources, see ``LIBRARIES.md``):

- two threads sending at once corrupt frames, and its own reader thread writes
  ping, pong and close frames without any lock of ours;
- it writes with ``sock.send``, which may write part of a frame and drop the
  rest;
- after a disconnect it raises ``OSError`` or wsproto's ``LocalProtocolError``
  as often as its ``ConnectionClosed``.

The fix is at the one seam every write goes through: the socket. The server is
built on a copy of the WSGI environ whose socket is a :class:`GuardedSocket`,
so every write, the library's included, is a whole ``sendall`` under one lock,
with a deadline: a peer that stops reading is dropped after
``PINE_WS_SEND_TIMEOUT`` seconds instead of pinning a thread for ever. Every
failure after a disconnect is turned into :class:`ConnectionClosed` here.

The same seam lets :mod:`.broadcast` write one ready-made frame to many
connections without ever waiting for one of them (:meth:`Conn.try_send_frame`):
the socket keeps the unwritten rest of such a frame (one frame at most) and
writes it before anything else, so frames still never interleave.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import simple_websocket
from wsproto.connection import ConnectionState
from wsproto.utilities import LocalProtocolError

from .errors import ConnectionClosed, InvalidMessage

if TYPE_CHECKING:
    from .config import Config

#: Close codes an endpoint may send (RFC 6455 section 7.4, IANA registry).
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})

#: Flags of a write that must not wait (0 where there is none: such sockets never try).
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)

_OPEN = ConnectionState.OPEN

#: What simple-websocket or the socket may raise once the peer is gone.
_GONE = (OSError, LocalProtocolError, simple_websocket.ConnectionClosed)


class GuardedSocket:
    """A socket whose writes are whole, serialised and bounded in time.

    ``send`` and ``sendall`` both write every byte or raise; a write that makes
    no progress for ``send_timeout`` seconds shuts the socket down (so the
    reader thread wakes up and the connection ends) and raises
    ``TimeoutError``. Reads pass straight through: only the library's reader
    thread reads.
    """

    def __init__(self, sock: socket.socket, send_timeout: float) -> None:
        self._sock = sock
        self._send_timeout = send_timeout
        #: The code and reason of a close frame the library sent on its own
        #: (1009 for a message too big, 1008 for a ping timeout): it records
        #: neither, so they are read here, on their way to the peer.
        self.library_close: tuple[int, str] | None = None
        self._lock = threading.Lock()
        # MSG_DONTWAIT makes one call non-blocking without touching the
        # socket's mode, which the reader thread's blocking recv relies on.
        # An SSL socket accepts no flags: it gets a plain blocking sendall.
        self._nonblocking = not isinstance(sock, ssl.SSLSocket) and hasattr(socket, "MSG_DONTWAIT")
        # The unwritten end of a frame that :meth:`try_send` could write only
        # in part (at most one frame): every later write sends it first, so
        # frames never interleave.
        self._pending = b""
        # Bound once: the broadcast hub calls it for every member on every line.
        self._raw_send = sock.send

    @property
    def can_try_send(self) -> bool:
        """Whether :meth:`try_send` can write at all (not on SSL sockets)."""
        return self._nonblocking

    @property
    def pending(self) -> int:
        """Bytes of a frame :meth:`try_send` left for the next write."""
        return len(self._pending)

    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        self.sendall(data)
        return len(data)

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        if data[:1] == b"\x88" and self.library_close is None:
            self._note_close(bytes(data[:127]))
        with self._lock:
            if not self._nonblocking:
                self._sock.sendall(data)
                return
            if self._pending:
                pending, self._pending = self._pending, b""
                self._write(pending)
            self._write(data)

    def try_send(self, frame: bytes) -> int:
        """Write what the socket takes of ``frame`` now, without blocking; keep the rest.

        For the broadcast hub, which must never wait for one slow peer. The
        rest of a frame written in part is kept and written first by every
        later write (``flush`` sends it alone), so it stays one frame on the
        wire. Nothing is written, and 0 returned, when another write holds
        the lock, when an earlier remainder is still not out, or on an SSL
        socket.

        :returns: how many bytes of ``frame`` were taken: written, or kept
            to be written next (anything above 0 commits the whole frame).
        :raises OSError: the socket failed (the peer is gone).
        """
        if not self._nonblocking or not self._lock.acquire(blocking=False):
            return 0
        try:
            if self._pending:
                self._pending = self._pending[self._send_now(self._pending):]
                if self._pending:
                    return 0
            # The common case in one call: the whole frame fits the socket's
            # buffer (no memoryview, no loop).
            try:
                sent: int = self._raw_send(frame, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return 0
            if 0 < sent < len(frame):
                rest = frame[sent:]
                self._pending = rest[self._send_now(rest):]
            return sent
        finally:
            self._lock.release()

    def flush(self) -> None:
        """Write what :meth:`try_send` left, blocking as ``sendall`` does."""
        self.sendall(b"")

    def _send_now(self, data: bytes) -> int:
        """Write as much of ``data`` as the socket takes without waiting."""
        view = memoryview(data)
        total = 0
        while total < len(view):
            try:
                sent = self._raw_send(view[total:], _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not sent:
                break
            total += sent
        return total

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        """Write every byte of ``data`` (the lock held), or fail after ``send_timeout``."""
        view = memoryview(data).cast("B")
        deadline: float | None = None
        while view:
            try:
                sent = self._sock.send(view, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent:
                view = view[sent:]
                deadline = None
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + self._send_timeout
            if now >= deadline:
                self.abort()
                raise TimeoutError(errno.ETIMEDOUT, "the peer stopped reading")
            fd = self._sock.fileno()
            if fd < 0:  # closed by the reader thread meanwhile
                raise OSError(errno.EBADF, "the socket is closed")
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll(min(deadline - now, 1.0) * 1000)

    def _note_close(self, frame: bytes) -> None:
        """Keep the code and reason of a close frame (unmasked, as a server sends it)."""
        length = frame[1] & 0x7F if len(frame) > 1 else 0
        if length >= 2 and len(frame) >= 2 + length:
            reason = frame[4:2 + length].decode("utf-8", "replace")
            self.library_close = (int.from_bytes(frame[2:4], "big"), reason)

    def abort(self) -> None:
        """Shut the socket down both ways: a blocked ``recv`` returns at once."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected: nothing left to wake

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        return self._sock.recv(bufsize, flags)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        # The library's reader thread closes the socket without our lock. A
        # sender inside ``send`` could then write to the fd number after the
        # worker reused it for another client: shut down first (a blocked or
        # in-flight send fails at once with EPIPE), then close under the lock.
        self.abort()
        with self._lock:
            self._pending = b""
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _NotifyingEvent(threading.Event):
    """simple-websocket's wake-up event, which also calls listeners.

    The library sets it when a message arrives and when the connection ends;
    listeners (a file watcher waiting for the file *or* the client) learn of
    both without polling. Listeners run on the library's reader thread: they
    must only signal.
    """

    def __init__(self) -> None:
        super().__init__()
        self.listeners: list[Callable[[], None]] = []

    def set(self) -> None:
        super().set()
        for listener in list(self.listeners):
            listener()


class _Server(simple_websocket.Server):  # type: ignore[misc]  # untyped library
    """simple-websocket's server, with a pong deadline.

    Its subprotocol choice is kept: the client's first that the route allows.

    The library's reader thread sets ``pong_received = False`` when it sends a
    ping and drops the peer (1008) if it is still ``False`` at the next ping:
    the pong deadline is the ping interval. A client reading large messages
    slowly answers pings late (they queue behind the data), so a short
    interval dropped healthy clients. ``pong_received`` is made a property:
    an unanswered ping counts as answered until ``pong_timeout`` seconds
    after the first ping that is still unanswered.
    """

    def __init__(self, environ: dict[str, Any], *, pong_timeout: float, **kwargs: Any) -> None:
        # Set before the base class runs: its __init__ writes pong_received.
        self._pong_timeout = pong_timeout
        self._pong_ok = True
        self._ping_sent = 0.0
        super().__init__(environ, **kwargs)

    @property
    def pong_received(self) -> bool:
        if self._pong_ok:
            return True
        return time.monotonic() - self._ping_sent < self._pong_timeout

    @pong_received.setter
    def pong_received(self, value: bool) -> None:
        if value:
            self._pong_ok = True
        elif self._pong_ok:  # the first unanswered ping starts the clock
            self._pong_ok = False
            self._ping_sent = time.monotonic()


class Conn:
    """A WebSocket connection, as Pine's ``*websocket.Conn``.

    Every method may be called from any thread. Sends never interleave with
    each other nor with the ping, pong and close frames of the library, and
    are never partial. Once the connection is gone, every call that needs it
    raises :class:`ConnectionClosed`.

    Not built directly: a handler registered with :meth:`FlaskPineWS.new`
    receives one.
    """

    def __init__(self, environ: dict[str, Any], config: Config, *, send_timeout: float,
                 close_timeout: float, pong_timeout: float = 20.0) -> None:
        raw = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
        if raw is None:
            raise RuntimeError("flask-pine-ws runs under gunicorn or Werkzeug's server only: "
                               "no socket in the WSGI environ")
        self._sock = GuardedSocket(raw, send_timeout)
        self._event = _NotifyingEvent()
        self._lock = threading.RLock()
        self._close_timeout = close_timeout
        self._local_close: tuple[int, str] | None = None
        self._viewed_bytes = 0
        environ = dict(environ)
        key = "gunicorn.socket" if "gunicorn.socket" in environ else "werkzeug.socket"
        environ[key] = self._sock
        if not config.enable_compression:
            # The library accepts permessage-deflate whenever it is offered:
            # not offering it is the only way to turn it off.
            environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        self._ws = _Server(
            environ,
            subprotocols=list(config.subprotocols or []),
            receive_bytes=config.read_buffer_size or 4096,
            ping_interval=config.ping_interval or None,
            max_message_size=config.max_message_size or None,
            event_class=lambda: self._event,
            thread_class=self._reader_thread,
            pong_timeout=pong_timeout,
        )
        #: ``"gunicorn"`` or ``"werkzeug"``: the server this connection runs on.
        self.mode: str = self._ws.mode

    def _reader_thread(self, target: Callable[[], None]) -> threading.Thread:
        """The library's reader thread, which wakes every waiter when it ends.

        On a message too big (1009) or a protocol error, the library sets its
        event *before* it marks the connection closed: a ``receive`` that
        woke in between went back to waiting, and no one set the event again,
        so the handler hung for ever (and a shutdown could not reach it). The
        last thing the thread does now is to set the event.
        """

        def run() -> None:
            try:
                target()
            finally:
                self._event.set()

        return threading.Thread(target=run, name="pine-ws-reader", daemon=True)

    # -- state ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """``True`` until either side closes or the peer is gone."""
        return bool(self._ws.connected)

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol chosen in the handshake, or ``None``."""
        chosen = self._ws.subprotocol
        return None if chosen is None else str(chosen)

    @property
    def viewed_bytes(self) -> int:
        """Bytes of watched files delivered on this connection (Pine's ``viewedBytesSize``)."""
        return self._viewed_bytes

    def add_viewed_bytes(self, count: int) -> None:
        """Count ``count`` more bytes of a watched file as delivered."""
        self._viewed_bytes += count

    @property
    def close_code(self) -> int | None:
        """The close code once closed: ours if we closed, else the peer's (1006: no close frame)."""
        if self.connected:
            return None
        if self._local_close is not None:
            return self._local_close[0]
        code = int(self._ws.close_reason)
        if code == 1005 and self._ws.close_message is None:
            # no close frame from the peer: the library's own close, or none (1006)
            sent = self._sock.library_close
            return sent[0] if sent is not None else 1006
        return code

    @property
    def close_reason(self) -> str:
        """The close reason once closed, or ``""``."""
        if self._local_close is not None:
            return self._local_close[1]
        if self._ws.close_message is None and self._sock.library_close is not None:
            return self._sock.library_close[1]
        return self._ws.close_message or ""

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code or 1006, self.close_reason)

    # -- listeners -----------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a message arrives or the connection ends.

        It runs on another thread and must only signal (set an event, say).
        """
        self._event.listeners.append(callback)
        if not self.connected:
            callback()

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; a callback never added is ignored."""
        try:
            self._event.listeners.remove(callback)
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
        with self._lock:
            if not self._ws.connected:
                raise self._closed()
            try:
                self._ws.send(data)
            except _GONE:
                self._gone()
                raise self._closed() from None

    def send_json(self, obj: Any) -> None:
        """Send ``obj`` encoded as JSON in one text message.

        :raises TypeError: ``obj`` cannot be encoded (nothing is sent).
        """
        self.send(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))

    # -- ready-made frames (the broadcast hub) -------------------------------

    @property
    def shares_frames(self) -> bool:
        """Whether :meth:`try_send_frame` can write here (not over SSL: no write can be tried)."""
        return self._sock.can_try_send

    def try_send_frame(self, frame: bytes, viewed: int = 0) -> int:
        """Write one ready-made, whole frame without ever blocking (:mod:`.broadcast`).

        The frame goes straight to the socket, past the library: it must be a
        complete, unmasked, uncompressed data frame. Nothing is written (0)
        when another thread is sending here, when the connection is not open
        (closed, or a close frame sent), or when the socket takes nothing. A
        frame written in part is committed: the socket keeps its rest and
        writes it before anything else (see :meth:`flush`).

        :param viewed: file bytes the frame carries, added to
            :attr:`viewed_bytes` once taken (saves the hub a call per member).
        :returns: the bytes of ``frame`` taken (0: none; the frame is not sent).
        """
        lock = self._lock
        if not lock.acquire(blocking=False):
            return 0
        try:
            ws = self._ws
            if (not ws.connected or self._local_close is not None
                    or ws.ws.state is not _OPEN):
                return 0
            try:
                taken = self._sock.try_send(frame)
            except _GONE:
                self._gone()
                return 0
            if taken:
                self._viewed_bytes += viewed
            return taken
        finally:
            lock.release()

    def flush(self) -> None:
        """Write the rest of a frame :meth:`try_send_frame` wrote in part (bounded in time).

        :raises ConnectionClosed: the connection is gone.
        """
        with self._lock:
            if not self._sock.pending:
                return
            try:
                self._sock.flush()
            except _GONE:
                self._gone()
                raise self._closed() from None

    # -- receiving -----------------------------------------------------------

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """Wait for the next message and return it (``str`` or ``bytes``).

        :param timeout: seconds to wait; ``None`` waits until a message comes
            or the connection ends; ``0`` does not wait.
        :returns: the message, or ``None`` when ``timeout`` passed first.
        :raises ConnectionClosed: the connection ended and no message is left.
        """
        try:
            message = self._ws.receive(timeout=timeout)
        except _GONE:
            raise self._closed() from None
        if message is None and not self._ws.connected:
            raise self._closed()
        return message  # type: ignore[no-any-return]

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
        self._close(code, reason, wait=None)

    def _close(self, code: int, reason: str, wait: float | None) -> None:
        # A sender blocked on a slow peer holds the lock for up to the send
        # timeout; a shutdown cannot wait that long, so it may give up and cut
        # the socket instead (the peer then sees 1006, not our code).
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            self._local_close = (code, reason)
            self._sock.abort()
            self._event.set()
            return
        try:
            if not self._ws.connected:
                return
            self._local_close = (code, reason)
            try:
                self._ws.close(code, reason)
            except _GONE:
                self._gone()
        finally:
            self._lock.release()
        self._event.set()

    def _gone(self) -> None:
        """The socket failed under us: mark the connection ended and wake waiters."""
        self._ws.connected = False
        self._sock.abort()
        self._event.set()

    def finish(self) -> None:
        """End the connection for good: close it if open, and reap the reader thread.

        Called when the handler returns. Waits ``close_timeout`` for the peer's
        close reply, then cuts the socket, so no thread outlives its request.
        """
        if self.connected:
            self._close(1000, "", wait=self._close_timeout)
        thread = self._ws.thread
        thread.join(self._close_timeout)
        if thread.is_alive():
            self._sock.abort()
            thread.join(self._close_timeout)
        if self.mode == "werkzeug":
            # To Werkzeug's server the upgrade was a keep-alive HTTP/1.1
            # request: it would now wait on this socket for the next request,
            # holding the TCP connection (and its thread) until the client
            # gave up. The library's close() of the socket is deferred while
            # the server's rfile holds it: shut it down, so the server reads
            # EOF and closes at once. gunicorn closes it by itself.
            self._sock.abort()

    def abort_for_shutdown(self) -> None:
        """Close with 1001 at once, as the server goes away."""
        self._close(1001, "server shutting down", wait=1.0)

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
        from .channels import join

        join(self, channel)

    def leave(self, channel: str) -> None:
        """Leave ``channel``; a channel not joined is ignored."""
        from .channels import leave

        leave(self, channel)

    # -- watching ------------------------------------------------------------

    def watch_file(self, path: str, **options: Any) -> None:
        """Stream ``path`` here: :func:`flask_pine_ws.watch_file` with ``conn`` omitted."""
        from .watch import watch_file

        watch_file(path, self, **options)
