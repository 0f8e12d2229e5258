"""A connection's reader thread starts when its client first sends something, or a ping is due.

In-process, on ``socket.socketpair()`` with a wsproto client. Until then the
connection's socket waits in the doorbell: one epoll thread per process
("pine-ws-doorbell"), running only while some socket waits. What a client
sees must not change: its messages, its close, its disappearance and the
server's pings are all handled as with a reader from the start.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack

import pytest
from wspeer import conn_pair
from wsproto.events import Ping, TextMessage

from flask_pine_ws import ConnectionClosed

from helpers import no_new_threads


def named(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name and t.is_alive())


def readers() -> int:
    return named("pine-ws-reader")


def doorbells() -> int:
    return named("pine-ws-doorbell")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_silent_clients_are_served_without_a_reader_thread_each() -> None:
    with ExitStack() as stack:
        pairs = [stack.enter_context(conn_pair()) for _ in range(50)]
        for i, (conn, peer) in enumerate(pairs):
            conn.send(f"hello {i}")
            assert peer.message() == f"hello {i}"
        time.sleep(0.2)  # a reader started by mistake would be running by now
        assert readers() == 0
        assert doorbells() == 1
        assert all(conn.connected for conn, _ in pairs)
    wait_until(lambda: doorbells() == 0, "the doorbell's thread to end with the last socket")


def test_the_first_message_starts_the_reader_and_arrives() -> None:
    with conn_pair() as (conn, peer):
        assert readers() == 0
        peer.send(TextMessage(data="first"))
        assert conn.receive(10) == "first"
        assert readers() == 1
        # nothing waits any more: the doorbell's thread ends
        wait_until(lambda: doorbells() == 0, "the doorbell's thread to end")
        peer.send(TextMessage(data="second"))
        assert conn.receive(10) == "second"
        conn.send("back")
        assert peer.message() == "back"


def test_a_client_that_vanishes_is_noticed_without_a_reader_before() -> None:
    with conn_pair() as (conn, peer):
        ended = threading.Event()
        conn.add_listener(ended.set)
        peer.sock.shutdown(socket.SHUT_RDWR)
        assert ended.wait(10), "the connection's listener was not told of the end"
        with pytest.raises(ConnectionClosed) as closed:
            conn.receive(10)
        assert closed.value.code == 1006
        assert not conn.connected


def test_a_clients_close_is_answered_without_a_reader_before() -> None:
    from wsproto.events import CloseConnection
    with conn_pair() as (conn, peer):
        peer.send(CloseConnection(code=1000, reason="bye"))
        assert peer.closed(10) == (1000, "bye")  # the server's echo
        with pytest.raises(ConnectionClosed) as closed:
            conn.receive(10)
        assert (closed.value.code, closed.value.reason) == (1000, "bye")


def test_a_due_ping_starts_the_reader_of_a_silent_client() -> None:
    with conn_pair(ping_interval=0.3) as (conn, peer):
        assert readers() == 0
        started = time.monotonic()
        event = peer.next_event(10)
        assert isinstance(event, Ping)
        assert time.monotonic() - started < 5
        peer.send(event.response())
        assert readers() == 1
        assert conn.connected


def test_an_earlier_ping_wakes_a_doorbell_asleep_until_a_later_one() -> None:
    with conn_pair(ping_interval=30) as (late, _), conn_pair(ping_interval=0.3) as (soon, peer):
        started = time.monotonic()
        event = peer.next_event(10)
        assert isinstance(event, Ping)
        assert time.monotonic() - started < 5, "the doorbell slept until the 30 s ping"
        assert late.connected and soon.connected


def test_a_reader_that_cannot_start_ends_the_connection_and_nothing_hangs() -> None:
    # Another connection keeps the doorbell's thread running, so that the
    # reader's start is the first thread to fail.
    with conn_pair() as (keep, keep_peer), conn_pair() as (conn, peer):
        ended = threading.Event()
        conn.add_listener(ended.set)
        with no_new_threads():
            peer.send(TextMessage(data="nobody will read this"))
            assert ended.wait(10), "the connection did not end"
        assert not conn.connected
        with pytest.raises(ConnectionClosed):
            conn.receive(5)
        # the client sees its socket closed
        peer.sock.settimeout(10)
        try:
            while peer.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass  # closed with the client's message unread: the kernel sends a reset
        # the other connection is unharmed, and reads once threads start again
        keep_peer.send(TextMessage(data="still here"))
        assert keep.receive(10) == "still here"


def test_a_handshake_that_fails_leaves_nothing_waiting() -> None:
    server, client = socket.socketpair()
    with server:
        from wspeer import handshake

        from flask_pine_ws import Config, Conn
        _, environ = handshake(server)
        client.close()  # the client leaves before the 101
        with pytest.raises(OSError):
            Conn(environ, Config(), send_timeout=1.0, close_timeout=1.0)
    wait_until(lambda: doorbells() == 0, "the doorbell's thread to end")


class _StalledRing:
    """Stands in the doorbell's set for a connection whose reader is slow to start.

    While the doorbell's thread is in its ``_start_reader``, it rings nobody
    else: what a machine too busy for the doorbell does now and then, made
    every time.
    """

    def __init__(self) -> None:
        self.ringing = threading.Event()
        self.go = threading.Event()

    def _start_reader(self) -> None:
        self.ringing.set()
        self.go.wait(30)


def test_a_connection_that_ends_unread_is_ended_by_its_request_not_left_waiting() -> None:
    """A handler returns, its client never answers the close, and the doorbell is busy.

    ``Conn.finish`` must not hand the socket back to the server (which closes
    it) while the doorbell still holds it: a reader started after that found
    no socket (a traceback in the worker's log), and the doorbell went on
    waiting on a descriptor number the next connection reuses. It ends the
    connection itself, in its own thread.
    """
    from flask_pine_ws.protocol import _doorbell, waiting_readers

    stall = _StalledRing()
    ours, theirs = socket.socketpair()
    with ours, theirs, conn_pair(close_timeout=0.2) as (conn, peer):
        _doorbell.watch(stall, ours.fileno(), None)  # type: ignore[arg-type]
        theirs.send(b"x")  # rings it: the doorbell's thread is held in its reader's start
        assert stall.ringing.wait(10)
        try:
            conn.finish()  # the handler returned; its client stays silent
            assert waiting_readers() == 0, "the connection was left in the doorbell's set"
            assert readers() == 0, "a reader was started for a connection already over"
            assert peer.closed(10) == (1000, "")  # the client got our close frame
            peer.sock.settimeout(10)
            assert peer.sock.recv(65536) == b"", "the socket was not closed"
        finally:
            stall.go.set()
    wait_until(lambda: doorbells() == 0, "the doorbell's thread to end")
