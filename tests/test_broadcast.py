"""The feed end to end: many watchers of one file, live on its feed, served by one thread.

gunicorn (gthread) runs tests/apps/watch_app.py; real ``websockets`` clients
read. The app's ``/stats`` shows how many watchers a feed sends to (live)
and the feeds' totals (frames built, readers handed back to their own
thread), which proves the feed is the path taken. Every test asserts on what the
clients receive: every byte once, in order, whatever else the others do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import ServerFactory
from helpers import raised_fd_limit, recv_bytes, recv_text
from server import AT_ONCE, LONG_GRACE, Server

WAIT = 60.0  # generous: a noisy 2-core machine shared with others
APP = "watch_app:app"
FRAMED = "pine.watch.v1"


@pytest.fixture(autouse=True)
def many_files() -> Iterator[None]:
    with raised_fd_limit():
        yield


def stats(srv: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.url}/stats", timeout=WAIT) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_live(srv: Server, count: int, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until ``count`` watchers are live on a feed (they converge once the file is idle).

    Well below the watcher's 60 s hang guard: converging must not wait for it
    (a watcher that could not join because the feed was behind it is woken
    when the feed gets there; it once waited for the guard).
    """
    last: dict[str, Any] = {}

    def live() -> bool:
        nonlocal last
        last = stats(srv)
        return bool(last["live_readers"] == count)

    try:
        wait_for(live, f"{count} live watchers", timeout)
    except AssertionError:
        raise AssertionError(f"live {last.get('live_readers')}, not {count}: "
                             f"{last.get('feed')}") from None
    return last


def append(path: Path, data: bytes | str) -> None:
    with path.open("ab") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def url(srv: Server, **params: Any) -> str:
    return f"{srv.ws_url}/watch?{urlencode(params)}"


def small_buffer_socket(srv: Server) -> socket.socket:
    """A connected socket with a small receive buffer: a client that stops reading stalls
    the server's writes after a few KB (no autotuned megabytes in between)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", srv.port))
    sock.settimeout(None)
    return sock


def open_sync(srv: Server, *, framed: bool = False, compression: bool = False,
              sock: socket.socket | None = None, max_queue: int = 16,
              **params: Any) -> ClientConnection:
    return connect(url(srv, **params), open_timeout=WAIT, close_timeout=5, max_size=None,
                   subprotocols=[FRAMED] if framed else None,  # type: ignore[list-item]
                   compression="deflate" if compression else None, sock=sock,
                   max_queue=max_queue)


def recv_framed(ws: ClientConnection, count: int) -> list[Any]:
    """Framed tokens (JSON notices, binary runs merged) until ``count`` bytes of content."""
    tokens: list[Any] = []
    n = 0
    deadline = time.monotonic() + WAIT
    while n < count:
        msg = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(msg, str):
            tokens.append(json.loads(msg))
            continue
        n += len(msg)
        if tokens and isinstance(tokens[-1], bytes):
            tokens[-1] += msg
        else:
            tokens.append(msg)
    return tokens


# -- many watchers, some slow or stopped ----------------------------------------

def _records() -> list[bytes]:
    """Appends of varied sizes, each numbered: lines, and blocks that, together, are more
    than the socket buffers of a client that stops reading hold (the kernel grows the
    server's send buffer up to 4 MiB)."""
    out = []
    for i in range(240):
        size = 1024 * 1024 if i % 40 == 39 else 60 + (i * 37) % 1500
        head = b"%06d " % i
        out.append(head + bytes(97 + (i + j) % 26 for j in range(size - len(head) - 1)) + b"\n")
    return out


async def _fan_out(srv: Server, log: Path, compression: bool) -> dict[str, Any]:
    fast, slow, stopped = 160, 30, 10
    target = url(srv, path=str(log), lines=0, binary="1")
    gate = asyncio.Semaphore(32)

    async def open_one(kind: str) -> AsyncConnection:
        async with gate:
            sock = small_buffer_socket(srv) if kind == "stopped" else None
            return await async_connect(
                target, open_timeout=WAIT, close_timeout=10, ping_interval=None,
                max_size=None, proxy=None, sock=sock,
                compression="deflate" if compression else None,
                max_queue=1 if kind == "stopped" else 16)

    kinds = ["fast"] * fast + ["slow"] * slow + ["stopped"] * stopped
    clients = await asyncio.gather(*(open_one(k) for k in kinds))
    records = _records()
    expected = b"".join(records)
    fast_done = asyncio.Event()
    fast_left = fast
    finished: dict[str, float] = {}
    began = 0.0

    async def read(ws: AsyncConnection, kind: str) -> int | None:
        """Read the whole stream, comparing each message with the bytes due at that place:
        the offset of the first byte that differs (lost, repeated or reordered), or None."""
        nonlocal fast_left
        if kind == "stopped":
            # Not a byte read until every fast client has it all: if the feed
            # waited for these, the fast ones would never finish.
            try:
                await asyncio.wait_for(fast_done.wait(), WAIT)
            except TimeoutError:
                raise AssertionError("the fast clients were held back by stopped ones") from None
        got, first_bad = 0, None  # compared as it comes: 200 copies would not fit in memory
        while got < len(expected):
            message = await asyncio.wait_for(ws.recv(), WAIT)
            assert isinstance(message, bytes)
            if first_bad is None and message != expected[got:got + len(message)]:
                first_bad = got
            got += len(message)
        if got != len(expected) and first_bad is None:
            first_bad = len(expected)  # more than was written: something came twice
            if kind == "slow":
                await asyncio.sleep(0.004)
        finished[kind] = max(finished.get(kind, 0.0), time.monotonic() - began)
        if kind == "fast":
            fast_left -= 1
            if not fast_left:
                fast_done.set()
        return first_bad

    try:
        before = await asyncio.to_thread(wait_live, srv, len(clients))
        began = time.monotonic()
        readers = asyncio.gather(*(read(ws, k) for ws, k in zip(clients, kinds, strict=True)))

        async def write() -> None:
            for record in records:
                await asyncio.to_thread(append, log, record)
                await asyncio.sleep(0.002)

        results, _ = await asyncio.gather(readers, write())
        for first_bad, kind in zip(results, kinds, strict=True):
            assert first_bad is None, f"a {kind} client got other bytes from byte {first_bad}"
        # idle again: every watcher live on the feed again, without a message sent
        after = await asyncio.to_thread(wait_live, srv, len(clients))
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    return {"before": before["feed"], "after": after["feed"],
            "feed_threads": after["threads"].count("pine-ws-feed"),
            "finished": finished, "bytes": len(expected)}


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
def test_200_watchers_get_every_byte_once_while_some_stall(
        server: ServerFactory, tmp_path: Path, compression: bool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"before the watchers came\n")
    srv = server(APP, threads=260)
    figures = asyncio.run(_fan_out(srv, log, compression))
    print(figures)
    before, after = figures["before"], figures["after"]
    # one feed, one thread, and it did the sending
    assert [(h["kind"], h["live"]) for h in after["feeds"]] == [("bytes", 200)]
    assert after["frames"] - before["frames"] >= 240
    # the stopped clients could not take the frames: handed back to their
    # own threads, they caught up exactly (asserted above), then joined again
    assert after["handed_back"] - before["handed_back"] >= 10
    assert figures["feed_threads"] == 1
    assert "Traceback" not in srv.log()


# -- kinds, rotation, leaving, shutdown ------------------------------------------

def test_text_binary_and_framed_watchers_share_two_feeds(
        server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"start\n")
    # reads of 4 bytes at most: the feeds' reads end inside the sequences below whether the
    # appends are read one by one or merged (no timing involved)
    srv = server(APP, env={"PINE_WS_CHUNK_BYTES": "4"})
    with contextlib.ExitStack() as stack:
        text = [stack.enter_context(open_sync(srv, path=str(log), offset=6)) for _ in range(4)]
        binary = [stack.enter_context(open_sync(srv, path=str(log), offset=6, binary="1"))
                  for _ in range(4)]
        framed = [stack.enter_context(open_sync(srv, path=str(log), offset=6, framed=True))
                  for _ in range(4)]
        for ws in framed:
            assert json.loads(ws.recv(timeout=WAIT))["event"] == "open"
        s = wait_live(srv, 12)
        assert sorted((h["kind"], h["live"]) for h in s["feed"]["feeds"]) == [
            ("bytes", 8), ("text", 4)]
        pieces = [b"h", b"\xc3", b"\xa9", b"llo \xe2\x82", b"\xac and \xff\xfe bad\n",
                  b"\xf0\x9f", b"\x98\x80 end\n"]
        expected = b"".join(pieces)
        for piece in pieces:
            append(log, piece)  # sequences split across appends, too
        for ws in text:
            assert recv_text(ws, len(expected.decode(errors="replace"))) == expected.decode(
                errors="replace")
        for ws in binary:
            assert recv_bytes(ws, len(expected)) == expected
        for ws in framed:
            assert recv_framed(ws, len(expected)) == [expected]
        after = wait_live(srv, 12)
        assert after["feed"]["frames"] > s["feed"]["frames"]


def test_rotation_and_truncation_while_live(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a\n")
    srv = server(APP)
    with contextlib.ExitStack() as stack:
        framed = [stack.enter_context(open_sync(srv, path=str(log), offset=0, framed=True))
                  for _ in range(4)]
        plain = [stack.enter_context(open_sync(srv, path=str(log), offset=0))
                 for _ in range(4)]
        for ws in framed:
            assert recv_framed(ws, 2)[1:] == [b"a\n"]
        for ws in plain:
            assert recv_text(ws, 2) == "a\n"
        frames = wait_live(srv, 8)["feed"]["frames"]
        append(log, "b\n")
        for ws in framed:
            assert recv_framed(ws, 2) == [b"b\n"]
        for ws in plain:
            assert recv_text(ws, 2) == "b\n"
        assert stats(srv)["feed"]["frames"] == frames + 2  # one per feed, not per watcher

        # renamed away while live: each watcher drains, announces, follows the new file
        wait_live(srv, 8)
        log.rename(tmp_path / "app.log.1")
        log.write_bytes(b"c\n")
        fid = f"{log.stat().st_dev}:{log.stat().st_ino}"
        for ws in framed:
            assert recv_framed(ws, 2) == [
                {"event": "rotated", "how": "renamed", "file": fid, "offset": 0}, b"c\n"]
        for ws in plain:
            assert recv_text(ws, 2) == "c\n"
        feeds = wait_live(srv, 8)["feed"]["feeds"]
        assert {f["offset"] for f in feeds} == {2}  # the feeds follow the new file

        # truncated while live
        log.write_bytes(b"")
        for ws in framed:
            assert json.loads(ws.recv(timeout=WAIT)) == {
                "event": "rotated", "how": "truncated", "file": fid, "offset": 0}
        wait_live(srv, 8)
        append(log, "d\n")
        for ws in framed:
            assert recv_framed(ws, 2) == [b"d\n"]
        for ws in plain:
            assert recv_text(ws, 2) == "d\n"


def test_watchers_leaving_while_live_release_everything(
        server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    srv = server(APP)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_sync(srv, path=str(log), offset=0, binary="1"))
                   for _ in range(12)]
        wait_live(srv, 12)
        for ws in clients[:4]:
            ws.close()  # a clean close
        for ws in clients[4:8]:
            ws.socket.shutdown(socket.SHUT_RDWR)  # vanishes: no close frame
        wait_for(lambda: stats(srv)["watchers"] == 4, "the 8 gone")
        assert stats(srv)["table"]["subscribers"] == 1  # the feed's, for all of them
        assert stats(srv)["live_readers"] == 4
        append(log, b"to the rest\n")
        for ws in clients[8:]:
            assert recv_bytes(ws, 12) == b"to the rest\n"
        wait_live(srv, 4)
    wait_for(lambda: stats(srv)["table"]["subscribers"] == 0, "all gone")

    def no_feed() -> bool:
        s = stats(srv)
        return "pine-ws-feed" not in s["threads"] and s["feed"]["feeds"] == []

    wait_for(no_feed, "the feed thread to end with its last reader")
    assert stats(srv)["live"] == 0


def test_sigterm_closes_live_watchers_with_1001_at_once(
        server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"x\n")
    srv = server(APP, extra=LONG_GRACE)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_sync(srv, path=str(log), offset=0))
                   for _ in range(6)]
        for ws in clients:
            assert recv_text(ws, 2) == "x\n"
        wait_live(srv, 6)
        begin = time.monotonic()
        srv.signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=WAIT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        srv.proc.wait(AT_ONCE)
        assert time.monotonic() - begin < AT_ONCE  # well before the graceful timeout


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
def test_stalled_watcher_is_handed_back_and_catches_up_exactly(
        server: ServerFactory, tmp_path: Path, compression: bool) -> None:
    """A client that stops reading: the feed hands it back, its own thread sends the rest
    (compressed, with deflate), then it joins again; the others never wait for it."""
    log = tmp_path / "app.log"
    backlog = b"".join(b"backlog line %06d, compressible\n" % i for i in range(4000))
    log.write_bytes(backlog)
    srv = server(APP)
    with contextlib.ExitStack() as stack:
        stalled = stack.enter_context(open_sync(
            srv, path=str(log), offset=0, binary="1", compression=compression,
            sock=small_buffer_socket(srv), max_queue=1))
        others = [stack.enter_context(open_sync(srv, path=str(log), offset=0, binary="1",
                                                compression=compression))
                  for _ in range(4)]
        if compression:
            assert "permessage-deflate" in (
                stalled.response.headers.get("Sec-WebSocket-Extensions") or "")
        for ws in others:
            assert recv_bytes(ws, len(backlog)) == backlog
        assert recv_bytes(stalled, len(backlog)) == backlog
        before = wait_live(srv, 5)["feed"]
        live = b"".join(b"live line %d\n" % i for i in range(20))
        for i in range(20):
            append(log, b"live line %d\n" % i)
            time.sleep(0.01)
        for ws in [*others, stalled]:
            assert recv_bytes(ws, len(live)) == live  # uncompressed frames, then...
        wait_live(srv, 5)
        # ...a burst the stalled client does not read: the others get it all meanwhile
        burst = os.urandom(8 * 1024 * 1024)  # more than the socket buffers hold
        append(log, burst)
        for ws in others:
            assert recv_bytes(ws, len(burst)) == burst
        assert stats(srv)["live_readers"] <= 4  # the stalled one was handed back
        tail = b"after the burst\n"
        append(log, tail)
        for ws in others:
            assert recv_bytes(ws, len(tail)) == tail
        assert recv_bytes(stalled, len(burst) + len(tail)) == burst + tail
        after = wait_live(srv, 5)["feed"]
        assert after["handed_back"] > before["handed_back"]
        append(log, b"all parked again\n")
        for ws in [*others, stalled]:
            assert recv_bytes(ws, 17) == b"all parked again\n"
    assert "Traceback" not in srv.log()


def test_broadcast_off_reads_per_watcher(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    srv = server(APP, env={"PINE_WS_BROADCAST": "false"})
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_sync(srv, path=str(log), offset=0))
                   for _ in range(3)]
        wait_for(lambda: stats(srv)["watchers"] == 3, "subscribed")
        append(log, "one\n")
        for ws in clients:
            assert recv_text(ws, 4) == "one\n"
        s = stats(srv)
        # one subscription for the three, through the feed; no frame of its own, no thread
        assert s["live_readers"] == 0 and s["feed"]["frames"] == 0
        assert [(f["readers"], f["live"]) for f in s["feed"]["feeds"]] == [(3, 0)]
        assert s["table"]["subscribers"] == 1 and "pine-ws-feed" not in s["threads"]
