"""watch_file end to end: gunicorn (gthread) runs tests/apps/watch_app.py; a real client reads.

Every test asserts on what the client receives, and on what the worker holds
(threads, descriptors, memory, watches) read from /proc and the app's /stats.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import helpers
from conftest import ServerFactory
from helpers import recv_text
from server import AT_ONCE, LONG_GRACE, Server

WAIT = 30.0  # generous: a noisy 2-core machine shared with others (browsers, builds)
APP = "watch_app:app"
FRAMED = "pine.watch.v1"


# -- helpers -----------------------------------------------------------------

def open_ws(srv: Server, route: str = "/watch", *, framed: bool = False,
            **params: Any) -> ClientConnection:
    query = urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
    return connect(f"{srv.ws_url}{route}?{query}", open_timeout=WAIT, close_timeout=5,
                   subprotocols=[FRAMED] if framed else None,  # type: ignore[list-item]
                   max_size=None)


def stats(srv: Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.url}/stats", timeout=WAIT) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def wait_for(cond: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_subs(srv: Server, count: int = 1) -> None:
    """Wait until ``count`` watchers have registered with their file's feed (subscribed)."""
    wait_for(lambda: stats(srv)["watchers"] == count, what=f"{count} watchers")


def bytes_read(pid: int) -> int:
    """What process ``pid`` has read so far, files and sockets alike (``rchar``)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no rchar in /proc/{pid}/io")


def recv_text_until(ws: ClientConnection, want: str, timeout: float = WAIT) -> str:
    """Receive text messages until their concatenation is at least ``want`` long."""
    return recv_text(ws, len(want), timeout)


def recv_bytes(ws: ClientConnection, count: int, timeout: float = WAIT) -> bytes:
    return helpers.recv_bytes(ws, count, timeout)


def assert_silent(ws: ClientConnection, seconds: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=seconds)


def append(path: Path, data: bytes | str) -> None:
    with path.open("ab") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def worker(srv: Server) -> int:
    pids = srv.worker_pids()
    assert len(pids) == 1
    return pids[0]


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fds_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Framed:
    """Reads a pine.watch.v1 stream as tokens: JSON events, and binary runs merged."""

    def __init__(self, ws: ClientConnection, srv: Server | None = None) -> None:
        self.ws = ws
        self.srv = srv  # for a diagnosis when the stream stalls
        self.tokens: list[dict[str, Any] | bytes] = []

    def take(self, timeout: float = 0.3) -> None:
        """Receive until the stream stays quiet for ``timeout`` seconds."""
        while True:
            try:
                msg = self.ws.recv(timeout=timeout)
            except TimeoutError:
                return
            if isinstance(msg, bytes):
                if self.tokens and isinstance(self.tokens[-1], bytes):
                    self.tokens[-1] += msg
                else:
                    self.tokens.append(msg)
            else:
                self.tokens.append(json.loads(msg))

    def until(self, cond: Callable[[list[dict[str, Any] | bytes]], bool],
              timeout: float = WAIT) -> list[dict[str, Any] | bytes]:
        deadline = time.monotonic() + timeout
        while not cond(self.tokens):
            if time.monotonic() > deadline:
                state = stats(self.srv)["table"] if self.srv is not None else None
                raise AssertionError(f"stream so far: {self.tokens!r}; watch table: {state}")
            self.take(0.05)
        out, self.tokens = self.tokens, []
        return out


def ends_with_bytes(data: bytes) -> Callable[[list[dict[str, Any] | bytes]], bool]:
    return lambda toks: bool(toks) and isinstance(toks[-1], bytes) and toks[-1].endswith(data)


# -- start positions and content ---------------------------------------------

def test_streams_backlog_then_appends_and_counts_viewed_bytes(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    log = tmp_path / "app.log"
    log.write_text("héllo\nwörld\n")
    with open_ws(srv, path=str(log), tag="t1") as ws:
        assert recv_text_until(ws, "héllo\nwörld\n") == "héllo\nwörld\n"
        append(log, "more €\n")
        assert recv_text_until(ws, "more €\n") == "more €\n"
    wait_for(lambda: stats(srv)["viewed"].get("t1") == len(log.read_bytes()), what="viewed")


def test_start_positions_over_the_wire(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP, env={"PINE_WS_BACKLOG_BYTES": "20"})
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))  # 7 bytes a line
    with open_ws(srv, path=str(log)) as ws:  # last 20 bytes, from a line start
        assert recv_text_until(ws, "line 8\nline 9\n") == "line 8\nline 9\n"
    with open_ws(srv, path=str(log), lines=2) as ws:
        assert recv_text_until(ws, "line 8\nline 9\n") == "line 8\nline 9\n"
    with open_ws(srv, path=str(log), lines=0) as ws:
        assert_silent(ws)
        append(log, "new\n")
        assert recv_text_until(ws, "new\n") == "new\n"
    with open_ws(srv, path=str(log), offset=68) as ws:
        assert recv_text_until(ws, "9\nnew\n") == "9\nnew\n"
    with open_ws(srv, path=str(log), offset=10_000) as ws:  # past the end: from 0
        assert recv_text_until(ws, log.read_text()) == log.read_text()
    size = log.stat().st_size
    with open_ws(srv, "/conn-watch", path=str(log), offset=size) as ws:  # Conn.watch_file
        append(log, "via conn\n")
        assert recv_text_until(ws, "via conn\n") == "via conn\n"


def test_bad_arguments_raise_before_anything_is_sent(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    log = tmp_path / "app.log"
    log.write_text("secret\n")
    bad: list[dict[str, Any]] = [{"offset": -1}, {"lines": -2}, {"offset": 1, "lines": 1}]
    for params in bad:
        with open_ws(srv, path=str(log), **params) as ws:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=WAIT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    wait_for(lambda: srv.log().count("ValueError") >= 3, what="ValueError logged")
    assert "give offset or lines, not both" in srv.log()


def test_unreadable_file_closes_1011_with_a_reason(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    (tmp_path / "adir").mkdir()
    with open_ws(srv, path=str(tmp_path / "adir")) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=WAIT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    assert info.value.rcvd.reason == "cannot read the file: it is a directory"
    wait_subs(srv, 0)  # nothing left behind


def test_utf8_written_one_byte_at_a_time_is_never_split(
        server: ServerFactory, tmp_path: Path) -> None:
    # reads of 4 bytes at most: whether the appends are read one by one or merged, the
    # server's reads end inside sequences of 2, 3 and 4 bytes (no timing involved)
    srv = server(APP, env={"PINE_WS_CHUNK_BYTES": "4"})
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    text = "é€𝄞日本 ✓ ok\n" * 4
    with open_ws(srv, path=str(log), offset=0) as ws:
        with log.open("ab", buffering=0) as out:
            for byte in text.encode():
                out.write(bytes([byte]))
        # a split sequence would be invalid UTF-8: the client would close with 1007
        got = recv_text_until(ws, text)
    assert got == text


def test_invalid_bytes_are_replacement_in_text_exact_in_binary(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    log = tmp_path / "app.log"
    raw = b"ok \xff\xfe bad \xe2\x82 cut \xc3\x28 end\n"
    log.write_bytes(raw)
    with open_ws(srv, path=str(log)) as ws:
        want = raw.decode("utf-8", errors="replace")
        assert recv_text_until(ws, want) == want
    with open_ws(srv, path=str(log), binary="1") as ws:
        assert recv_bytes(ws, len(raw)) == raw


def test_small_appends_coalesce_into_bounded_messages(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP, env={"PINE_WS_CHUNK_BYTES": "1024"})
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    lines = [f"{i:05d} abc\n".encode() for i in range(3000)]
    with open_ws(srv, path=str(log), offset=0, binary="1") as ws:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        try:
            for line in lines:
                os.write(fd, line)  # 3000 separate appends
        finally:
            os.close(fd)
        total = sum(len(x) for x in lines)
        messages: list[bytes] = []
        deadline = time.monotonic() + WAIT
        while sum(len(m) for m in messages) < total:
            msg = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            assert isinstance(msg, bytes)
            messages.append(msg)
    assert b"".join(messages) == b"".join(lines)
    assert all(len(m) <= 1024 for m in messages)
    assert len(messages) < len(lines) / 2  # coalesced, not one message per append


def test_50mb_burst_arrives_byte_exact(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    block = os.urandom(1024 * 1024)
    with open_ws(srv, path=str(log), offset=0, binary="1") as ws:
        digest = hashlib.sha256()
        with log.open("ab") as out:
            for i in range(50):
                piece = bytes([i]) + block[1:]
                out.write(piece)
                digest.update(piece)
        got = hashlib.sha256()
        n = 0
        deadline = time.monotonic() + 120
        while n < 50 * len(block):
            msg = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            assert isinstance(msg, bytes)
            got.update(msg)
            n += len(msg)
    assert n == 50 * len(block)
    assert got.hexdigest() == digest.hexdigest()


def test_sparse_10gib_file_streams_appends_promptly(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    (pid,) = srv.worker_pids()
    log = tmp_path / "huge.log"
    with log.open("wb") as out:
        out.truncate(10 * 1024**3)
    read_before = bytes_read(pid)
    with open_ws(srv, path=str(log), offset=10 * 1024**3) as ws:
        for i in range(10):
            append(log, f"line {i}\n")
            assert recv_text_until(ws, f"line {i}\n") == f"line {i}\n"
    # promptly, measured without a clock: the worker read what was appended (and a few
    # bytes around it), not the 10 GiB of zeros before it
    assert bytes_read(pid) - read_before < 1024 * 1024
    size = log.stat().st_size
    with open_ws(srv, path=str(log), offset=size - 7) as ws:  # resume near the end
        assert recv_text_until(ws, "line 9\n") == "line 9\n"


# -- following by name -------------------------------------------------------

def test_follows_every_rotation_kind_with_framed_notices(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    d = tmp_path / "logs"
    log = d / "app.log"
    with open_ws(srv, path=str(log), offset=0, framed=True) as ws:
        assert ws.subprotocol == FRAMED
        f = Framed(ws, srv)
        assert f.until(lambda t: len(t) >= 2) == [
            {"event": "open", "file": None, "offset": 0, "size": 0}, {"event": "waiting"}]
        d.mkdir()  # the directory appears, then the file
        append(log, "a1\n")
        toks = f.until(ends_with_bytes(b"a1\n"))
        id1 = f"{log.stat().st_dev}:{log.stat().st_ino}"
        assert toks == [{"event": "rotated", "how": "replaced", "file": id1, "offset": 0},
                        b"a1\n"]

        with log.open("ab", buffering=0) as old:  # rename rotation, old still written
            log.rename(d / "app.log.1")
            old.write(b"a2\n")
            append(log, "b1\n")
        toks = f.until(ends_with_bytes(b"b1\n"))
        id2 = f"{log.stat().st_dev}:{log.stat().st_ino}"
        assert toks == [b"a2\n", {"event": "rotated", "how": "renamed", "file": id2,
                                  "offset": 0}, b"b1\n"]

        log.unlink()  # removal, then a new file
        assert f.until(lambda t: bool(t)) == [{"event": "waiting"}]
        append(log, "c1\n")
        toks = f.until(ends_with_bytes(b"c1\n"))
        id3 = f"{log.stat().st_dev}:{log.stat().st_ino}"
        assert toks == [{"event": "rotated", "how": "removed", "file": id3, "offset": 0},
                        b"c1\n"]

        log.write_text("z\n")  # rewrite with shorter content
        assert f.until(ends_with_bytes(b"z\n")) == [
            {"event": "rotated", "how": "truncated", "file": id3, "offset": 0}, b"z\n"]

        shutil.copy(log, d / "app.log.2")  # copytruncate
        with log.open("r+b") as out:
            out.truncate(0)
        append(log, "t\n")
        assert f.until(ends_with_bytes(b"t\n")) == [
            {"event": "rotated", "how": "truncated", "file": id3, "offset": 0}, b"t\n"]

        shutil.rmtree(d)  # the directory removed and created again
        assert f.until(lambda t: bool(t)) == [{"event": "waiting"}]
        d.mkdir()
        append(log, "d1\n")
        toks = f.until(ends_with_bytes(b"d1\n"))
        id4 = f"{log.stat().st_dev}:{log.stat().st_ino}"
        assert toks == [{"event": "rotated", "how": "removed", "file": id4, "offset": 0},
                        b"d1\n"]
        f.take()
        assert f.tokens == []  # nothing twice


def test_rotation_storm_every_line_once_in_order(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    log = tmp_path / "storm.log"
    log.write_bytes(b"")
    rotations, per_file = 20, 150
    total = (rotations + 1) * per_file
    received: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            out = log.open("ab", buffering=0)
            n = 0
            for k in range(rotations + 1):
                first = n
                for _ in range(per_file):
                    out.write(f"{n}\n".encode())
                    n += 1
                    if n % 10 == 0:
                        time.sleep(0.001)
                if k == rotations:
                    break
                # Rotations come as fast as the follower has seen the current
                # file (tail -F, like any follower by name, cannot see a file
                # created and renamed away before it looked).
                wait_for(lambda first=first: len(received) > first, what="follower")  # type: ignore[misc]
                log.rename(tmp_path / f"storm.log.{k}")
                out.write(f"{n}\n".encode())  # the app writes once more before reopening
                n += 1
                out.close()
                out = log.open("ab", buffering=0)
            out.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    with open_ws(srv, path=str(log), offset=0) as ws:
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            buf = ""
            deadline = time.monotonic() + 60
            while len(received) < total + rotations and not errors:
                msg = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
                assert isinstance(msg, str)
                buf += msg
                *done, buf = buf.split("\n")
                received.extend(done)
        finally:
            thread.join(60)
    assert not errors, errors
    assert received == [str(i) for i in range(total + rotations)]


# -- the watch table in the worker -------------------------------------------

def test_one_observer_and_one_watch_for_many_watchers(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP, threads=64)
    logs = [tmp_path / f"f{i}.log" for i in range(4)]
    for p in logs:
        p.write_text("")
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_ws(srv, path=str(logs[i % 4]), offset=0))
                   for i in range(24)]
        wait_subs(srv, 24)
        s = stats(srv)
        assert s["table"]["observers"] == 1
        assert s["table"]["watches"] == 1
        assert s["table"]["mode"] == "inotify"
        assert s["table"]["dirs"] == [str(tmp_path.resolve())]
        assert s["threads"].count("pine-ws-watch") == 1
        assert "pine-ws-observer" not in s["threads"]  # no watchdog thread on Linux
        for i, p in enumerate(logs):
            append(p, f"to {i}\n")
        for i, ws in enumerate(clients):
            assert recv_text_until(ws, f"to {i % 4}\n") == f"to {i % 4}\n"
    wait_for(lambda: stats(srv)["table"]["subscribers"] == 0, what="all gone")
    s = stats(srv)
    assert (s["table"]["watches"], s["table"]["observers"]) == (0, 0)
    wait_for(lambda: "pine-ws-watch" not in stats(srv)["threads"], what="watch thread gone")


def test_polling_mode_follows_and_rotates(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP, env={"PINE_WS_POLLING": "true", "PINE_WS_POLL_INTERVAL": "0.2"})
    log = tmp_path / "app.log"
    log.write_text("a\n")
    with open_ws(srv, path=str(log)) as ws:
        assert recv_text_until(ws, "a\n") == "a\n"
        s = stats(srv)
        assert s["table"]["mode"] == "polling" and s["table"]["observers"] == 0
        append(log, "b\n")
        assert recv_text_until(ws, "b\n") == "b\n"
        log.rename(tmp_path / "app.log.1")
        log.write_text("c\n")
        assert recv_text_until(ws, "c\n") == "c\n"


# -- resources: slow clients, leaving clients, shutdown ------------------------

def test_slow_client_holds_no_buffer_and_catches_up_exactly(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    pid = worker(srv)
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    # max_queue=1: the client's reader stops taking frames from the socket, so
    # the server's sends block once the kernel buffers are full.
    url = f"{srv.ws_url}/watch?{urlencode({'path': str(log), 'offset': 0, 'binary': '1'})}"
    with connect(url, open_timeout=WAIT, max_queue=1, max_size=None) as ws:
        wait_for(lambda: stats(srv)["watchers"] == 1, what="subscribed")
        append(log, b"warm" * 1000)
        assert recv_bytes(ws, 4000) == b"warm" * 1000
        before = rss_kib(pid)
        digest = hashlib.sha256()
        block = os.urandom(1024 * 1024)
        with log.open("ab") as out:
            for i in range(24):
                piece = bytes([i]) + block[1:]
                out.write(piece)
                digest.update(piece)
        peak = before
        end = time.monotonic() + 3  # the client does not read for 3 s
        while time.monotonic() < end:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.05)
        # 24 MiB appended; a server buffering for the client would grow by that much
        assert peak - before < 8 * 1024, f"worker RSS grew {peak - before} KiB"
        got = recv_bytes(ws, 24 * len(block), timeout=60)
    assert hashlib.sha256(got).hexdigest() == digest.hexdigest()


def test_client_leaving_releases_thread_fd_and_watch(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    pid = worker(srv)
    log = tmp_path / "app.log"
    log.write_text("x\n")

    def round_trip(stack: contextlib.ExitStack) -> list[ClientConnection]:
        clients = [stack.enter_context(open_ws(srv, path=str(log))) for _ in range(6)]
        for ws in clients:
            assert recv_text_until(ws, "x\n") == "x\n"
        wait_subs(srv, 6)
        return clients

    with contextlib.ExitStack() as stack:  # warm up gunicorn's thread pool (its threads stay)
        round_trip(stack)
    wait_subs(srv, 0)

    def settled() -> tuple[int, int]:
        stats(srv)  # an HTTP request of its own; its socket may linger a moment
        return threads_of(pid), fds_of(pid)

    wait_for(lambda: "pine-ws-watch" not in stats(srv)["threads"], what="watch thread gone")
    base = settled()
    seen: list[tuple[int, int]] = []
    with contextlib.ExitStack() as stack:
        clients = round_trip(stack)
        for ws in clients:
            assert ws.ping().wait(WAIT)  # a reader thread starts once the client speaks
        assert threads_of(pid) >= base[0] + 6  # one reader thread per connection
        for ws in clients[:3]:
            ws.close()  # a clean close
        for ws in clients[3:]:
            ws.socket.shutdown(socket.SHUT_RDWR)  # vanishes: no close frame
        wait_subs(srv, 0)
        def back() -> bool:
            seen.append(settled())
            return seen[-1] == base

        wait_for(back, what="threads and fds back to the baseline")
        s = stats(srv)
        assert (s["table"]["watches"], s["table"]["observers"], s["live"]) == (0, 0, 0)


def test_sigterm_closes_every_watcher_with_1001_at_once(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP, extra=LONG_GRACE)
    log = tmp_path / "app.log"
    log.write_text("x\n")
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(open_ws(srv, path=str(log))) for _ in range(5)]
        for ws in clients:
            assert recv_text_until(ws, "x\n") == "x\n"
        begin = time.monotonic()
        srv.signal(signal.SIGTERM)
        for ws in clients:
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=WAIT)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        srv.proc.wait(AT_ONCE)
        # well before gunicorn's graceful timeout (LONG_GRACE)
        assert time.monotonic() - begin < AT_ONCE


# -- roots -------------------------------------------------------------------

def test_path_outside_root_is_refused_with_1008_before_any_byte(
        server: ServerFactory, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.log").write_text("fine\n")
    secret = tmp_path / "secret.log"
    secret.write_text("secret\n")
    (root / "escape.log").symlink_to(secret)
    srv = server(APP, env={"PINE_WS_WATCH_ROOTS": json.dumps([str(root)])})
    for path in (secret, root / "escape.log", root / ".." / "secret.log"):
        extras: list[dict[str, Any]] = [{}, {"root": str(root)}]
        for extra in extras:
            with open_ws(srv, path=str(path), **extra) as ws:
                with pytest.raises(ConnectionClosed) as info:
                    ws.recv(timeout=WAIT)  # the first thing received is the close
                assert info.value.rcvd is not None
                assert info.value.rcvd.code == 1008
                assert "outside the allowed watch roots" in info.value.rcvd.reason
    with open_ws(srv, path=str(root / "ok.log")) as ws:
        assert recv_text_until(ws, "fine\n") == "fine\n"
    # a symlink swapped in later, escaping the root, is refused when opened
    late = root / "late.log"
    with open_ws(srv, path=str(late), framed=True) as ws:
        f = Framed(ws)
        f.until(lambda t: len(t) >= 2)
        late.symlink_to(secret)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                msg = ws.recv(timeout=WAIT)
                assert not (isinstance(msg, bytes) and b"secret" in msg)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008


# -- the framed format: resume -------------------------------------------------

def test_framed_resume_with_offset_and_file_id(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(APP)
    log = tmp_path / "app.log"
    log.write_text("hello\n")
    fid = f"{log.stat().st_dev}:{log.stat().st_ino}"
    with open_ws(srv, path=str(log), framed=True) as ws:
        f = Framed(ws)
        assert f.until(ends_with_bytes(b"hello\n")) == [
            {"event": "open", "file": fid, "offset": 0, "size": 6}, b"hello\n"]
        append(log, "more\n")
        assert f.until(ends_with_bytes(b"more\n")) == [b"more\n"]
    received = 11
    append(log, "while away\n")
    with open_ws(srv, path=str(log), framed=True, offset=received, file_id=fid) as ws:
        f = Framed(ws)
        assert f.until(ends_with_bytes(b"while away\n")) == [
            {"event": "open", "file": fid, "offset": 11, "size": 22}, b"while away\n"]
    with open_ws(srv, path=str(log), framed=True, offset=received, file_id="1:1") as ws:
        f = Framed(ws)  # another file was read before: this one from 0
        assert f.until(ends_with_bytes(b"while away\n")) == [
            {"event": "open", "file": fid, "offset": 0, "size": 22},
            {"event": "rotated", "how": "replaced", "file": fid, "offset": 0},
            log.read_bytes()]
    with open_ws(srv, path=str(log), framed=True, offset=500, file_id=fid) as ws:
        f = Framed(ws)  # past the end: truncated meanwhile, from 0
        assert f.until(ends_with_bytes(b"while away\n")) == [
            {"event": "open", "file": fid, "offset": 0, "size": 22},
            {"event": "rotated", "how": "truncated", "file": fid, "offset": 0},
            log.read_bytes()]


def test_symlink_to_a_file_in_another_directory_is_followed_at_once(
        server: ServerFactory, tmp_path: Path) -> None:
    """Appends to a link's target elsewhere arrive at once, not at the next safety check.

    A log reached through a symlink (``/var/log/app.log -> /data/app/current.log``)
    changes in the target's directory, which a watch on the link's directory
    never hears of: the watcher watches the target's directory too, and moves
    that watch when the link is pointed elsewhere.
    """
    srv = server(APP, env={"PINE_WS_SAFETY_INTERVAL": "600"})  # no rescue by the safety check
    a, b, c = (tmp_path / name for name in ("a", "b", "c"))
    for d in (a, b, c):
        d.mkdir()
    (b / "real.log").write_text("one\n")
    link = a / "app.log"
    link.symlink_to(b / "real.log")
    with open_ws(srv, path=str(link)) as ws:
        assert recv_text_until(ws, "one\n") == "one\n"
        time.sleep(1.0)  # idle: a watcher caught up waits for an event, nothing else
        append(b / "real.log", "two\n")
        assert recv_text_until(ws, "two\n", timeout=10) == "two\n"
        # the link pointed at a file in a third directory: a rotation by the link
        (c / "next.log").write_text("three\n")
        (a / "tmp").symlink_to(c / "next.log")
        os.replace(a / "tmp", link)
        assert recv_text_until(ws, "three\n", timeout=10) == "three\n"
        time.sleep(1.0)
        append(c / "next.log", "four\n")
        assert recv_text_until(ws, "four\n", timeout=10) == "four\n"
        append(b / "real.log", "old file, no longer followed\n")
        assert_silent(ws, 1.0)
