"""A WebSocket client peer on ``socket.socketpair()``, for in-process tests of the protocol.

The server side is a real :class:`flask_pine_ws.Conn` (or the bare
:class:`flask_pine_ws.protocol.Protocol`) built on one end of the pair, with a
WSGI environ rebuilt from the upgrade request wsproto's client wrote; the
other end is driven by wsproto's client state machine, which checks every
frame the server writes (masking, RSV bits, interleaving, UTF-8) and fails
loudly on any broken one.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from flask_pine_ws import Config, Conn


def environ_from(request: bytes, sock: socket.socket) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it for this upgrade request."""
    head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/",
                               "gunicorn.socket": sock}
    for line in head[1:]:
        name, _, value = line.partition(":")
        environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
    return environ


class Peer:
    """The client end: sends events, reads and assembles what the server wrote."""

    def __init__(self, sock: socket.socket, ws: WSConnection) -> None:
        self.sock = sock
        self.ws = ws
        self.pending: list[Event] = []
        self.close: CloseConnection | None = None
        self.accepted: AcceptConnection | None = None
        self._parts: list[Any] = []

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def read(self, timeout: float = 10.0) -> bool:
        """Read what is there (waiting up to ``timeout``); ``False`` at EOF."""
        tls_pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
        if not tls_pending and not select.select([self.sock], [], [], timeout)[0]:
            return True
        try:
            data = self.sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            self.ws.receive_data(None)
        else:
            self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._parts.append(event.data)
                if event.message_finished:
                    joined = ("".join(self._parts) if isinstance(event, TextMessage)
                              else b"".join(self._parts))
                    self._parts = []
                    self.pending.append(type(event)(data=joined))
            elif isinstance(event, CloseConnection):
                if self.close is None:
                    self.close = event
                self.pending.append(event)
            else:
                self.pending.append(event)
        return bool(data)

    def next_event(self, timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event from the server")
            if not self.read(min(left, 1.0)) and not self.pending:
                raise EOFError("the server closed the socket")
        return self.pending.pop(0)

    def message(self, timeout: float = 10.0) -> str | bytes:
        """The next data message, skipping pings (answered) and pongs."""
        while True:
            event = self.next_event(timeout)
            if isinstance(event, Ping):
                self.send(event.response())
                continue
            if isinstance(event, Pong):
                continue
            assert isinstance(event, (TextMessage, BytesMessage)), event
            return event.data

    def closed(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the server's close frame (answering it); its code and reason."""
        deadline = time.monotonic() + timeout
        while self.close is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no close frame from the server")
            if not self.read(min(left, 1.0)) and self.close is None:
                raise EOFError("the server closed the socket without a close frame")
        return int(self.close.code), self.close.reason or ""


def handshake(server_sock: socket.socket, *, deflate: bool = False,
              subprotocols: list[str] | None = None) -> tuple[WSConnection, dict[str, Any]]:
    """The client's request as an environ for the server side, and the client state machine."""
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="peer.test", target="/",
                                  subprotocols=subprotocols or [],
                                  extensions=[PerMessageDeflate()] if deflate else []))
    return client, environ_from(request, server_sock)


def accept(peer: Peer) -> AcceptConnection:
    event = peer.next_event()
    assert isinstance(event, AcceptConnection), event
    return event


@contextmanager
def conn_pair(config: Config | None = None, *, deflate: bool = False,
              buffer: int | None = None, subprotocols: list[str] | None = None,
              ping_interval: float = 0,
              pair: tuple[socket.socket, socket.socket] | None = None,
              **options: Any) -> Iterator[tuple[Conn, Peer]]:
    """A server :class:`Conn` and its client :class:`Peer`, torn down after use.

    :param buffer: the socket buffer size of both ends (small: partial writes).
    :param pair: the (server, client) sockets to use instead of a new socketpair.
    :param options: ``Conn``'s keyword arguments (``send_timeout``, ...).
    """
    server_sock, client_sock = pair if pair is not None else socket.socketpair()
    if buffer is not None:
        for s in (server_sock, client_sock):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    client, environ = handshake(server_sock, deflate=deflate, subprotocols=subprotocols)
    cfg = config or Config()
    cfg = Config(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
                    "enable_compression": cfg.enable_compression is not False,
                    "max_message_size": cfg.max_message_size or 0,
                    "ping_interval": cfg.ping_interval or ping_interval,
                    "read_buffer_size": cfg.read_buffer_size or 4096})
    options.setdefault("send_timeout", 10.0)
    options.setdefault("close_timeout", 2.0)
    try:
        conn = Conn(environ, cfg, **options)
    except BaseException:
        client_sock.close()
        server_sock.close()
        raise
    peer = Peer(client_sock, client)
    try:
        peer.accepted = accept(peer)
        yield conn, peer
    finally:
        client_sock.close()  # the peer vanishes: the server's reader ends at once
        conn.finish()
        server_sock.close()


def client_frame(opcode: int, payload: bytes, *, rsv1: bool = False) -> bytes:
    """One masked client frame, built by hand (what wsproto's client would not send)."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, n)
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return header + mask + masked


@dataclass
class FrameReader:
    """A client end that also records each data frame's RSV1 bit (compressed or not).

    wsproto inflates and checks the frames; the headers are read from the same bytes.
    """

    sock: socket.socket
    ws: WSConnection
    raw: bytearray = field(default_factory=bytearray)
    rsv1: list[bool] = field(default_factory=list)  # per data frame, in order
    messages: list[str | bytes] = field(default_factory=list)
    parts: list[Any] = field(default_factory=list)  # of the message arriving

    def _scan(self) -> None:
        while len(self.raw) >= 2:
            first, second = self.raw[0], self.raw[1] & 0x7F
            at = 2
            if second == 126:
                if len(self.raw) < 4:
                    return
                second, at = struct.unpack_from("!H", self.raw, 2)[0], 4
            elif second == 127:
                if len(self.raw) < 10:
                    return
                second, at = struct.unpack_from("!Q", self.raw, 2)[0], 10
            if len(self.raw) < at + second:
                return
            if first & 0x0F in (1, 2):
                self.rsv1.append(bool(first & 0x40))
            del self.raw[:at + second]

    def read_messages(self, count: int, timeout: float = 20.0) -> list[str | bytes]:
        self.sock.settimeout(timeout)
        while len(self.messages) < count:
            data = self.sock.recv(1 << 20)
            assert data, "the server closed the socket"
            self.ws.receive_data(data)
            self.raw += data
            self._scan()
            for event in self.ws.events():
                if isinstance(event, (Ping, Pong)):
                    continue
                assert isinstance(event, (TextMessage, BytesMessage)), event
                self.parts.append(event.data)
                if event.message_finished:
                    joined = ("".join(self.parts) if isinstance(event, TextMessage)
                              else b"".join(self.parts))
                    self.messages.append(joined)
                    self.parts = []
        return self.messages
