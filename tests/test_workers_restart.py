"""Across gunicorn workers and restarts: a resuming client gets an exact continuation.

The resume protocol of ``docs/protocol.md`` (``offset`` + ``file``) keeps no
state on the server, so any worker that sees the file continues a client
exactly. These tests check it where it matters:

- ``-w 2``: a client that disconnects and resumes again and again is served
  by both workers (which one is read from ``/proc``: the worker holding the
  server side of the client's TCP connection), and ends with the file's bytes;
- a rolling restart (SIGHUP: new workers, the old ones close with 1001) and a
  full restart (SIGTERM, then a new arbiter on the same listening socket),
  while 50 clients stream a log that keeps growing: every client ends with
  every byte exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

from conftest import ServerFactory
from helpers import connect, wait_until
from resume import ResumingClient
from server import Server

SUB = ["pine.watch.v1"]


def start(server: ServerFactory, files: dict[str, Path], *, workers: int, threads: int = 32,
          **env: str) -> Server:
    full = {"PINE_DEPLOY_FILES": json.dumps({k: str(v) for k, v in files.items()}), **env}
    return server("deploy_app:app", env=full, workers=workers, threads=threads)


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the TCP socket 127.0.0.1:local_port <-> 127.0.0.1:remote_port."""
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.split(":")[1], 16) == local_port
                    and int(remote.split(":")[1], 16) == remote_port):
                return fields[9]
    return None


def serving_worker(srv: Server, client_port: int) -> int | None:
    """The worker pid whose fd table holds the server side of the client's connection."""
    inode = _socket_inode(srv.port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in srv.worker_pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def test_two_workers_each_continue_a_resuming_client_exactly(server: ServerFactory,
                                                             tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %05d of the first part\n" % i for i in range(3000)))
    srv = start(server, {"app": log}, workers=2, PINE_WS_CHUNK_BYTES="1000")
    assert len(srv.worker_pids()) == 2
    received = bytearray()
    file_id = ""
    served_by: list[int] = []
    sessions = 0
    # Reconnect until each worker has resumed the client at least twice.
    while min((served_by.count(p) for p in set(srv.worker_pids())), default=0) < 2:
        sessions += 1
        assert sessions <= 80, f"80 sessions and still not both workers: {served_by}"
        query = f"?offset={len(received)}&file={file_id}"
        # max_queue=None: the client keeps reading while it closes (with websockets'
        # default flow control it stops reading, and its close waits out close_timeout)
        with connect(f"{srv.ws_url}/logs/ws/app{query}", subprotocols=SUB,
                     max_queue=None) as ws:
            pid = wait_until(lambda: serving_worker(srv, ws.socket.getsockname()[1]),
                             message="the serving worker")
            served_by.append(pid)
            opened = json.loads(ws.recv(timeout=20))
            assert opened["event"] == "open" and opened["offset"] == len(received), opened
            file_id = opened["file"]
            for _ in range(sessions % 3 + 1):  # a few messages, then away
                message = ws.recv(timeout=20)
                assert isinstance(message, bytes)
                received += message
        with open(log, "ab") as f:
            f.write(b"appended while away: session %d\n" % sessions)
    expected = log.read_bytes()
    with connect(f"{srv.ws_url}/logs/ws/app?offset={len(received)}&file={file_id}",
                 subprotocols=SUB, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=20))["offset"] == len(received)
        while len(received) < len(expected):
            message = ws.recv(timeout=20)
            assert isinstance(message, bytes)
            received += message
    assert received == expected
    assert set(served_by) == set(srv.worker_pids())


async def _stream_through_restarts(srv: Server, log: Path, clients: list[ResumingClient]) -> None:
    stop_writing = asyncio.Event()
    written = 0

    async def writer() -> None:
        nonlocal written
        with open(log, "ab", buffering=0) as f:
            while not stop_writing.is_set():
                # numbered lines and now and then a partial one, finished by the next write
                chunk = b"%08d %s\n" % (written, b"x" * (written % 97))
                if written % 13 == 0:
                    f.write(chunk[:5])
                    await asyncio.sleep(0.003)
                    chunk = chunk[5:]
                f.write(chunk)
                written += 1
                await asyncio.sleep(0.005)

    async def until(predicate: object, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
            await asyncio.sleep(0.1)

    deadline = time.monotonic() + 200
    writing = asyncio.create_task(writer())
    following = [asyncio.create_task(c.follow(deadline)) for c in clients]
    try:
        await until(lambda: all(c.offset > 0 for c in clients), "every client streaming")
        # rolling restart: new workers, the old ones close their sockets with 1001
        old = set(srv.worker_pids())
        srv.signal(signal.SIGHUP)
        await until(lambda: all(c.closes.count(1001) >= 1 for c in clients), "1001 at SIGHUP")
        await until(lambda: not (set(srv.worker_pids()) & old) and len(srv.worker_pids()) == 2,
                    "the old workers gone")
        marks = {id(c): c.offset for c in clients}
        await until(lambda: all(c.offset > marks[id(c)] for c in clients),
                    "every client streaming from the new workers")
        # full restart: the arbiter stops, a new one serves the same listening socket
        await asyncio.to_thread(srv.restart)
        await until(lambda: all(c.closes.count(1001) >= 2 for c in clients), "1001 at restart")
        marks = {id(c): c.offset for c in clients}
        await until(lambda: all(c.offset > marks[id(c)] for c in clients),
                    "every client streaming after the restart")
        # the log must have grown enough to mean something, however fast the
        # restarts went (the writer's pace depends on the machine's load)
        await until(lambda: log.stat().st_size > 25_000, "the log grown past 25 kB")
        stop_writing.set()
        await writing
        size = log.stat().st_size
        for c in clients:
            c.target = size
        await asyncio.wait_for(asyncio.gather(*following), 90)
    finally:
        stop_writing.set()
        for task in [writing, *following]:
            task.cancel()
        await asyncio.gather(writing, *following, return_exceptions=True)


def test_rolling_and_full_restart_with_50_resuming_clients(server: ServerFactory,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "growing.log"
    log.write_bytes(b"".join(b"before %04d\n" % i for i in range(500)))
    srv = start(server, {"app": log}, workers=2, threads=80)
    clients = [ResumingClient(f"{srv.ws_url}/logs/ws/app") for _ in range(50)]
    asyncio.run(_stream_through_restarts(srv, log, clients))
    expected = log.read_bytes()
    assert len(expected) > 20_000
    for i, c in enumerate(clients):
        assert len(c.data) == len(expected), (i, len(c.data), len(expected))
        assert c.data == expected, f"client {i} differs from the file"
        assert c.connects >= 3, (i, c.connects, c.closes)
    log_text = srv.log()
    assert "Traceback" not in log_text, log_text[-3000:]
