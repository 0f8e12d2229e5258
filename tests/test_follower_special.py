"""FileFollower on what is not a regular file, in-process on real FIFOs, devices and sockets.

Opening never blocks (a FIFO without a writer used to block ``open()`` for
good), and nothing but a regular file is ever read.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from flask_pine_ws.follower import Chunk, FileFollower, NotRegularFile, Rotated, Waiting


@pytest.mark.parametrize("kind", ["a FIFO", "a device", "a socket", "a symlink to a FIFO"])
def test_start_refuses_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "app.log"
    listener = None
    if kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a device":
        path = Path("/dev/zero")
    elif kind == "a socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
    else:
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    follower = FileFollower(str(path))
    try:
        with pytest.raises(NotRegularFile) as info:
            follower.start()
        assert info.value.kind == kind.replace("a symlink to ", "")
        assert follower.position is None  # nothing held open
    finally:
        follower.close()
        if listener is not None:
            listener.close()


def test_a_fifo_swapped_in_is_waited_past(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"one\n")
    follower = FileFollower(str(path), binary=True)
    try:
        follower.start(offset=0)
        assert list(follower.read()) == [Chunk(b"one\n", 4)]
        os.rename(path, tmp_path / "app.log.1")
        os.mkfifo(tmp_path / "fifo")
        os.rename(tmp_path / "fifo", path)
        assert list(follower.read()) == [Waiting("a FIFO")]
        assert list(follower.read()) == []  # told once
        (tmp_path / "new").write_bytes(b"two\n")
        os.rename(tmp_path / "new", path)
        items = list(follower.read())
        assert isinstance(items[0], Rotated) and items[1:] == [Chunk(b"two\n", 4)]
    finally:
        follower.close()
