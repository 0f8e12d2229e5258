"""Faults, made real: each ends in a documented close or a working fallback, never a hang.

- the file made unreadable (the worker runs without ``CAP_DAC_OVERRIDE``, so
  ``chmod 000`` really denies it although tests run as root) and the path
  replaced by a directory: close 1011 with a reason that says so, after every
  byte that could be read; the worker lives on;
- a file system without inotify events (an overlay mount whose files change
  underneath it, as on NFS): ``PINE_WS_POLLING = True`` streams it, and in
  ``"auto"`` the safety check still delivers within its interval;
- the inotify instance limit used up before the server starts (in a user
  namespace of the test's own, so the machine's other programs keep theirs):
  the worker falls back to polling and streams;
- the writer killed in the middle of a line (and of a UTF-8 character): what
  was written arrives, the rest when another writer finishes the line;
- a client that stops answering pings: 1008 "Ping/Pong timeout"; a client that
  stops reading: dropped after ``PINE_WS_SEND_TIMEOUT``; neither holds a thread.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

import wsraw
from conftest import ServerFactory
from helpers import connect, http_get, wait_until
from server import APPS, Server, gunicorn_argv

SUB = ["pine.watch.v1"]


def files_env(files: dict[str, Path], **env: str) -> dict[str, str]:
    return {"PINE_DEPLOY_FILES": json.dumps({k: str(v) for k, v in files.items()}), **env}


def start(server: ServerFactory, files: dict[str, Path], **env: str) -> Server:
    return server("deploy_app:app", env=files_env(files, **env))


@pytest.fixture
def confined(tmp_path: Path) -> Iterator[Any]:
    """Start ``deploy_app`` under ``tests/apps/confined.py`` with the given options."""
    started: list[Server] = []

    def run(options: list[str], env: dict[str, str], *, userns: bool = False) -> Server:
        argv = [sys.executable, str(APPS / "confined.py"), *options, "--",
                *gunicorn_argv("deploy_app:app")]
        if userns:
            argv = [shutil.which("unshare") or "/usr/bin/unshare", "--user",
                    "--map-root-user", *argv]
        srv = Server(argv, env, tmp_path / f"confined-{len(started)}.log")
        started.append(srv)
        return srv

    yield run
    for srv in started:
        srv.stop()


def stats(srv: Server) -> dict[str, Any]:
    status, _, body = http_get(srv.url + "/debug/stats")
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def _note_when(happened: Callable[[], bool], moments: list[float], timeout: float) -> None:
    """Append the moment ``happened()`` is first true (polled beside the test's own work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if happened():
            moments.append(time.monotonic())
            return
        time.sleep(0.02)


def readers_and_waiting(srv: Server) -> int:
    """The worker's connections with a reader thread, or a socket waiting for one."""
    now = stats(srv)
    return sum(1 for name in now["thread_names"] if name == "pine-ws-reader") + \
        now["waiting_readers"]


def read_bytes_until_closed(ws: ClientConnection, timeout: float = 20) -> tuple[bytes, int, str]:
    """Every binary message until the server closes: ``(bytes, code, reason)``."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"not closed within {timeout}s"
            message = ws.recv(timeout=timeout)
            if isinstance(message, bytes):
                data += message
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame"
        return data, exc.rcvd.code, exc.rcvd.reason


def recv_bytes(ws: ClientConnection, size: int, timeout: float = 20) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        assert time.monotonic() < deadline, f"{len(data)} of {size} bytes in {timeout}s"
        message = ws.recv(timeout=timeout)
        if isinstance(message, bytes):
            data += message
    return data


# -- unreadable, a directory -------------------------------------------------------

def test_unreadable_file_closes_1011_with_the_reason(confined: Any, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"readable at first\n")
    srv = confined(["--no-dac-override"], files_env({"app": log}))
    assert "no CAP_DAC_OVERRIDE" in srv.log()
    pid = srv.worker_pids()[0]
    # streaming a readable file; then it is rotated to one the worker may not read
    with connect(f"{srv.ws_url}/logs/ws/app?offset=0", subprotocols=SUB) as ws:
        assert json.loads(ws.recv(timeout=20))["event"] == "open"
        assert recv_bytes(ws, 18) == b"readable at first\n"
        with open(log, "ab") as f:
            f.write(b"the last line of the old file\n")
        os.rename(log, tmp_path / "app.log.1")
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0)  # unreadable from birth
        os.write(fd, b"secret\n")
        os.close(fd)
        data, code, reason = read_bytes_until_closed(ws)
    assert data == b"the last line of the old file\n"  # drained before the new file
    assert (code, reason) == (1011, "cannot read the file: Permission denied")
    # a new client is told at once
    with connect(f"{srv.ws_url}/logs/ws/app", subprotocols=SUB) as ws:
        assert read_bytes_until_closed(ws)[1:] == (1011, "cannot read the file: Permission denied")
    # readable again: the client that resumes gets the new file from its start
    log.chmod(0o644)
    with connect(f"{srv.ws_url}/logs/ws/app?offset=0", subprotocols=SUB) as ws:
        assert json.loads(ws.recv(timeout=20))["event"] == "open"
        assert recv_bytes(ws, 7) == b"secret\n"
    assert srv.worker_pids() == [pid]
    wait_until(lambda: stats(srv)["live"] == 0, message="no socket left open")
    assert "Traceback" not in srv.log()
    assert f"watch_file: cannot read {log}: [Errno 13] Permission denied" in srv.log()


def test_path_replaced_by_a_directory_closes_1011(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"one\n")
    srv = start(server, {"app": log})
    with connect(f"{srv.ws_url}/logs/ws/app?offset=0", subprotocols=SUB) as ws:
        assert json.loads(ws.recv(timeout=20))["event"] == "open"
        assert recv_bytes(ws, 4) == b"one\n"
        with open(log, "ab") as f:
            f.write(b"two\n")
        log.unlink()
        log.mkdir()
        data, code, reason = read_bytes_until_closed(ws)
    assert data == b"two\n"
    assert (code, reason) == (1011, "cannot read the file: it is a directory")
    with connect(f"{srv.ws_url}/logs/ws/app", subprotocols=SUB) as ws:
        assert read_bytes_until_closed(ws)[1:] == (1011, "cannot read the file: it is a directory")
    wait_until(lambda: stats(srv)["live"] == 0, message="no socket left open")
    assert "Traceback" not in srv.log()


# -- no inotify --------------------------------------------------------------------

def _inotify_sees(directory: Path, write: Any) -> bool:
    """Whether an inotify watch on ``directory`` reports what ``write()`` does."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(directory), 0x2 | 0x100 | 0x200) >= 0
        write()
        readable, _, _ = select.select([fd], [], [], 1.0)
        return bool(readable)
    finally:
        os.close(fd)


@pytest.fixture
def no_event_fs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``(seen, written)``: a file on an overlay mount, and the same file in its upper layer.

    Writes to the upper layer change what the mount shows, but inotify on the
    mount reports none of them: as a file on NFS written by another host.
    """
    base = tmp_path / "overlay"
    for d in ("lower", "upper", "work", "merged"):
        (base / d).mkdir(parents=True)
    (base / "upper" / "app.log").write_bytes(b"")
    merged = base / "merged"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base / 'lower'},upperdir={base / 'upper'},"
                    f"workdir={base / 'work'}", str(merged)], check=True, timeout=30)
    try:
        yield merged / "app.log", base / "upper" / "app.log"
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=True, timeout=30)


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@pytest.mark.parametrize("polling", ["true", "auto"])
def test_a_file_system_without_inotify_events_is_polled(server: ServerFactory,
                                                        no_event_fs: tuple[Path, Path],
                                                        polling: str) -> None:
    seen, written = no_event_fs
    assert not _inotify_sees(seen.parent, lambda: _append(written, b"unseen\n"))
    assert seen.read_bytes() == b"unseen\n"
    env = {"PINE_WS_POLLING": json.dumps(polling == "true" or "auto"),
           "PINE_WS_POLL_INTERVAL": "0.2", "PINE_WS_SAFETY_INTERVAL": "2"}
    srv = start(server, {"app": seen}, **env)
    with connect(f"{srv.ws_url}/logs/ws/app?offset=0", subprotocols=SUB) as ws:
        assert json.loads(ws.recv(timeout=20))["event"] == "open"
        assert recv_bytes(ws, 7) == b"unseen\n"
        for n in range(3):
            line = b"written underneath %d\n" % n
            # polling: a poll tick finds it; auto (inotify, no events): the safety check
            _append(written, line)
            assert recv_bytes(ws, len(line)) == line
        table = stats(srv)["table"]
    if polling == "true":
        assert table["mode"] == "polling"
    else:  # inotify (its events never come): the safety check found the lines
        assert table["mode"] == "inotify" and not table["inotify_refused"], table


def test_inotify_instances_used_up_before_start_fall_back_to_polling(confined: Any,
                                                                    tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"first\n")
    srv = confined(["--exhaust-inotify", "8"],
                   files_env({"app": log}, PINE_WS_POLL_INTERVAL="0.2"), userns=True)
    assert "8 inotify instances held, the next one: EMFILE" in srv.log()
    with connect(f"{srv.ws_url}/logs/ws/app?offset=0", subprotocols=SUB) as ws:
        assert json.loads(ws.recv(timeout=20))["event"] == "open"
        assert recv_bytes(ws, 6) == b"first\n"
        table = stats(srv)["table"]
        assert table["mode"] == "polling" and "EMFILE" in table["inotify_refused"], table
        for n in range(3):
            _append(log, b"polled %d\n" % n)
            assert recv_bytes(ws, 9) == b"polled %d\n" % n
    assert stats(srv)["inotify_instances"] == 8  # the held ones; the worker got none
    assert "Traceback" not in srv.log()


# -- the writer dies -----------------------------------------------------------------

def test_writer_killed_in_the_middle_of_a_line(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"whole line\n")
    srv = start(server, {"app": log})
    half = "half a line, café".encode()[:-1]  # ends inside the two bytes of "é"
    writer = ("import os, signal, sys\n"
              "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)\n"
              f"os.write(fd, {half!r})\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    with connect(f"{srv.ws_url}/logs/ws/app?offset=0", subprotocols=SUB) as framed, \
            connect(f"{srv.ws_url}/logs/ws/app") as plain:
        assert json.loads(framed.recv(timeout=20))["event"] == "open"
        assert recv_bytes(framed, 11) == b"whole line\n"
        assert plain.recv(timeout=20) == "whole line\n"
        died = subprocess.run([sys.executable, "-c", writer, str(log)], timeout=30)
        assert died.returncode == -9
        # the exact bytes to the framed client, the whole characters to the plain one
        assert recv_bytes(framed, len(half)) == half
        assert plain.recv(timeout=20) == "half a line, caf"
        with open(log, "ab") as f:  # another writer finishes the line
            f.write(b"\xa9 finished\n")
        assert recv_bytes(framed, 11) == b"\xa9 finished\n"
        assert plain.recv(timeout=20) == "é finished\n"


# -- clients that stop -----------------------------------------------------------------

def test_client_that_stops_answering_pings_is_closed_1008(server: ServerFactory,
                                                          tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"x\n")
    srv = start(server, {"app": log}, PINE_WS_PING_INTERVAL="1", PINE_WS_PONG_TIMEOUT="3")
    shake = wsraw.handshake(srv.port, "/logs/ws/app", {"Sec-WebSocket-Protocol": SUB[0]})
    assert shake.status == 101
    began = time.monotonic()
    with shake.sock as sock:
        data = shake.rest + wsraw.read_to_eof(sock, timeout=30)  # reads, never answers
    frames, leftover = wsraw.parse_frames(data)
    assert any(op == wsraw.OP_PING for op, _ in frames)
    op, payload = frames[-1]
    assert op == wsraw.OP_CLOSE and leftover == b""
    assert struct.unpack("!H", payload[:2])[0] == 1008
    assert payload[2:] == b"Ping/Pong timeout"
    assert 3 <= time.monotonic() - began < 15
    wait_until(lambda: stats(srv)["live"] == 0, message="the socket released")


def test_client_that_stops_reading_is_dropped_after_the_send_timeout(server: ServerFactory,
                                                                     tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"")
    srv = start(server, {"app": log}, PINE_WS_SEND_TIMEOUT="2")
    shake = wsraw.handshake(srv.port, "/logs/ws/app", {"Sec-WebSocket-Protocol": SUB[0]},
                            rcvbuf=4096)
    assert shake.status == 101
    with shake.sock, connect(f"{srv.ws_url}/logs/ws/app?offset=0", subprotocols=SUB,
                             max_size=None) as reader:
        assert json.loads(reader.recv(timeout=20))["event"] == "open"
        # two sockets open
        wait_until(lambda: stats(srv)["live"] == 2, message="two connections")
        block = os.urandom(1 << 20)
        # the moment the worker let go of the stalled socket (the FIN it sends waits
        # behind the bytes the client does not read: the client cannot see it)
        cut: list[float] = []
        watching = threading.Thread(target=_note_when, args=(
            lambda: stats(srv)["live"] == 1, cut, 90))
        began = time.monotonic()  # no send can block before the first byte is written
        watching.start()
        try:
            with open(log, "ab") as f:
                for _ in range(16):  # far more than the socket buffers hold
                    f.write(block)
            # the reading client gets all of it, while the other one is cut off
            assert recv_bytes(reader, 16 << 20, timeout=60) == block * 16
        finally:
            watching.join()
        assert cut, "the client that stopped reading was never cut off"
        # after the send timeout (2 s), not at the first full buffer
        assert cut[0] - began >= 2, f"cut off {cut[0] - began:.2f} s after the first write"
        # and it holds no thread: its handler returned (live), and neither a reader
        # thread nor a socket waiting for one is left of it (the reading client has
        # one or the other: a reader starts once its client speaks)
        wait_until(lambda: readers_and_waiting(srv) == 1, timeout=30,
                   message="the dropped client's reader gone")
        # what was in flight, then the end: the socket was cut (no close frame can
        # reach a peer that does not read), and reading it does not hang
        wsraw.read_to_eof(shake.sock, timeout=10)
    assert "Traceback" not in srv.log()
