"""What a published message is on the wire: text or binary, and how Redis carries it.

``publish`` takes ``str`` (a text message), bytes-like data (a binary one) or
any other value (JSON text, as ``Conn.send_json`` encodes it). The members'
senders call ``Conn.send`` with the result, so the kind is decided once, by
the publisher, and is the same in every worker.

Through Redis a message travels as bytes with a one-byte tag in front (``t``:
UTF-8 text, ``b``: binary), so that a subscriber in another process rebuilds
the same kind of message without guessing.
"""

from __future__ import annotations

import json
from typing import Any

from ..protocol import server_frame

#: A message as members receive it: ``str`` is sent as text, ``bytes`` as binary.
Payload = str | bytes

_TEXT = b"t"
_BINARY = b"b"


def encode(message: Any) -> Payload:
    """The message members receive for ``message`` (str, bytes, or JSON text of anything else).

    :raises TypeError: ``message`` cannot be encoded as JSON.
    """
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def to_wire(payload: Payload) -> bytes:
    """``payload`` as one Redis message: its tag byte, then its bytes."""
    if isinstance(payload, str):
        return _TEXT + payload.encode("utf-8")
    return _BINARY + payload


def from_wire(data: bytes) -> Payload | None:
    """The payload of one Redis message, or ``None`` for one not published by this package."""
    tag, body = data[:1], data[1:]
    if tag == _TEXT:
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if tag == _BINARY:
        return body
    return None


def frame(payload: Payload) -> bytes:
    """``payload`` as one whole, unmasked, uncompressed server frame (RFC 6455 5.2).

    Built once per message and worker, and written as it is to every member
    whose socket takes it at once (``Conn.try_send_frame``). Uncompressed
    frames are valid under permessage-deflate too: compression is per message.
    """
    if isinstance(payload, str):
        return server_frame("text", payload.encode("utf-8"))
    return server_frame("bytes", payload)
