"""What flask_pine_ws.protocol relies on in wsproto: one test per behaviour.

:mod:`flask_pine_ws.protocol` drives wsproto's state machine itself. Each
test here pins one thing it relies on, against wsproto alone (a server and a
client state machine, bytes passed by hand), so that a wsproto release that
changes any of them fails here, by name, before anything else.
"""

from __future__ import annotations

import zlib

import pytest
from wspeer import client_frame, environ_from
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from flask_pine_ws.protocol import BoundedDeflate, answer_upgrade, server_frame


def _pair(*, deflate: bool = False, server_ext: list[BoundedDeflate] | None = None,
          subprotocols: list[str] | None = None,
          chosen: str | None = None) -> tuple[Connection, WSConnection, AcceptConnection]:
    """A server and a client state machine after the handshake, the way protocol.py does it.

    ``server_ext``: the deflate the server would accept ([] for none; default:
    one when ``deflate``); ``chosen``: the subprotocol the server lists.
    """
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="h", target="/", subprotocols=subprotocols or [],
                                  extensions=[PerMessageDeflate()] if deflate else []))
    offer = server_ext if server_ext is not None else (
        [BoundedDeflate(1 << 20)] if deflate else [])
    answer = answer_upgrade(environ_from(request, None),  # type: ignore[arg-type]
                            [chosen] if chosen else [], offer[0] if offer else None)
    server = Connection(ConnectionType.SERVER,
                        [answer.deflate] if answer.deflate is not None else None)
    client.receive_data(answer.response)
    accepted = next(client.events())
    assert isinstance(accepted, AcceptConnection)
    assert server.state is ConnectionState.OPEN and client.state is ConnectionState.OPEN
    return server, client, accepted


def _wsproto_answer(request: bytes, subprotocols: list[str],
                    deflate: BoundedDeflate | None) -> bytes:
    """What wsproto's own server handshake (through h11) answers the same request."""
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request)
    event = next(server.events())
    assert isinstance(event, Request)
    chosen = next((p for p in event.subprotocols if p in subprotocols), None)
    return server.send(AcceptConnection(subprotocol=chosen,
                                        extensions=[deflate] if deflate else []))


def _as_read(response: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A 101 as a client reads it: its status code and its headers, in order.

    What HTTP leaves free is normalised: the reason phrase (h11 before 0.14, under
    wsproto 1.2, writes none), the case of header names, and the case of the
    ``Upgrade`` and ``Connection`` tokens (wsproto 1.2 writes ``WebSocket``).
    """
    head, blank, rest = response.partition(b"\r\n\r\n")
    assert blank and not rest, "one head, ended by a blank line"
    status, *lines = head.split(b"\r\n")
    version, code, _reason = status.split(b" ", 2)
    assert version == b"HTTP/1.1"
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        headers.append((name, value.lower() if name in (b"upgrade", b"connection") else value))
    return code, headers


@pytest.mark.parametrize("offers", [
    [], ["permessage-deflate"], ["permessage-deflate; client_max_window_bits"],
    ["permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
     "permessage-deflate"],
    ["x-webkit-deflate-frame", "permessage-deflate; server_max_window_bits=12"],
])
@pytest.mark.parametrize("protocols", [[], ["a"], ["b", "a"]])
@pytest.mark.parametrize("compression", [True, False])
def test_the_answer_built_from_the_environ_is_wsprotos_answer(
        offers: list[str], protocols: list[str], compression: bool) -> None:
    """protocol.answer_upgrade writes the 101 itself: what wsproto would, header for header."""
    head = [b"GET /x HTTP/1.1", b"Host: h", b"Upgrade: websocket", b"Connection: Upgrade",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"Sec-WebSocket-Version: 13"]
    if protocols:
        head.append(b"Sec-WebSocket-Protocol: " + ", ".join(protocols).encode())
    if offers:
        head.append(b"Sec-WebSocket-Extensions: " + ", ".join(offers).encode())
    request = b"\r\n".join(head) + b"\r\n\r\n"
    ours = answer_upgrade(environ_from(request, None), ["a"],  # type: ignore[arg-type]
                          BoundedDeflate(100) if compression else None)
    theirs = _wsproto_answer(request, ["a"], BoundedDeflate(100) if compression else None)
    assert ours.response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert _as_read(ours.response) == _as_read(theirs)
    assert ours.subprotocol == ("a" if "a" in protocols else None)
    assert (ours.deflate is not None) == (compression and b"permessage-deflate" in theirs)


def test_the_answers_accept_token_is_rfc_6455s_example() -> None:
    """RFC 6455 1.3: the key dGhlIHNhbXBsZSBub25jZQ== is answered s3pPLMBiTxaQ9kYGzzhZRbK+xOo=."""
    answer = answer_upgrade({"HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ=="}, [], None)
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer.response


def test_subprotocols_come_from_the_environ_in_the_clients_order() -> None:
    _, _, accepted = _pair(subprotocols=["a", "b"], chosen="b")
    assert accepted.subprotocol == "b"
    _, _, accepted = _pair(subprotocols=["a", "b"], chosen="c")
    assert accepted.subprotocol is None


def test_deflate_is_accepted_only_when_offered_and_listed() -> None:
    assert [type(e) for e in _pair(deflate=True)[2].extensions] == [PerMessageDeflate]
    assert _pair(deflate=True, server_ext=[])[2].extensions == []  # compression off
    assert _pair(deflate=False, server_ext=[BoundedDeflate(10)])[2].extensions == []


def test_a_large_frame_arrives_in_pieces_before_it_is_whole() -> None:
    """Size checks run on each piece: a 1 GiB frame is refused at its first kilobytes."""
    server, client, _ = _pair()
    wire = client.send(BytesMessage(data=b"x" * 100_000))
    server.receive_data(wire[:5000])
    pieces = list(server.events())
    assert pieces and all(isinstance(p, BytesMessage) for p in pieces)
    assert not pieces[-1].message_finished
    assert sum(len(p.data) for p in pieces) < 5000


def test_fragments_are_events_with_message_finished() -> None:
    server, client, _ = _pair()
    server.receive_data(client.send(TextMessage(data="ab", message_finished=False)))
    server.receive_data(client.send(TextMessage(data="cd", message_finished=True)))
    events = list(server.events())
    assert [(e.data, e.message_finished) for e in events] == [("ab", False),
                                                              ("cd", True)]


def test_a_broken_frame_is_a_close_event_and_the_state_stays_open() -> None:
    """protocol.py tells wsproto's verdict (state OPEN) from the peer's close (REMOTE_CLOSING)."""
    server, _, _ = _pair()
    server.receive_data(b"\x81\x05hello")  # unmasked client frame: a protocol error
    events = list(server.events())
    assert len(events) == 1 and isinstance(events[0], CloseConnection)
    assert events[0].code == CloseReason.PROTOCOL_ERROR
    assert server.state is ConnectionState.OPEN
    server.send(CloseConnection(code=1002))
    assert server.state is ConnectionState.LOCAL_CLOSING


def test_invalid_utf8_text_is_1007() -> None:
    server, _, _ = _pair()
    mask = b"\x00\x00\x00\x00"
    server.receive_data(b"\x81\x82" + mask + b"\xff\xfe")
    event = next(server.events())
    assert isinstance(event, CloseConnection) and event.code == 1007


def test_an_extension_returning_message_too_big_is_a_1009_close_event() -> None:
    server, client, _ = _pair(deflate=True, server_ext=[BoundedDeflate(1000)])
    server.receive_data(client.send(BytesMessage(data=b"\0" * 5000)))
    event = next(server.events())
    assert isinstance(event, CloseConnection) and event.code == CloseReason.MESSAGE_TOO_BIG


def test_bounded_deflate_inflates_no_more_than_its_limit() -> None:
    """The private PerMessageDeflate state BoundedDeflate reads, and what it bounds."""
    ext = BoundedDeflate(64 * 1024)
    for name in ("_inbound_compressed", "_inbound_is_compressible", "_decompressor"):
        assert hasattr(ext, name), f"wsproto's PerMessageDeflate has no {name} any more"
    server, _, _ = _pair(server_ext=[ext], deflate=True)
    compress = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compress.compress(bytes(1 << 20)) + compress.flush(zlib.Z_FULL_FLUSH)
    frame_payload = (block * 32)[:-4]  # 32 MiB of zeros
    server.receive_data(client_frame(0x2, frame_payload, rsv1=True))
    inflated = 0
    verdict = None
    for event in server.events():
        if isinstance(event, BytesMessage):
            inflated += len(event.data)
        elif isinstance(event, CloseConnection):
            verdict = event.code
    assert verdict == CloseReason.MESSAGE_TOO_BIG
    assert inflated <= 64 * 1024


def test_bounded_deflate_passes_messages_within_the_limit_one_after_another() -> None:
    server, client, _ = _pair(deflate=True, server_ext=[BoundedDeflate(100_000)])
    for n in range(3):
        server.receive_data(client.send(TextMessage(data=str(n) * 100_000)))
        data = "".join(e.data for e in server.events())  # type: ignore[union-attr]
        assert data == str(n) * 100_000


def test_an_uncompressed_frame_between_compressed_ones_keeps_the_context() -> None:
    """A feed writes frames with RSV1 clear past the compressor, to deflate clients too."""
    server, client, _ = _pair(deflate=True)
    wire = server.send(TextMessage(data="hello " * 100))
    wire += server_frame("text", b"plain line")
    wire += server.send(TextMessage(data="hello " * 100))  # builds on the first's context
    client.receive_data(wire)
    texts = [e.data for e in client.events() if isinstance(e, TextMessage)]
    assert texts == ["hello " * 100, "plain line", "hello " * 100]


def test_close_states_and_echo() -> None:
    server, client, _ = _pair()
    # ours first: LOCAL_CLOSING, then CLOSED on the reply
    client.receive_data(server.send(CloseConnection(code=4000, reason="bye")))
    reply = next(client.events())
    assert isinstance(reply, CloseConnection) and (reply.code, reply.reason) == (4000, "bye")
    assert server.state is ConnectionState.LOCAL_CLOSING
    with pytest.raises(LocalProtocolError):
        server.send(TextMessage(data="late"))
    server.receive_data(client.send(reply.response()))
    assert isinstance(next(server.events()), CloseConnection)
    assert server.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"more")


def test_the_peers_close_is_remote_closing_and_an_empty_one_is_1005() -> None:
    server, client, _ = _pair()
    server.receive_data(client.send(CloseConnection(code=CloseReason.NO_STATUS_RCVD)))
    event = next(server.events())
    assert isinstance(event, CloseConnection) and event.code == 1005 and event.reason == ""
    assert server.state is ConnectionState.REMOTE_CLOSING
    echo = server.send(event.response())
    assert echo == b"\x88\x00"  # 1005 is never sent: an empty close frame
    assert server.state is ConnectionState.CLOSED


def test_ping_is_answered_with_its_payload_and_pong_is_an_event() -> None:
    server, client, _ = _pair()
    server.receive_data(client.send(Ping(payload=b"abc")))
    ping = next(server.events())
    assert isinstance(ping, Ping)
    client.receive_data(server.send(ping.response()))
    pong = next(client.events())
    assert isinstance(pong, Pong) and pong.payload == b"abc"


def test_events_can_be_taken_one_at_a_time() -> None:
    """The reader pauses between two events (a full inbox); the rest wait in wsproto."""
    server, client, _ = _pair()
    server.receive_data(b"".join(client.send(TextMessage(data=str(i))) for i in range(3)))
    first = server.events()
    assert next(first).data == "0"  # type: ignore[attr-defined]
    server.send(Ping())  # a write while events are pending
    assert [e.data for e in first] == ["1", "2"]  # type: ignore[attr-defined]
