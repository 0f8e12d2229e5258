"""The per-address count and the header deadlines, in-process on real sockets (no server).

The attacks against a real gunicorn are in tests/test_address_limits.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from flask_pine_ws import limits
from flask_pine_ws.worker import TIMEOUT_RESPONSE, HeaderDeadlines, header_timeout


def test_the_cap_counts_per_address_and_slots_come_back() -> None:
    taken = [limits.take("192.0.2.1", 2), limits.take("192.0.2.1", 2)]
    assert all(taken)
    assert limits.take("192.0.2.1", 2) is None  # the third from that address
    other = limits.take("192.0.2.2", 2)
    assert other is not None
    assert limits.open_counts() == {"192.0.2.1": 2, "192.0.2.2": 1}
    for slot in (*taken, other):
        assert slot is not None
        slot.release()
        slot.release()  # idempotent
    assert limits.open_counts() == {}
    # no cap: nothing counted, nothing refused
    uncapped = [limits.take("192.0.2.1", 0) for _ in range(100)]
    assert all(uncapped) and limits.open_counts() == {}


def test_the_refusal_is_429_with_retry_after() -> None:
    response = limits.refused()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(limits.RETRY_AFTER)


class _Conn:
    """What the deadlines need of gunicorn's TConn: a ``sock``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


@pytest.fixture
def deadlines() -> Iterator[HeaderDeadlines]:
    keeper = HeaderDeadlines(0.3)
    yield keeper
    keeper.stop(5)


def test_a_head_not_in_by_the_deadline_is_answered_408_and_shut(
        deadlines: HeaderDeadlines) -> None:
    late_server, late_client = socket.socketpair()
    fine_server, fine_client = socket.socketpair()
    with late_server, late_client, fine_server, fine_client:
        late, fine = _Conn(late_server), _Conn(fine_server)
        deadlines.arm(late)
        deadlines.arm(fine)
        deadlines.disarm(fine)  # its headers came in time
        started = time.monotonic()
        # a thread blocked reading the head is released by the shutdown
        assert late_server.recv(10) == b""
        assert time.monotonic() - started >= 0.2
        late_client.settimeout(5)
        assert late_client.recv(4096) == TIMEOUT_RESPONSE
        assert deadlines.expired == 1
        # the disarmed one is never touched
        fine_client.sendall(b"x")
        assert fine_server.recv(1) == b"x"
        fine_client.setblocking(False)
        with pytest.raises(BlockingIOError):
            fine_client.recv(1)


def test_heads_armed_one_after_another_are_each_cut_at_their_own_deadline(
        deadlines: HeaderDeadlines) -> None:
    """Only an earlier deadline wakes the thread; each later one is still met in turn."""
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        started = []
        for server_sock, _ in pairs:
            started.append(time.monotonic())
            deadlines.arm(_Conn(server_sock))
            time.sleep(0.2)  # later than the previous one's deadline by 0.2 s
        for (server_sock, client_sock), armed in zip(pairs, started, strict=True):
            server_sock.settimeout(5)
            assert server_sock.recv(10) == b""  # shut down by the deadline
            cut = time.monotonic() - armed
            assert 0.25 <= cut < 3, f"cut {cut:.2f} s after it was armed (deadline 0.3 s)"
            client_sock.settimeout(5)
            assert client_sock.recv(4096) == TIMEOUT_RESPONSE
        assert deadlines.expired == 3
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_header_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PINE_WS_HEADER_TIMEOUT", raising=False)
    assert header_timeout() == 10.0
    monkeypatch.setenv("PINE_WS_HEADER_TIMEOUT", "2.5")
    assert header_timeout() == 2.5
    monkeypatch.setenv("PINE_WS_HEADER_TIMEOUT", "0")
    with pytest.raises(ValueError):
        header_timeout()
