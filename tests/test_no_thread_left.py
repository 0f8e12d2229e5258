"""A process out of threads refuses a WebSocket with 503 before the upgrade, and loses nothing.

A connection's socket is read by a thread (the doorbell's while its client
is silent, then its own reader's), and the kernel's ``pid_max`` counts every
thread of the machine: ten thousand watchers on one worker come near it.
Without a thread, a connection that had its 101 would never be served: when
the thread that must watch a new socket cannot start, the handshake is
refused (a reader that cannot start later is tests/test_doorbell.py's). Thread
creation is made to fail for real, by asking for a stack no machine can map
(``threading.stack_size``), only around the handshake.
"""

from __future__ import annotations

import socket
import threading

import pytest
from flask import Flask
from wspeer import handshake

from flask_pine_ws import Config, Conn, Ctx, FlaskPineWS, HandshakeRefused
from flask_pine_ws.protocol import NoThreadLeft

from helpers import UNMAPPABLE_STACK, no_new_threads


def test_no_thread_for_the_reader_raises_before_any_byte_is_written() -> None:
    server_sock, client_sock = socket.socketpair()
    try:
        _, environ = handshake(server_sock)
        with no_new_threads(), pytest.raises(NoThreadLeft):
            Conn(environ, Config(), send_timeout=1.0, close_timeout=1.0)
        client_sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            client_sock.recv(1)  # no 101, nothing at all: the view can still answer
    finally:
        server_sock.close()
        client_sock.close()


def test_the_client_gets_503_with_retry_after_and_the_next_one_is_served() -> None:
    app = Flask(__name__)
    pine = FlaskPineWS(app)
    starve = threading.Event()

    @app.before_request
    def out_of_threads() -> None:
        if starve.is_set():  # on the request's thread, just before the view makes its Conn
            threading.stack_size(UNMAPPABLE_STACK)

    @app.teardown_request
    def threads_again(_exc: BaseException | None) -> None:
        threading.stack_size(0)

    @pine.new("/echo")
    def echo(conn: Conn, ctx: Ctx) -> None:
        conn.send(conn.receive(timeout=10) or "")

    client = pine.test_client(app)
    starve.set()
    with pytest.raises(HandshakeRefused) as refused:
        client.connect("/echo")
    assert refused.value.status == 503
    assert "try again later" in str(refused.value)
    starve.clear()
    with client.connect("/echo") as conn:
        conn.send("still here")
        assert conn.receive(timeout=10) == "still here"
