"""The WebSocket protocol of one connection, driven from wsproto directly.

This module is the only one that imports wsproto; it owns everything between
the socket and :class:`~.conn.Conn`: the handshake answer, the reader thread
(and the doorbell that starts it), the inbound queue, pings and pongs,
closing, and the one send path.

Why wsproto directly, not simple-websocket: every part of simple-websocket
this project used had to be repaired from outside (see ``docs/internals.md``):
its writes are neither serialised nor whole, its reader thread queues without
bound and cannot stop reading, its ping deadline is the ping interval, it
inflates a compressed message whole before its size check, it records none of
the close frames it sends on its own, and after a disconnect it raises three
kinds of errors. What was left of it was twenty lines of handshake. Owning the
reader loop here is what makes the bounds possible at all; the wsproto
behaviours relied on are pinned by ``tests/test_protocol_contract.py``.

The send path: one lock, under which wsproto builds a frame (its compressor
must see messages in wire order) and the socket takes every byte of it.
Data messages, pings, pongs, close frames and the feed's ready-made
frames all go through it, so frames never interleave. A write that makes no
progress for ``send_timeout`` seconds cuts the socket: a peer that stops
reading cannot pin a thread for ever. :meth:`Protocol.try_send_frame` writes
without ever waiting (the feed); a frame it could write only in part is
committed, and its rest is written first by the next write.

Compression: under permessage-deflate each data message is compressed only
when that gets it to the peer sooner (zlib's measured rate against the
link's, from the kernel's ``TCP_INFO``: a 10 Mbit/s link compresses
everything, loopback nothing; the rule and its figures are in
:mod:`.compression`). Either way the frame is built here, not by wsproto: a
plain one (RSV1 clear, allowed per message by RFC 7692) never touches the
compressor, whose context the peer's inflater mirrors; a compressed one goes
through :meth:`BoundedDeflate.compress` at zlib level 1.

The inbound side: a connection's reader thread starts once its client first
sends something or its first ping is due; until then its socket waits in
:class:`_Doorbell`, one epoll thread per process (a crowd of watchers whose
clients send nothing starts no thread each). The reader thread parses what
arrives and queues whole messages for :meth:`Protocol.receive`. When the queue holds
``max_queued_messages`` messages or ``max_queued_bytes`` bytes, the thread
stops reading the socket until the handler takes some: TCP then pushes back
on the client, and no memory grows (it still sends pings meanwhile, so
proxies keep the connection). :meth:`Protocol.discard_inbound` drops data
messages as they arrive instead, for handlers that never read (a watched
file). A compressed message is inflated no further than
``max_message_size``: a deflate bomb costs at most that much before 1009.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import select
import socket
import ssl
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from weakref import ReferenceType, ref

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import LocalProtocolError, generate_accept_token

from . import compression, memory, tcpinfo
from .compression import Choice, Chooser
from .errors import ConnectionClosed

#: What a data frame carries: text (opcode 1) or bytes (opcode 2).
PayloadKind = Literal["text", "bytes"]

_OPCODES: dict[PayloadKind, int] = {"text": 0x1, "bytes": 0x2}


def server_frame(kind: PayloadKind, payload: bytes, *, compressed: bool = False) -> bytes:
    """One whole, unmasked data frame as a server sends it (RFC 6455 5.2).

    FIN set, RSV bits clear (not compressed: valid under permessage-deflate
    too, which is negotiated per message), opcode text or binary, and the
    payload length in 7 bits, 16 bits (126) or 64 bits (127). Built once and
    written as it is to many connections (:meth:`Protocol.try_send_frame`)
    by the feed and the channels. ``compressed``: RSV1 set, the
    payload is one connection's deflate output (:meth:`BoundedDeflate.compress`).
    """
    first = 0x80 | (0x40 if compressed else 0) | _OPCODES[kind]
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


#: The server a connection runs on, named after the WSGI environ key of its socket.
Mode = Literal["gunicorn", "werkzeug"]

#: Flags of a write that must not wait (0 where there is none: such sockets never try).
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)

_OPEN = ConnectionState.OPEN

#: What the socket or wsproto raise once the peer is gone or the state moved on.
_GONE = (OSError, LocalProtocolError)

#: A message larger than this, once dropped, is worth giving its memory back for.
_BIG_MESSAGE = 256 * 1024

#: Seconds one reading of ``TCP_INFO`` stands for the link: a ``getsockopt``
#: per 64 KiB message would cost a few percent of loopback's rate, and a link's
#: rate does not change in 20 ms.
_TCP_INFO_TTL = 0.02

TOO_BIG_REASON = "Message is too big"
PING_TIMEOUT_REASON = "Ping/Pong timeout"


class NoThreadLeft(RuntimeError):
    """A thread the connection needs could not start: refuse the upgrade (503), retry later."""


class _Doorbell:
    """One thread per process that watches the sockets of connections with no reader yet.

    A connection's reader thread starts only once its client sends
    something (a message, a pong, its close, or its end), or once a ping is
    due. Until then the socket is in this thread's epoll set: a thousand
    clients connecting at once to watch a file, who send nothing, cost a
    thousand ``epoll_ctl`` calls instead of a thousand threads started and
    handing the GIL to each other (about a fifth of the worker's CPU in that
    crowd). A watcher whose client never speaks never has a reader thread
    (with pings off), which also halves the threads of idle watchers.

    The thread runs only while some socket waits, as the feeds' thread does;
    its epoll and eventfd are closed with it. Not for TLS sockets, whose
    library may hold decrypted bytes the socket no longer shows.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, Protocol] = {}
        #: (due, tie-break, fd, connection): pings due for connections still waiting.
        self._timers: list[tuple[float, int, int, ReferenceType[Protocol]]] = []
        self._order = itertools.count()
        self._epoll: select.epoll | None = None
        self._eventfd = -1
        self._sleeping_until = 0.0  # when the thread's current poll ends (a hint)
        self._pid = os.getpid()

    def watch(self, protocol: Protocol, fd: int, ping_due: float | None) -> None:
        """Wait for ``fd`` to be readable (or ``ping_due``), then start ``protocol``'s reader.

        :raises NoThreadLeft: the thread could not start (nothing is watched).
        """
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's thread is not ours
                self._pid, self._epoll, self._waiting, self._timers = os.getpid(), None, {}, []
            if self._epoll is None:
                self._start()
            epoll = self._epoll
            assert epoll is not None
            # Waiting from now: the thread does not end (and close the
            # epoll) while a socket waits.
            self._waiting[fd] = protocol
        # Registered outside the lock: epoll_ctl lets the GIL go, and a lock
        # held across it queued every connection of a crowd behind the one
        # waiting for the GIL back.
        try:
            epoll.register(fd, select.EPOLLIN)
        except BaseException:
            self.forget(protocol, fd)
            raise
        if ping_due is not None:
            with self._lock:
                heapq.heappush(self._timers, (ping_due, next(self._order), fd, ref(protocol)))
                if ping_due < self._sleeping_until:
                    os.eventfd_write(self._eventfd, 1)  # wake it: an earlier ping

    def waiting(self) -> int:
        """How many sockets wait for their reader now."""
        with self._lock:
            return len(self._waiting) if self._pid == os.getpid() else 0

    def forget(self, protocol: Protocol, fd: int) -> bool:
        """Stop watching ``fd`` for ``protocol`` (its handshake failed, or it ends unread).

        ``True``: it was waiting, and its reader will never be started;
        ``False``: it was not (its reader is started, or being started).
        """
        with self._lock:
            if self._waiting.get(fd) is not protocol:
                return False
            del self._waiting[fd]
            assert self._epoll is not None
            _unregister(self._epoll, fd)
            if not self._waiting:
                os.eventfd_write(self._eventfd, 1)  # its thread ends now
            return True

    def _start(self) -> None:
        """Lock held: a new epoll and eventfd, and the thread that polls them."""
        epoll = select.epoll()
        eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        epoll.register(eventfd, select.EPOLLIN)
        try:
            threading.Thread(target=self._run, args=(epoll, eventfd), name="pine-ws-doorbell",
                             daemon=True).start()
        except RuntimeError as exc:  # "can't start new thread"
            epoll.close()
            os.close(eventfd)
            raise NoThreadLeft(str(exc)) from None
        self._epoll, self._eventfd = epoll, eventfd

    def _run(self, epoll: select.epoll, eventfd: int) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    # Nothing waits: end, and give the descriptors back.
                    self._epoll, self._eventfd, self._timers = None, -1, []
                    epoll.close()
                    os.close(eventfd)
                    return
                now = time.monotonic()
                due = self._timers[0][0] if self._timers else now + 60.0
                self._sleeping_until = due
            ready = epoll.poll(max(0.0, due - now))
            ringing: list[Protocol] = []
            # Taken out of the set after the lock (epoll_ctl lets the GIL go):
            # their readers start only after, so no descriptor is reused meanwhile.
            done: list[int] = []
            with self._lock:
                self._sleeping_until = 0.0
                for fd, _ in ready:
                    if fd == eventfd:
                        try:
                            os.eventfd_read(eventfd)
                        except BlockingIOError:
                            pass
                        continue
                    protocol = self._waiting.pop(fd, None)
                    if protocol is not None:
                        done.append(fd)
                        ringing.append(protocol)
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, fd, weak = heapq.heappop(self._timers)
                    protocol = weak()
                    if protocol is not None and self._waiting.get(fd) is protocol:
                        del self._waiting[fd]
                        done.append(fd)
                        ringing.append(protocol)
            for fd in done:
                _unregister(epoll, fd)
            for protocol in ringing:
                protocol._start_reader()


def _unregister(epoll: select.epoll, fd: int) -> None:
    try:
        epoll.unregister(fd)
    except OSError:
        pass  # closed meanwhile (the kernel dropped it from the set): nothing to undo


_doorbell = _Doorbell()


class _Latch:
    """A one-shot event on a bare lock: :meth:`set` once, :meth:`wait` any number of times."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        """``True`` once set (at once if it was); ``False`` when ``timeout`` passed first."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._lock.release()
        return True


def waiting_readers() -> int:
    """How many of this process's connections have no reader thread yet (a gauge for tests)."""
    return _doorbell.waiting()


@dataclass(frozen=True)
class Settings:
    """What one connection's protocol needs to know (0 turns a bound or timer off)."""

    subprotocols: Sequence[str] = ()
    compression: bool = True
    max_message_size: int = 0
    read_buffer_size: int = 4096
    ping_interval: float = 0.0
    pong_timeout: float = 20.0
    send_timeout: float = 60.0
    close_timeout: float = 2.0
    max_queued_messages: int = 0
    max_queued_bytes: int = 0
    deflate_choice: Choice = "auto"


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that inflates no more than ``limit`` bytes per message.

    wsproto inflates each frame's payload whole; a few kilobytes of zeros
    inflate to gigabytes before any size check could run. Here each call
    inflates at most one byte past what the message may still grow by; a
    message that wants more fails with 1009 having cost ``limit`` bytes.

    Outbound, it compresses at :data:`.compression.LEVEL` (wsproto's own
    compressor uses zlib's default, 6: ~3x slower on log text), one whole
    message per :meth:`compress` call, for frames the send path builds itself.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._inflated = 0

    def compress(self, payload: bytes) -> bytes:
        """One whole message's payload, deflated for a frame with RSV1 set (RFC 7692 7.2.1).

        The compressor's context carries over to the next compressed message
        (unless the client asked for ``server_no_context_takeover``); a
        message sent plain never passes here, so the peer's inflater and this
        compressor see the same messages.
        """
        compressor = self._compressor
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(
                compression.LEVEL, zlib.DEFLATED, -int(self.server_max_window_bits))
        data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.server_no_context_takeover:
            self._compressor = None
        return data[:-4]  # the sync flush's empty block, which the peer appends back

    def frame_outbound(self, proto: FrameDecoder | FrameProtocol, opcode: Opcode,
                       rsv: RsvBits, data: bytes, fin: bool) -> tuple[RsvBits, bytes]:
        # Not reached for data messages (the send path frames them itself);
        # kept on the same compressor so that a frame built by wsproto could
        # never desynchronise the peer's context.
        if not fin or opcode not in (Opcode.TEXT, Opcode.BINARY):
            return super().frame_outbound(proto, opcode, rsv, data, fin)
        return RsvBits(True, rsv[1], rsv[2]), self.compress(bytes(data))

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol,
                                   data: bytes) -> bytes | CloseReason:
        if not self._limit or not self._inbound_compressed or not self._inbound_is_compressible:
            return super().frame_inbound_payload_data(proto, data)
        decompressor = self._decompressor
        assert decompressor is not None  # set by frame_inbound_header for a compressed frame
        room = self._limit - self._inflated
        try:
            out = decompressor.decompress(bytes(data), room + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(out)
        if self._inflated > self._limit or decompressor.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol,
                               fin: bool) -> bytes | CloseReason | None:
        result = super().frame_inbound_complete(proto, fin)
        if fin:
            self._inflated = 0
        return result


def _environ_socket(environ: dict[str, Any]) -> tuple[socket.socket, Mode]:
    for key, mode in (("gunicorn.socket", "gunicorn"), ("werkzeug.socket", "werkzeug")):
        sock = environ.get(key)
        if sock is not None:
            return sock, mode  # type: ignore[return-value]  # mode is one of the Literal's
    raise RuntimeError("flask-pine-ws runs under gunicorn or Werkzeug's server only: "
                       "no socket in the WSGI environ")


class Answer(NamedTuple):
    """The server's side of an accepted upgrade (see :func:`answer_upgrade`)."""

    #: The whole ``101 Switching Protocols`` response, head and blank line.
    response: bytes
    #: The subprotocol chosen (the client's first that the server lists), or ``None``.
    subprotocol: str | None
    #: The deflate extension, when the client offered permessage-deflate and it was accepted.
    deflate: BoundedDeflate | None


def _comma_list(value: str) -> list[str]:
    """A header's comma-separated items, stripped (gunicorn joins repeated headers with ",")."""
    return [item.strip() for item in value.split(",")]


def answer_upgrade(environ: dict[str, Any], subprotocols: Sequence[str],
                   deflate: BoundedDeflate | None) -> Answer:
    """The 101 for an upgrade request the view has checked (:func:`.handshake.refusal`).

    Built from the WSGI environ directly: the server parsed the request once
    already, and rebuilding it for a second parse and answer through
    wsproto's HTTP layer (h11) took about 9% of a worker's time when a crowd
    connected at once (py-spy). What is negotiated is what
    wsproto's own server handshake negotiates, with wsproto's own functions
    (the accept token, :func:`wsproto.handshake.server_extensions_handshake`);
    ``tests/test_protocol_contract.py`` checks the answer byte for byte
    against wsproto's.

    :param deflate: the extension to offer to accept, or ``None`` (compression off).
    """
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "").strip().encode("latin-1")
    head = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: " + generate_accept_token(key)]
    offered = _comma_list(environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", ""))
    chosen = next((p for p in offered if p in subprotocols), None)
    if chosen is not None:
        head.append(b"Sec-WebSocket-Protocol: " + chosen.encode("ascii"))
    accepted: BoundedDeflate | None = None
    offers = environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS")
    if deflate is not None and offers and offers.isascii():
        agreed = server_extensions_handshake(_comma_list(offers), [deflate])
        if agreed is not None and deflate.enabled():
            head.append(b"Sec-WebSocket-Extensions: " + agreed)
            accepted = deflate
    return Answer(b"\r\n".join(head) + b"\r\n\r\n", chosen, accepted)


class Protocol:
    """One server-side WebSocket connection: handshake done in ``__init__``, then a reader.

    Thread-safe: any thread may send, receive or close. ``notify`` is called
    (on the reader thread, or the closing one) whenever a message is queued
    or the connection ends; it must only signal.

    :raises RuntimeError: the environ holds no socket.
    :raises OSError: the client left while the handshake answer was written.
    :raises NoThreadLeft: the thread that reads (or watches) the socket could not start.
    """

    def __init__(self, environ: dict[str, Any], settings: Settings,
                 notify: Callable[[], None]) -> None:
        sock, self.mode = _environ_socket(environ)
        self._sock = sock
        self._settings = settings
        self._notify_cb = notify
        self._send_lock = threading.Lock()
        # MSG_DONTWAIT makes one call non-blocking without touching the
        # socket's mode, which the reader's blocking recv relies on. An SSL
        # socket accepts no flags: it gets plain blocking writes, and the feed
        # cannot share frames with it.
        self._tls = sock if isinstance(sock, ssl.SSLSocket) else None
        self._nonblocking = self._tls is None and bool(_DONTWAIT)
        self._raw_send = sock.send
        self._pending = b""  # the unwritten rest of a frame try_send_frame committed
        self._inbox: deque[str | bytes] = deque()
        self._inbox_bytes = 0
        self._inbox_cond = threading.Condition(threading.Lock())
        self._discard = False
        self._open = False
        self._cut = False  # the socket was shut down: stop waiting for anything
        self._local_close: tuple[int, str] | None = None
        self._remote_close: tuple[int, str] | None = None
        self._parts: list[str | bytes | bytearray] = []  # fragments of the message being received
        self._parts_len = 0
        self._peak = 0  # the largest message received, for giving memory back
        self._next_ping = time.monotonic() + settings.ping_interval
        self._ping_out: float | None = None  # when the oldest unanswered ping left
        self._tcp_info_last: tcpinfo.TcpInfo | None = None
        self._tcp_info_at = -_TCP_INFO_TTL
        #: Under permessage-deflate, which messages are compressed (its ``choice``
        #: may be changed at any time: a benchmark, a test).
        self.chooser = Chooser(settings.deflate_choice)
        answer = answer_upgrade(
            environ, settings.subprotocols,
            BoundedDeflate(settings.max_message_size) if settings.compression else None)
        self.subprotocol: str | None = answer.subprotocol
        self._deflate: BoundedDeflate | None = answer.deflate
        self._ws = Connection(ConnectionType.SERVER,
                              [answer.deflate] if answer.deflate is not None else None)
        # The reader (a thread, or the doorbell that starts one when the
        # client sends something) is set up before the 101 is written and
        # waits for it: a process out of threads (the kernel's pid_max is
        # shared by every thread of the machine) is then refused with a
        # status the client understands, instead of a 101 nobody serves.
        # Two one-shot latches, plain locks held until the moment comes (an
        # Event is a Condition: several times the cost, for every connection).
        self._answered = _Latch()
        self._handshaken = False
        self._finished = _Latch()  # the reader's work is done: the socket is closed
        waiting_fd = -1  # in the doorbell's set until its reader starts
        if self._nonblocking:
            waiting_fd = sock.fileno()
            _doorbell.watch(self, waiting_fd,
                            self._next_ping if settings.ping_interval else None)
        else:
            self._start_thread()
        try:
            with self._send_lock:
                self._write(answer.response, settings.send_timeout)
            self._open = self._handshaken = True
        finally:
            self._answered.set()
            if not self._handshaken and waiting_fd >= 0:
                _doorbell.forget(self, waiting_fd)

    # -- state -----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """``True`` until a close frame went either way or the socket failed."""
        return self._open

    @property
    def close_code(self) -> int:
        """Ours if we closed (also on our own: 1009, 1008), else the peer's; 1006: none."""
        if self._local_close is not None:
            return self._local_close[0]
        if self._remote_close is not None:
            return self._remote_close[0]
        return 1006

    @property
    def close_reason(self) -> str:
        closing = self._local_close or self._remote_close
        return closing[1] if closing is not None else ""

    def closed_error(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_code, self.close_reason)

    def _notify(self) -> None:
        with self._inbox_cond:
            self._inbox_cond.notify_all()
        self._notify_cb()

    # -- the send path -----------------------------------------------------------

    @property
    def can_try_send(self) -> bool:
        """Whether :meth:`try_send_frame` can write at all (not on SSL sockets)."""
        return self._nonblocking

    @property
    def pending(self) -> int:
        """Bytes of a frame :meth:`try_send_frame` left for the next write."""
        return len(self._pending)

    @property
    def compressing(self) -> bool:
        """Whether permessage-deflate was negotiated (each message may still go plain)."""
        return self._deflate is not None

    def send_message(self, data: str | bytes) -> None:
        """Send one whole message (text for ``str``), compressed if that wins.

        Under permessage-deflate each message is compressed or sent plain as
        :class:`~.compression.Chooser` decides from the socket's
        ``TCP_INFO`` and zlib's measured rate (see :mod:`.compression`).
        Either way the frame is built here, past wsproto: a plain one never
        touches the compressor, so the peer's context stays in step.

        :raises ConnectionClosed: the connection is gone or closing.
        """
        if isinstance(data, str):
            kind: PayloadKind = "text"
            payload = data.encode()
        else:
            kind, payload = "bytes", data
        with self._send_lock:
            if not self._open:
                raise self.closed_error()
            try:
                if self._ws.state is not _OPEN:  # a close frame went either way
                    raise LocalProtocolError("no data message after a close frame")
                self._write(self._frame(kind, payload), self._settings.send_timeout)
            except _GONE:
                self._lost()
                raise self.closed_error() from None

    def _frame(self, kind: PayloadKind, payload: bytes) -> bytes:
        """The frame of one message, compressed or not (the send lock held)."""
        deflate = self._deflate
        if deflate is None or not self.chooser.decide(len(payload), self._tcp_info):
            return server_frame(kind, payload)
        started = time.perf_counter()
        compressed = deflate.compress(payload)
        self.chooser.record(len(payload), len(compressed), time.perf_counter() - started)
        return server_frame(kind, compressed, compressed=True)

    def try_send_frame(self, frame: bytes) -> int:
        """Write what the socket takes of one ready-made frame now, without blocking.

        Nothing is written (0) when another write holds the send lock, when
        the connection is not open, when an earlier frame's rest is still not
        out, or on an SSL socket. A frame written in part is committed: its
        rest is kept and written first by the next write.

        :returns: the bytes of ``frame`` taken (written, or kept to write next).
        """
        if not self._nonblocking or not self._send_lock.acquire(blocking=False):
            return 0
        try:
            if not self._open or self._ws.state is not _OPEN:
                return 0
            try:
                if self._pending:
                    self._pending = self._pending[self._send_now(self._pending):]
                    if self._pending:
                        return 0
                # The common case in one call: the whole frame fits the
                # socket's buffer (no memoryview, no loop).
                try:
                    sent: int = self._raw_send(frame, _DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return 0
                if 0 < sent < len(frame):
                    rest = frame[sent:]
                    self._pending = rest[self._send_now(rest):]
                return sent
            except OSError:
                self._lost()
                return 0
        finally:
            self._send_lock.release()

    def flush(self) -> None:
        """Write the rest of a frame :meth:`try_send_frame` wrote in part (bounded in time).

        :raises ConnectionClosed: the connection is gone.
        """
        with self._send_lock:
            if not self._pending:
                return
            try:
                self._write(b"", self._settings.send_timeout)
            except _GONE:
                self._lost()
                raise self.closed_error() from None

    def _tcp_info(self) -> tcpinfo.TcpInfo | None:
        """The kernel's figures for this socket, read again once they are ``_TCP_INFO_TTL`` old."""
        now = time.monotonic()
        if now - self._tcp_info_at >= _TCP_INFO_TTL:
            self._tcp_info_last = tcpinfo.read(self._sock)
            self._tcp_info_at = now
        return self._tcp_info_last

    def _send_control(self, event: Event) -> None:
        """Send a ping, pong or close echo from the reader thread."""
        with self._send_lock:
            self._write(self._ws.send(event), self._settings.send_timeout)

    def _send_now(self, data: bytes) -> int:
        """Write as much of ``data`` as the socket takes without waiting (the lock held)."""
        view = memoryview(data)
        total = 0
        while total < len(view):
            try:
                sent = self._raw_send(view[total:], _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if not sent:
                break
            total += sent
        return total

    def _write(self, data: bytes, limit: float) -> None:
        """Write a kept rest, then every byte of ``data`` (the lock held), or fail.

        A write that makes no progress for ``limit`` seconds cuts the socket
        (the reader wakes and the connection ends) and raises ``TimeoutError``.
        """
        if self._pending:
            data, self._pending = self._pending + data, b""
        if not self._nonblocking:
            self._sock.sendall(data)
            return
        view = memoryview(data)
        deadline: float | None = None
        while view:
            try:
                sent = self._raw_send(view, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent:
                view = view[sent:]
                deadline = None
                continue
            now = time.monotonic()
            if deadline is None:
                deadline = now + limit
            if now >= deadline:
                self.abort()
                raise TimeoutError(errno.ETIMEDOUT, "the peer stopped reading")
            fd = self._sock.fileno()
            if fd < 0:  # closed by the reader thread meanwhile
                raise OSError(errno.EBADF, "the socket is closed")
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            poller.poll(min(deadline - now, 1.0) * 1000)

    # -- closing -----------------------------------------------------------------

    def close(self, code: int, reason: str, wait: float | None = None) -> None:
        """Send a close frame (or finish sending one) and mark the connection closed.

        :param wait: seconds to wait for the send lock and for the socket to
            take the frame; ``None``: the lock as long as it takes, the frame
            ``send_timeout``. Past it, the socket is cut (the peer sees 1006).
        """
        limit = self._settings.send_timeout if wait is None else wait
        if not self._send_lock.acquire(timeout=-1 if wait is None else wait):
            if self._open:
                self._local_close = (code, reason)
                self._open = False
            self.abort()
            self._notify()
            return
        try:
            if self._open:
                self._local_close = (code, reason)
                self._open = False
                self._write(self._ws.send(CloseConnection(code=code, reason=reason)), limit)
            elif self._pending:  # a close frame close_at_once wrote in part
                self._write(b"", limit)
        except _GONE:
            self.abort()
        finally:
            self._send_lock.release()
        self._notify()

    def close_at_once(self, code: int, reason: str) -> bool:
        """Close without waiting at all, if the connection lets us.

        :returns: ``True`` when the close frame is on the wire (or the
            connection was closed already); ``False`` when the send lock was
            busy or the socket took the frame only in part: finish with
            :meth:`close`.
        """
        if not self._send_lock.acquire(blocking=False):
            return False
        try:
            if not self._open:
                return not self._pending
            if not self._nonblocking:
                return False
            if self._pending:
                self._pending = self._pending[self._send_now(self._pending):]
                if self._pending:
                    return False
            self._local_close = (code, reason)
            self._open = False
            frame = bytes(self._ws.send(CloseConnection(code=code, reason=reason)))
            self._pending = frame[self._send_now(frame):]
            return not self._pending
        except _GONE:
            self.abort()
            return True
        finally:
            self._send_lock.release()
            self._notify()

    def _fail(self, code: int, reason: str) -> None:
        """Close on our own (the reader thread): a message too big, a protocol error."""
        with self._send_lock:
            if not self._open:
                return
            self._local_close = (code, reason)
            self._open = False
            try:
                self._write(self._ws.send(CloseConnection(code=code, reason=reason)),
                            self._settings.send_timeout)
            except _GONE:
                self.abort()

    def _lost(self) -> None:
        """The socket failed under us: the connection is over."""
        self._open = False
        self.abort()
        self._notify()

    def abort(self) -> None:
        """Shut the socket down both ways: a blocked ``recv`` returns at once."""
        self._cut = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected: nothing left to wake
        with self._inbox_cond:
            self._inbox_cond.notify_all()  # a reader paused on a full inbox

    # -- receiving ---------------------------------------------------------------

    def discard_inbound(self) -> None:
        """Drop every data message from now on, and those queued: they are never held."""
        with self._inbox_cond:
            self._discard = True
            self._inbox.clear()
            self._inbox_bytes = 0
            self._inbox_cond.notify_all()

    def receive(self, timeout: float | None) -> str | bytes | None:
        """The next message; ``None`` when ``timeout`` passed first.

        :raises ConnectionClosed: the connection ended and no message is left.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._inbox_cond:
            while not self._inbox:
                if not self._open:
                    raise self.closed_error()
                if deadline is None:
                    self._inbox_cond.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._inbox_cond.wait(left)
            message = self._inbox.popleft()
            self._inbox_bytes -= len(message)
            self._inbox_cond.notify_all()  # the reader may be waiting for room
            return message

    def _full(self) -> bool:
        s = self._settings
        return ((s.max_queued_messages > 0 and len(self._inbox) >= s.max_queued_messages)
                or (s.max_queued_bytes > 0 and self._inbox_bytes >= s.max_queued_bytes))

    def _queue(self, message: str | bytes) -> None:
        """Queue a whole message; while the inbox is full, stop reading (pinging still)."""
        with self._inbox_cond:
            if self._discard or not self._open:
                return
            self._inbox.append(message)
            self._inbox_bytes += len(message)
            self._inbox_cond.notify_all()
        self._notify_cb()
        with self._inbox_cond:
            paused = False
            while self._open and not self._cut and not self._discard and self._full():
                paused = True
                self._inbox_cond.wait(self._until_ping())
                if self._open and self._settings.ping_interval and \
                        time.monotonic() >= self._next_ping:
                    self._inbox_cond.release()
                    try:
                        self._send_control(Ping())
                    finally:
                        self._inbox_cond.acquire()
                    self._next_ping = time.monotonic() + self._settings.ping_interval
            if paused:
                # No pong could be read while paused: the clock starts again.
                self._ping_out = None

    # -- the reader thread -------------------------------------------------------

    def _until_ping(self) -> float | None:
        if not self._settings.ping_interval:
            return None
        return max(0.0, self._next_ping - time.monotonic())

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name="pine-ws-reader", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            raise NoThreadLeft(str(exc)) from None

    def _start_reader(self) -> None:
        """The doorbell's call: the client sent something, or a ping is due."""
        try:
            self._start_thread()
        except NoThreadLeft:
            # Nobody can read this connection: end it rather than leave it
            # unread (its client sees it closed, its handler ConnectionClosed).
            self.abort()
            self._end()
            self._finished.set()

    def _run(self) -> None:
        self._answered.wait(None)
        try:
            if not self._handshaken:
                return  # the view answers: the socket is not ours
            try:
                self._read_loop()
            except _GONE:
                pass
            finally:
                self._end()
        finally:
            self._finished.set()

    def _end(self) -> None:
        """The reader's last act: the connection is over and its socket closed."""
        self._open = False
        with self._send_lock:
            self._pending = b""
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        self._parts = []
        # a large message, or one refused as too big (inflated up to the
        # limit, maybe without ever becoming an event)
        if self._peak >= _BIG_MESSAGE or self.close_code == 1009:
            memory.release()
        self._notify()

    def _read_loop(self) -> None:
        settings = self._settings
        fd = self._sock.fileno()
        if fd < 0:
            # Closed before this reader ran: the request's thread gave up
            # waiting for it (Conn.finish's bound) and the server closed it.
            return
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while self._open or self._ws.state is ConnectionState.LOCAL_CLOSING:
            wait = self._until_ping()
            # TLS may hold decrypted bytes the socket's fd no longer shows
            ready = (self._tls is not None and self._tls.pending() > 0) or bool(
                poller.poll(None if wait is None else wait * 1000))
            if settings.ping_interval and time.monotonic() >= self._next_ping:
                if not self._ping_tick():
                    return
            if not ready:
                continue
            data = self._sock.recv(settings.read_buffer_size)
            if not data:
                return
            self._ws.receive_data(data)
            if not self._handle(self._ws.events()):
                return

    def _ping_tick(self) -> bool:
        """Ping, or drop a peer whose pong is overdue; ``False`` once dropped."""
        now = time.monotonic()
        if self._ping_out is not None and now - self._ping_out >= self._settings.pong_timeout:
            self._fail(1008, PING_TIMEOUT_REASON)
            self._notify()
            self._linger()
            return False
        if self._open:
            self._send_control(Ping())
            if self._ping_out is None:
                self._ping_out = now
        self._next_ping = now + self._settings.ping_interval
        return True

    def _handle(self, events: Iterable[Event]) -> bool:
        """Act on what arrived; ``False`` once the connection is over."""
        for event in events:
            if isinstance(event, (TextMessage, BytesMessage)):
                if not self._take(event):
                    self._linger()
                    return False
            elif isinstance(event, Ping):
                if self._open:
                    self._send_control(event.response())
            elif isinstance(event, Pong):
                self._ping_out = None
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    # The peer's close frame: answer it and end.
                    self._remote_close = (int(event.code), event.reason or "")
                    self._open = False
                    self._send_control(event.response())
                    self._notify()
                    return False
                if self._ws.state is ConnectionState.CLOSED:
                    return False  # the answer to our close frame
                # Not a frame: wsproto's verdict on a broken one (1002,
                # 1007, or 1009 from the inflater).
                code = int(event.code)
                reason = TOO_BIG_REASON if code == 1009 else (event.reason or "")[:123]
                self._fail(code, reason)
                self._notify()
                self._linger()
                return False
        return True

    def _take(self, event: TextMessage | BytesMessage) -> bool:
        """Add a message fragment; queue the message once whole. ``False``: too big."""
        limit = self._settings.max_message_size
        self._parts_len += len(event.data)
        self._peak = max(self._peak, self._parts_len)
        if limit and self._parts_len > limit:
            self._parts = []
            self._fail(1009, TOO_BIG_REASON)
            self._notify()
            return False
        if not self._discard and self._ws.state is _OPEN:
            self._parts.append(event.data)
        if not event.message_finished:
            return True
        parts, self._parts = self._parts, []
        self._parts_len = 0
        if parts:
            if len(parts) == 1:
                message = parts[0]
            elif isinstance(event, TextMessage):
                message = "".join(parts)  # type: ignore[arg-type]  # all str
            else:
                message = b"".join(parts)  # type: ignore[arg-type]  # all bytes
            self._queue(bytes(message) if isinstance(message, bytearray) else message)
        return True

    def _linger(self) -> None:
        """After closing on our own, read and drop what the peer still sends, briefly.

        Closing the socket with unread bytes in it sends a reset, which may
        destroy our close frame before the client reads it: wait for the
        client's close (or its end, or ``close_timeout``) first.
        """
        deadline = time.monotonic() + self._settings.close_timeout
        try:
            self._sock.shutdown(socket.SHUT_WR)
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLIN)
            while (left := deadline - time.monotonic()) > 0:
                if poller.poll(left * 1000) and not self._sock.recv(65536):
                    return
        except OSError:
            pass

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the reader to end; ``True`` once it did (socket closed)."""
        return self._finished.wait(timeout)

    def end_unread(self) -> bool:
        """End the connection here if its reader never started; ``True`` if it was ended.

        For the request's thread, before it lets the server have the socket
        back: a socket still waiting in the doorbell (a client that has not
        answered our close, on a machine too busy for the doorbell to ring in
        time) would otherwise be closed by the server under the doorbell, and
        a reader started after that would find no socket, while the doorbell
        kept waiting on a descriptor number that the next connection reuses.
        Taken out of the doorbell's set under its lock, the connection has no
        reader and never will: this thread may close it.
        """
        if not self._nonblocking or self._finished.wait(0):
            return False
        fd = self._sock.fileno()
        if fd < 0 or not _doorbell.forget(self, fd):
            return False
        self._end()
        self._finished.set()
        return True


__all__ = ["BoundedDeflate", "Mode", "NoThreadLeft", "Protocol", "Settings", "waiting_readers"]
