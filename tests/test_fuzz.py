"""Bad input: malformed frames, broken handshakes, bad queries and names, missing auth.

Against a running gunicorn worker (``tests/apps/deploy_app.py``), with clients
connected throughout that must not notice: an echo client and a viewer client.

- hypothesis generates frame sequences (any opcode, reserved bits, masking,
  lengths that lie, invalid UTF-8, fragmented control frames, raw bytes) sent
  after a valid handshake, to the echo route and to the viewer's socket; each
  connection ends within a bound, with a close code the RFC allows, and the
  worker neither dies nor logs a traceback;
- oversized and broken handshake headers get an HTTP error, never a 500;
- bad ``offset`` / ``lines`` / ``file`` values close with 1008 and a reason;
- viewer names with ``..``, encoded slashes, NUL or unknown names are a 404
  before any upgrade (directly and behind nginx), and no file is read;
- an upgrade without the auth the app requires is a 401 before any upgrade.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection

import wsraw
from conftest import ServerFactory
from helpers import connect, http_get, wait_until
from nginx import nginx_in_front
from server import Server

SUB = ["pine.watch.v1"]
#: Close codes a server may send (RFC 6455 7.4.1): anything else is a bug.
#: The close codes the server may send: its own (1000 to 1011 as RFC 6455 7.4.1 defines
#: them), and any valid code a fuzzed client's close frame carried, which it echoes (1010,
#: 3000-4999; RFC 6455 5.5.1). Never 1005, 1006 or 1015 (not for the wire), nor an
#: unassigned one.
ALLOWED_CLOSE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, *range(3000, 5000)}


@dataclass
class Site:
    srv: Server
    log: Path
    echo: ClientConnection
    viewer: ClientConnection
    pid: int
    appended: int = 0

    def still_fine(self) -> None:
        """The clients connected throughout still work; the worker is the same process."""
        self.echo.send("still there?")
        assert self.echo.recv(timeout=20) == "still there?"
        self.appended += 1
        line = b"line %d\n" % self.appended
        with open(self.log, "ab") as f:
            f.write(line)
        got = b""
        while len(got) < len(line):
            message = self.viewer.recv(timeout=20)
            assert isinstance(message, bytes)
            got += message
        assert got == line
        assert self.srv.worker_pids() == [self.pid]


@pytest.fixture
def site(server: ServerFactory, tmp_path: Path) -> Iterator[Site]:
    log = tmp_path / "app.log"
    log.write_bytes(b"start\n")
    env = {"PINE_DEPLOY_FILES": json.dumps({"app": str(log)}),
           "PINE_WS_MAX_MESSAGE_SIZE": "65536", "PINE_WS_CLOSE_TIMEOUT": "1"}
    srv = server("deploy_app:app", env=env)
    with connect(f"{srv.ws_url}/echo") as echo, \
            connect(f"{srv.ws_url}/logs/ws/app?lines=0", subprotocols=SUB) as viewer:
        assert json.loads(viewer.recv(timeout=20))["event"] == "open"
        yield Site(srv, log, echo, viewer, srv.worker_pids()[0])
        site_log = srv.log()
    assert "Traceback" not in site_log, site_log[-3000:]


# -- frames ------------------------------------------------------------------------

@st.composite
def frames(draw: Any) -> bytes:
    """One frame, valid or not: header bits, opcode, mask, length (true or not), payload."""
    fin = draw(st.booleans())
    rsv = draw(st.integers(0, 7))
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3, 7, 11, 15]))
    masked = draw(st.booleans().map(lambda b: b or draw(st.integers(0, 9)) > 0))
    if opcode == 1:
        payload = draw(st.one_of(st.text(max_size=80).map(str.encode), st.binary(max_size=80)))
    elif opcode == 8:
        payload = draw(st.one_of(
            st.binary(max_size=3),
            st.builds(lambda c, r: struct.pack("!H", c) + r, st.integers(0, 65535),
                      st.binary(max_size=130))))
    else:
        payload = draw(st.binary(max_size=300))
    length = len(payload)
    lie = draw(st.sampled_from(["true", "true", "true", "short", "long", "huge"]))
    if lie == "short":
        length = max(0, length - draw(st.integers(1, 10)))
    elif lie == "long":
        length += draw(st.integers(1, 10))
    elif lie == "huge":
        length = draw(st.sampled_from([70000, 1 << 20, (1 << 63) - 1]))
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if masked:
        key = draw(st.binary(min_size=4, max_size=4))
        head += key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


sequences = st.lists(st.one_of(frames(), st.binary(min_size=1, max_size=40)),
                     min_size=1, max_size=6)


def _throw(site: Site, path: str, data: bytes, headers: dict[str, str] | None = None) -> None:
    """Handshake, send ``data``, then a close frame and EOF; the server must end it in time."""
    shake = wsraw.handshake(site.srv.port, path, headers)
    assert shake.status == 101, shake.status
    with shake.sock as sock:
        try:
            sock.sendall(data + wsraw.close_frame(1000))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed already (a protocol error seen early)
        reply = shake.rest + wsraw.read_to_eof(sock, timeout=15)  # bounded: never a hang
    answered, _ = wsraw.parse_frames(reply)
    closes = [payload for op, payload in answered if op == wsraw.OP_CLOSE]
    if _whole_frames(data + wsraw.close_frame(1000)):
        # every frame arrived whole, our close last: the server answers a bad frame, or
        # our close, with a close frame; dropping the TCP connection is not an answer
        assert closes, f"no close frame came back: {reply[-200:]!r}"
    if closes and closes[0]:  # an empty close frame (no code) answers one, as RFC 6455 allows
        assert len(closes[0]) >= 2, closes[0]
        code = struct.unpack("!H", closes[0][:2])[0]
        assert code in ALLOWED_CLOSE, (code, closes[0])


def _whole_frames(data: bytes) -> bool:
    """Whether ``data`` splits into whole client frames (a length lie leaves the last one
    short, and then the server sees EOF in the middle of a frame: it may just close)."""
    pos = 0
    while pos < len(data):
        head = 2 + {126: 2, 127: 8}.get(data[pos + 1] & 0x7F, 0) if len(data) - pos >= 2 else 2
        if len(data) - pos < head:
            return False
        size = data[pos + 1] & 0x7F
        if size == 126:
            (size,) = struct.unpack_from("!H", data, pos + 2)
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, pos + 2)
        end = pos + head + (4 if data[pos + 1] & 0x80 else 0) + size
        if end > len(data):
            return False
        pos = end
    return True


_FUZZ = settings(max_examples=120, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.slow
@_FUZZ
@given(data=sequences)
def test_fuzzed_frames_to_the_echo_route(site: Site, data: list[bytes]) -> None:
    # one server (the fixture) takes every example; its other clients must not notice
    _throw(site, "/echo", b"".join(data))
    site.still_fine()


@pytest.mark.slow
@_FUZZ
@given(data=sequences)
def test_fuzzed_frames_to_the_viewer_socket(site: Site, data: list[bytes]) -> None:
    _throw(site, "/logs/ws/app?lines=0", b"".join(data), {"Sec-WebSocket-Protocol": SUB[0]})
    site.still_fine()


@pytest.mark.slow
def test_after_the_fuzzing_the_worker_and_its_clients_are_fine(site: Site) -> None:
    # A fixed barrage of the worst cases, then the server must still serve and hold
    # nothing beyond the test's two clients.
    barrage = [
        b"\x81\xff" + struct.pack("!Q", (1 << 63) - 1) + b"abcd",  # 8 EiB text frame
        b"\x89\xfe" + struct.pack("!H", 200) + b"abcd" + b"x" * 200,  # oversized ping
        b"\x01\x85abcd" + b"hello" + b"\x89\x80abcd" + b"\x00\x85abcd" + b"again",
        b"\x81\x82abcd" + bytes([0xC3 ^ 0x61, 0x28 ^ 0x62]),  # invalid UTF-8 text
        b"\x81\x05hello",  # unmasked client frame
        b"\xf1\x80abcd",  # reserved bits set
        b"\x88\x81abcd" + b"x",  # one-byte close payload
        b"\x88\x82abcd" + bytes([0x03 ^ 0x61, 0xED ^ 0x62]),  # close code 1005 sent
        os.urandom(5000),
    ]
    for data in barrage:
        _throw(site, "/echo", data)
        _throw(site, "/logs/ws/app?lines=0", data, {"Sec-WebSocket-Protocol": SUB[0]})
    site.still_fine()
    wait_until(lambda: json.loads(http_get(site.srv.url + "/debug/stats")[2])["live"] == 2,
               message="only the two clients of the test left")


def test_fuzz_leaves_clients_unaffected(site: Site) -> None:
    for data in (b"\x82\x7f" + struct.pack("!Q", 1 << 40), b"\x00" * 64, b"\x8f\x80abcd"):
        _throw(site, "/echo", data)
        site.still_fine()


# -- handshakes ------------------------------------------------------------------------

BROKEN_HANDSHAKES: list[tuple[str, dict[str, str], set[int]]] = [
    ("huge header", {"X-Big": "a" * 20000}, {400, 431}),
    ("huge key", {"Sec-WebSocket-Key": "k" * 9000}, {400, 431}),
    ("no key", {"Sec-WebSocket-Key": ""}, {400}),
    ("bad version", {"Sec-WebSocket-Version": "8"}, {426}),
    ("no upgrade", {"Upgrade": ""}, {400}),
    ("connection keep-alive", {"Connection": "keep-alive"}, {400}),
    ("bad key", {"Sec-WebSocket-Key": "not base64 !!"}, {400}),
    ("short key", {"Sec-WebSocket-Key": "c2hvcnQ="}, {400}),
    ("bad extensions", {"Sec-WebSocket-Extensions": "permessage-deflate; "
                        "client_max_window_bits=99; ;;==,"}, {101, 400}),
    ("bad protocols", {"Sec-WebSocket-Protocol": ",,,  , ;="}, {101, 400}),
    ("control byte in a header", {"Sec-WebSocket-Protocol": "a\x7fb"}, {400}),
    ("foreign origin", {"Origin": "http://evil.example"}, {403}),
    ("null origin", {"Origin": "null"}, {403}),
]


@pytest.mark.parametrize("what,headers,expected", BROKEN_HANDSHAKES,
                         ids=[c[0] for c in BROKEN_HANDSHAKES])
def test_broken_handshake_headers_get_an_http_error(site: Site, what: str,
                                                    headers: dict[str, str],
                                                    expected: set[int]) -> None:
    for path in ("/echo", "/logs/ws/app"):
        shake = wsraw.handshake(site.srv.port, path, headers)
        if shake.status == 101:
            shake.sock.close()
        assert shake.status in expected, (path, shake.status, shake.body[:200])
    site.still_fine()


def _raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return wsraw.read_to_eof(sock, timeout=15)


def test_malformed_requests_and_truncated_handshakes(site: Site) -> None:
    port = site.srv.port
    many = "".join(f"X-H{i}: v\r\n" for i in range(300))
    cases = [
        b"\x00\xff\xfe garbage \r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade websocket\r\n\r\n",  # no colon
        ("GET /echo HTTP/1.1\r\nHost: x\r\n" + many + "\r\n").encode(),
        b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",  # truncated, then EOF
    ]
    for data in cases:
        reply = _raw_request(port, data)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:100]
    # a client that resets right after its handshake request, many times
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        sock.sendall(f"GET /logs/ws/app HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    site.still_fine()


# -- queries, names, auth -----------------------------------------------------------

BAD_QUERIES = [
    ("offset=-1", "offset"), ("offset=abc", "offset"), ("offset=1e3", "offset"),
    ("offset=%2B5", "offset"), ("offset=", "offset"), ("offset=%200", "offset"),
    ("offset=99999999999999999999", "offset"), ("lines=-1", "lines"),
    ("lines=5001", "lines"), ("lines=abc", "lines"), ("lines=0x10", "lines"),
    ("file=abc&offset=0", "file"), ("file=1:2", "file"), ("offset=%00", "offset"),
]


@pytest.mark.parametrize("query,names", BAD_QUERIES, ids=[q for q, _ in BAD_QUERIES])
def test_bad_offset_and_lines_close_1008_naming_the_value(site: Site, query: str,
                                                          names: str) -> None:
    with connect(f"{site.srv.ws_url}/logs/ws/app?{query}", subprotocols=SUB) as ws:
        with pytest.raises(ConnectionClosed) as info:
            message = ws.recv(timeout=20)
            raise AssertionError(f"got {message!r} before the close")
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1008
    reason = info.value.rcvd.reason
    assert reason.startswith(names), reason
    # the reason names the value the client sent, as the server decoded it
    assert f"{names} {parse_qs(query, keep_blank_values=True)[names][0]!r}" in reason, reason


def test_offset_past_the_end_restarts_at_zero_with_a_notice(site: Site) -> None:
    with connect(f"{site.srv.ws_url}/logs/ws/app?offset=123456789", subprotocols=SUB) as ws:
        opened = json.loads(ws.recv(timeout=20))
        assert opened["event"] == "open" and opened["offset"] == 0
        rotated = json.loads(ws.recv(timeout=20))
        assert rotated["event"] == "rotated" and rotated["how"] == "truncated"
        assert ws.recv(timeout=20) == b"start\n"


BAD_NAMES = ["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "app%2F..%2F..%2Fetc%2Fpasswd",
             "%2Fetc%2Fpasswd", "app%00", "app%2Fx", "nope", "APP", "app.log", "a" * 300,
             "%C3%A9", "app%20", "..%5C..%5Cetc%5Cpasswd"]


def _upgrade_status(port: int, path: str, **headers: str) -> tuple[int, bytes]:
    shake = wsraw.handshake(port, path, headers)
    if shake.status == 101:
        shake.sock.close()
    return shake.status, shake.body


def test_viewer_names_that_are_not_mapped_are_404_before_any_upgrade(site: Site,
                                                                     tmp_path: Path) -> None:
    passwd = Path("/etc/passwd").read_bytes()[:20]
    with nginx_in_front(site.srv.port, tmp_path / "nginx") as proxy:
        for port, expected in ((site.srv.port, {404}), (proxy.port, {400, 404})):
            for name in BAD_NAMES:
                for path in (f"/logs/ws/{name}", f"/logs/{name}", f"/logs/ws/app/{name}"):
                    status, body = _upgrade_status(port, path)
                    assert status in expected, (port, path, status)
                    assert passwd not in body
                    status, _, text = http_get(f"http://127.0.0.1:{port}{path}")
                    assert status in expected and passwd.decode() not in text, (path, status)
    site.still_fine()


def test_upgrade_without_the_apps_auth_is_401_before_any_upgrade(site: Site,
                                                                tmp_path: Path) -> None:
    path = "/secure/ws/app?lines=0"
    with nginx_in_front(site.srv.port, tmp_path / "nginx") as proxy:
        for port in (site.srv.port, proxy.port):
            assert _upgrade_status(port, path) == (401, b"login required\n")
            assert _upgrade_status(port, path, **{"X-Token": "wrong"})[0] == 401
            assert _upgrade_status(port, path, **{"X-Token": "secret"})[0] == 101
        with pytest.raises(InvalidStatus) as info:
            with connect(f"{proxy.ws_url}{path}", subprotocols=SUB):
                pass
        assert info.value.response.status_code == 401
        with connect(f"{proxy.ws_url}{path}", subprotocols=SUB,
                     additional_headers={"X-Token": "secret"}) as ws:
            assert json.loads(ws.recv(timeout=20))["event"] == "open"
    site.still_fine()
