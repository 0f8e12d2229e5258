"""What is not a regular file at a watched path, against a real server: never a hung thread.

- a FIFO, a device (``/dev/zero``, also behind a symlink), a socket at the
  path when a client connects: close 1011 with a reason that says what it is,
  at once, for every client of that path (a FIFO used to block each watcher's
  thread in ``open()`` for good, and a shutdown waited its whole graceful
  timeout);
- a followed file replaced by a FIFO: the old file is drained, the client is
  told ``waiting``, and the stream goes on when a regular file is back (the
  file's shared reader used to block in ``open()`` under its lock, hanging
  every watcher of the name);
- a path with a NUL byte: close 1008 and one log line, no traceback.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from conftest import ServerFactory
from helpers import connect, http_get, wait_until
from server import Server

pytestmark = pytest.mark.integration

SUB = ["pine.watch.v1"]


def watch_url(srv: Server, path: str | Path, **query: str) -> str:
    return f"{srv.ws_url}/watch?" + urllib.parse.urlencode({"path": str(path), **query})


def closed_with(ws: ClientConnection, timeout: float = 20) -> tuple[list[object], int, str]:
    """Every message until the server closes (JSON notices decoded), and the close code/reason."""
    got: list[object] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, f"not closed within {timeout}s: {got}"
            message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            got.append(json.loads(message) if isinstance(message, str) else message)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame"
        return got, exc.rcvd.code, exc.rcvd.reason


def live(srv: Server) -> int:
    status, _, body = http_get(srv.url + "/stats")
    assert status == 200, body
    count: int = json.loads(body)["live"]
    return count


def test_a_fifo_at_the_path_closes_1011_for_every_client_at_once(
        server: ServerFactory, tmp_path: Path) -> None:
    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    srv = server("watch_app:app")
    results: list[tuple[int, str]] = []

    def client() -> None:
        with connect(watch_url(srv, fifo), subprotocols=SUB) as ws:
            _, code, reason = closed_with(ws)
            results.append((code, reason))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(40)
    assert results == [(1011, "cannot read the file: it is a FIFO, not a regular file")] * 4
    wait_until(lambda: live(srv) == 0, message="no watcher left")
    # no thread is stuck: the server stops at once, not after its graceful timeout
    started = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - started < 10
    log = srv.log()
    assert "Traceback" not in log
    assert f"watch_file: cannot read {fifo}: [Errno 22] not a regular file but a FIFO" in log


@pytest.mark.parametrize("kind", ["device", "device behind a symlink", "socket"])
def test_a_device_or_a_socket_closes_1011(server: ServerFactory, tmp_path: Path,
                                          kind: str) -> None:
    path = tmp_path / "app.log"
    listener = None
    if kind == "socket":
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        what = "a socket"
    elif kind == "device":
        path = Path("/dev/zero")
        what = "a device"
    else:
        path.symlink_to("/dev/zero")
        what = "a device"
    srv = server("watch_app:app")
    try:
        for framed in (True, False):
            with connect(watch_url(srv, path), subprotocols=SUB if framed else None) as ws:
                got, code, reason = closed_with(ws)
            assert (code, reason) == (1011, f"cannot read the file: it is {what}, not a "
                                            "regular file")
            assert not [m for m in got if isinstance(m, bytes)], "no byte of it is streamed"
    finally:
        if listener is not None:
            listener.close()
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("broadcast", ["true", "false"])
def test_a_file_replaced_by_a_fifo_is_waited_past(server: ServerFactory, tmp_path: Path,
                                                  broadcast: str) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"one\n")
    srv = server("watch_app:app", env={"PINE_WS_BROADCAST": broadcast})
    with connect(watch_url(srv, log, offset="0"), subprotocols=SUB) as ws, \
            connect(watch_url(srv, log, offset="0"), subprotocols=SUB) as other:
        for client in (ws, other):
            assert json.loads(client.recv(timeout=20))["event"] == "open"
            assert client.recv(timeout=20) == b"one\n"
        if broadcast == "true":
            wait_until(lambda: json.loads(http_get(srv.url + "/stats")[2])["live_readers"] == 2,
                       message="both live on the feed")
        with open(log, "ab") as f:
            f.write(b"two\n")
        os.rename(log, tmp_path / "app.log.1")
        os.mkfifo(tmp_path / "fifo")
        os.rename(tmp_path / "fifo", log)  # atomically: no moment without a name
        for client in (ws, other):
            assert client.recv(timeout=20) == b"two\n"
            assert json.loads(client.recv(timeout=20)) == {"event": "waiting"}
        # a new client is told why at once, while the two wait
        with connect(watch_url(srv, log), subprotocols=SUB) as third:
            assert closed_with(third)[1:] == (
                1011, "cannot read the file: it is a FIFO, not a regular file")
        # a regular file again: both go on with it from its start
        (tmp_path / "new").write_bytes(b"three\n")
        os.rename(tmp_path / "new", log)
        for client in (ws, other):
            rotated = json.loads(client.recv(timeout=20))
            assert (rotated["event"], rotated["how"]) == ("rotated", "renamed")
            assert client.recv(timeout=20) == b"three\n"
    wait_until(lambda: live(srv) == 0, message="no watcher left")
    log_text = srv.log()
    assert "Traceback" not in log_text
    assert f"watch_file: {log} is a FIFO, not a regular file; waiting for one" in log_text


def test_a_nul_byte_in_the_path_closes_1008_with_one_log_line(
        server: ServerFactory, tmp_path: Path) -> None:
    srv = server("watch_app:app")
    for framed in (True, False):
        with connect(watch_url(srv, f"{tmp_path}/app\0.log"),
                     subprotocols=SUB if framed else None) as ws:
            got, code, reason = closed_with(ws)
        assert (got, code, reason) == ([], 1008, "path contains a NUL byte")
    log = srv.log()
    assert "Traceback" not in log
    assert log.count("watch_file: refused a path with a NUL byte") == 2
