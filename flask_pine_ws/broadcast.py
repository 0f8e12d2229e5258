"""The broadcast hub: one read and one frame for every watcher caught up with a file.

Without it, one append to a file that 1,000 clients follow wakes 1,000
watcher threads, and each reads the same bytes, encodes its own frame and
sends it: the threads queue for the GIL, and the last client waits about a
second. This module owns the shortcut, and nothing else: how a watcher reads
on its own stays in :mod:`.watch` and :mod:`.follower`.

- A :class:`Hub` per followed path and payload kind (``"bytes"`` for binary
  and framed watchers, ``"text"`` for text ones) and message size, in a
  registry of the process.
- A watcher that is caught up (its follower at the end of the file, no UTF-8
  sequence carried) *parks* on the hub: it succeeds only at the hub's
  position (``st_dev``, ``st_ino``, offset), or on a hub without members,
  which takes the watcher's position. Else the watcher keeps reading on its
  own and tries again after its next read: once the file is idle, every
  watcher is at its end, and they all park.
- A parked watcher's thread still waits on its own event, but the watch
  table no longer wakes it: parking relays its subscription to the hub's
  signal (:meth:`.WatchTable.relay`), so that one change of the file costs
  the table one call of that signal for all the parked watchers, and none
  of theirs (it used to call each parked watcher's event, which forwarded
  to the hub: 1,000 calls per append on the observer thread). Its
  connection still wakes it (a message, the peer leaving, the shutdown),
  and so does a change of directory it must handle itself.
- The hubs of a process share one thread (:class:`_Dispatcher`), alive while
  any hub has members: a hub per file with a thread each made the thread
  count grow with the number of files followed (100 watchers of 100 files
  took 100 threads more than 100 watchers of one file). A signalled hub is
  queued; the thread gives each queued hub a turn of a few chunks, round
  robin, so that a large append to one file does not hold back the others.
  A hub reads the new bytes once, with a :class:`~.follower.FileFollower` of
  its own (same chunks, same UTF-8 rules), builds each frame once, and writes
  it to every member's socket without ever blocking
  (:meth:`.Conn.try_send_frame`): nothing in a turn waits for a client or a
  file (the follower opens only regular files, without blocking), which is
  what makes one thread for all enough. A member that
  cannot take the frame at once (its connection busy with another send, its
  socket buffer full, closed) is *unparked*: its thread wakes, writes the
  rest of a frame the socket took in part, and reads on its own from the
  offset after what reached its socket, until it can park again. Fast
  members are never held back by a slow one. The send loop does only that
  per member: one non-blocking write (which also counts the viewed bytes);
  members handed back are collected and released in one batch after it.
- Anything but bytes (a rotation, a truncation, the path gone, an error)
  unparks everyone: each watcher handles it itself, with its framed notices,
  and the hub starts again wherever its next member parks.

Bounded: no queue per member (the file is the buffer), at most the rest of
one frame kept per socket, one thread per process for all the hubs, and only
while one has members.

Compression: the hub's frames are never compressed, also to connections that
negotiated permessage-deflate. RFC 7692 lets a sender send any message
uncompressed (RSV1 clear), and the frame goes to the socket past wsproto, so
its compressor (the context a later compressed message builds on) is
untouched: wsproto's ``PerMessageDeflate.frame_outbound`` is the only place
that feeds it, and clients read a frame with RSV1 clear as plain data. So
live lines reach compressed clients uncompressed (small lines gain little
from it); what a watcher sends on its own (the backlog, catching up) is
still compressed. One frame for all is what makes the fan-out cheap:
compressing for each member with its own context costs a ``zlib`` call per
member per line, on the one hub thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .follower import Chunk, FileFollower, Item, Position
from .protocol import PayloadKind, server_frame

if TYPE_CHECKING:
    from .conn import Conn
    from .watchtable import Subscription, WatchTable

logger = logging.getLogger(__name__)

#: Seconds the hubs' thread waits with no signal before every hub looks again (a hang guard only).
_IDLE_WAIT = 60.0

#: Chunks a hub reads and sends per turn before the next queued hub has its turn.
_TURN_CHUNKS = 4

#: A hub's key: the path followed, the payload kind, the largest message.
HubKey = tuple[str, PayloadKind, int]


class Member:
    """One watcher, as a hub sees it: its connection, its event, where it is.

    :param conn: the watcher's connection.
    :param path: the absolute path followed.
    :param kind: ``"bytes"`` or ``"text"``: what its messages carry.
    :param chunk_bytes: its largest message (``PINE_WS_CHUNK_BYTES``).
    """

    def __init__(self, conn: Conn, path: str, kind: PayloadKind, chunk_bytes: int) -> None:
        if kind not in ("text", "bytes"):
            raise ValueError(f"kind must be 'text' or 'bytes', not {kind!r}")
        self.conn = conn
        self.key: HubKey = (path, kind, chunk_bytes)
        #: The watcher waits on it; give it to :meth:`.WatchTable.subscribe`.
        #: While parked, the table does not set it (it signals the hub).
        self.event = threading.Event()
        #: The watch-table subscription (set once subscribed).
        self.sub: Subscription | None = None
        #: The hub it is parked on (changed under that hub's lock).
        self.hub: Hub | None = None
        #: Where to go on reading, once unparked: the offset after what the
        #: hub committed to its socket (set under the hub's lock).
        self._resume_at: int | None = None
        #: The hub that was behind it when it tried to park: it wakes the
        #: watcher on reaching its offset, to try again.
        self._ahead_of: Hub | None = None

    def wake(self) -> None:
        """The connection's listener: wakes the watcher even while parked."""
        self.event.set()

    def stays_parked(self) -> bool:
        """Parked, and nothing for the watcher to do itself (its directory changed: it must)."""
        return self.hub is not None and not (self.sub is not None and self.sub.needs_refresh)

    def park(self, follower: FileFollower) -> bool:
        """Park on the hub of this path if the watcher is caught up and at the hub's position.

        Call after a read that went to the end of the file.

        :returns: whether it parked; if not, the watcher reads on its own.
        """
        position = follower.position
        if (self.hub is not None or position is None or follower.delivered != position.offset
                or not self.conn.shares_frames or not self.conn.connected):
            return False
        for _ in range(3):  # a hub that stopped in between is replaced
            hub = _hub_for(self.key)
            parked = hub.try_park(self, position)
            if parked is not None:
                if not parked:
                    _discard_if_idle(hub)
                return parked
        return False

    def unpark(self, follower: FileFollower) -> None:
        """Leave the hub if still on it, and go on from where it stopped for this watcher.

        Writes the rest of a frame its socket took in part (bounded by the
        send timeout).

        :raises ConnectionClosed: the connection is gone.
        """
        hub = self.hub
        if hub is not None:
            hub.leave(self)
        at, self._resume_at = self._resume_at, None
        if at is not None:
            follower.skip_to(at)
        self.conn.flush()

    def leave(self) -> None:
        """Leave the hub, if parked (the watcher ends)."""
        for hub in (self.hub, self._ahead_of):
            if hub is not None:
                hub.leave(self)


class Hub:
    """The watchers parked at the end of one file, and the thread that reads it for them.

    Made and found by :meth:`Member.park`; not used directly.
    """

    def __init__(self, key: HubKey) -> None:
        self.key = key
        self._lock = threading.Lock()
        #: What the watch table calls for the parked members (one stable object).
        self._relay: Callable[[], None] = self.signal
        #: The parked members (insertion-ordered), each with its connection's
        #: ``try_send_frame``, bound once for the send loop.
        self._members: dict[Member, Callable[[bytes, int], int]] = {}
        # Watchers that could not park because the hub was behind them in
        # the same file, and the offset they wait at. Without a wake-up when
        # the hub gets there, they would try again only on the next change
        # of the file, which may never come: the file is idle.
        self._ahead: dict[Member, int] = {}
        self._follower: FileFollower | None = None
        self._ident: tuple[int, int] | None = None
        self._offset = 0  # the file's bytes before it are delivered to every member
        self._generation = 0  # a new follower: a read in progress belongs to the old one
        self._stopped = False
        #: Given turns by the dispatcher (since its first member parked).
        self._running = False
        #: The read in progress, resumed at the next turn (None: start a new one).
        self._items: Iterator[Item] | None = None
        self._items_generation = -1
        #: Counts for the stats: frames built, members handed back to their thread.
        self.frames = 0
        self.unparked = 0

    def signal(self) -> None:
        """The file may have changed, or the members did: queue a turn on the hubs' thread."""
        _dispatcher.post(self)

    def try_park(self, member: Member, position: Position) -> bool | None:
        """Add ``member``, at ``position`` (its file and offset), if it is the hub's.

        :returns: ``True`` parked, ``False`` not at the hub's position,
            ``None`` the hub has stopped (ask the registry again).
        """
        with self._lock:
            if self._stopped:
                return None
            ident, offset = position.ident, position.offset
            if not self._members and (self._ident != ident or self._offset != offset):
                if not self._restart(ident, offset):
                    return False
            elif self._ident != ident or self._offset != offset:
                if self._ident == ident and self._offset < offset:
                    self._ahead[member] = offset
                    member._ahead_of = self
                return False
            if self._ahead.pop(member, None) is not None:
                member._ahead_of = None
            member._resume_at = None
            member.hub = self
            self._members[member] = member.conn.try_send_frame
            # From now on the table signals the hub, not the watcher; before
            # the signal below, so that no change falls in between.
            if member.sub is not None:
                member.sub.table.relay((member.sub,), self._relay)
            if not self._running:
                _count("hubs_started")
                self._running = True
                _dispatcher.attach(self)
        # The file may have grown since the member read it to the end: its
        # own event took that signal, not the hub's. Look once.
        self.signal()
        return True

    def leave(self, member: Member) -> None:
        """Take ``member`` off; it goes on from the hub's offset. No-op if not parked here."""
        with self._lock:
            if self._ahead.pop(member, None) is not None:
                member._ahead_of = None
            if member in self._members:
                del self._members[member]
                self._hand_back([(member, self._offset)], wake=False)
            if not self._members:
                self.signal()  # its next turn stops it

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"path": self.key[0], "kind": self.key[1], "parked": len(self._members),
                    "offset": self._offset, "frames": self.frames, "unparked": self.unparked}

    # -- inside the lock -----------------------------------------------------

    def _restart(self, ident: tuple[int, int], offset: int) -> bool:
        """Follow the file anew from ``offset``, if the path still names file ``ident``."""
        self._close_follower()
        path, kind, chunk_bytes = self.key
        follower = FileFollower(path, binary=kind == "bytes", chunk_bytes=chunk_bytes)
        try:
            follower.start(offset=offset)
        except OSError:
            follower.close()
            return False
        position = follower.position
        if position is None or (position.ident, position.offset) != (ident, offset):
            # Another file is at the path now (or it shrank): the member will
            # see it on its own read; no hub on a file it does not read.
            follower.close()
            return False
        self._follower, self._ident, self._offset = follower, ident, offset
        self._generation += 1
        return True

    def _close_follower(self) -> None:
        if self._follower is not None:
            self._follower.close()
        self._follower, self._ident = None, None

    def _hand_back(self, members: list[tuple[Member, int]], *, wake: bool = True) -> None:
        """Unpark ``members`` (off :attr:`_members` already), each to go on at its offset.

        Their subscriptions signal them again before they are woken (one
        batch per table), so that no change of the file goes unheard.
        """
        relayed: dict[WatchTable, list[Subscription]] = {}
        for member, at in members:
            member._resume_at = at
            member.hub = None
            if member.sub is not None:
                relayed.setdefault(member.sub.table, []).append(member.sub)
        for table, subs in relayed.items():
            table.relay(subs, None)
        if wake:  # handed back by the hub (not leaving by itself)
            self.unparked += len(members)
            _count("unparked", len(members))
            for member, _ in members:
                member.event.set()

    def _unpark_all(self) -> None:
        self._hand_back([(member, self._offset) for member in self._members])
        self._members.clear()
        self._close_follower()
        self._wake_ahead(everyone=True)

    def _wake_ahead(self, *, everyone: bool = False) -> None:
        """Wake the watchers waiting for the hub to reach their offset (or all of them)."""
        for member, at in list(self._ahead.items()):
            if everyone or at <= self._offset:
                del self._ahead[member]
                member._ahead_of = None
                member.event.set()

    # -- the hub's thread ----------------------------------------------------

    def turn(self) -> bool:
        """Read and send a few chunks of what the file has now (on the hubs' thread).

        :returns: whether there may be more to read now (queue another turn).
        """
        try:
            with _registry_lock, self._lock:
                if not self._members:
                    self._stop()
                    return False
            return self._round(_TURN_CHUNKS)
        except BaseException:
            logger.exception("broadcast hub for %s failed; its watchers read on their own",
                             self.key[0])
            with _registry_lock, self._lock:
                self._unpark_all()
                self._stop()
            return False

    def _stop(self) -> None:
        """Both locks held: no member can park here any more."""
        self._stopped = True
        self._close_follower()
        self._wake_ahead(everyone=True)  # to park on the next hub
        if _hubs.get(self.key) is self:
            del _hubs[self.key]
        if self._running:
            self._running = False
            _dispatcher.detach(self)

    def _round(self, budget: int) -> bool:
        """Read up to ``budget`` chunks of what the file has now, and send each to every member.

        :returns: ``True`` when the budget ran out before the end of the file.
        """
        for _ in range(budget):
            with self._lock:
                follower = self._follower
                if not self._members or follower is None:
                    self._items = None
                    return False
                if self._items is None or self._items_generation != self._generation:
                    self._items, self._items_generation = follower.read(), self._generation
                try:
                    item = next(self._items)
                except StopIteration:
                    self._items = None
                    self._wake_ahead()
                    known = follower.position
                    for member in self._members:
                        sub = member.sub
                        if sub is not None:
                            sub.known = known  # the safety check sees them current
                    return False
                except OSError:
                    # The path cannot be read now: each watcher finds out
                    # for itself and tells its client.
                    self._items = None
                    self._unpark_all()
                    return False
                if isinstance(item, Chunk):
                    self._deliver(item)
                else:
                    # Rotated or Waiting: every watcher handles it itself
                    # (with its framed notice); the hub starts again when
                    # they park at their new position.
                    self._items = None
                    self._unpark_all()
                    return False
        return True

    def _deliver(self, chunk: Chunk) -> None:
        data = chunk.data
        frame = server_frame(self.key[1], data.encode() if isinstance(data, str) else data)
        size = len(frame)
        nbytes = chunk.nbytes
        before = self._offset
        after = self._offset = before + nbytes
        self.frames += 1
        _count("frames")
        # The hot loop: one call per member, nothing else when the socket
        # takes the whole frame (the common case).
        dropped: list[tuple[Member, int]] | None = None
        for member, send in self._members.items():
            taken = send(frame, nbytes)
            if taken != size:
                if dropped is None:
                    dropped = []
                # In part: its thread writes the rest, and goes on after the
                # chunk. Not at all: it reads this chunk itself.
                dropped.append((member, after if taken else before))
        if dropped is not None:
            for member, _ in dropped:
                del self._members[member]
            self._hand_back(dropped)


class _Dispatcher:
    """The one thread of the process that gives the hubs their turns.

    Hubs with members are *attached*; a hub's :meth:`Hub.signal` queues it
    (once, however often it is signalled before its turn). The thread takes
    the queue, gives each hub a turn, and queues again a hub that had more to
    read, behind the others. It starts with the first attached hub and ends
    when none is attached and none queued; a process that forked (gunicorn)
    starts its own. Its lock is taken last, after a hub's, and nothing else
    is taken under it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: dict[Hub, None] = {}  # an ordered set
        self._attached: set[Hub] = set()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def _forked(self) -> None:
        """Lock held: a child process inherits no thread; forget the parent's."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._queue, self._attached, self._thread = {}, set(), None
            self._wake = threading.Event()

    def attach(self, hub: Hub) -> None:
        with self._lock:
            self._forked()
            self._attached.add(hub)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pine-ws-hub",
                                                daemon=True)
                self._thread.start()

    def detach(self, hub: Hub) -> None:
        with self._lock:
            self._attached.discard(hub)
            self._queue.pop(hub, None)
            self._wake.set()  # the thread ends if it was the last

    def post(self, hub: Hub) -> None:
        with self._lock:
            if hub in self._attached:
                self._queue[hub] = None
                self._wake.set()

    def _run(self) -> None:
        while True:
            signalled = self._wake.wait(_IDLE_WAIT)
            with self._lock:
                self._wake.clear()
                if not self._attached and not self._queue:
                    self._thread = None
                    return
                if not signalled:  # the hang guard: every hub looks once
                    self._queue.update(dict.fromkeys(self._attached))
                batch, self._queue = list(self._queue), {}
            for hub in batch:
                if hub.turn():
                    self.post(hub)  # more to read: after the others had their turn

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"attached": len(self._attached), "queued": len(self._queue),
                    "threads": 0 if self._thread is None else 1}


_dispatcher = _Dispatcher()

_hubs: dict[HubKey, Hub] = {}
#: Taken before a hub's lock, never after.
_registry_lock = threading.Lock()


def _hub_for(key: HubKey) -> Hub:
    with _registry_lock:
        hub = _hubs.get(key)
        if hub is None:
            hub = _hubs[key] = Hub(key)
        return hub


def _discard_if_idle(hub: Hub) -> None:
    """Forget a hub that never got a member (no thread was started for it)."""
    with _registry_lock, hub._lock:
        if not hub._members and not hub._running and not hub._stopped:
            hub._stop()


#: Totals of the process since it started, for the stats (hubs come and go).
_totals = {"frames": 0, "unparked": 0, "hubs_started": 0}
_totals_lock = threading.Lock()


def _count(name: str, n: int = 1) -> None:
    with _totals_lock:
        _totals[name] += n


def stats() -> dict[str, Any]:
    """The process's hubs and totals, for tests and debugging.

    ``parked``: watchers parked now; ``hubs``: each hub's path, kind, parked
    members, offset and counts; ``frames`` (built), ``unparked`` (members
    handed back to their thread), ``hubs_started``: totals since the start.
    """
    with _registry_lock:
        hubs = [hub.stats() for hub in _hubs.values()]
    with _totals_lock:
        totals = dict(_totals)
    return {"parked": sum(int(h["parked"]) for h in hubs), "hubs": hubs,
            "dispatcher": _dispatcher.stats(), **totals}


def parked_count() -> int:
    """How many watchers of this process are parked on a hub now."""
    return int(stats()["parked"])
