"""One address cannot take every thread: the attacks, against a real gunicorn.

- 100 connections that each send one byte and nothing more: under
  ``flask_pine_ws.worker.ThreadWorker`` no thread waits for their headers,
  so another client is served at once, and they are dropped (under plain
  ``gthread`` they hold the worker's threads for good);
- connections that trickle their headers a byte at a time: cut off with 408
  once ``PINE_WS_HEADER_TIMEOUT`` has passed since their first byte;
- many idle WebSockets from one address: past ``PINE_WS_MAX_PER_ADDRESS``
  the handshake gets 429, and other addresses (another source address, or
  another forwarded address under ``ProxyFix``) and plain requests are
  served; a closed socket gives its slot back.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection

from conftest import ServerFactory
from helpers import connect, http_get, raised_fd_limit, wait_until
from server import Server

pytestmark = pytest.mark.integration

WORKER = ["-k", "flask_pine_ws.worker.ThreadWorker"]


@contextmanager
def stalled_clients(srv: Server, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that each send the first byte of a request, then nothing."""
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", srv.port), 10))
            sock.sendall(b"G")
            socks.append(sock)
        yield socks


def read_to_end(sock: socket.socket, timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


def test_one_byte_connections_hold_no_thread(server: ServerFactory) -> None:
    # a deadline far longer than the test's bound: what keeps others served is
    # that no thread waits for a head, not that the stalled ones are cut off
    srv = server("basic:app", threads=8, extra=WORKER, env={"PINE_WS_HEADER_TIMEOUT": "60"})
    with raised_fd_limit(), stalled_clients(srv, 100) as stalled:
        time.sleep(1)  # the worker has seen them all
        started = time.monotonic()
        status, _, body = http_get(srv.url + "/__ready", timeout=60)
        assert (status, body) == (200, "ok")
        with connect(srv.ws_url + "/echo") as ws:
            ws.send("still here")
            assert ws.recv(timeout=30) == "still here"
        # under plain gthread: no answer at all (8 threads, each blocked on a
        # stalled head); with a deadline per thread: 100 / 8 x 60 s
        assert time.monotonic() - started < 20
        # silent past gunicorn's --keep-alive (2 s): dropped, none answered
        for sock in stalled:
            assert read_to_end(sock) == b""
    assert "Traceback" not in srv.log()


def test_trickled_headers_are_cut_off_at_the_deadline(server: ServerFactory) -> None:
    srv = server("basic:app", threads=4, extra=WORKER, env={"PINE_WS_HEADER_TIMEOUT": "3"})
    request = b"GET /__ready HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 100
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.create_connection(("127.0.0.1", srv.port), 10))
                 for _ in range(10)]
        started = time.monotonic()
        cut = set()
        for byte in request:  # one byte per connection every 0.5 s: never silent for 2 s
            for sock in socks:
                if sock not in cut:
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:
                        cut.add(sock)
            if len(cut) == len(socks) or time.monotonic() - started > 30:
                break
            time.sleep(0.5)
        for sock in socks:
            assert read_to_end(sock).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert time.monotonic() - started < 30
        # meanwhile, and after, others are served
        assert http_get(srv.url + "/__ready")[0] == 200
    # a head that arrives in time is not cut off, nor a WebSocket that lives past the deadline
    with connect(srv.ws_url + "/echo") as ws:
        time.sleep(4)
        ws.send("later")
        assert ws.recv(timeout=30) == "later"
    assert "Traceback" not in srv.log()


def open_waiting(url: str, **options: Any) -> ClientConnection:
    ws = connect(url, **options)
    assert ws.recv(timeout=30) == "ready"
    return ws


def from_address(srv: Server, address: str) -> socket.socket:
    """A connection to the server from another loopback source address."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", srv.port))
    return sock


def refused_status(url: str, **options: Any) -> int:
    with pytest.raises(InvalidStatus) as info:
        connect(url, **options).close()
    status: int = info.value.response.status_code
    return status


def test_idle_websockets_of_one_address_are_capped(server: ServerFactory) -> None:
    srv = server("basic:app", threads=16, env={"PINE_WS_MAX_PER_ADDRESS": "8"})
    url = srv.ws_url + "/wait"
    with ExitStack() as stack:
        held = [stack.enter_context(open_waiting(url)) for _ in range(8)]
        # the attack goes on: every further handshake from that address is refused
        for _ in range(30):
            assert refused_status(url) == 429
        # others are served: another address, and plain requests from the same one
        other = stack.enter_context(open_waiting(url, sock=from_address(srv, "127.0.0.2")))
        assert http_get(srv.url + "/__ready")[0] == 200
        with connect(srv.ws_url + "/echo", sock=from_address(srv, "127.0.0.3")) as ws:
            ws.send("served")
            assert ws.recv(timeout=30) == "served"
        # a socket that ends gives its slot back
        held[0].close()

        def accepted() -> bool:
            try:
                stack.enter_context(open_waiting(url))
            except InvalidStatus:
                return False
            return True

        wait_until(accepted, timeout=30, interval=0.2, message="a slot given back")
        assert refused_status(url) == 429
        other.send("x")  # still open
    assert "Traceback" not in srv.log()


def test_the_cap_counts_the_forwarded_address_under_proxyfix(server: ServerFactory) -> None:
    srv = server("basic:app", threads=16,
                 env={"PINE_WS_MAX_PER_ADDRESS": "3", "PINE_TEST_PROXYFIX": "1"})
    url = srv.ws_url + "/wait"

    def forwarded(address: str) -> dict[str, Any]:
        return {"additional_headers": {"X-Forwarded-For": address}}

    with ExitStack() as stack:
        for _ in range(3):
            stack.enter_context(open_waiting(url, **forwarded("203.0.113.7")))
        assert refused_status(url, **forwarded("203.0.113.7")) == 429
        # the proxy's own address (all clients' TCP peer) is not what is counted
        for address in ("203.0.113.8", "198.51.100.1"):
            stack.enter_context(open_waiting(url, **forwarded(address)))
