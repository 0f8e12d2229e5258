"""The asyncio floor: the least a WebSocket server can do to stream a file.

One process, one event loop, the ``websockets`` package, and a raw inotify
watch (ctypes) on the file's directory. On every event it reads the new bytes
once, from the last offset to the end, and pushes them to every client with
``websockets.broadcast`` (no per-client read, no flow control). It follows the
file by name as ``tail -F`` does: a truncated file is read again from 0, a
file renamed away is drained and the new one read from its start.

    python bench/floor_server.py FILE --port 8001 [--deflate]

``/logs?lines=N`` first sends the file's last N lines (as ``tail -n N``), in
the same step of the event loop that adds the client to the broadcast, so
that no line falls between the two. ``/flood?count=N&size=S`` sends N
messages of S bytes as fast as the client takes them: the benchmark measures
its own client with it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import struct
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve

IN_MODIFY, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_Q_OVERFLOW = 0x100, 0x200, 0x4000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
_EVENT = struct.Struct("iIII")
_libc = ctypes.CDLL(None, use_errno=True)


class Follower:
    """The followed file: one fd, one offset, every client."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path).encode()
        self.clients: set[ServerConnection] = set()
        self.fd = -1
        self.ident = (0, 0)
        self.offset = 0
        self._open(at_end=True)

    def _open(self, *, at_end: bool) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self.fd = -1
            return
        st = os.fstat(self.fd)
        self.ident = (st.st_dev, st.st_ino)
        self.offset = st.st_size if at_end else 0

    def _drain(self) -> None:
        if self.fd < 0:
            return
        if os.fstat(self.fd).st_size < self.offset:
            self.offset = 0  # truncated
        while data := os.pread(self.fd, 1 << 20, self.offset):
            self.offset += len(data)
            broadcast(self.clients, data)

    def last_lines(self, count: int) -> bytes:
        """The last ``count`` lines before the offset, read backwards (a 1 MiB window at most)."""
        if self.fd < 0 or count <= 0 or self.offset == 0:
            return b""
        size = 4096
        while True:
            start = max(0, self.offset - size)
            # the benchmark's lines: no "\r"; the window's first line may be cut
            parts = os.pread(self.fd, self.offset - start, start).splitlines(keepends=True)
            if start == 0 or len(parts) > count or size >= 1 << 20:
                return b"".join(parts[1 if start else 0:][-count:])
            size *= 4

    def changed(self) -> None:
        self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) != self.ident:  # rotated: the new file from 0
            if self.fd >= 0:
                os.close(self.fd)
            self._open(at_end=False)
            self._drain()


def watch(follower: Follower) -> int:
    fd: int = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    mask = IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    directory = os.path.dirname(os.path.abspath(follower.path)).encode()
    if fd < 0 or _libc.inotify_add_watch(fd, directory, mask) < 0:
        raise OSError(ctypes.get_errno(), "inotify refused")

    def on_events() -> None:
        try:
            buf = os.read(fd, 65536)
        except BlockingIOError:
            return
        hit, pos = False, 0
        while pos < len(buf):
            _wd, ev_mask, _cookie, length = _EVENT.unpack_from(buf, pos)
            name = buf[pos + 16:pos + 16 + length].rstrip(b"\0")
            hit = hit or name == follower.name or bool(ev_mask & IN_Q_OVERFLOW)
            pos += 16 + length
        if hit:
            follower.changed()

    asyncio.get_running_loop().add_reader(fd, on_events)
    return fd


async def flood(ws: ServerConnection, count: int, size: int) -> None:
    """``count`` binary messages of ``size`` bytes, framed once, written as fast as read.

    The frames are built here once and written straight to the transport, so
    that what is measured is the client's pace, not this server's framing.
    """
    if size < 126:
        header = struct.pack("!BB", 0x82, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x82, 126, size)
    else:
        header = struct.pack("!BBQ", 0x82, 127, size)
    frame = header + b"f" * size
    per_batch = max(1, (256 * 1024) // len(frame))
    transport = ws.transport
    sent = 0
    while sent < count:
        n = min(per_batch, count - sent)
        transport.write(frame * n)
        sent += n
        while transport.get_write_buffer_size() > 1 << 20:
            await asyncio.sleep(0.0005)
            if transport.is_closing():
                return
    await ws.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true")
    args = parser.parse_args()
    follower = Follower(args.path)
    watch(follower)

    async def handler(ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "/")
        if url.path == "/flood":
            query = parse_qs(url.query)
            await flood(ws, int(query["count"][0]), int(query["size"][0]))
            return
        backlog = int(parse_qs(url.query).get("lines", ["0"])[0])
        if backlog:
            # broadcast writes now, not at the next await: no append can slip in between
            broadcast({ws}, follower.last_lines(backlog))
        follower.clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            follower.clients.discard(ws)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, "127.0.0.1", args.port, ping_interval=None,
                     compression="deflate" if args.deflate else None, max_size=None,
                     backlog=4096):  # a thousand clients connecting at once
        await stop


if __name__ == "__main__":
    asyncio.run(main())
