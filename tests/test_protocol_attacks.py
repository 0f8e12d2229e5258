"""Attacks on the protocol path, against a real gunicorn: what one client could take from all.

- Flooding messages at handlers that never read (a busy handler, a
  ``watch_file`` route): the worker's memory stays bounded and others are
  served (the queue stops the reading; ``watch_file`` drops what it gets).
- SIGTERM with 40 clients that never read, their handlers stuck in ``send``:
  every healthy client still gets 1001 at once.
- Many deflate bombs at once: each gets 1009, and the worker's memory peaks
  low and goes back down.

Figures (resident size, seconds to 1001) are printed: run with ``-s``.
"""

from __future__ import annotations

import select
import signal
import socket
import struct
import threading
import time
import zlib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import wsraw
from helpers import connect

pytestmark = pytest.mark.integration

APP = "hardening_app:app"
MIB = 1 << 20


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def client_frame(payload: bytes, *, opcode: int = 0x2, rsv1: bool = False) -> bytes:
    """A client frame masked with the zero key (legal, and the payload stays as is)."""
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def echo_works(srv: Any) -> bool:
    with connect(srv.ws_url + "/echo") as ws:
        ws.send("still here")
        return bool(ws.recv(timeout=20) == "still here")


def read_close(sock: socket.socket, rest: bytes = b"", timeout: float = 30) -> int | None:
    """Read until the server's close frame; its code (None: the socket ended without one)."""
    sock.settimeout(timeout)
    data = rest
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames, _ = wsraw.parse_frames(data)
        for opcode, payload in frames:
            if opcode == wsraw.OP_CLOSE:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
        try:
            chunk = sock.recv(1 << 16)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        data += chunk
    return None


def test_flooding_handlers_that_never_read_keeps_the_worker_small(server, tmp_path) -> None:
    log = tmp_path / "app.log"
    log.write_text("line\n" * 100)
    srv = server(APP)
    assert echo_works(srv)
    (pid,) = srv.worker_pids()
    baseline = rss_kib(pid)
    message = client_frame(b"\0" * 16384)
    budget = {"/idle": 64 * MIB, "/watch": 64 * MIB}
    with ExitStack() as stack:
        flooders: dict[socket.socket, list[Any]] = {}
        for route in ("/idle", "/idle", "/idle", "/watch", "/watch", "/watch"):
            path = route if route == "/idle" else f"/watch?path={log}"
            shake = wsraw.handshake(srv.port, path)
            assert shake.status == 101
            stack.callback(shake.sock.close)
            shake.sock.setblocking(False)
            flooders[shake.sock] = [route, 0, time.monotonic()]  # route, sent, last progress
        peak = baseline
        deadline = time.monotonic() + 90
        next_sample = 0.0

        def done(route: str, sent: int, progressed: float) -> bool:
            # a flooder is done once its budget is out, or when the server
            # has taken nothing from it for 3 s (TCP pushed back)
            return sent >= budget[route] or time.monotonic() - progressed > 3.0

        while time.monotonic() < deadline:
            active = [s for s, state in flooders.items() if not done(*state)]
            if not active:
                break
            _, writable, _ = select.select([], active, [], 0.2)
            for sock in writable:
                try:
                    flooders[sock][1] += sock.send(message)
                    flooders[sock][2] = time.monotonic()
                except BlockingIOError:
                    pass
            if time.monotonic() >= next_sample:
                peak = max(peak, rss_kib(pid))
                next_sample = time.monotonic() + 0.1
        peak = max(peak, rss_kib(pid))
        sent_by = {route: [] for route in budget}  # type: dict[str, list[int]]
        for route, sent, _ in flooders.values():
            sent_by[route].append(sent)
        assert echo_works(srv)  # bystanders are served, during the flood too
        print(f"\nflood: worker RSS {baseline // 1024} MiB before, peak {peak // 1024} MiB; "
              f"MiB taken from /idle flooders {[s // MIB for s in sent_by['/idle']]}, "
              f"from /watch flooders {[s // MIB for s in sent_by['/watch']]}")
        # the watchers' messages were read and dropped, all of them
        assert all(sent >= 64 * MIB for sent in sent_by["/watch"])
        # the idle handlers' queues stopped the reading: TCP pushed back
        assert all(sent < 32 * MIB for sent in sent_by["/idle"])
        assert peak - baseline < 64 * 1024, f"RSS grew by {(peak - baseline) // 1024} MiB"


def test_sigterm_gives_healthy_clients_1001_at_once_beside_40_stalled_ones(server) -> None:
    srv = server(APP, threads=64)
    with ExitStack() as stack:
        for _ in range(40):
            shake = wsraw.handshake(srv.port, "/push", rcvbuf=4096)
            assert shake.status == 101
            stack.callback(shake.sock.close)
        healthy = []
        for _ in range(5):
            ws = stack.enter_context(connect(srv.ws_url + "/wait"))
            assert ws.recv(timeout=10) == "ready"
            healthy.append(ws)
        time.sleep(2)  # every /push handler now blocks in send, holding its send lock
        codes: list[int | None] = [None] * len(healthy)
        took: list[float] = [0.0] * len(healthy)
        started = time.monotonic()

        def await_close(i: int) -> None:
            try:
                while True:
                    healthy[i].recv(timeout=30)
            except Exception as exc:  # noqa: BLE001 - the close is what we wait for
                rcvd = getattr(exc, "rcvd", None)
                codes[i] = rcvd.code if rcvd is not None else None
                took[i] = time.monotonic() - started

        waiters = [threading.Thread(target=await_close, args=(i,)) for i in range(len(healthy))]
        for t in waiters:
            t.start()
        srv.signal(signal.SIGTERM)
        for t in waiters:
            t.join(40)
        srv.proc.wait(30)
        exited = time.monotonic() - started
        print(f"\nSIGTERM beside 40 stalled clients: healthy clients got 1001 after "
              f"{[round(t, 3) for t in took]} s; the server exited after {exited:.2f} s")
        assert codes == [1001] * len(healthy)
        assert max(took) < 5.0  # measured well under 1 s; generous for a loaded machine
        assert exited < 15.0  # well before the 20 s graceful timeout


def _bomb() -> bytes:
    """A compressed message of 256 MiB of zeros, in 256 kB (blocks that inflate on their own)."""
    compress = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compress.compress(bytes(MIB)) + compress.flush(zlib.Z_FULL_FLUSH)
    return (block * 256)[:-4]


def test_deflate_bombs_at_once_get_1009_and_memory_goes_back(server) -> None:
    srv = server(APP, threads=128)
    assert echo_works(srv)
    (pid,) = srv.worker_pids()
    baseline = rss_kib(pid)
    frame = client_frame(_bomb(), rsv1=True)
    peak = baseline
    waves, per_wave = 4, 90
    for _ in range(waves):
        with ExitStack() as stack:
            socks = []
            for _ in range(per_wave):
                shake = wsraw.handshake(srv.port, "/echo",
                                        {"Sec-WebSocket-Extensions": "permessage-deflate"})
                assert shake.status == 101
                assert "permessage-deflate" in shake.headers.get("sec-websocket-extensions", "")
                stack.callback(shake.sock.close)
                socks.append((shake.sock, shake.rest))
            stop = threading.Event()

            def sample(stop: threading.Event = stop) -> None:
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, rss_kib(pid))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                senders = [threading.Thread(target=_send_quietly, args=(s, frame))
                           for s, _ in socks]
                for t in senders:
                    t.start()
                codes = [read_close(s, rest) for s, rest in socks]
                for t in senders:
                    t.join(30)
            finally:
                stop.set()
                sampler.join()
            assert codes == [1009] * per_wave
    assert echo_works(srv)
    time.sleep(1)
    after = rss_kib(pid)
    print(f"\n{waves} waves of {per_wave} deflate bombs (256 MiB each inflated): worker RSS "
          f"{baseline // 1024} MiB before, peak {peak // 1024} MiB, {after // 1024} MiB after")
    assert peak - baseline < 160 * 1024, f"RSS peaked {(peak - baseline) // 1024} MiB up"
    assert after - baseline < 64 * 1024, f"RSS stayed {(after - baseline) // 1024} MiB up"


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass  # the server closed after its 1009: the rest of the bomb is not wanted
