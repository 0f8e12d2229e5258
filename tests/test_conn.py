"""The connection: what a real client sees of Conn, and what the server keeps.

Every test runs tests/apps/basic.py under gunicorn (gthread) in a child
process, or Werkzeug's development server where its path matters, and drives
it with the ``websockets`` client (``wsraw`` where the raw bytes matter).
"""

from __future__ import annotations

import base64
import json
import random
import signal
import socket
import struct
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.extensions.permessage_deflate import PerMessageDeflate

import wsraw
from helpers import connect, events, fd_count, http_get, state, thread_count, wait_until
from server import AT_ONCE, LONG_GRACE

QUIET_LOG_MARKERS = ("Traceback", "Error handling request", "Exception in thread")


def assert_quiet_log(srv: Any) -> None:
    log = srv.log()
    for marker in QUIET_LOG_MARKERS:
        assert marker not in log, f"{marker!r} in the server's log:\n{log}"


def closed_by_server(ws: Any, timeout: float = 10) -> ConnectionClosed:
    """Wait for the server to close ``ws``; return the exception the client saw."""
    with pytest.raises(ConnectionClosed) as info:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws.recv(timeout=timeout)
        raise AssertionError("the server did not close the connection")
    return info.value


def abort(sock: socket.socket) -> None:
    """Vanish without a close frame: the kernel sends a reset."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- compression --------------------------------------------------------------


def test_compression_is_negotiated_by_default(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/echo") as ws:
        assert [type(e) for e in ws.protocol.extensions] == [PerMessageDeflate]
        ws.send("z" * 100_000)
        assert ws.recv(timeout=10) == "z" * 100_000


def test_enable_compression_false_really_turns_it_off(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/nocompress") as ws:  # the client offers deflate
        assert ws.protocol.extensions == []
        assert ws.recv(timeout=10) == "x" * 1000
    answer = wsraw.handshake(srv.port, "/nocompress",
                             {"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert answer.status == 101
    assert "sec-websocket-extensions" not in answer.headers
    answer.sock.close()
    # app-wide: PINE_WS_ENABLE_COMPRESSION=false turns it off on every route
    other = server(env={"PINE_WS_ENABLE_COMPRESSION": "false"})
    with connect(other.ws_url + "/echo") as ws:
        assert ws.protocol.extensions == []


# -- max_message_size ----------------------------------------------------------


def test_default_max_message_size_is_1_mib_and_the_worker_goes_on(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/echo", max_size=None) as bystander, \
            connect(srv.ws_url + "/echo", max_size=None) as ws:
        ws.send("a" * 1024 * 1024)  # exactly the limit: fine
        assert ws.recv(timeout=20) == "a" * 1024 * 1024
        ws.send(b"b" * (1024 * 1024 + 1))
        closed = closed_by_server(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1009
        # the handler saw the end (it once hung in receive() for ever), with
        # the code the library sent, not 1006
        wait_until(lambda: events(srv.url, "handler-ended"), timeout=10)
        ended = events(srv.url, "handler-ended")[0]
        assert (ended["code"], ended["reason"]) == (1009, "Message is too big")
        bystander.send("still here")
        assert bystander.recv(timeout=10) == "still here"
    with connect(srv.ws_url + "/echo") as ws:  # and new clients are served
        ws.send("next")
        assert ws.recv(timeout=10) == "next"
    assert_quiet_log(srv)


def test_max_message_size_per_route_counts_fragments_and_inflated_size(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/small") as ws:
        ws.send("s" * 1024)
        assert ws.recv(timeout=10) == "s" * 1024
        ws.send("s" * 1025)
        assert closed_by_server(ws).rcvd.code == 1009  # type: ignore[union-attr]
    with connect(srv.ws_url + "/small") as ws:  # 600 + 600 in two frames
        ws.send(iter([b"f" * 600, b"f" * 600]))
        assert closed_by_server(ws).rcvd.code == 1009  # type: ignore[union-attr]
    # 16 MiB of zeros deflate to a few KiB: the limit is on what it inflates to
    with connect(srv.ws_url + "/echo") as ws:
        assert ws.protocol.extensions
        ws.send(bytes(16 * 1024 * 1024))
        assert closed_by_server(ws).rcvd.code == 1009  # type: ignore[union-attr]
    with connect(srv.ws_url + "/small") as ws:
        ws.send("ok")
        assert ws.recv(timeout=10) == "ok"
    # every handler ended, the three closed with 1009 included
    wait_until(lambda: len(events(srv.url, "handler-ended")) == 4, timeout=10,
               message="four handlers ended")
    assert_quiet_log(srv)


def test_app_wide_max_message_size(server) -> None:
    srv = server(env={"PINE_WS_MAX_MESSAGE_SIZE": "100"})
    with connect(srv.ws_url + "/echo") as ws:
        ws.send("m" * 100)
        assert ws.recv(timeout=10) == "m" * 100
        ws.send("m" * 101)
        assert closed_by_server(ws).rcvd.code == 1009  # type: ignore[union-attr]
    wait_until(lambda: events(srv.url, "handler-ended"), timeout=10)


# -- errors in handlers --------------------------------------------------------


def test_error_callback_gets_the_exception_and_client_gets_1011(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/fail") as ws:
        closed = closed_by_server(ws)
    assert isinstance(closed, ConnectionClosedError)
    assert closed.rcvd is not None and closed.rcvd.code == 1011
    assert wait_until(lambda: state(srv.url)["errors"]) == ["ValueError('boom in handler')"]
    assert "boom in handler" not in srv.log()  # the callback took it: nothing logged


def test_handler_error_without_callback_is_logged_and_client_gets_1011(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/fail-unhandled") as ws:
        closed = closed_by_server(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1011
    log = wait_until(lambda: "no callback" in srv.log() and srv.log())
    assert "WebSocket handler for /fail-unhandled failed" in log
    assert "KeyError: 'no callback'" in log
    assert "Error handling request" not in log  # the app reported it, not gunicorn
    with connect(srv.ws_url + "/echo") as ws:
        ws.send("alive")
        assert ws.recv(timeout=10) == "alive"


# -- messages, closing, state -------------------------------------------------


def test_send_json_and_receive_json_with_bad_json(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/json") as ws:
        ws.send('{"a": [1, 2, "é"]}')
        assert json.loads(ws.recv(timeout=10)) == {"got": {"a": [1, 2, "é"]}}
        ws.send("{not json")
        error = json.loads(ws.recv(timeout=10))["error"]
        assert error.startswith("the message is not valid JSON")
        ws.send(b"\xff\xfe")  # not even UTF-8
        assert "not valid JSON" in json.loads(ws.recv(timeout=10))["error"]
        ws.send("null")  # the connection survived both
        assert json.loads(ws.recv(timeout=10)) == {"got": None}
    assert_quiet_log(srv)


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4001, "bye now"), (1008, "policy")])
def test_close_code_and_reason_as_the_client_sees_them(server, code: int, reason: str) -> None:
    srv = server()
    with connect(f"{srv.ws_url}/close/{code}?reason={reason.replace(' ', '+')}") as ws:
        closed = closed_by_server(ws)
    assert isinstance(closed, ConnectionClosedOK if code == 1000 else ConnectionClosedError)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (code, reason)


def test_invalid_close_codes_raise_value_error(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/badclose") as ws:
        got = json.loads(ws.recv(timeout=10))
        closed = closed_by_server(ws)
    for key, outcome in got["refused"].items():
        assert outcome != "accepted", key
    assert "may not be sent" in got["refused"]["1005/0"]
    assert "123 bytes" in got["refused"]["1000/124"]
    assert "123 bytes" in got["refused"]["1000/62"]  # 124 bytes in UTF-8
    assert got["connected"] is True  # a refused close leaves the connection open
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (3000, "é" * 61)


def test_connected_and_every_call_after_a_close_is_connection_closed(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/connected") as ws:
        assert json.loads(ws.recv(timeout=10)) == {"connected": True}
        ws.close(4000, "client bye")
    (seen,) = wait_until(lambda: events(srv.url, "connected-after-close"))
    assert seen["connected"] is False
    assert (seen["code"], seen["reason"], seen["close_code"]) == (4000, "client bye", 4000)
    assert seen["send"] == seen["send_json"] == seen["receive"] == "ConnectionClosed"
    assert_quiet_log(srv)


def test_subprotocol_follows_the_clients_preference(server) -> None:
    srv = server()  # the route offers ["chat.v2", "chat.v1"]
    with connect(srv.ws_url + "/proto", subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v1"
        assert ws.recv(timeout=10) == "chat.v1"
    with connect(srv.ws_url + "/proto", subprotocols=["chat.v2"]) as ws:  # type: ignore[list-item]
        assert ws.recv(timeout=10) == "chat.v2"
    answer = wsraw.handshake(srv.port, "/proto", {"Sec-WebSocket-Protocol": "mqtt, soap"})
    assert answer.status == 101
    assert "sec-websocket-protocol" not in answer.headers  # none matching: none chosen
    answer.sock.close()
    with connect(srv.ws_url + "/proto") as ws:
        assert ws.subprotocol is None
        assert ws.recv(timeout=10) == ""


# -- concurrent sends ------------------------------------------------------------


def storm_payload(tid: int, i: int, length: int) -> bytes:
    """What tests/apps/basic.py's ``storm_payload`` sends (kept in step with it)."""
    head = json.dumps({"t": tid, "i": i}).encode() + b"|"
    body = random.Random(f"{tid}/{i}").randbytes(length)
    if tid % 2 == 0:
        body = base64.b64encode(body)
    return head + body[: length - len(head)]


@pytest.mark.parametrize("route", ["/storm", "/storm-plain"])
def test_concurrent_large_sends_to_a_slow_reader_arrive_whole(server, route: str) -> None:
    """Six threads send 16-64 KiB text and binary messages at once, pings every 10 ms.

    The payloads do not compress and the client's receive buffer is small,
    so the server's writes block and end in partial sends, where a ping of
    the library's reader thread would land inside a data frame (as it did
    before every write went through one lock).
    """
    srv = server()
    threads, count = 6, 40
    got: dict[tuple[int, int], int] = {}
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # before connect: the window
    sock.settimeout(10)
    sock.connect(("127.0.0.1", srv.port))
    url = f"{srv.ws_url}{route}?threads={threads}&count={count}&size=16384&max=65536"
    with connect(url, sock=sock, max_size=None, max_queue=2) as ws:
        while True:
            message = ws.recv(timeout=30)
            if message == "done":
                break
            raw = message.encode() if isinstance(message, str) else message
            meta = json.loads(raw.partition(b"|")[0])
            tid, i = meta["t"], meta["i"]
            assert isinstance(message, str) == (tid % 2 == 0), "text/binary kind swapped"
            length = 16384 + (65536 - 16384) * i // (count - 1)
            assert raw == storm_payload(tid, i, length), f"message {tid}/{i} corrupted"
            got[(tid, i)] = got.get((tid, i), 0) + 1
            time.sleep(0.002)  # a slow reader
        ws.send("bye")
    assert sorted(got) == [(t, i) for t in range(threads) for i in range(count)]
    assert set(got.values()) == {1}
    assert not events(srv.url, "storm-sender-closed")
    assert_quiet_log(srv)


# -- disconnects ---------------------------------------------------------------


def test_every_failure_after_a_disconnect_ends_the_handler_quietly(server) -> None:
    srv = server(extra=["--access-logfile", "-"])
    # a clean close while the handler is sending
    with connect(srv.ws_url + "/sendafter") as ws:
        ws.recv(timeout=10)
    # a reset: no close frame at all
    answer = wsraw.handshake(srv.port, "/sendafter")
    answer.sock.recv(1024)
    abort(answer.sock)
    # a reset in the middle of a storm of concurrent large sends
    answer = wsraw.handshake(srv.port, "/storm?threads=4&count=200&size=65536")
    answer.sock.recv(65536)
    abort(answer.sock)
    seen = wait_until(lambda: len(events(srv.url, "sendafter-closed")) == 2
                      and events(srv.url, "sendafter-closed"))
    assert all(e["connected"] is False for e in seen)
    assert {e["code"] for e in seen} <= {1000, 1005, 1006}
    wait_until(lambda: len(events(srv.url, "storm-sender-closed")) == 4,
               message="every storm sender stopped by ConnectionClosed")
    time.sleep(0.5)  # let the handlers' last lines reach the log
    assert_quiet_log(srv)
    assert '" 500 ' not in srv.log()
    assert '"GET /state HTTP/1.1" 200' in srv.log()  # the access log is on


def test_peer_that_stops_reading_is_dropped_after_the_send_timeout(server) -> None:
    srv = server(env={"PINE_WS_SEND_TIMEOUT": "2"})
    (worker,) = srv.worker_pids()
    # warm up: gunicorn's pool keeps the threads it made, and the test's
    # polls of /state run beside the flood: let the pool grow beforehand
    concurrent_cycles(srv.ws_url, 3)
    wait_until(lambda: not reader_threads(srv.url), timeout=30,
               message="the warm-up's reader threads gone")
    baseline = thread_count(worker)
    answer = wsraw.handshake(srv.port, "/flood", rcvbuf=4096)
    try:
        started = time.monotonic()
        (dropped,) = wait_until(lambda: events(srv.url, "flood-dropped"), timeout=30)
        assert time.monotonic() - started < 20
        assert 2 <= dropped["after"] < 20
        wait_until(lambda: thread_count(worker) <= baseline, timeout=10,
                   message=f"worker threads back to {baseline}")
        assert not reader_threads(srv.url)
    finally:
        answer.sock.close()
    assert_quiet_log(srv)


def reader_threads(base_url: str) -> list[str]:
    """The connections' reader threads alive in the server (GET /threads)."""
    status, _, body = http_get(base_url + "/threads")
    assert status == 200
    return [name for name in json.loads(body)["threads"] if name == "pine-ws-reader"]


def test_sigterm_closes_every_connection_with_1001_at_once(server) -> None:
    srv = server(extra=LONG_GRACE)
    clients = [connect(srv.ws_url + "/wait") for _ in range(3)]
    try:
        for ws in clients:
            assert ws.recv(timeout=10) == "ready"
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        for ws in clients:
            closed = closed_by_server(ws, timeout=AT_ONCE)
            assert closed.rcvd is not None and closed.rcvd.code == 1001
        srv.proc.wait(AT_ONCE)
        assert time.monotonic() - started < AT_ONCE  # well before the graceful timeout
    finally:
        for ws in clients:
            ws.close()
    assert srv.proc.returncode == 0
    assert_quiet_log(srv)


# -- the close, byte by byte, under both servers ------------------------------------


def read_until_close(sock: socket.socket,
                     data: bytes = b"") -> tuple[list[tuple[int, bytes]], bytes]:
    sock.settimeout(10)
    while True:
        frames, leftover = wsraw.parse_frames(data)
        if frames and frames[-1][0] == wsraw.OP_CLOSE:
            return frames, leftover
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF before a close frame: {data!r}")
        data += chunk


@pytest.mark.parametrize("kind", ["werkzeug", "gunicorn"])
def test_nothing_follows_the_close_frame(server, kind: str) -> None:
    srv = server(kind=kind)
    with connect(srv.ws_url + "/echo") as ws:
        ws.send("dev server")
        assert ws.recv(timeout=10) == "dev server"
    assert ws.close_code == 1000
    # client closes: the echo, the close reply, then EOF and not one byte more
    answer = wsraw.handshake(srv.port, "/echo")
    answer.sock.sendall(wsraw.frame(wsraw.OP_TEXT, b"raw hello"))
    answer.sock.settimeout(10)
    data = answer.rest
    while not wsraw.parse_frames(data)[0]:
        data += answer.sock.recv(65536)
    answer.sock.sendall(wsraw.close_frame(1000, "done"))
    data += wsraw.read_to_eof(answer.sock)
    answer.sock.close()
    frames, leftover = wsraw.parse_frames(data)
    assert frames[0] == (wsraw.OP_TEXT, b"raw hello")
    assert frames[-1][0] == wsraw.OP_CLOSE and frames[-1][1][:2] == struct.pack("!H", 1000)
    assert leftover == b"", f"bytes after the close frame: {leftover[:200]!r}"
    # server closes: its close frame, our reply, then EOF and nothing else
    answer = wsraw.handshake(srv.port, "/close/4002?reason=srv")
    frames, leftover = read_until_close(answer.sock, answer.rest)
    answer.sock.sendall(wsraw.close_frame(4002))
    leftover += wsraw.read_to_eof(answer.sock)
    answer.sock.close()
    assert frames == [(wsraw.OP_CLOSE, struct.pack("!H", 4002) + b"srv")]
    assert leftover == b"", f"bytes after the close frame: {leftover[:200]!r}"
    # the real client agrees: a clean close
    with connect(srv.ws_url + "/close/1000") as ws:
        closed = closed_by_server(ws)
    assert isinstance(closed, ConnectionClosedOK)
    assert "Traceback" not in srv.log()


# -- leaks -------------------------------------------------------------------------


def one_cycle(url: str) -> None:
    with connect(url + "/echo") as ws:
        ws.send("cycle")
        assert ws.recv(timeout=10) == "cycle"


def concurrent_cycles(url: str, n: int) -> None:
    clients = [connect(url + "/echo") for _ in range(n)]
    try:
        for ws in clients:
            ws.send("many")
        for ws in clients:
            assert ws.recv(timeout=10) == "many"
    finally:
        for ws in clients:
            ws.close()


@pytest.mark.parametrize("kind", ["gunicorn", "werkzeug"])
def test_connect_close_cycles_leave_no_thread_or_fd(server, kind: str) -> None:
    srv = server(kind=kind)
    (worker,) = srv.worker_pids()
    # warm up: the thread pool grows to the peak concurrency and then stays
    concurrent_cycles(srv.ws_url, 8)
    for _ in range(3):
        one_cycle(srv.ws_url)

    def settled() -> tuple[int, int]:
        wait_until(lambda: not reader_threads(srv.url), timeout=30,
                   message="the warm-up's reader threads gone")
        return thread_count(worker), fd_count(worker)

    baseline_threads, baseline_fds = settled()
    for _ in range(30):
        one_cycle(srv.ws_url)
    for _ in range(3):
        concurrent_cycles(srv.ws_url, 8)
    # a client that vanishes without a close frame, as often as one that closes
    for _ in range(5):
        answer = wsraw.handshake(srv.port, "/echo")
        abort(answer.sock)
    wait_until(lambda: thread_count(worker) <= baseline_threads, timeout=30,
               message=f"threads back to {baseline_threads}")
    wait_until(lambda: fd_count(worker) <= baseline_fds, timeout=30,
               message=f"fds back to {baseline_fds}")
    assert not reader_threads(srv.url)
    assert "Traceback" not in srv.log()


def test_handler_threads_end_with_their_connection(server) -> None:
    """The reader thread of each connection is reaped (it starts once the client speaks)."""
    srv = server()
    (worker,) = srv.worker_pids()
    concurrent_cycles(srv.ws_url, 4)
    wait_until(lambda: not reader_threads(srv.url), timeout=30,
               message="the warm-up's reader threads gone")
    baseline = thread_count(worker)
    clients = [connect(srv.ws_url + "/wait") for _ in range(4)]
    try:
        for ws in clients:
            ws.recv(timeout=10)
            # a silent client has no reader thread yet: its ping starts one
            assert ws.ping().wait(10)
        # each open connection: a reader thread (the pool threads already exist;
        # the doorbell's thread ends once no socket waits for a reader)
        wait_until(lambda: thread_count(worker) == baseline + 4, timeout=10,
                   message=f"{baseline + 4} threads")
    finally:
        for ws in clients:
            ws.close()
    wait_until(lambda: thread_count(worker) <= baseline, timeout=30)
