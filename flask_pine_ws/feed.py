"""The feed: one component per followed file that owns its readers and reads each append once.

Without it, one append to a file that 1,000 clients follow wakes 1,000
watcher threads, and each reads the same bytes, encodes its own frame and
sends it: the threads queue for the GIL, and the last client waits about a
second. This module owns the fan-out, and nothing else: what a watcher sends
on its own (the backlog, notices, catching up) stays in :mod:`.watch`, how a
file is read in :mod:`.follower`, how a change is heard in
:mod:`.watchtable`, how a frame reaches a socket in :mod:`.protocol`.

What a :class:`Feed` owns, and why:

- **The path's one watch-table subscription.** A feed per followed path,
  payload kind (``"bytes"`` for binary and framed watchers, ``"text"`` for
  text ones) and message size, in a registry of the process. The feed, not
  each watcher, subscribes the path: one change of the file costs the table
  one call, whatever the number of watchers. The feed passes it on: to its
  own turn when a reader is live, and to the event of every reader still
  reading on its own (a tuple built by the first signal after the readers
  changed, under the feed's lock, then read without one).
- **Its readers.** A watcher registers as a :class:`Reader`
  (:func:`register`). A reader is *own* (its thread reads with its own
  follower: the backlog, catching up, a rotation) or *live*: caught up (its
  follower at the end of the file, no UTF-8 sequence carried) and at the
  feed's position (``st_dev``, ``st_ino``, offset), it joins
  (:meth:`Reader.caught_up`); a feed without live readers takes the
  position of the first that joins. A reader ahead of the feed in the same
  file waits; the feed wakes it when it gets there.
- **One read and one frame per append.** The feeds of a process share one
  thread (:class:`_Dispatcher`), alive while any feed has a live reader: a
  signalled feed is queued, and the thread gives each queued feed a turn of
  a few chunks, round robin, so a large append to one file does not hold
  back the others. A feed reads the new bytes once with a
  :class:`~.follower.FileFollower` of its own, builds the frame once
  (:func:`~.protocol.server_frame`) and writes it to every live reader's
  socket without ever blocking (``Conn.try_send_frame``): nothing in a turn
  waits for a client or a file (the follower opens only regular files,
  without blocking), which is why one thread for all is enough. A small
  feed (up to ``_INLINE_READERS`` live readers) whose change comes while
  that thread has nothing queued gets a turn of one chunk right on the
  table's thread instead: the thread hop from the table's thread to the
  feeds' was a third of the way from an append to the socket. The feed
  counts the file bytes that reached each socket (``Conn.add_viewed_bytes``).
- **The hand back, one way.** A live reader whose socket cannot take the
  frame whole (its connection busy with another send, its socket buffer
  full, closed) leaves the live set at once and is told, through its one
  method :meth:`Reader.step`, where to go on: a :class:`CatchUp` with the
  offset after what reached its socket, and the file bytes of a frame its
  socket took in part (its thread writes the rest, then counts them). Its
  thread reads on its own from there until it is caught up again. Fast
  readers are never held back by a slow one, and nothing outside this module
  changes a reader's state.
- Anything but bytes (a rotation, a truncation, the path gone, an error)
  hands every live reader back at the feed's offset: each handles it itself,
  with its framed notices, and the feed starts again wherever its next
  reader joins.

Bounded: no queue per reader (the file is the buffer), at most the rest of
one frame kept per socket (by :mod:`.protocol`), one thread per process for
all the feeds, and only while one has a live reader.

``PINE_WS_BROADCAST`` off (and a path through a symlink, and a connection
that cannot take a frame without blocking, such as TLS): the watcher still
registers, but never joins. It is woken by the feed's subscription like any
reader that reads on its own, so that one path is still subscribed once and
there is one way a change reaches a watcher.

Compression: the feed's frames are never compressed, also to connections
that negotiated permessage-deflate. RFC 7692 lets a sender send any message
uncompressed (RSV1 clear), and the frame goes to the socket past wsproto, so
its compressor (the context a later compressed message builds on) is
untouched. What a watcher sends on its own (the backlog, catching up) is
still compressed. One frame for all is what makes the fan-out cheap:
compressing for each reader costs a ``zlib`` call per reader per line, on
the one thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from .follower import Chunk, FileFollower, Item, Position
from .protocol import PayloadKind, server_frame
from .watchtable import WatchTable

if TYPE_CHECKING:
    from .conn import Conn
    from .watchtable import Subscription

logger = logging.getLogger(__name__)

#: Seconds the feeds' thread waits with no signal before every feed looks again (a hang guard).
_IDLE_WAIT = 60.0

#: Live readers up to which a change of the file is read and sent on the thread that heard of
#: it (the watch table's), when the feeds' thread has nothing queued: one thread hop less
#: between an append and the socket (~0.15 ms of a ~0.5 ms path). One chunk to a hundred
#: sockets is well under a millisecond; a larger feed, or anything left, gets its turns on the
#: feeds' thread as usual, so the table's thread is never held for long.
_INLINE_READERS = 100

#: Chunks a feed reads and sends per turn before the next queued feed has its turn.
_TURN_CHUNKS = 4

#: A feed's key: the path followed, the payload kind, the largest message.
FeedKey = tuple[str, PayloadKind, int]

#: What :meth:`Reader.step` returns while the reader is live: the feed sends, nothing to do.
LIVE: Final = "live"


@dataclass(frozen=True)
class CatchUp:
    """Where a reader that reads on its own goes on (what :meth:`Reader.step` returns).

    :ivar offset: the offset of its file after what the feed delivered to its
        socket (skip its follower there), or ``None``: go on where its
        follower is (it was not live since its last step).
    :ivar viewed: file bytes of a frame its socket took in part: write the
        rest (``Conn.flush``), then count them as viewed.
    """

    offset: int | None = None
    viewed: int = 0


_GO_ON = CatchUp()

#: A reader handed back has not said where it is yet: the path's subscription knows nothing.
_UNREAD: Final = "unread"

Report = Position | None | Literal["unread"]


class _Signal(threading.Event):
    """What the watch table sets for a feed's subscription: the feed's :meth:`Feed.signal`.

    The table takes an event per subscription; this one passes the call on
    (on the table's thread: it only sets events and queues a turn). Its own
    flag is never set: nothing waits on it.
    """

    def __init__(self, feed: Feed) -> None:
        super().__init__()
        self._feed = feed

    def set(self) -> None:
        self._feed.signal()


class Reader:
    """One watcher, as its feed sees it; made by :func:`register`, ended by :meth:`close`.

    Its thread waits on :attr:`event`, which the feed sets (the file may have
    changed, or the reader was handed back) and so does :meth:`wake` (give it
    to ``Conn.add_listener``: a message, the peer leaving, the shutdown).
    """

    def __init__(self, feed: Feed, conn: Conn, shared: bool) -> None:
        self.event = threading.Event()
        self.conn = conn
        self._feed = feed
        #: May it join (``PINE_WS_BROADCAST`` on, no symlink, a connection that shares frames).
        self._shared = shared and conn.shares_frames
        # Changed by the feed only, under its lock:
        self._live = False
        self._catch_up = _GO_ON
        self._closed = False

    @property
    def feed(self) -> Feed:
        return self._feed

    @property
    def live(self) -> bool:
        """Whether the feed sends for it now."""
        return self._live

    def wake(self) -> None:
        """The connection's listener: wakes the reader's thread, live or not."""
        self.event.set()

    def step(self) -> CatchUp | Literal["live"]:
        """What the reader's thread does now: nothing (:data:`LIVE`), or go on reading itself.

        The one way the feed hands a reader back: the :class:`CatchUp` it
        returns is taken (the next call returns ``CatchUp()`` until the reader
        is live again).
        """
        return self._feed._step(self)

    def caught_up(self, follower: FileFollower) -> bool:
        """After a read to the end of the file: join the feed if the reader may and can.

        Also tells the path's subscription where the reader is (for the
        table's polling and safety checks). The read must have begun after
        :attr:`event` was cleared: a change of the file since then has set
        it, and joining then gives the feed a turn that sends the change.

        :returns: whether it is live now.
        """
        return self._feed._caught_up(self, follower)

    def refresh_watch(self, *, missing: bool) -> None:
        """Let the path's subscription follow its directory (changed, or the file missing)."""
        self._feed._refresh(force=missing)

    def close(self) -> None:
        """Leave the feed (the watcher ends); the last reader of a path ends its subscription."""
        _unregister(self)


class Feed:
    """The readers of one file, its subscription, and the reads done for the live ones.

    Made and found by :func:`register`; not used directly.
    """

    def __init__(self, key: FeedKey, table: WatchTable) -> None:
        self.key = key
        self._table = table
        self._lock = threading.Lock()
        #: Every reader, live or not.
        self._readers: set[Reader] = set()
        #: The live readers (insertion-ordered), each with its connection's
        #: ``try_send_frame`` and ``add_viewed_bytes``, bound once for the send loop.
        self._live: dict[Reader, tuple[Callable[[bytes], int], Callable[[int], None]]] = {}
        #: What a signal wakes: the events of the readers not live, or None
        #: once readers came, went, joined or were handed back: the next
        #: signal builds it again (under the lock), so that 10,000 readers
        #: connecting cost one rebuild per change of the file, not one per
        #: reader (which made every join O(readers)).
        self._own_events: tuple[threading.Event, ...] | None = ()
        # Readers that could not join because the live feed was elsewhere:
        # behind them in the same file (woken when it gets to their offset),
        # or in another file (woken when it stops). Without a wake-up they
        # would try again only on the next change of the file, which may
        # never come.
        self._ahead: dict[Reader, tuple[tuple[int, int], int]] = {}
        # Where each reader not live last said it was, counted by position:
        # the subscription knows the file only when all agree.
        self._reports: dict[Reader, Report] = {}
        self._report_counts: Counter[Report] = Counter()
        self._follower: FileFollower | None = None
        self._ident: tuple[int, int] | None = None
        self._offset = 0  # the file's bytes before it are delivered to every live reader
        self._position: Position | None = None  # the feed's own, at the end of its last read
        self._generation = 0  # a new follower: a read in progress belongs to the old one
        self._closed = False
        self._running = False  # attached to the dispatcher (it has live readers)
        self._items: Iterator[Item] | None = None
        self._items_generation = -1
        #: Signals received (only compared: a change means "look again"), and
        #: their count when the read in progress began.
        self._signals = 0
        self._items_signals = 0
        #: Counts for the stats: frames built, live readers handed back.
        self.frames = 0
        self.handed_back = 0
        self._sub: Subscription = table.subscribe(key[0], _Signal(self))

    # -- the table's thread --------------------------------------------------

    def signal(self) -> None:
        """The file may have changed: wake the readers reading themselves; a turn if one is live."""
        self._signals += 1  # before reading: see _round
        events = self._own_events
        if events is None:
            with self._lock:
                events = self._own_events
                if events is None:
                    events = self._own_events = tuple(
                        r.event for r in self._readers if not r._live)
        for event in events:
            event.set()
        if self._live:
            if (len(self._live) <= _INLINE_READERS and not self._sub.needs_refresh
                    and _dispatcher.idle()):
                # Right here: nothing else is queued. A turn of the feeds'
                # thread on this feed at the same time is harmless: each
                # chunk is read and sent under the feed's lock, in order.
                if not self.turn(budget=1):
                    return
            _dispatcher.post(self)

    # -- a reader's thread ---------------------------------------------------

    def _step(self, reader: Reader) -> CatchUp | Literal["live"]:
        with self._lock:
            if reader._live:
                return LIVE
            catch_up, reader._catch_up = reader._catch_up, _GO_ON
            return catch_up

    def _caught_up(self, reader: Reader, follower: FileFollower) -> bool:
        position = follower.position
        with self._lock:
            if reader._live or reader._closed:
                return reader._live
            if (not reader._shared or self._closed or position is None
                    or follower.delivered != position.offset or not reader.conn.connected):
                self._report(reader, position)
                return False
            ident, offset = position.ident, position.offset
            if self._live and (self._ident, self._offset) != (ident, offset):
                if self._ident != ident or self._offset < offset:
                    self._ahead[reader] = (ident, offset)
                self._report(reader, position)
                return False
            if not self._live and (self._ident, self._offset) != (ident, offset):
                if not self._restart(ident, offset):
                    self._report(reader, position)
                    return False
            self._ahead.pop(reader, None)
            self._report(reader, None, remove=True)
            reader._live = True
            reader._catch_up = _GO_ON
            conn = reader.conn
            self._live[reader] = (conn.try_send_frame, conn.add_viewed_bytes)
            self._events_changed()
            if not self._running:
                _count("feeds_started")
                self._running = True
                _dispatcher.attach(self)
        # The file may have grown (or been replaced) since the reader read it
        # to the end: that signal set the reader's own event, not a turn of
        # the feed. Look once then. A signal after the join finds the reader
        # live, and gives the feed a turn itself. Without the check every
        # join cost a turn (a wake of the feeds' thread and five system
        # calls), a thousand of them when a crowd connects.
        if reader.event.is_set():
            _dispatcher.post(self)
        return True

    def _refresh(self, *, force: bool) -> None:
        if force or self._sub.needs_refresh:
            self._table.refresh(self._sub)

    def _add(self, reader: Reader) -> None:
        with self._lock:
            self._readers.add(reader)
            self._report(reader, _UNREAD)
            self._events_changed()

    def _remove(self, reader: Reader) -> bool:
        """Take ``reader`` off; ``True`` when it was the last (the feed closes)."""
        with self._lock:
            reader._closed = True
            self._readers.discard(reader)
            self._ahead.pop(reader, None)
            self._report(reader, None, remove=True)
            if self._live.pop(reader, None) is not None:
                reader._live = False
                if not self._live:
                    _dispatcher.post(self)  # its next turn detaches it
            self._events_changed()
            if self._readers:
                return False
            self._closed = True
            self._close_follower()
            if self._running:
                self._running = False
                _dispatcher.detach(self)
            return True

    def _unsubscribe(self) -> None:
        self._table.unsubscribe(self._sub)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"path": self.key[0], "kind": self.key[1], "live": len(self._live),
                    "readers": len(self._readers), "offset": self._offset,
                    "frames": self.frames, "handed_back": self.handed_back}

    # -- inside the lock -----------------------------------------------------

    def _events_changed(self) -> None:
        self._own_events = None  # built by the next signal

    def _report(self, reader: Reader, report: Report, *, remove: bool = False) -> None:
        """Note where a reader not live is, and tell the subscription what all agree on."""
        if reader in self._reports:
            old = self._reports.pop(reader)
            self._report_counts[old] -= 1
            if not self._report_counts[old]:
                del self._report_counts[old]
        if not remove:
            self._reports[reader] = report
            self._report_counts[report] += 1
        self._publish_known()

    def _publish_known(self) -> None:
        """The subscription's ``known``: the one position every reader is at, else ``None``.

        The table wakes the subscription when the file differs from it (its
        polling and safety checks): with readers at different places, some
        are behind, and a wake-up costs them one look.
        """
        seen: set[Report] = set(self._report_counts)
        if self._live:
            seen.add(self._position if self._position is not None else _UNREAD)
        known = seen.pop() if len(seen) == 1 else None
        self._sub.known = known if isinstance(known, Position) else None

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
            # Another file is at the path now (or it shrank): the reader will
            # see it on its own read; no feed on a file it does not read.
            follower.close()
            return False
        self._follower, self._ident, self._offset = follower, ident, offset
        self._position = position
        self._generation += 1
        return True

    def _close_follower(self) -> None:
        if self._follower is not None:
            self._follower.close()
        self._follower, self._ident, self._items = None, None, None

    def _hand_back(self, readers: list[tuple[Reader, CatchUp]]) -> None:
        """Take ``readers`` off the live set, each to go on as its :class:`CatchUp` says."""
        for reader, catch_up in readers:
            del self._live[reader]
            reader._live = False
            reader._catch_up = catch_up
            self._report(reader, _UNREAD)
        self._events_changed()
        self.handed_back += len(readers)
        _count("handed_back", len(readers))
        for reader, _ in readers:
            reader.event.set()

    def _hand_back_all(self) -> None:
        at = CatchUp(self._offset)
        self._hand_back([(reader, at) for reader in self._live])
        self._close_follower()
        self._wake_ahead(everyone=True)

    def _wake_ahead(self, *, everyone: bool = False) -> None:
        """Wake the readers waiting for the feed to reach their offset (or all of them)."""
        for reader, (ident, at) in list(self._ahead.items()):
            if everyone or (ident == self._ident and at <= self._offset):
                del self._ahead[reader]
                reader.event.set()

    # -- the feeds' thread ---------------------------------------------------

    def turn(self, budget: int = _TURN_CHUNKS) -> bool:
        """Read and send up to ``budget`` chunks of what the file has now (not blocking).

        On the feeds' thread, or on the table's for a small feed (:meth:`signal`).

        :returns: whether there may be more to read now (queue another turn).
        """
        try:
            self._refresh(force=False)  # its directory changed: follow it (no wait: stats)
            with self._lock:
                if not self._live:
                    self._stop()
                    return False
            return self._round(budget)
        except BaseException:
            logger.exception("the feed of %s failed; its readers read on their own",
                             self.key[0])
            with self._lock:
                self._hand_back_all()
                self._stop()
            return False

    def _stop(self) -> None:
        """Lock held, no live reader: close the follower and leave the thread."""
        self._close_follower()
        self._wake_ahead(everyone=True)  # to join again, restarting the feed
        if self._running:
            self._running = False
            _dispatcher.detach(self)

    def _round(self, budget: int) -> bool:
        """Read up to ``budget`` chunks of what the file has now; send each to every live reader.

        :returns: ``True`` when the budget ran out before the end of the file.
        """
        for _ in range(budget):
            with self._lock:
                follower = self._follower
                if not self._live or follower is None:
                    self._items = None
                    return False
                if self._items is None or self._items_generation != self._generation:
                    self._items, self._items_generation = follower.read(), self._generation
                    self._items_signals = self._signals
                try:
                    item = next(self._items)
                except StopIteration:
                    self._items = None
                    if self._signals != self._items_signals:
                        # Signalled while this read went on (a turn ran out of
                        # budget, or the table's thread ran one): the read
                        # ends where the file ended when it looked, and the
                        # signal was spent on it. Read again, or the bytes
                        # appended since wait for the next append (or the
                        # hang guard, a minute later).
                        continue
                    self._position = follower.position
                    self._wake_ahead()
                    self._publish_known()
                    return False
                except OSError:
                    # The path cannot be read now: each reader finds out for
                    # itself and tells its client.
                    self._hand_back_all()
                    return False
                if isinstance(item, Chunk):
                    self._deliver(item)
                else:
                    # Rotated or Waiting: every reader handles it itself (with
                    # its framed notice); the feed starts again when they
                    # join at their new position.
                    self._hand_back_all()
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
        # The hot loop: two calls per reader, nothing else when the socket
        # takes the whole frame (the common case).
        dropped: list[tuple[Reader, CatchUp]] | None = None
        for reader, (send, viewed) in self._live.items():
            taken = send(frame)
            if taken == size:
                viewed(nbytes)
                continue
            if dropped is None:
                dropped = []
            # In part: its thread writes the rest, counts the chunk, and goes
            # on after it. Not at all: it reads this chunk itself.
            dropped.append((reader, CatchUp(after, nbytes) if taken else CatchUp(before)))
        if dropped is not None:
            self._hand_back(dropped)


class _Dispatcher:
    """The one thread of the process that gives the feeds their turns.

    Feeds with live readers are *attached*; a feed's signal queues it (once,
    however often it is signalled before its turn). The thread takes the
    queue, gives each feed a turn, and queues again a feed that had more to
    read, behind the others. It starts with the first attached feed and ends
    when none is attached and none queued; a process that forked (gunicorn)
    starts its own. Its lock is taken last, after a feed's, and nothing else
    is taken under it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._queue: dict[Feed, None] = {}  # an ordered set
        self._attached: set[Feed] = set()
        self._thread: threading.Thread | None = None
        self._busy = False  # giving turns now
        self._pid = os.getpid()

    def _forked(self) -> None:
        """Lock held: a child process inherits no thread; forget the parent's."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._queue, self._attached, self._thread, self._busy = {}, set(), None, False
            self._wake = threading.Event()

    def attach(self, feed: Feed) -> None:
        with self._lock:
            self._forked()
            self._attached.add(feed)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pine-ws-feed",
                                                daemon=True)
                self._thread.start()

    def detach(self, feed: Feed) -> None:
        with self._lock:
            self._attached.discard(feed)
            self._queue.pop(feed, None)
            self._wake.set()  # the thread ends if it was the last

    def post(self, feed: Feed) -> None:
        with self._lock:
            if feed in self._attached:
                self._queue[feed] = None
                self._wake.set()

    def _run(self) -> None:
        while True:
            signalled = self._wake.wait(_IDLE_WAIT)
            with self._lock:
                self._wake.clear()
                if not self._attached and not self._queue:
                    self._thread = None
                    return
                if not signalled:  # the hang guard: every feed looks once
                    self._queue.update(dict.fromkeys(self._attached))
                batch, self._queue = list(self._queue), {}
            self._busy = True
            try:
                for feed in batch:
                    if feed.turn():
                        self.post(feed)  # more to read: after the others had their turn
            finally:
                self._busy = False

    def idle(self) -> bool:
        """Nothing queued and no turn running (read without the lock: a hint)."""
        return not self._queue and not self._busy

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"attached": len(self._attached), "queued": len(self._queue),
                    "threads": 0 if self._thread is None else 1}


_dispatcher = _Dispatcher()

_feeds: dict[FeedKey, Feed] = {}
_feeds_pid = os.getpid()
#: Taken before a feed's lock, never after.
_registry_lock = threading.Lock()


def register(conn: Conn, path: str, kind: PayloadKind, chunk_bytes: int, *,
             shared: bool = True) -> Reader:
    """Make ``conn`` a reader of the feed of ``path`` (made, and subscribed, with the first).

    Register before opening the file: a change between the two is not missed.
    Pair with :meth:`Reader.close`.

    :param path: the absolute path followed.
    :param kind: ``"bytes"`` or ``"text"``: what its messages carry.
    :param chunk_bytes: its largest message (``PINE_WS_CHUNK_BYTES``).
    :param shared: may it join (be sent to by the feed); ``False``: it reads
        on its own, woken by the feed's subscription.
    :raises PineWSError: the path cannot be watched (see :meth:`.WatchTable.subscribe`).
    """
    global _feeds_pid
    if kind not in ("text", "bytes"):
        raise ValueError(f"kind must be 'text' or 'bytes', not {kind!r}")
    key: FeedKey = (path, kind, chunk_bytes)
    with _registry_lock:
        if _feeds_pid != os.getpid():  # forked: the parent's feeds are not this process's
            _feeds.clear()
            _feeds_pid = os.getpid()
        feed = _feeds.get(key)
        if feed is None:
            # Subscribed under the registry lock: a second reader of the path
            # never finds a feed that is not subscribed yet.
            feed = _feeds[key] = Feed(key, WatchTable.current())
        reader = Reader(feed, conn, shared)
        feed._add(reader)
    return reader


def _unregister(reader: Reader) -> None:
    feed = reader.feed
    with _registry_lock:
        if reader._closed:
            return
        last = feed._remove(reader)
        if last and _feeds.get(feed.key) is feed:
            del _feeds[feed.key]
    if last:
        # Outside the lock: the table may stop its threads (and join them).
        feed._unsubscribe()


#: Totals of the process since it started, for the stats (feeds come and go).
_totals = {"frames": 0, "handed_back": 0, "feeds_started": 0}
_totals_lock = threading.Lock()


def _count(name: str, n: int = 1) -> None:
    with _totals_lock:
        _totals[name] += n


def stats() -> dict[str, Any]:
    """The process's feeds and totals, for tests and debugging.

    ``live``: readers the feeds send to now; ``readers``: every registered
    reader; ``feeds``: each feed's path, kind, live and registered readers,
    offset and counts; ``frames`` (built), ``handed_back`` (live readers
    handed back to their thread), ``feeds_started`` (a feed's first reader
    joined): totals since the start.
    """
    with _registry_lock:
        feeds = [feed.stats() for feed in _feeds.values()]
    with _totals_lock:
        totals = dict(_totals)
    return {"live": sum(int(f["live"]) for f in feeds),
            "readers": sum(int(f["readers"]) for f in feeds), "feeds": feeds,
            "dispatcher": _dispatcher.stats(), **totals}


def live_count() -> int:
    """How many watchers of this process a feed sends to now."""
    return int(stats()["live"])
