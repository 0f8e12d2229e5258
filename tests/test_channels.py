"""Channels in one process: the embedded backend's order, bounds and membership.

The members here are real sockets (``socket.socketpair()``) behind the same
``send``/``close`` a ``Conn`` offers, writing WebSocket frames: a reader that
stops reading fills the socket, and the member's sender blocks on it as it
would on a slow client. ``FrameMember`` also takes ready-made frames without
blocking (``try_send_frame``, keeping the rest of a frame taken in part), as a
``Conn`` on a plain socket does: both delivery paths end on one wire.
What clients see over real servers is in ``test_channels_servers.py``.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from redis_server import free_port

from flask_pine_ws import ChannelError, ConnectionClosed, FlaskPineWS
from flask_pine_ws.channels import local
from flask_pine_ws.channels.local import Registry
from flask_pine_ws.channels.message import encode, frame, from_wire, to_wire


def _parse(buf: bytes) -> tuple[bytes, int] | None:
    """The payload of the first whole (unmasked) frame in ``buf`` and its length on the wire."""
    if len(buf) < 2:
        return None
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = struct.unpack("!Q", buf[2:10])[0], 10
    if len(buf) < at + n:
        return None
    return buf[at:at + n], at + n


class SocketMember:
    """A member on a real socket pair: WebSocket frames, read by the test."""

    def __init__(self) -> None:
        self.server, self.client = socket.socketpair()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.closed: tuple[int, str] | None = None
        self._buf = b""

    @property
    def connected(self) -> bool:
        return self.closed is None

    def send(self, data: str | bytes) -> None:
        if self.closed is not None:
            raise ConnectionClosed(*self.closed)
        try:
            self.server.sendall(frame(data))
        except OSError:
            raise ConnectionClosed(1006) from None

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.server.shutdown(socket.SHUT_RDWR)

    def read(self, count: int, timeout: float = 30) -> list[bytes]:
        """The next ``count`` messages (fails after ``timeout``)."""
        got: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            while (parsed := _parse(self._buf)) is not None:
                got.append(parsed[0])
                self._buf = self._buf[parsed[1]:]
                if len(got) == count:
                    return got
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(got)} of {count} messages within {timeout}s"
            self.client.settimeout(left)
            chunk = self.client.recv(65536)
            assert chunk, f"closed after {len(got)} of {count} messages"
            self._buf += chunk
        return got

    def nothing_more(self, wait: float = 0.1) -> bool:
        self.client.settimeout(wait)
        try:
            return self._buf == b"" and self.client.recv(1) == b""
        except TimeoutError:
            return True

    def dispose(self) -> None:
        self.server.close()
        self.client.close()


class FrameMember(SocketMember):
    """A member that also takes whole frames without blocking, as a ``Conn`` does."""

    shares_frames = True

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._pending = b""
        self.direct = 0  # frames written by try_send_frame

    def try_send_frame(self, frame: bytes) -> int:
        if self.closed is not None or not self._lock.acquire(blocking=False):
            return 0
        try:
            if self._pending:
                return 0
            try:
                sent = self.server.send(frame, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return 0
            self._pending = frame[sent:]
            self.direct += 1
            return sent
        finally:
            self._lock.release()

    def flush(self) -> None:
        with self._lock:
            self.server.sendall(self._pending)
            self._pending = b""

    def send(self, data: str | bytes) -> None:
        with self._lock:
            if self._pending:
                self.server.sendall(self._pending)
                self._pending = b""
            super().send(data)


@pytest.fixture
def members() -> Iterator[list[SocketMember]]:
    made: list[SocketMember] = []
    yield made
    for m in made:
        m.dispose()


def _wait_idle(registry: Registry, *sinks: SocketMember) -> None:
    for sink in sinks:
        registry.leave_all(sink)


@pytest.mark.parametrize("kind", [SocketMember, FrameMember])
def test_every_member_gets_each_publishers_messages_once_in_order(
        members: list[SocketMember], kind: type[SocketMember]) -> None:
    registry = Registry()
    sinks = [kind() for _ in range(5)]
    members.extend(sinks)
    for sink in sinks:
        registry.join(sink, "room", 1 << 24)
    publishers, count = 4, 500

    def publish(p: int) -> None:
        for i in range(count):
            registry.deliver("room", f"{p}:{i}")

    threads = [threading.Thread(target=publish, args=(p,)) for p in range(publishers)]
    for t in threads:
        t.start()
    for sink in sinks:
        got = [m.decode() for m in sink.read(publishers * count)]
        for p in range(publishers):
            assert [g for g in got if g.startswith(f"{p}:")] == [f"{p}:{i}" for i in range(count)]
        assert sink.nothing_more()
    for t in threads:
        t.join()
    if kind is FrameMember:  # both paths were taken: straight to the socket, and queued
        assert all(0 < s.direct < publishers * count for s in sinks)  # type: ignore[attr-defined]
    _wait_idle(registry, *sinks)


def test_join_leave_and_joining_twice(members: list[SocketMember]) -> None:
    registry = Registry()
    sink = SocketMember()
    members.append(sink)
    registry.deliver("a", "before join")
    registry.join(sink, "a", 1 << 20)
    registry.join(sink, "a", 1 << 20)  # once is once
    registry.join(sink, "b", 1 << 20)
    registry.deliver("a", "a1")
    registry.deliver("b", "b1")
    registry.deliver("c", "c1")  # not joined
    assert sink.read(2) == [b"a1", b"b1"]
    registry.leave(sink, "a")
    registry.leave(sink, "never joined")
    registry.deliver("a", "a2")
    registry.deliver("b", "b2")
    assert sink.read(1) == [b"b2"]
    assert registry.members("a") == 0 and registry.members("b") == 1
    registry.leave_all(sink)
    registry.deliver("b", "b3")
    assert sink.nothing_more()
    assert registry.channels() == []


@pytest.mark.parametrize("kind", [SocketMember, FrameMember])
def test_a_member_that_never_reads_is_closed_1013_and_blocks_no_one(
        members: list[SocketMember], kind: type[SocketMember]) -> None:
    registry = Registry()
    stuck = kind()
    fast = [kind() for _ in range(2)]
    members.extend([stuck, *fast])
    limit = 64 * 1024
    registry.join(stuck, "room", limit)
    for sink in fast:
        registry.join(sink, "room", 1 << 26)
    body = "x" * 1000
    count = 3000
    started = time.monotonic()
    for i in range(count):
        registry.deliver("room", f"{i}:{body}")
    publish_seconds = time.monotonic() - started
    # The publisher only queued: 3 MB for readers that have not read yet.
    assert publish_seconds < 10, publish_seconds
    for sink in fast:
        got = sink.read(count)
        assert [g.split(b":")[0] for g in got] == [str(i).encode() for i in range(count)]
    # dropped at once, its queue freed, while its last write still waits for the reader
    assert registry.members("room") == 2
    assert registry._members.get(id(stuck)) is None
    # the reader reads at last: what was in flight, then the 1013 (the close
    # frame follows the frame being written, never cuts it)
    stuck.client.settimeout(30)
    while stuck.client.recv(65536):
        pass
    assert stuck.closed is not None and stuck.closed[0] == 1013
    assert "too slow" in stuck.closed[1]
    _wait_idle(registry, *fast)


def test_the_queue_is_bounded_while_the_member_is_stuck(members: list[SocketMember]) -> None:
    registry = Registry()
    stuck = SocketMember()
    members.append(stuck)
    limit = 100 * 1024
    registry.join(stuck, "room", limit)
    highest = 0
    member = registry._members[id(stuck)]
    for i in range(2000):
        registry.deliver("room", f"{i}:" + "y" * 500)
        highest = max(highest, member.queued_bytes)
    assert highest <= limit
    assert registry.members("room") == 0  # dropped once past the limit
    # Dropped, the member is still its sender's until the sender closes it
    # with 1013, after the frame it is writing (under load the sender may not
    # have run at all yet). Closing the pair before that (the fixture) would
    # have the sender close, or write to, a socket closed under it: read up
    # to its close first.
    stuck.client.settimeout(30)
    while stuck.client.recv(65536):
        pass
    assert stuck.closed is not None and stuck.closed[0] == 1013


def test_idle_sender_threads_end() -> None:
    registry = Registry()
    sink = SocketMember()
    try:
        registry.join(sink, "room", 1 << 20)
        registry.deliver("room", "one")
        assert sink.read(1) == [b"one"]
        names = lambda: [t for t in threading.enumerate() if t.name == "pine-ws-member"]  # noqa: E731
        assert names()
        deadline = time.monotonic() + local.IDLE_SECONDS + 5
        while names() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not names(), "an idle member kept its sender thread"
        registry.deliver("room", "two")  # a new sender for the next message
        assert sink.read(1) == [b"two"]
        registry.leave_all(sink)
    finally:
        sink.dispose()


def test_message_kinds() -> None:
    assert encode("héllo") == "héllo"
    assert encode(b"\x00\xff") == b"\x00\xff"
    assert encode(bytearray(b"ab")) == b"ab"
    assert encode({"event": "done", "n": [1, 2]}) == '{"event":"done","n":[1,2]}'
    assert encode(None) == "null"
    with pytest.raises(TypeError):
        encode(object())
    for payload in ("héllo", "", b"\x00\xff", b""):
        assert from_wire(to_wire(payload)) == payload
    assert from_wire(b"?what") is None


def test_publish_needs_an_app_context_and_a_valid_queue() -> None:
    app = Flask(__name__)
    pine = FlaskPineWS(app)
    with pytest.raises(RuntimeError, match="app context"):
        pine.publish("room", "x")
    with app.app_context():
        pine.publish("room", "nobody listens: fine")
        with pytest.raises(TypeError):
            pine.publish("", "x")
        app.config["PINE_WS_MESSAGE_QUEUE"] = "amqp://localhost"
        with pytest.raises(ValueError, match="redis://"):
            pine.publish("room", "x")


def test_publish_with_redis_unreachable_raises_at_once() -> None:
    app = Flask(__name__)
    app.config["PINE_WS_MESSAGE_QUEUE"] = f"redis://127.0.0.1:{free_port()}/0"
    pine = FlaskPineWS(app)
    with app.app_context():
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(ChannelError, match="unreachable"):
                pine.publish("room", {"event": "done"})
            assert time.monotonic() - started < 3
