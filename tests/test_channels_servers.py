"""Channels as clients see them: real gunicorn workers, a real redis-server, real sockets.

- two workers and a second gunicorn (a second host) share one Redis; members
  spread over all three processes get every message of a publisher running in
  a process of its own, once each, in order; str, bytes and JSON arrive as
  text, binary and JSON text;
- Redis restarts mid-stream: publishing fails at once meanwhile, and messages
  flow again after, never twice nor out of order;
- 1,000 members over two workers;
- a member that never reads is closed with 1013 while the others get
  everything, and the worker's memory stays bounded;
- members leaving and joining while a publisher runs at full speed;
- the embedded default under Werkzeug's server;
- publishing with Redis down answers at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, redis_server  # noqa: F401 - the fixture
from websockets.asyncio.client import ClientConnection, connect

from conftest import ServerFactory
from helpers import connect as connect_sync
from helpers import http_get, raised_fd_limit
from server import ROOT, Server

pytestmark = pytest.mark.integration

PUBLISHER = Path(__file__).parent / "publisher.py"


@pytest.fixture(autouse=True)
def many_files() -> Iterator[None]:
    with raised_fd_limit():
        yield


def post(url: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    status, _, body = http_get(url, method="POST", timeout=timeout)
    return status, json.loads(body)


def stats(srv: Server) -> dict[str, Any]:
    status, _, body = http_get(srv.url + "/stats", timeout=30)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def env_for(redis: RedisServer | None, **extra: Any) -> dict[str, str]:
    env = {k: json.dumps(v) for k, v in extra.items()}
    if redis is not None:
        env["PINE_WS_MESSAGE_QUEUE"] = json.dumps(redis.url)
    return env


async def open_member(url: str, gate: asyncio.Semaphore) -> tuple[ClientConnection, int]:
    async with gate:
        ws = await connect(url, open_timeout=60, close_timeout=10, ping_interval=None,
                           proxy=None, compression=None, max_size=None)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 60))
        return ws, int(hello["joined"])


async def read_prefix(ws: ClientConnection, prefix: str, count: int,
                      timeout: float = 60) -> list[int]:
    """Indexes of the next ``count`` messages ``<prefix>:<i>...`` (others are skipped)."""
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        msg = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
        text = msg.decode() if isinstance(msg, bytes) else msg
        head, _, rest = text.partition(":")
        if head == prefix:
            got.append(int(rest.split(":")[0]))
    return got


async def quiet(ws: ClientConnection, wait: float = 0.5) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), wait)
    except TimeoutError:
        return True
    return False


def run_publisher(redis: RedisServer, room: str, count: int, delay: float = 0.0,
                  prefix: str = "p") -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(PUBLISHER), redis.url, room, str(count),
                             str(delay), prefix], env=env, stdout=subprocess.PIPE, text=True)


def publisher_lines(proc: subprocess.Popen[str], timeout: float = 120) -> list[str]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0
    return out.split("\n")[:-1]


def test_workers_and_hosts_get_every_message_once_in_order(
        server: ServerFactory, redis_server: RedisServer) -> None:  # noqa: F811
    env = env_for(redis_server)
    host_a = server("channels_app:app", env=env, workers=2, threads=64)
    host_b = server("channels_app:app", env=env, workers=1, threads=64)
    count = 300

    async def scenario() -> None:
        gate = asyncio.Semaphore(16)
        members = await asyncio.gather(
            *(open_member(f"{srv.ws_url}/member/room-1", gate)
              for srv in [host_a] * 16 + [host_b] * 8))
        workers_a = set(host_a.worker_pids())
        # both workers of host A must hold members: connect more until they do
        for _ in range(40):
            if workers_a <= {pid for _, pid in members}:
                break
            members.append(await open_member(f"{host_a.ws_url}/member/room-1", gate))
        pids = {pid for _, pid in members}
        assert workers_a <= pids and set(host_b.worker_pids()) <= pids, (pids, workers_a)
        proc = run_publisher(redis_server, "room-1", count)
        lines = await asyncio.to_thread(publisher_lines, proc)
        assert lines == [f"ok {i}" for i in range(count)]
        for ws, _ in members:
            assert await read_prefix(ws, "p", count) == list(range(count))
        for ws, _ in members:
            assert await quiet(ws, 0.2), "a message arrived twice"
        # str -> text, bytes -> binary, anything else -> JSON text
        for kind in ("text", "bytes", "json"):
            status, body = await asyncio.to_thread(
                post, f"{host_b.url}/publish/room-1?kind={kind}&prefix={kind}")
            assert status == 200, body
        for ws, _ in members:
            got = [await asyncio.wait_for(ws.recv(), 30) for _ in range(3)]
            assert got == ["text:0:", b"bytes:0:", '{"prefix":"json","i":0}']
        for ws, _ in members:
            await ws.close()

    asyncio.run(scenario())
    for srv in (host_a, host_b):
        assert "Traceback" not in srv.log(), srv.log()


def test_redis_restart_mid_stream(server: ServerFactory, redis_server: RedisServer) -> None:  # noqa: F811
    srv = server("channels_app:app", env=env_for(redis_server), workers=2, threads=32)

    async def scenario() -> None:
        gate = asyncio.Semaphore(8)
        members = [ws for ws, _ in await asyncio.gather(
            *(open_member(f"{srv.ws_url}/member/live", gate) for _ in range(8)))]
        proc = run_publisher(redis_server, "live", 700, delay=0.01)
        received: list[list[int]] = [[] for _ in members]

        async def read_all(n: int) -> None:
            try:
                while True:
                    msg = await asyncio.wait_for(members[n].recv(), 8)
                    assert isinstance(msg, str)
                    received[n].append(int(msg.split(":")[1]))
            except TimeoutError:
                pass

        readers = [asyncio.create_task(read_all(n)) for n in range(len(members))]
        while min(len(r) for r in received) < 50:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(redis_server.kill)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(redis_server.start)
        lines = await asyncio.to_thread(publisher_lines, proc)
        await asyncio.gather(*readers)
        ok = [int(line.split()[1]) for line in lines if line.startswith("ok ")]
        failed = [line.split() for line in lines if line.startswith("err ")]
        assert failed, "publishing while Redis was down did not fail"
        assert all(float(seconds) < 3 for _, _, seconds in failed), failed
        assert ok[-1] == 699
        tail = ok[-100:]  # published well after Redis came back
        for got in received:
            assert got == sorted(set(got)), "a message twice or out of order"
            assert set(got) <= set(ok)
            assert set(tail) <= set(got), "messages did not flow again after the restart"
        for ws in members:
            await ws.close()

    asyncio.run(scenario())
    assert "Traceback" not in srv.log(), srv.log()
    assert "Redis subscriber reconnected" in srv.log()


def test_1000_members_over_two_workers(server: ServerFactory,
                                       redis_server: RedisServer) -> None:  # noqa: F811
    srv = server("channels_app:app", env=env_for(redis_server), workers=2, threads=700,
                 extra=["--worker-connections", "1400", "--backlog", "2048"])

    async def scenario() -> None:
        gate = asyncio.Semaphore(64)
        members = await asyncio.gather(
            *(open_member(f"{srv.ws_url}/member/big", gate) for _ in range(1000)))
        assert len({pid for _, pid in members}) == 2
        status, body = await asyncio.to_thread(post, f"{srv.url}/publish/big?count=5")
        assert status == 200, body
        results = await asyncio.gather(*(read_prefix(ws, "m", 5, timeout=120)
                                         for ws, _ in members))
        assert all(r == [0, 1, 2, 3, 4] for r in results)
        await asyncio.gather(*(ws.close() for ws, _ in members))

    asyncio.run(scenario())
    assert "Traceback" not in srv.log(), srv.log()


def test_a_member_that_never_reads_is_closed_1013(server: ServerFactory) -> None:
    limit = 256 * 1024
    srv = server("channels_app:app", env=env_for(None, PINE_WS_CHANNEL_QUEUE=limit),
                 threads=16)
    stuck_sock = socket.socket()
    stuck_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck_sock.connect(("127.0.0.1", srv.port))
    stuck = connect_sync(f"{srv.ws_url}/member/slow", sock=stuck_sock, compression=None,
                         max_size=None)
    assert "joined" in json.loads(stuck.recv(timeout=30))
    size, batch, batches = 16 * 1024, 12, 250  # 48 MB through the channel

    async def scenario() -> None:
        gate = asyncio.Semaphore(4)
        fast = [ws for ws, _ in await asyncio.gather(
            *(open_member(f"{srv.ws_url}/member/slow", gate) for _ in range(3)))]
        rss_before = stats(srv)["rss_kib"]
        for b in range(batches):  # paced: readers keep up, the stuck one cannot
            status, body = await asyncio.to_thread(
                post, f"{srv.url}/publish/slow?count={batch}&size={size}&prefix=b{b}")
            assert status == 200, body
            for ws in fast:
                assert await read_prefix(ws, f"b{b}", batch) == list(range(batch))
        after = stats(srv)
        assert after["members"] == {"slow": 3}, after
        grown_mib = (after["rss_kib"] - rss_before) / 1024
        assert grown_mib < 24, f"the worker grew by {grown_mib:.0f} MiB"
        for ws in fast:
            await ws.close()

    try:
        asyncio.run(scenario())
        # the stuck client reads at last: what fitted, then the 1013
        deadline = time.monotonic() + 60
        code = None
        while time.monotonic() < deadline:
            try:
                stuck.recv(timeout=30)
            except Exception:  # noqa: BLE001 - websockets' ConnectionClosed
                code = stuck.close_code
                break
        assert code == 1013 and "too slow" in (stuck.close_reason or "")
    finally:
        stuck.close()
    assert "Traceback" not in srv.log(), srv.log()


def test_join_and_leave_while_a_publisher_runs_at_full_speed(server: ServerFactory) -> None:
    srv = server("channels_app:app", threads=32)
    stop = threading.Event()

    def publish_loop() -> None:
        b = 0
        while not stop.is_set():
            status, body = post(f"{srv.url}/publish/race?count=200&prefix=r{b}")
            assert status == 200, body
            b += 1

    async def churn(ws: ClientConnection, rounds: int) -> dict[str, list[int]]:
        seen: dict[str, list[int]] = {}

        async def until(key: str) -> None:
            while True:
                msg = await asyncio.wait_for(ws.recv(), 30)
                assert isinstance(msg, str)
                if msg.startswith("{"):
                    if key in json.loads(msg):
                        return
                    continue
                prefix, index = msg.split(":")[:2]
                seen.setdefault(prefix, []).append(int(index))

        for _ in range(rounds):
            await ws.send("leave")
            await until("left")
            await ws.send("join")
            await until("joined")
        return seen

    async def scenario() -> None:
        gate = asyncio.Semaphore(8)
        members = [ws for ws, _ in await asyncio.gather(
            *(open_member(f"{srv.ws_url}/member/race", gate) for _ in range(12)))]
        publisher = threading.Thread(target=publish_loop)
        publisher.start()
        try:
            results = await asyncio.gather(*(churn(ws, 25) for ws in members))
        finally:
            stop.set()
            await asyncio.to_thread(publisher.join, 60)
        for seen in results:
            for prefix, indexes in seen.items():
                assert indexes == sorted(set(indexes)), f"{prefix}: twice or out of order"
        # joined again: every later message arrives
        status, body = await asyncio.to_thread(post, f"{srv.url}/publish/race?count=50&prefix=f")
        assert status == 200, body
        for ws in members:
            assert await read_prefix(ws, "f", 50) == list(range(50))
        for ws in members:
            await ws.close()

    asyncio.run(scenario())
    assert "Traceback" not in srv.log(), srv.log()


def test_embedded_default_under_werkzeug(server: ServerFactory) -> None:
    srv = server("channels_app:app", kind="werkzeug")

    async def scenario() -> None:
        gate = asyncio.Semaphore(4)
        members = [ws for ws, _ in await asyncio.gather(
            *(open_member(f"{srv.ws_url}/member/w", gate) for _ in range(4)))]
        await members[0].send("say w:0:from a member")
        assert [await read_prefix(ws, "w", 1) for ws in members] == [[0]] * 4
        status, body = await asyncio.to_thread(post, f"{srv.url}/publish/w?count=100")
        assert status == 200, body
        for ws in members:
            assert await read_prefix(ws, "m", 100) == list(range(100))
        await members[0].close()
        deadline = time.monotonic() + 15
        while stats(srv)["members"].get("w") != 3:
            assert time.monotonic() < deadline, "a closed connection stayed a member"
            await asyncio.sleep(0.1)
        for ws in members[1:]:
            await ws.close()

    asyncio.run(scenario())
    assert "Traceback" not in srv.log(), srv.log()


def test_publish_with_redis_down_answers_at_once(server: ServerFactory,
                                                 redis_server: RedisServer) -> None:  # noqa: F811
    srv = server("channels_app:app", env=env_for(redis_server), threads=8)
    status, body = post(f"{srv.url}/publish/x?count=3")
    assert status == 200, body
    redis_server.kill()
    for _ in range(3):
        started = time.monotonic()
        status, body = post(f"{srv.url}/publish/x?count=1", timeout=30)
        assert status == 503, body
        assert "unreachable" in body["error"]
        assert time.monotonic() - started < 3
    redis_server.start()
    status, body = post(f"{srv.url}/publish/x?count=1")
    assert status == 200, body
