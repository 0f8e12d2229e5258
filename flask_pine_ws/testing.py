"""``pine.test_client(app)``: test a WebSocket route in the test's process, without a server.

This module owns driving the real route as a server would: the handshake is a
WSGI request built with Werkzeug's ``EnvironBuilder`` from the exact headers a
wsproto client sends, run through the app's whole WSGI stack (its
``before_request`` guards, the origin check, the route's ``Config``, the
handler, ``watch_file``) on a thread of its own, with the server end of a real
``socket.socketpair()`` as the request's socket. The test holds the other end,
spoken to with wsproto: frames, masking, permessage-deflate, pings and the
close handshake are the real ones.

What the route needs from the environ, and all it gets beyond a plain request:
the server end of the pair under ``werkzeug.socket`` (the key Werkzeug's own
server uses), so the route runs as it does under ``flask run``.

The client side has no thread: ``receive`` reads the socket when asked, and
answers pings and the close handshake as it reads. ``close`` (or leaving the
``with`` block) closes the connection, waits for the route to return, and
closes both ends of the pair, so a test leaves no thread and no descriptor.
"""

from __future__ import annotations

import collections
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from werkzeug.test import EnvironBuilder
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .errors import ConnectionClosed, HandshakeRefused

if TYPE_CHECKING:
    from flask import Flask

#: Seconds to wait for the route to return once the connection is closed.
_RETURN_TIMEOUT = 10.0

HeadersArg = Mapping[str, str] | Iterable[tuple[str, str]] | None


class TestClient:
    """Opens WebSocket connections to ``app``'s routes, in this process.

    Get one with :meth:`FlaskPineWS.test_client` (``pine.test_client(app)``).
    The client's ``Host`` is ``localhost``: a same-origin page has the origin
    ``http://localhost``.
    """

    __test__ = False  # not a pytest test class, whatever module imports it

    def __init__(self, app: Flask) -> None:
        self.app = app

    def connect(self, path: str, *, headers: HeadersArg = None,
                subprotocols: Iterable[str] | None = None,
                timeout: float = 5.0) -> TestConnection:
        """Open a connection to ``path`` (with its query string) and return it, accepted.

        :param headers: extra request headers (``Origin``, ``Cookie``,
            ``Authorization``, a ``Host`` of your own).
        :param subprotocols: the subprotocols to offer, in order of preference.
        :param timeout: seconds to wait for the route to answer the handshake.
        :raises HandshakeRefused: the route (or the app) answered with an HTTP
            status instead of accepting: its ``status`` and ``body``.
        :raises TimeoutError: no answer within ``timeout``.
        """
        return TestConnection(self.app, path, headers=headers, subprotocols=subprotocols,
                              timeout=timeout)


class TestConnection:
    """One client connection to a route, as a browser would hold it; also a context manager.

    ``send`` and ``receive`` speak to the handler's :class:`~flask_pine_ws.Conn`.
    Once the connection is closed, by either side, ``receive`` returns what
    was still unread and then raises :class:`~flask_pine_ws.ConnectionClosed`,
    and ``close_code`` tells how it ended. Use it from one thread.
    """

    __test__ = False

    def __init__(self, app: Flask, path: str, *, headers: HeadersArg,
                 subprotocols: Iterable[str] | None, timeout: float) -> None:
        extra = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        host = next((value for name, value in extra if name.lower() == "host"), "localhost")
        extra = [(name, value) for name, value in extra if name.lower() != "host"]
        self._ws = WSConnection(ConnectionType.CLIENT)
        handshake = self._ws.send(Request(
            host=host, target=path, subprotocols=list(subprotocols or []),
            extensions=[PerMessageDeflate()],
            extra_headers=[(n.encode("latin-1"), v.encode("latin-1")) for n, v in extra]))
        self._server_sock, self._sock = socket.socketpair()
        self._messages: collections.deque[str | bytes] = collections.deque()
        self._text: list[str] = []
        self._binary: list[bytes] = []
        self._closed = False
        #: How the connection ended (``None`` while open): the server's close
        #: code, or ours when this side closed first; 1006 without a close frame.
        self.close_code: int | None = None
        #: The close reason that came with :attr:`close_code`, or ``""``.
        self.close_reason = ""
        #: The subprotocol the route chose, or ``None``.
        self.subprotocol: str | None = None
        self._status: str | None = None
        self._response_headers: list[tuple[str, str]] = []
        self._body = b""
        self._error: BaseException | None = None
        self._done = threading.Event()
        environ = _environ(handshake, host, self._server_sock)
        self._thread = threading.Thread(target=self._serve, args=(app, environ),
                                        name="pine-ws-test-route", daemon=True)
        self._thread.start()
        try:
            self._handshake(timeout)
        except BaseException:
            self._finish(wait=_RETURN_TIMEOUT)
            raise

    # -- the route's side ----------------------------------------------------

    def _serve(self, app: Flask, environ: dict[str, Any]) -> None:
        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Any:
            self._status = status
            self._response_headers = list(headers)
            return lambda data: None

        try:
            body = app(environ, start_response)
            try:
                self._body = b"".join(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except ConnectionError:
            pass  # the route ended the request as under Werkzeug's server: nothing to write
        except BaseException as exc:  # noqa: BLE001 - raised in the test by connect()
            self._error = exc
        finally:
            self._done.set()

    def _handshake(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._accepted:
            if self._readable(0.02):
                if not self._read():
                    break
                continue
            if self._done.is_set():
                if self._readable(0):  # written just before the route returned
                    continue
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the route at this path did not answer within {timeout}s")
        if self._accepted:
            return
        self._done.wait(_RETURN_TIMEOUT)
        if self._error is not None:
            raise self._error
        status = int((self._status or "500").split()[0])
        raise HandshakeRefused(status, self._body.decode("utf-8", "replace"),
                               self._response_headers)

    _accepted = False

    # -- reading -------------------------------------------------------------

    def _readable(self, timeout: float) -> bool:
        if self._sock.fileno() < 0:
            return False
        ready, _, _ = select.select([self._sock], [], [], max(timeout, 0))
        return bool(ready)

    def _read(self) -> bool:
        """Read what is there and handle it; ``False`` at the end of the stream."""
        try:
            data = self._sock.recv(65536)
        except OSError:
            data = b""
        try:
            self._ws.receive_data(data or None)
            self._handle(self._ws.events())
        except RemoteProtocolError as exc:
            self._ended(1002, f"protocol error from the server: {exc}")
            return False
        if not data:
            self._ended(1006, "")
            return False
        return True

    def _handle(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, AcceptConnection):
                self._accepted = True
                self.subprotocol = event.subprotocol
            elif isinstance(event, (RejectConnection, RejectData)):
                pass  # a refusal comes back through the WSGI call, not the socket
            elif isinstance(event, TextMessage):
                self._text.append(event.data)
                if event.message_finished:
                    self._messages.append("".join(self._text))
                    self._text.clear()
            elif isinstance(event, BytesMessage):
                self._binary.append(bytes(event.data))
                if event.message_finished:
                    self._messages.append(b"".join(self._binary))
                    self._binary.clear()
            elif isinstance(event, Ping):
                self._write(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.close_code is None:
                    self.close_code, self.close_reason = event.code, event.reason or ""
                try:
                    self._write(self._ws.send(event.response()))
                except LocalProtocolError:
                    pass  # our own close crossed theirs: nothing more to say
                self._closed = True

    def _ended(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._closed = True

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError:
            self._ended(1006, "")

    # -- the public side -----------------------------------------------------

    def send(self, data: str | bytes) -> None:
        """Send one message: text for ``str``, binary for ``bytes``.

        :raises ConnectionClosed: the connection is closed.
        """
        if self._closed:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)
        if isinstance(data, str):
            frame = self._ws.send(TextMessage(data=data))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            frame = self._ws.send(BytesMessage(data=bytes(data)))
        else:
            raise TypeError(f"send() takes str or bytes, not {type(data).__name__}")
        self._write(frame)
        if self._closed:
            raise ConnectionClosed(self.close_code or 1006, self.close_reason)

    def receive(self, timeout: float = 5.0) -> str | bytes:
        """The next message the route sent: ``str`` for text, ``bytes`` for binary.

        :raises ConnectionClosed: the connection is closed and every message
            sent before the close was received.
        :raises TimeoutError: no message within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not self._messages:
            if self._closed:
                raise ConnectionClosed(self.close_code or 1006, self.close_reason)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no message within {timeout}s")
            if self._readable(remaining):
                self._read()
        return self._messages.popleft()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection, wait for the route to return, and release the socket pair.

        Closing a closed connection only waits for the route.

        :raises RuntimeError: the handler did not return within 10 s of the
            close (it neither receives nor watches, so it never learns of it).
        """
        if not self._closed:
            try:
                self._write(self._ws.send(CloseConnection(code=code, reason=reason)))
            except LocalProtocolError:
                pass  # the server's close is on its way
            if self.close_code is None and not self._closed:
                self.close_code, self.close_reason = code, reason
            deadline = time.monotonic() + _RETURN_TIMEOUT
            while not self._closed and time.monotonic() < deadline:
                if self._readable(deadline - time.monotonic()) and not self._read():
                    break
        self._closed = True
        self._finish(wait=_RETURN_TIMEOUT)

    def _finish(self, wait: float) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already
        self._sock.close()
        self._thread.join(wait)
        alive = self._thread.is_alive()
        if alive:
            # Cut the route's socket too: a handler blocked on it wakes up.
            try:
                self._server_sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._thread.join(wait)
        self._server_sock.close()
        if alive:
            raise RuntimeError("the handler did not return after the connection closed: "
                               "a handler learns of it from receive() or watch_file()")

    def __enter__(self) -> TestConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if not self._closed else f"closed ({self.close_code})"
        return f"<TestConnection {state}>"


def _environ(handshake: bytes, host: str, sock: socket.socket) -> dict[str, Any]:
    """The WSGI environ of the handshake wsproto wrote, with ``sock`` as Werkzeug's socket."""
    head, _, _ = handshake.partition(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    target = request_line.split(" ")[1]
    headers = [(name.strip(), value.strip())
               for name, _, value in (line.partition(":") for line in lines)
               if name.strip().lower() != "host"]
    builder = EnvironBuilder(path=target, base_url=f"http://{host}", headers=headers,
                             environ_base={"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000"})
    try:
        environ: dict[str, Any] = builder.get_environ()
    finally:
        builder.close()
    environ["werkzeug.socket"] = sock
    return environ
