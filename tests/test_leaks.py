"""The leak guard itself: what ``no_leaks`` must see, and what it must not blame on a test.

Each case takes a ``Leaks()`` snapshot, leaks one thing on purpose, checks
that the snapshot names it, and cleans up before the autouse guard looks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from flask_pine_ws.follower import FileFollower

from leaks import Leaks


def test_first_leaked_fd_is_seen(tmp_path: Path) -> None:
    # the lowest free fd is the one the listing of /proc/self/fd used for itself
    before = Leaks()
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    try:
        assert before.fds_since() == {fd: str(tmp_path / "f")}
    finally:
        os.close(fd)
    assert before.fds_since() == {}


def test_leaked_socket_is_seen() -> None:
    before = Leaks()
    a, b = socket.socketpair()
    with a, b:
        assert set(before.fds_since()) == {a.fileno(), b.fileno()}
    assert before.fds_since() == {}


def test_unclosed_follower_is_seen(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\n")
    before = Leaks()
    follower = FileFollower(str(log))
    follower.start()
    try:
        assert str(log) in before.fds_since().values()
    finally:
        follower.close()
    assert before.fds_since() == {}


def test_fd_reused_for_another_file_is_seen(tmp_path: Path) -> None:
    first = os.open(tmp_path / "a", os.O_CREAT | os.O_RDWR)
    before = Leaks()
    os.close(first)
    second = os.open(tmp_path / "b", os.O_CREAT | os.O_RDWR)
    try:
        assert second == first
        assert before.fds_since() == {second: str(tmp_path / "b")}
    finally:
        os.close(second)


def test_orphaned_grandchild_is_seen() -> None:
    before = Leaks()
    # the shell starts sleep in the background and exits: sleep is an orphan
    out = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True, timeout=30)
    orphan = int(out.stdout)
    try:
        assert orphan in before.procs_since()
    finally:
        os.kill(orphan, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while before.procs_since():  # reaps the killed orphan
        assert time.monotonic() < deadline, before.procs_since()
        time.sleep(0.05)


def test_only_new_processes_count() -> None:
    older = subprocess.Popen(["sleep", "60"])
    try:
        before = Leaks()
        assert before.procs_since() == {}
        newer = subprocess.Popen(["sleep", "60"])
        try:
            assert set(before.procs_since()) == {newer.pid}
        finally:
            newer.kill()
            newer.wait(30)
    finally:
        older.kill()
        older.wait(30)


def test_leaked_thread_is_seen() -> None:
    before = Leaks()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="leaky")
    thread.start()
    try:
        assert before.threads_since() == [thread]
    finally:
        stop.set()
        thread.join(30)
    assert before.threads_since() == []
