"""The client: one asyncio process that speaks every target's protocol.

A *stream* is one client of one target: a WebSocket that carries bytes as
they come (the floor, flask-pine-ws), one message per line (websocketd), the
socket.io 2 / engine.io 3 protocol of frontail, or a ``tail -F`` pipe (the
no-network floor). Each turns what it receives into bytes of the file and
feeds them, with the time they arrived, to a *sink*: :class:`LineSink` for
the timed lines, :class:`BurstSink` to check the burst byte for byte.

Every client offers permessage-deflate, as a browser does; the server decides.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Protocol

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

CONNECT_TIMEOUT = 30.0

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)

#: The ``tail`` processes of :class:`TailStream` still running (stopped on exit).
CHILDREN: set[subprocess.Popen[bytes]] = set()


class Sink(Protocol):
    def feed(self, data: bytes, now_ns: int) -> None: ...


class LineSink:
    """Splits the stream into lines and keeps the timed ones."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.probed = False
        self.last_probe = 0
        #: latency lines: (seq, write ns, receive ns)
        self.latency: list[tuple[int, int, int]] = []
        #: markers: key -> (write ns, receive ns), the first arrival
        self.markers: dict[str, tuple[int, int]] = {}
        self.changed = asyncio.Event()

    def feed(self, data: bytes, now_ns: int) -> None:
        self._buf += data
        end = self._buf.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(self._buf[:end]).split(b"\n")
        del self._buf[:end + 1]
        for line in lines:
            tag = line[:2]
            if tag == b"L ":
                parts = line.split(b" ", 3)
                self.latency.append((int(parts[1]), int(parts[2]), now_ns))
            elif tag == b"M ":
                parts = line.split(b" ")
                self.markers.setdefault(parts[1].decode(), (int(parts[2]), now_ns))
            elif tag == b"P ":
                self.probed = True
                self.last_probe = int(line[2:])
        self.changed.set()


class RecordSink:
    """Keeps every line, in order, with the time it arrived: what exactly a client got.

    For the cases that check each client's lines one by one (the backlog of
    the last lines on connect, every line to thousands of watchers). Probe
    lines are recognised as :class:`LineSink` does, for ``warm_up``.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.lines: list[bytes] = []
        self.times: list[int] = []
        self.probed = False
        self.last_probe = 0

    def feed(self, data: bytes, now_ns: int) -> None:
        self._buf += data
        end = self._buf.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(self._buf[:end]).split(b"\n")
        del self._buf[:end + 1]
        self.lines += lines
        self.times += [now_ns] * len(lines)
        for line in lines:
            if line[:2] == b"P ":
                self.probed = True
                self.last_probe = int(line[2:])


class BurstSink:
    """Compares the burst with what was written, byte for byte, in order."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0
        self.in_order = True
        self.first_bad: int | None = None
        self.last_ns = 0
        self.done = asyncio.Event()
        self._started = False
        self._head = bytearray()
        self.probed = False
        self.last_probe = 0

    def feed(self, data: bytes, now_ns: int) -> None:
        if not self._started:
            # Skip the probe lines that precede the burst in the file.
            self._head += data
            while self._head[:1] == b"P":
                end = self._head.find(b"\n")
                if end < 0:
                    return
                self.probed = True
                self.last_probe = int(self._head[2:end])
                del self._head[:end + 1]
            if not self._head:
                return
            self._started = True
            data = bytes(self._head)
            self._head.clear()
        end = self.pos + len(data)
        if self.in_order and self.blob[self.pos:end] != data:
            self.in_order = False
            self.first_bad = self.pos
        self.pos = end
        self.last_ns = now_ns
        if self.pos >= len(self.blob):
            self.done.set()


class Stream:
    """One client: ``open`` it with a sink, ``close`` it when done."""

    sink: Sink
    closed = False

    async def open(self, sink: Sink) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection now, without a closing handshake: the teardown of thousands."""
        raise NotImplementedError


class Wire(asyncio.Protocol):
    """One WebSocket client on websockets' sans-I/O protocol: a callback per message.

    No task, no queue, no future per message: ``data_received`` parses the
    frames and hands each whole message to ``on_message`` with the time it
    arrived. Twice the messages a second of ``websockets.asyncio.client``, so
    that the client is not what limits a per-line peer.
    """

    def __init__(self, url: str, on_message: Callable[[bytes, int], None]) -> None:
        self.proto = ClientProtocol(parse_uri(url), max_size=None,
                                    extensions=enable_client_permessage_deflate(None))
        self.on_message = on_message
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._parts: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proto.send_request(self.proto.connect())
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.proto.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Frame):
                if event.opcode in _DATA:
                    self._message(event, now)
            elif not self.opened.done():
                if self.proto.handshake_exc is not None:
                    self.opened.set_exception(self.proto.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()

    def _message(self, frame: Frame, now: int) -> None:
        data = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
        if frame.fin and not self._parts:
            self.on_message(data, now)
            return
        self._parts.append(data)
        if frame.fin:
            whole = b"".join(self._parts)
            self._parts.clear()
            self.on_message(whole, now)

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)

    def send_text(self, data: bytes) -> None:
        if self.proto.state is State.OPEN:
            self.proto.send_text(data)
            self._flush()

    async def close(self) -> None:
        if self.transport is None:
            return
        if self.proto.state is State.OPEN:
            self.proto.send_close(1000)
            self._flush()
            try:
                await asyncio.wait_for(asyncio.shield(self.lost), 2)
            except TimeoutError:
                pass
        self.transport.close()


async def open_wire(url: str, on_message: Callable[[bytes, int], None]) -> Wire:
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    _, wire = await asyncio.wait_for(loop.create_connection(
        lambda: Wire(url, on_message), uri.host, uri.port), CONNECT_TIMEOUT)
    try:
        await asyncio.wait_for(asyncio.shield(wire.opened), CONNECT_TIMEOUT)
    except BaseException:
        await wire.close()
        raise
    return wire


class WsStream(Stream):
    """A WebSocket whose messages are the file's bytes, or its lines (``lines=True``)."""

    def __init__(self, url: str, *, lines: bool = False) -> None:
        self.url = url
        self.lines = lines
        self._wire: Wire | None = None

    async def open(self, sink: Sink) -> None:
        self.sink = sink
        feed = sink.feed
        on_message: Callable[[bytes, int], None]
        if self.lines:
            def on_message(data: bytes, now: int) -> None:
                feed(data + b"\n", now)
        else:
            on_message = feed
        self._wire = await open_wire(self.url, on_message)

    async def close(self) -> None:
        if self._wire is not None:
            await self._wire.close()
        self.closed = True

    def abort(self) -> None:
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.abort()
        self.closed = True


class SocketIOStream(Stream):
    """frontail's protocol: socket.io 2 over engine.io 3, the WebSocket transport.

    The server opens with ``0{...}`` (engine.io open, with ``pingInterval``)
    and ``40`` (the default namespace); the client joins frontail's namespace
    with ``40/<ns>,`` and receives each line as ``42/<ns>,["line","..."]``. An
    engine.io 3 client must ping (``2``) within ``pingInterval + pingTimeout``
    or the server drops it.
    """

    def __init__(self, port: int, namespace: str) -> None:
        self.url = f"ws://127.0.0.1:{port}/socket.io/?EIO=3&transport=websocket"
        self.namespace = namespace
        self._wire: Wire | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._hello: asyncio.Future[bytes] | None = None
        self._joined = asyncio.Event()

    async def open(self, sink: Sink) -> None:
        self.sink = sink
        self._hello = asyncio.get_running_loop().create_future()
        prefix = f'42/{self.namespace},["line",'.encode()
        joined = f"40/{self.namespace}".encode()
        cut = len(prefix)
        feed = sink.feed

        def on_message(msg: bytes, now: int) -> None:
            if msg.startswith(prefix):
                line: str = json.loads(msg[cut:-1])
                feed(line.encode() + b"\n", now)
            elif msg.startswith(b"0") and self._hello and not self._hello.done():
                self._hello.set_result(msg)
            elif msg.startswith(joined):
                self._joined.set()

        self._wire = await open_wire(self.url, on_message)
        hello = await asyncio.wait_for(self._hello, CONNECT_TIMEOUT)
        interval = json.loads(hello[1:]).get("pingInterval", 25000) / 1000
        self._wire.send_text(f"40/{self.namespace},".encode())
        await asyncio.wait_for(self._joined.wait(), CONNECT_TIMEOUT)
        self._pinger = asyncio.create_task(self._ping(self._wire, interval * 0.8))

    async def _ping(self, wire: Wire, every: float) -> None:
        while not wire.lost.done():
            await asyncio.sleep(every)
            wire.send_text(b"2")

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            await asyncio.gather(self._pinger, return_exceptions=True)
        if self._wire is not None:
            await self._wire.close()
        self.closed = True

    def abort(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.abort()
        self.closed = True


class TailStream(Stream):
    """The floor without a network: ``tail -n0 -F FILE`` (or ``-n<lines>``) into a pipe."""

    def __init__(self, path: str, lines: int = 0) -> None:
        self.path = path
        self.lines = lines
        self.proc: subprocess.Popen[bytes] | None = None

    async def open(self, sink: Sink) -> None:
        self.sink = sink
        self.proc = subprocess.Popen(["tail", f"-n{self.lines}", "-F", self.path],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        CHILDREN.add(self.proc)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._on_readable, fd)

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(fd)
            self.closed = True
            return
        self.sink.feed(data, time.monotonic_ns())

    async def close(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdout is not None
        if not self.closed:
            asyncio.get_running_loop().remove_reader(self.proc.stdout.fileno())
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()
        CHILDREN.discard(self.proc)
        self.closed = True

    def abort(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdout is not None
        if not self.closed:
            asyncio.get_running_loop().remove_reader(self.proc.stdout.fileno())
        self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        CHILDREN.discard(self.proc)
        self.closed = True
