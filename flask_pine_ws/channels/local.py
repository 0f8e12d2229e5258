"""Delivery inside one process: who joined which channel, and a bounded queue per member.

This module owns the members of this process and how a message reaches their
sockets, whichever backend carried it here: the embedded backend
(:class:`LocalBackend`) hands a published message straight to
:meth:`Registry.deliver`; the Redis backend's subscriber thread does the same
with what Redis brings.

Why a queue and a sender per member: a publisher (a request, a job, the Redis
subscriber) must never wait for one slow client, and one slow client must not
delay the others. ``deliver`` hands each message to each member under one
lock, so every member sees the messages in the same order and a message
published after ``join`` returned reaches the member exactly once, and never
waits:

- a member that is keeping up (nothing queued, nothing being sent) gets the
  message's frame, built once, written straight to its socket without
  blocking (``Conn.try_send_frame``): no thread, no copy per member;
- otherwise (the socket is full, the handler is sending, an SSL socket) the
  message goes to the member's queue, and the member's sender thread writes
  it with ``Conn.send``. That thread exists only while the member has
  something to send: it ends after :data:`IDLE_SECONDS` without work.

A member whose queue passes its limit (``PINE_WS_CHANNEL_QUEUE``) is
dropped from every channel at once, its queue freed, and its connection closed
with 1013 (try again later) and a reason, once the frame being written (if
any) is out. The publisher and the other members go on.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

from ..errors import ConnectionClosed
from .message import Payload, frame

#: Close code of a member that fell too far behind (RFC 6455: "try again later").
TOO_SLOW_CODE = 1013
#: Bytes a queued message costs beside its payload (the queue entry, the counters).
ENTRY_OVERHEAD = 64
#: Seconds a member's sender thread waits for work before it ends.
IDLE_SECONDS = 2.0


class Sink(Protocol):
    """What a member writes to: a :class:`~flask_pine_ws.Conn`."""

    def send(self, data: str | bytes) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...


class FrameSink(Sink, Protocol):
    """A sink that can also take a ready-made frame without blocking (a ``Conn``)."""

    @property
    def shares_frames(self) -> bool: ...

    def try_send_frame(self, frame: bytes) -> int: ...

    def flush(self) -> None: ...


class Member:
    """One connection's membership: its channels, its queue and its sender thread."""

    def __init__(self, sink: Sink, registry: Registry, limit: int) -> None:
        self.sink = sink
        self.channels: set[str] = set()
        self._registry = registry
        self._limit = limit
        self._queue: deque[Payload | None] = deque()  # None: flush a frame taken in part
        self._sending = False  # the sender holds an entry it took from the queue
        self._frames: FrameSink | None = (
            sink if getattr(sink, "shares_frames", False) else None)  # type: ignore[assignment]
        self._queued = 0  # bytes, by ENTRY_OVERHEAD + payload length
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._ended = False  # left every channel, closed, or dropped
        self._overflow: str | None = None  # the close reason once too far behind

    @property
    def queued_bytes(self) -> int:
        """What the queue holds now, by the measure of the limit."""
        return self._queued

    def offer(self, payload: Payload, frame: bytes | None = None) -> bool:
        """Send ``payload`` (whose frame is ``frame``) now if the socket takes it, else queue it.

        Never waits.

        :returns: ``False`` when the member is past its limit: it must be
            dropped (the caller holds the registry's lock and does it).
        """
        cost = len(payload) + ENTRY_OVERHEAD
        with self._cond:
            if self._ended:
                return True
            if (frame is not None and self._frames is not None and not self._queue
                    and not self._sending):
                # Nothing older is waiting or being written: the frame may go
                # straight to the socket, if it takes it without waiting.
                try:
                    taken = self._frames.try_send_frame(frame)
                except ConnectionClosed:
                    taken = 0
                if taken == len(frame):
                    return True
                if taken:  # committed; the sender writes the rest
                    self._enqueue_locked(None, ENTRY_OVERHEAD)
                    return True
            if self._queue and self._queued + cost > self._limit:
                self._overflow = (f"too slow: more than {self._limit} bytes of channel "
                                  "messages waiting")
                self._end_locked()
                return False
            self._enqueue_locked(payload, cost)
        return True

    def _enqueue_locked(self, entry: Payload | None, cost: int) -> None:
        self._queue.append(entry)
        self._queued += cost
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pine-ws-member",
                                            daemon=True)
            self._thread.start()
        else:
            self._cond.notify()

    def end(self) -> None:
        """Stop delivering: drop what is queued and let the sender thread end."""
        with self._cond:
            self._end_locked()

    def _end_locked(self) -> None:
        self._ended = True
        self._queue.clear()
        self._queued = 0
        self._cond.notify()

    def _next(self) -> Payload | bool | None:
        """The next entry to write, or ``False`` when the thread should end."""
        with self._cond:
            self._sending = False
            while not self._queue and not self._ended:
                if not self._cond.wait(IDLE_SECONDS) and not self._queue:
                    self._thread = None  # idle: the next offer starts a new one
                    return False
            if self._ended:
                self._thread = None
                return False
            entry = self._queue.popleft()
            self._queued -= (0 if entry is None else len(entry)) + ENTRY_OVERHEAD
            self._sending = True
            return entry

    def _run(self) -> None:
        while True:
            entry = self._next()
            if entry is False:
                break
            try:
                if entry is None:
                    if self._frames is not None:
                        self._frames.flush()
                else:
                    self.sink.send(entry)  # type: ignore[arg-type]
            except ConnectionClosed:
                self._registry.drop(self)
                return
        if self._overflow is not None:
            try:
                self.sink.close(TOO_SLOW_CODE, self._overflow)
            except ConnectionClosed:
                pass  # already gone: nothing to tell it


class Registry:
    """The members of this process by channel, and delivery to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, set[Member]] = {}
        self._members: dict[int, Member] = {}  # by id() of the sink

    def join(self, sink: Sink, channel: str, limit: int) -> None:
        """Make ``sink`` a member of ``channel``: it gets every message delivered from now on."""
        with self._lock:
            member = self._members.get(id(sink))
            if member is None or member.sink is not sink:
                member = Member(sink, self, limit)
                self._members[id(sink)] = member
            member.channels.add(channel)
            self._channels.setdefault(channel, set()).add(member)

    def leave(self, sink: Sink, channel: str) -> None:
        """Stop delivering ``channel`` to ``sink``; a channel never joined is ignored."""
        with self._lock:
            member = self._members.get(id(sink))
            if member is None or member.sink is not sink or channel not in member.channels:
                return
            self._remove_locked(member, channel)
            if not member.channels:
                del self._members[id(sink)]
                member.end()

    def leave_all(self, sink: Sink) -> None:
        """Stop delivering anything to ``sink`` (its connection is closing)."""
        with self._lock:
            member = self._members.get(id(sink))
            if member is not None and member.sink is sink:
                self._drop_locked(member)

    def drop(self, member: Member) -> None:
        """Remove ``member`` from every channel (its connection is gone)."""
        with self._lock:
            self._drop_locked(member)

    def deliver(self, channel: str, payload: Payload) -> int:
        """Queue ``payload`` for every member of ``channel``; never waits for one.

        :returns: how many members it was queued for.
        """
        with self._lock:
            members = self._channels.get(channel)
            if not members:
                return 0
            total = len(members)
            data = frame(payload)
            behind = [m for m in members if not m.offer(payload, data)]
            for member in behind:  # past their limit: out of every channel
                self._drop_locked(member)
            return total - len(behind)

    def members(self, channel: str) -> int:
        """How many members ``channel`` has in this process."""
        with self._lock:
            return len(self._channels.get(channel, ()))

    def channels(self) -> list[str]:
        """The channels with at least one member in this process."""
        with self._lock:
            return list(self._channels)

    def _remove_locked(self, member: Member, channel: str) -> None:
        member.channels.discard(channel)
        group = self._channels.get(channel)
        if group is not None:
            group.discard(member)
            if not group:
                del self._channels[channel]

    def _drop_locked(self, member: Member) -> None:
        for channel in list(member.channels):
            self._remove_locked(member, channel)
        if self._members.get(id(member.sink)) is member:
            del self._members[id(member.sink)]
        member.end()


class LocalBackend:
    """``PINE_WS_MESSAGE_QUEUE`` unset: a published message reaches this process's members."""

    url: str | None = None

    def __init__(self) -> None:
        self.registry = Registry()

    def publish(self, channel: str, payload: Payload) -> None:
        self.registry.deliver(channel, payload)

    def joined(self, channel: str) -> None:
        """Nothing to wait for: delivery in the process starts when ``join`` returns."""
