"""A backlog through a real server to clients that offer permessage-deflate, as browsers do.

gunicorn serves ``watch_file(path, conn)`` (the whole file) under each
``PINE_WS_DEFLATE_CHOICE``; the ``websockets`` client (what a browser does:
offer deflate, inflate what is compressed) must hold the file byte for byte,
and a wsproto client reading the raw frames shows which were compressed: on
loopback, ``auto`` sends the backlog's chunks plain (the link is far faster
than zlib), ``always`` compresses each, ``never`` none.
"""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.sync.client import ClientConnection, connect
from wspeer import FrameReader
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.extensions import PerMessageDeflate

from conftest import ServerFactory
from server import Server

FRAMED = "pine.watch.v1"
WAIT = 60.0


def write_log(path: Path, size: int) -> bytes:
    rng = random.Random(5)
    levels = ("INFO", "DEBUG", "WARN", "ERROR")
    out = bytearray()
    n = 0
    while len(out) < size:
        n += 1
        out += (f"2026-11-29 14:{n // 6000 % 60:02d}:{n // 100 % 60:02d}.{n % 1000:03d} "
                f"{rng.choice(levels):<5} [http] GET /api/orders/{rng.randint(1, 99999)} "
                f"200 {rng.randint(1, 900)}ms café ☕\n").encode()
    path.write_bytes(bytes(out))
    return bytes(out)


def start(server: ServerFactory, choice: str) -> Server:
    return server("watch_app:app", env={"PINE_WS_DEFLATE_CHOICE": json.dumps(choice),
                                        "PINE_WS_ENABLE_COMPRESSION": "true"})


def read_framed(ws: ClientConnection) -> tuple[dict[str, Any], bytes]:
    """The ``open`` notice and the backlog's bytes, to the last one it announced."""
    opened: dict[str, Any] | None = None
    data = bytearray()
    while opened is None or len(data) < int(opened["size"]):
        msg = ws.recv(timeout=WAIT)
        if isinstance(msg, str):
            event = json.loads(msg)
            if event["event"] == "open":
                opened = event
            continue
        data += msg
    return opened, bytes(data)


@pytest.mark.parametrize("choice", ["auto", "always", "never"])
def test_a_deflate_client_gets_the_backlog_byte_exact(
        server: ServerFactory, tmp_path: Path, choice: str) -> None:
    log = tmp_path / "app.log"
    content = write_log(log, 3 * 2**20)
    srv = start(server, choice)
    url = f"{srv.ws_url}/watch?{urlencode({'path': str(log)})}"
    with connect(url, subprotocols=[FRAMED], compression="deflate",  # type: ignore[list-item]
                 max_size=None, open_timeout=WAIT, close_timeout=5) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        opened, data = read_framed(ws)
    assert opened["offset"] == 0 and opened["size"] == len(content)
    assert data == content


@pytest.mark.parametrize("choice", ["auto", "always", "never"])
def test_which_chunks_were_compressed_on_loopback(
        server: ServerFactory, tmp_path: Path, choice: str) -> None:
    log = tmp_path / "app.log"
    content = write_log(log, 2 * 2**20)
    srv = start(server, choice)
    client = WSConnection(ConnectionType.CLIENT)
    target = f"/watch?{urlencode({'path': str(log)})}"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT) as sock:
        sock.sendall(client.send(Request(host=f"127.0.0.1:{srv.port}", target=target,
                                         subprotocols=[FRAMED],
                                         extensions=[PerMessageDeflate()])))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(1)
            assert chunk, "no handshake answer"
            head += chunk
        client.receive_data(head)
        assert any(isinstance(e, AcceptConnection) and e.extensions
                   for e in client.events())
        reader = FrameReader(sock, client)
        chunks = -(-len(content) // (64 * 1024))
        messages = reader.read_messages(1 + chunks, timeout=WAIT)
    assert json.loads(messages[0])["event"] == "open"  # type: ignore[arg-type]
    assert b"".join(m for m in messages[1:] if isinstance(m, bytes)) == content
    chunk_rsv1 = reader.rsv1[1:]
    assert len(chunk_rsv1) == chunks
    if choice == "always":
        assert all(chunk_rsv1)
    else:  # never; auto: loopback carries gigabytes a second, zlib ~150 MB/s
        assert not any(chunk_rsv1)
