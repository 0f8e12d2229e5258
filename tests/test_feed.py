"""The feed in-process: real files, real ``Conn``\\ s on ``socket.socketpair()``, wsproto peers.

Each watcher is the real :func:`flask_pine_ws.watch_file` on its own thread,
over a :class:`~flask_pine_ws.Conn` whose client end is a wsproto peer (which
checks every frame the server writes). :func:`flask_pine_ws.feed.stats` tells
which way the bytes went (live on the feed, or handed back); the assertions
are on what each peer receives: every byte of the file once, in order, from
where it began.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from flask import Flask
from wspeer import Peer, conn_pair

from flask_pine_ws import Config, Conn, feed, watch_file
from flask_pine_ws.follower import Chunk, FileFollower
from flask_pine_ws.watchtable import WatchTable

WAIT = 60.0  # generous: a shared, noisy 2-core machine
FRAMED = "pine.watch.v1"


def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {feed.stats()}")
        time.sleep(0.01)


class Watcher:
    """One ``watch_file`` on its own thread, and the peer that reads what it sends."""

    def __init__(self, conn: Conn, peer: Peer, path: Path, options: dict[str, Any],
                 app: Flask | None) -> None:
        self.conn = conn
        self.app = app
        self.peer = peer
        self.got = bytearray()
        self.notices: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(path, options), daemon=True)
        self.thread.start()

    def _run(self, path: Path, options: dict[str, Any]) -> None:
        try:
            with self.app.app_context() if self.app is not None else nullcontext():
                watch_file(str(path), self.conn, **options)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def read(self, count: int, timeout: float = WAIT) -> bytes:
        """Read until ``count`` more bytes of content came (notices noted aside)."""
        start = len(self.got)
        deadline = time.monotonic() + timeout
        while len(self.got) - start < count:
            message = self.peer.message(max(0.01, deadline - time.monotonic()))
            if isinstance(message, str):
                self.notices.append(json.loads(message))
            else:
                self.got += message
        return bytes(self.got[start:])

    def quiet(self, seconds: float = 0.1) -> bool:
        """Nothing more comes within ``seconds``."""
        try:
            self.peer.message(seconds)
        except TimeoutError:
            return True
        return False


@contextmanager
def watchers(app: Flask | None = None) -> Iterator[Callable[..., Watcher]]:
    """Start watchers with ``start(path, buffer=..., framed=..., **watch_file options)``.

    :param app: the app whose ``PINE_WS_*`` settings the watchers run with.
    """
    with ExitStack() as stack:
        started: list[Watcher] = []

        def start(path: Path, *, buffer: int | None = None, framed: bool = False,
                  **options: Any) -> Watcher:
            config = Config(subprotocols=[FRAMED]) if framed else None
            conn, peer = stack.enter_context(conn_pair(
                config, buffer=buffer, subprotocols=[FRAMED] if framed else None))
            options.setdefault("binary", True)
            watcher = Watcher(conn, peer, path, options, app)
            started.append(watcher)
            return watcher

        try:
            yield start
        finally:
            stack.close()  # each peer vanishes: its watcher returns
            for watcher in started:
                watcher.thread.join(WAIT)
                assert not watcher.thread.is_alive(), "a watcher outlived its connection"
    for watcher in started:
        assert watcher.error is None, watcher.error
    wait_until(lambda: feed.stats()["feeds"] == [], "every feed gone with its readers")


def leave(watcher: Watcher) -> None:
    """The client vanishes; its watcher ends."""
    watcher.peer.sock.close()
    watcher.thread.join(WAIT)
    assert not watcher.thread.is_alive()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def live() -> int:
    return feed.live_count()


def test_one_subscription_per_path_and_every_byte_once(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first\n")
    with watchers() as start:
        clients = [start(log, offset=0) for _ in range(6)]
        for w in clients:
            assert w.read(6) == b"first\n"
        wait_until(lambda: live() == 6, "6 live readers")
        # the feed subscribes the path once, for all its readers
        assert WatchTable.current().stats()["subscribers"] == 1
        frames = feed.stats()["frames"]
        for i in range(20):
            append(log, b"line %d\n" % i)
        expected = b"".join(b"line %d\n" % i for i in range(20))
        for w in clients:
            assert w.read(len(expected)) == expected
        assert feed.stats()["frames"] > frames  # the feed sent them
        wait_until(lambda: live() == 6, "6 live again")
        for w in clients:
            assert w.quiet()
            assert w.conn.viewed_bytes == len(b"first\n") + len(expected)
    assert WatchTable.current().stats()["subscribers"] == 0


def test_a_frame_taken_in_part_is_finished_then_every_byte_once_from_its_offset(
        tmp_path: Path) -> None:
    """A socket that takes part of a frame: its thread writes the rest, reads on its own
    from the offset after that frame, and joins again; no byte lost, none twice."""
    log = tmp_path / "app.log"
    log.write_bytes(b"head\n")
    with watchers() as start:
        small = start(log, offset=0, buffer=4096)  # takes a few KB per write
        assert small.read(5) == b"head\n"
        wait_until(lambda: live() == 1, "live")
        handed_back = feed.stats()["handed_back"]
        burst = os.urandom(1024 * 1024)  # 16 frames of 64 KB, each larger than the buffers
        append(log, burst)
        wait_until(lambda: feed.stats()["handed_back"] > handed_back, "handed back")
        assert small.read(len(burst)) == burst
        tail = b"after the burst\n"
        append(log, tail)
        assert small.read(len(tail)) == tail
        assert small.quiet()
        wait_until(lambda: live() == 1, "live again")
        # the bytes that reached the socket, each counted once
        assert small.conn.viewed_bytes == 5 + len(burst) + len(tail)


def test_a_fast_reader_is_never_held_back_by_a_slow_one(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    with watchers() as start:
        slow = start(log, offset=0, buffer=4096)
        fast = [start(log, offset=0) for _ in range(3)]
        wait_until(lambda: live() == 4, "4 live readers")
        burst = os.urandom(4 * 1024 * 1024)  # far more than the slow socket holds
        append(log, burst)
        for w in fast:
            assert w.read(len(burst)) == burst  # while the slow peer reads nothing at all
        assert not slow.got
        assert slow.read(len(burst)) == burst
        wait_until(lambda: live() == 4, "all live again")
        append(log, b"together\n")
        for w in [slow, *fast]:
            assert w.read(9) == b"together\n"


def test_rotation_hands_every_reader_back_and_they_follow(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\n")
    with watchers() as start:
        clients = [start(log, offset=0, framed=True) for _ in range(3)]
        for w in clients:
            assert w.read(2) == b"a\n"
        wait_until(lambda: live() == 3, "3 live")
        handed_back = feed.stats()["handed_back"]
        append(log, b"last of the old\n")
        log.rename(tmp_path / "app.log.1")
        log.write_bytes(b"new\n")
        st = log.stat()
        for w in clients:
            assert w.read(len(b"last of the old\nnew\n")) == b"last of the old\nnew\n"
            assert w.notices[-1] == {"event": "rotated", "how": "renamed",
                                     "file": f"{st.st_dev}:{st.st_ino}", "offset": 0}
        wait_until(lambda: live() == 3, "3 live on the new file")
        # either the feed read the old file's end and saw the rename (every live reader
        # handed back), or the readers saw it first, each on its own
        assert feed.stats()["handed_back"] >= handed_back
        assert [f["offset"] for f in feed.stats()["feeds"]] == [4]
        append(log, b"more\n")
        for w in clients:
            assert w.read(5) == b"more\n"


def test_readers_joining_and_leaving_during_a_burst_lose_and_repeat_nothing(
        tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set() and i < 20_000:
            append(log, b"record %06d " % i + b"x" * (i % 200) + b"\n")
            i += 1
            if i % 50 == 0:
                time.sleep(0.002)

    with watchers() as start:
        stayers = [start(log, offset=0)]
        leavers = [start(log, offset=0, buffer=8192) for _ in range(3)]
        writer = threading.Thread(target=write)
        writer.start()
        try:
            for _ in range(4):
                time.sleep(0.15)
                stayers.append(start(log, offset=0))  # joins mid-burst, from byte 0
                stayers.append(start(log, offset=0, buffer=8192))
                if leavers:
                    leave(leavers.pop())  # leaves mid-burst, handed back or live
        finally:
            stop.set()
            writer.join(WAIT)
        content = log.read_bytes()
        assert len(content) > 100_000
        for w in stayers:
            w.read(len(content) - len(w.got))
            assert bytes(w.got) == content
            assert w.quiet()
        wait_until(lambda: live() == len(stayers), "every stayer live")
        append(log, b"end\n")
        for w in stayers:
            assert w.read(4) == b"end\n"


def test_broadcast_off_readers_read_on_their_own_through_one_subscription(
        tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PINE_WS_BROADCAST"] = False
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    with watchers(app) as start:
        clients = [start(log, offset=0) for _ in range(3)]
        wait_until(lambda: feed.stats()["readers"] == 3, "3 readers")
        append(log, b"one\n")
        for w in clients:
            assert w.read(4) == b"one\n"
        s = feed.stats()
        assert s["live"] == 0 and s["dispatcher"]["threads"] == 0
        assert WatchTable.current().stats()["subscribers"] == 1


def test_an_append_between_a_readers_read_and_its_join_reaches_it(tmp_path: Path) -> None:
    """The window between a reader's last read and its join, driven step by step.

    The reader reads the file to its end, then the file grows and the table's
    thread signals the feed while the reader is not live yet: the signal sets
    the reader's own event, and no turn of the feed reads the append. Joining
    then must give the feed a turn of its own: the client gets the append
    without the reader's thread reading again (it does nothing after the join).
    """
    path = tmp_path / "app.log"
    path.write_bytes(b"first\n")
    with conn_pair() as (conn, peer):
        reader = feed.register(conn, str(path), "bytes", 64 * 1024)
        follower = FileFollower(str(path), binary=True)
        try:
            follower.start(offset=0)
            reader.event.clear()  # as watch_file does before each read
            assert reader.step() != feed.LIVE
            for item in follower.read():
                if isinstance(item, Chunk):
                    conn.send(item.data)
            append(path, b"second\n")
            assert reader.event.wait(WAIT), "the table never signalled the append"
            assert reader.caught_up(follower)  # live: the feed sends from here on
            # well before the table's safety check (every 30 s), which would
            # find the append too, late
            deadline = time.monotonic() + 15
            got = b""
            while got != b"first\nsecond\n":
                message = peer.message(max(0.01, deadline - time.monotonic()))
                assert isinstance(message, bytes)
                got += message
                assert b"first\nsecond\n".startswith(got), got
        finally:
            reader.close()
            follower.close()
    wait_until(lambda: feed.stats()["feeds"] == [], "the feed gone with its reader")
