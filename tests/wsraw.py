"""A WebSocket client by hand, for what a library client hides from a test.

The ``websockets`` client is the real client of the tests; this module is for
the few facts it cannot show: the exact HTTP status and body of a refused
handshake sent with any ``Host`` and headers, and every byte the server writes
after its close frame (a stray HTTP response there is the bug flask-sock has
under Werkzeug's server).
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from dataclasses import dataclass, field

OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class Handshake:
    """The server's answer to an upgrade request."""

    status: int
    headers: dict[str, str]
    body: bytes
    sock: socket.socket
    #: bytes read after the response head (the first frames, or more body)
    rest: bytes = field(default=b"")


def handshake(port: int, path: str, headers: dict[str, str] | None = None, *,
              host: str | None = None, timeout: float = 10.0,
              rcvbuf: int | None = None) -> Handshake:
    """Send an upgrade request with exactly ``headers`` (over the defaults).

    A header whose value is ``None``-like (empty string) is left out. The
    socket stays open on a 101; on any other status the body is read to EOF
    (or ``Content-Length``) and the socket is closed.
    """
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect(("127.0.0.1", port))
        base = {
            "Host": host or f"127.0.0.1:{port}",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
        }
        base.update(headers or {})
        lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in base.items() if v]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no response head: {data!r}")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed before a response: {data!r}")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        if status == 101:
            return Handshake(status, parsed, b"", sock, rest)
        length = int(parsed.get("content-length", "-1"))
        while length < 0 or len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        sock.close()
        return Handshake(status, parsed, rest, sock)
    except BaseException:
        sock.close()
        raise


def frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked as RFC 6455 requires of a client."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked server frames off ``data``: ``([(opcode, payload)], leftover)``.

    Parsing stops at the first close frame: what follows it is returned as
    leftover, and must be empty.
    """
    frames: list[tuple[int, bytes]] = []
    pos = 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        if b1 & 0x80:
            raise ValueError("a server frame is masked")
        size = b1 & 0x7F
        offset = pos + 2
        if size == 126:
            if len(data) < offset + 2:
                break
            (size,) = struct.unpack_from("!H", data, offset)
            offset += 2
        elif size == 127:
            if len(data) < offset + 8:
                break
            (size,) = struct.unpack_from("!Q", data, offset)
            offset += 8
        if len(data) < offset + size:
            break
        frames.append((b0 & 0x0F, data[offset:offset + size]))
        pos = offset + size
        if b0 & 0x0F == OP_CLOSE:
            break
    return frames, data[pos:]


def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server writes until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise TimeoutError(f"the server did not close the connection: {data[-200:]!r}")
    return data
