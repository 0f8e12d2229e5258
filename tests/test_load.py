"""Load: many watchers of one file on one worker, and thousands of clients that come and go.

- 1,000 concurrent watchers of one file on one gunicorn worker (``--threads``
  sized for them) all get each appended line, exactly; the worker then holds
  one inotify instance and one watch, whatever the number of watchers.
- 5,000 connect-and-drop cycles, clean closes and abrupt resets mixed, leave
  the worker's threads, file descriptors and inotify watches where they were,
  while a watcher connected throughout is unaffected.

The clients run on asyncio in the test's one thread (raw sockets for the
churn, which must be cheap). The figures printed here (``pytest -s``) are the
ones ``docs/robustness.md`` quotes, and ``docs/deployment.md``'s sizing table is made from.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from conftest import ServerFactory
from helpers import http_get, raised_fd_limit, wait_until
from server import Server

SUB = ["pine.watch.v1"]


@pytest.fixture(autouse=True)
def many_files() -> Iterator[None]:
    with raised_fd_limit():
        yield


def start(server: ServerFactory, files: dict[str, Path], *, threads: int,
          **env: str) -> Server:
    full = {"PINE_DEPLOY_FILES": json.dumps({k: str(v) for k, v in files.items()}), **env}
    # gthread also caps a worker's connections at --worker-connections (1000 by default)
    return server("deploy_app:app", env=full, threads=threads,
                  extra=["--worker-connections", str(threads * 2), "--backlog", "2048"])


def stats(srv: Server) -> dict[str, Any]:
    status, _, body = http_get(srv.url + "/debug/stats", timeout=30)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _watch(url: str, gate: asyncio.Semaphore) -> tuple[ClientConnection, bytearray]:
    async with gate:
        ws = await connect(url, subprotocols=SUB, open_timeout=60, close_timeout=10,  # type: ignore[list-item]
                           ping_interval=None, proxy=None)
        opened = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert opened["event"] == "open"
        return ws, bytearray()


async def _fan_out(srv: Server, log: Path, count: int) -> dict[str, Any]:
    url = f"{srv.ws_url}/logs/ws/app?lines=0"
    gate = asyncio.Semaphore(64)  # connects in flight, not connections held
    began = time.monotonic()
    watchers = await asyncio.gather(*(_watch(url, gate) for _ in range(count)))
    figures: dict[str, Any] = {"connect_s": round(time.monotonic() - began, 1)}
    try:
        held = stats(srv)
        assert held["live"] == count, held["live"]
        figures.update(threads=held["threads"], fds=held["fds"],
                       inotify_instances=held["inotify_instances"],
                       inotify_watches=held["inotify_watches"],
                       inotify_refused=held["table"]["inotify_refused"],
                       rss_mib=round(rss_mib(held["pid"]), 1), nofile=held["nofile"])
        expected = bytearray()
        latencies = []
        for n in range(5):
            line = b"appended line %d for every watcher\n" % n
            expected += line
            sent = time.monotonic()
            with open(log, "ab") as f:
                f.write(line)

            async def until_complete(ws: ClientConnection, got: bytearray, size: int) -> None:
                while len(got) < size:
                    message = await asyncio.wait_for(ws.recv(), 60)
                    assert isinstance(message, bytes), message
                    got += message

            await asyncio.gather(*(until_complete(ws, got, len(expected)) for ws, got in watchers))
            latencies.append(time.monotonic() - sent)
        for _, got in watchers:
            assert got == expected
        figures["fan_out_s"] = [round(x, 2) for x in latencies]
    finally:
        await asyncio.gather(*(ws.close() for ws, _ in watchers), return_exceptions=True)
    return figures


@pytest.mark.slow
def test_1000_watchers_of_one_file_on_one_worker_get_every_line(server: ServerFactory,
                                                                tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"old content nobody asked for\n")
    count = 1000
    # no ping comes due while the test runs: the watchers' clients send
    # nothing, so no reader thread starts (see the thread count below)
    srv = start(server, {"app": log}, threads=count + 50, PINE_WS_PING_INTERVAL="600")
    figures = asyncio.run(_fan_out(srv, log, count))
    print(f"\n1000 watchers: {figures}")
    assert figures["nofile"][0] >= 3 * count + 100, "the worker's fd limit is the test's"
    # one inotify instance and one watch for 1000 watchers; no way around it: if other
    # programs used up the user's instances, this cannot be shown, and the test says so
    assert not figures["inotify_refused"], (
        f"inotify refused ({figures['inotify_refused']}): free some of the user's "
        "instances (fs.inotify.max_user_instances) to run this test")
    assert (figures["inotify_instances"], figures["inotify_watches"]) == (1, 1)
    assert figures["fds"] <= 3 * count + 100  # the sizing rule of docs/deployment.md
    # a pool thread per socket, a few more for the process; no reader thread:
    # a watcher's client that sends nothing has none
    assert count <= figures["threads"] <= count + 60
    deadline = time.monotonic() + 30
    while (after := stats(srv))["live"]:
        assert time.monotonic() < deadline, f"{after['live']} sockets still open"
        time.sleep(0.2)
    assert after["inotify_watches"] == 0 and after["table"]["subscribers"] == 0
    assert "Traceback" not in srv.log()


# -- churn ---------------------------------------------------------------------

def _request(port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pine.watch.v1\r\n\r\n").encode()


def _close_frame() -> bytes:
    payload = struct.pack("!H", 1000)
    mask = os.urandom(4)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _cycle(port: int, path: str, mode: int) -> None:
    """One client: connect, handshake, get ``open``, then leave in one of four ways."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request(port, path))
        if mode == 3:  # gone before the server even answered
            _reset(writer)
            return
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        assert head.startswith(b"HTTP/1.1 101"), head
        first = await asyncio.wait_for(reader.readexactly(2), 60)
        body = await asyncio.wait_for(reader.readexactly(first[1] & 0x7F), 60)
        assert b'"open"' in body, body
        if mode == 0:  # clean: a close frame, then wait for the server's and its FIN
            writer.write(_close_frame())
            await asyncio.wait_for(reader.read(), 60)
            writer.close()
        elif mode == 1:  # abrupt: a reset
            _reset(writer)
        else:  # a FIN without a close frame (a client killed by the OS)
            writer.close()
    finally:
        if not writer.is_closing():
            writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def _churn(port: int, path: str, cycles: int, canary_url: str,
                 log: Path) -> dict[str, Any]:
    rng = random.Random(5000)
    modes = [rng.randrange(4) for _ in range(cycles)]
    gate = asyncio.Semaphore(32)

    async def one(mode: int) -> None:
        async with gate:
            await _cycle(port, path, mode)

    async with connect(canary_url, subprotocols=SUB, ping_interval=None,  # type: ignore[list-item]
                       proxy=None) as canary:
        assert json.loads(await asyncio.wait_for(canary.recv(), 30))["event"] == "open"
        began = time.monotonic()
        await asyncio.gather(*(one(m) for m in modes))
        elapsed = time.monotonic() - began
        with open(log, "ab") as f:
            f.write(b"the canary still hears\n")
        assert await asyncio.wait_for(canary.recv(), 30) == b"the canary still hears\n"
    return {"cycles": cycles, "seconds": round(elapsed, 1),
            "per_mode": {m: modes.count(m) for m in range(4)}}


def _footprint(srv: Server) -> dict[str, Any]:
    s = stats(srv)
    # gunicorn's pool threads stay once created (up to --threads): count the others,
    # by name without their counters (watchdog's emitter threads are "Thread-N", and
    # a new observer has new ones)
    own = sorted(re.sub(r"-\d+$", "", n) for n in s["thread_names"]
                 if not n.startswith("ThreadPoolExecutor"))
    return {"threads": own, "fds": s["fds"], "inotify_instances": s["inotify_instances"],
            "inotify_watches": s["inotify_watches"], "live": s["live"],
            "subscribers": s["table"]["subscribers"]}


def _leftovers(s: dict[str, Any]) -> list[str]:
    """What is still there of connections that ended: live ones, subscribers, extension threads."""
    left = [n for n in s["thread_names"] if n.startswith("pine-ws-")]
    if s["live"]:
        left.append(f"{s['live']} live")
    if s["table"]["subscribers"]:
        left.append(f"{s['table']['subscribers']} subscribers")
    return left


@pytest.mark.slow
def test_5000_connect_and_drop_cycles_leave_nothing_behind(server: ServerFactory,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"a line\n")
    srv = start(server, {"app": log}, threads=64)
    pid = srv.worker_pids()[0]
    canary_url = f"{srv.ws_url}/logs/ws/app?lines=0"

    async def canary_only() -> dict[str, Any]:
        async with connect(canary_url, subprotocols=SUB, ping_interval=None,  # type: ignore[list-item]
                           proxy=None) as ws:
            await asyncio.wait_for(ws.recv(), 30)
            # "open" comes before the watcher joins its feed, which starts the
            # feed's thread: sample once it has.
            await asyncio.to_thread(wait_until, lambda: stats(srv)["feed_live"] == 1,
                                    message="the canary live on its feed")
            return await asyncio.to_thread(_footprint, srv)

    def footprint() -> dict[str, Any]:
        """The worker with one canary, sampled once the connections before it are all over.

        The last watcher of a file stops the watch table's thread without
        joining it (the thread closes its inotify descriptor as it ends,
        which costs the kernel a grace period), and a closing client's
        reader or the doorbell may still be ending too: a canary connecting
        meanwhile starts the table's next thread beside the old one, which a
        sample would count.
        """
        deadline = time.monotonic() + 30
        while left := _leftovers(stats(srv)):
            assert time.monotonic() < deadline, f"left with no client: {left}"
            time.sleep(0.05)
        return asyncio.run(canary_only())

    # warm-up: the pool's threads are created, the observer started once
    asyncio.run(_churn(srv.port, "/logs/ws/app?lines=0", 100, canary_url, log))
    before = footprint()
    assert before["live"] == 1
    assert (before["inotify_instances"], before["inotify_watches"]) == (1, 1), before
    figures = asyncio.run(_churn(srv.port, "/logs/ws/app?lines=0", 5000, canary_url, log))
    print(f"\nchurn: {figures}")
    assert figures["seconds"] < 200

    deadline = time.monotonic() + 30
    while (after := footprint()) != before:
        assert time.monotonic() < deadline, f"before {before}\nafter  {after}"
        time.sleep(0.5)
    assert srv.worker_pids() == [pid], "the worker was replaced"
    assert "Traceback" not in (server_log := srv.log()), server_log
