"""The watch table: how a process learns that a followed file may have changed.

:class:`WatchTable` owns the process's event source and the watches it
holds, and nothing about reading files (that is :mod:`.follower`). A watcher
subscribes its path with a :class:`threading.Event`; the table sets that
event whenever the path may have changed, and the watcher reads.

Kernel and library facts this module is built around (read from the kernel's
``inotify(7)`` and watchdog's sources):

- On Linux the table reads inotify itself (:mod:`.inotify`): one instance
  per process and one thread of its own (``pine-ws-watch``) that waits in
  ``poll`` on its descriptor, parses the records and sets the subscribers'
  events right there. An append reaches the thread that sends it through one
  hop. watchdog's observer took four more, each a thread handing over to the
  next under the GIL (its reader thread, a delay queue, the emitter thread,
  the dispatcher thread: ~0.3 ms at the median, ~1.4 ms at p99, measured by
  ``bench/hops.py``). Elsewhere (no inotify) a watchdog Observer is the
  source, with the same handler per watch.
- The source is created lazily, on first use, so that under gunicorn it is
  born in the worker, after the fork (a table inherited through ``fork`` is
  dropped and built again: its thread did not survive, and removing its
  watches would remove the parent's, which shares the instance). One
  instance, whatever the number of watchers: the kernel caps instances per
  user (``max_user_instances``, often 128).
- One watch per *directory*, never per file: watching a file really watches
  its directory, and only the directory sees a rotation (a rename, a new file
  with the same name). The watch is shared by every subscriber of that
  directory and reference counted: the first subscriber adds it, the others
  join its groups, and the last one to leave removes it.
- Every watch uses the same event mask (:data:`.inotify.DIRECTORY_MASK`, and
  :data:`EVENT_FILTER` for watchdog): two masks on one directory of one
  instance overwrite each other. It leaves out open and close-without-write
  events, which the watchers' own reads cause. ``inotify_add_watch`` returns
  the same descriptor for the same inode: a directory renamed under a watcher
  and watched again under its new path shares it, so a descriptor maps to
  its watches and is removed with the last one.
- The watched directory itself removed or renamed (``IN_DELETE_SELF``,
  ``IN_MOVE_SELF``, ``IN_IGNORED``): its watch is dead, every subscriber
  moves. watchdog asks for no ``IN_MOVE_SELF``: there a renamed directory is
  only seen by the safety check.
- A full kernel queue (``max_queued_events``) drops events and queues
  ``IN_Q_OVERFLOW``: the table wakes every subscriber (logged once), which
  reads whatever it missed.
- One handler per watch, dispatching per *path*: the subscribers of one
  watched directory are grouped by the name they follow, so a file event
  costs one dictionary lookup and one call per interested party, not one
  call per subscriber (with watchdog, a handler per subscriber meant, for one
  append to a file that 1,000 clients follow, 1,000 calls on the observer
  thread, under the GIL, before the first byte was read).
- One subscriber per followed path, usually: the path's :mod:`.feed`
  subscribes once for all the watchers of the file, and passes an event on
  to them, so an append costs the table one call however many follow it.
- Dispatching (on the table's thread, or watchdog's under its lock) only sets
  events: never I/O, never this table's lock, so adding a watch under our
  lock cannot deadlock against a dispatch. It reads the groups without a
  lock: what it reads is rebuilt, never changed in place (copy on write,
  under the table's lock), so a dispatch sees either the old or the new
  state.
- A directory that does not exist cannot be watched: its nearest existing
  ancestor is watched instead, and the subscriber moves down as the
  directories appear (``mkdir -p`` while a watcher waits). A watched directory
  that is removed stops its watch; the subscriber is told to move.
- Polling (``PINE_WS_POLLING``): ``True`` always (NFS, CIFS, some Docker
  volumes send no events), ``False`` never, ``"auto"`` where inotify is refused
  (``EMFILE``: instance limit, ``ENOSPC``: watch limit). The table's thread
  stats the polled paths every ``PINE_WS_POLL_INTERVAL`` seconds (it waits on
  the inotify descriptor with that timeout).
- The same thread makes a rare safety check (``PINE_WS_SAFETY_INTERVAL``) of
  every path: an event can be lost (a rename on another host, a queue
  overflow), so it wakes the watchers whose file differs from what they have
  read. It wakes only those, and stats each path once per check (or poll),
  whatever the number of its subscribers: 1,000 idle watchers of one file
  cost one ``stat`` and 1,000 tuple comparisons.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from .config import setting
from .errors import PineWSError
from .inotify import AVAILABLE as INOTIFY_AVAILABLE
from .inotify import SELF_GONE, Inotify, InotifyEvent, Mask

if TYPE_CHECKING:
    # For annotations only: importing anything under watchdog.observers runs
    # the package's __init__, which on Linux imports its inotify module, and
    # watchdog 7.0 creates (and starts a thread on) an inotify instance there.
    # At the instance limit that import raises EMFILE and the worker would not
    # boot; imported at run time only in _start_observer, a refusal there is
    # one the table falls back to polling from.
    from watchdog.observers.api import BaseObserver, ObservedWatch

    from .follower import Position

#: ``PINE_WS_POLLING``, normalised: ``"auto"``, always (``True``) or never (``False``).
Polling = Literal["auto"] | bool

#: How a table watches now (its stats): nothing, all by inotify, all polled, or both.
TableMode = Literal["idle", "inotify", "polling", "mixed"]

#: Where a table's events come from: its own inotify descriptor, read on its
#: one thread (Linux), or a watchdog Observer (elsewhere).
EventSource = Literal["inotify", "watchdog"]

logger = logging.getLogger(__name__)

#: The one event filter of every watch (see the module docstring).
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileModifiedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]

#: errno values meaning "inotify refused": instance limit (or fd limit), watch limit, no inotify.
_REFUSED = (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOSYS)

#: How many times a subscription retries when its directory vanishes while being watched.
_ATTACH_TRIES = 8


def parse_polling(value: object) -> Polling:
    """Normalise a ``PINE_WS_POLLING`` value to ``"auto"``, ``True`` or ``False``.

    Accepts booleans, ``"auto"`` and the usual spellings of yes and no (an
    environment variable arrives as a string).

    :raises ValueError: any other value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text in ("1", "true", "yes", "on", "always"):
            return True
        if text in ("0", "false", "no", "off", "never"):
            return False
    raise ValueError(f"PINE_WS_POLLING must be 'auto', True or False, not {value!r}")


class Subscription:
    """One watcher's interest in one path: the table sets :attr:`event` when it may have changed.

    :ivar path: the absolute path followed.
    :ivar event: set by the table; the watcher waits on it.
    :ivar known: what the watcher has read (its follower's
        :class:`~.follower.Position`), or ``None`` (no file open); the
        watcher keeps it current so that polling
        and safety checks wake it only when the file differs.
    :ivar needs_refresh: the watched directory changed (created, removed):
        the watcher should call :meth:`WatchTable.refresh`.
    """

    def __init__(self, path: str, event: threading.Event, table: WatchTable) -> None:
        self.path = path
        self.event = event
        self.table = table
        self.known: Position | None = None
        self.needs_refresh = False
        self.watch: _Watch | None = None
        #: Its group in :attr:`watch` (the subscribers of the same wake path).
        self.group: _Group | None = None
        #: The path whose events concern this subscriber: the file itself when
        #: its directory is watched, else the next directory down from the
        #: watched ancestor.
        self.wake_path = ""
        self.direct = False

    def poke(self) -> None:
        """The file may have changed: signal the watcher."""
        self.event.set()

    def move(self) -> None:
        """The watcher must refresh (its directory changed): wake it."""
        self.needs_refresh = True
        self.event.set()

    def __repr__(self) -> str:
        return f"<Subscription {self.path!r}>"


class _Group:
    """The subscribers of one wake path in one watch, and what an event of that path calls.

    ``members``, ``targets`` and ``movers`` are rebuilt (under the table's
    lock), never changed in place: the table's thread reads them without a
    lock.
    """

    def __init__(self, wake_path: str) -> None:
        self.wake_path = wake_path
        self.members: tuple[Subscription, ...] = ()
        #: What an event of the path calls, each once: the events of the
        #: subscribers following that very file.
        self.targets: tuple[Callable[[], None], ...] = ()
        #: The subscribers for which the path is a missing directory on the
        #: way to their file: an event means it appeared, and they must move.
        self.movers: tuple[Subscription, ...] = ()

    def rebuild(self) -> None:
        targets: dict[Callable[[], None], None] = {}
        for sub in self.members:
            if sub.direct:
                targets[sub.event.set] = None
        self.targets = tuple(targets)
        self.movers = tuple(sub for sub in self.members if not sub.direct)


class _Dispatch(FileSystemEventHandler):
    """A watch's one handler: signals the group of each path an event names. Signals only."""

    def __init__(self, watch: _Watch) -> None:
        self.watch = watch

    def dispatch(self, event: FileSystemEvent) -> None:
        watch = self.watch
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if watch.path in (src, dest):
            # The watched directory itself was removed or moved: its watch is
            # dead (watchdog stops it); every subscriber must move.
            watch.gone()
            return
        watch.signal(src)
        if dest:
            watch.signal(dest)


class _Handoff:
    """Between the table and its running thread: what the thread closes as it ends."""

    def __init__(self) -> None:
        self.close: Inotify | None = None
        self.ended = False


class _Watch:
    """One watched directory and its subscribers, grouped by wake path."""

    def __init__(self, path: str, ident: tuple[int, int]) -> None:
        self.path = path
        self.ident = ident
        #: ``watch.path + "/"``: an inotify event's name joined to it is a wake path.
        self.prefix = os.path.join(path, "")
        self.observed: ObservedWatch | None = None  # a watchdog watch
        self.wd = -1  # an inotify watch descriptor; -1 and observed None: polled
        #: wake path -> group; replaced, never changed in place (read by the event thread).
        self.groups: dict[str, _Group] = {}
        self.count = 0  # subscribers, over every group
        self.dead = False
        self.handler = _Dispatch(self)

    @property
    def polled(self) -> bool:
        return self.observed is None and self.wd < 0

    # -- on the event thread: signals only, no lock (see _Group) -------------

    def signal(self, path: str) -> None:
        """``path`` in the directory changed: signal its group."""
        group = self.groups.get(path)
        if group is None:
            return
        for target in group.targets:
            target()
        for sub in group.movers:  # a missing directory on the way appeared
            sub.move()

    def gone(self) -> None:
        """The directory itself was removed or moved: the watch is dead, every subscriber moves."""
        self.dead = True
        for every in self.groups.values():
            for sub in every.members:
                sub.move()

    def signal_all(self) -> None:
        """Events were lost (the kernel's queue overflowed): every subscriber looks again."""
        for group in self.groups.values():
            for target in group.targets:
                target()
            for sub in group.movers:
                sub.move()

    def subs(self) -> list[Subscription]:
        return [sub for group in self.groups.values() for sub in group.members]

    def add(self, sub: Subscription) -> None:
        group = self.groups.get(sub.wake_path)
        if group is None:
            group = _Group(sub.wake_path)
            self.groups = {**self.groups, sub.wake_path: group}
        group.members = (*group.members, sub)
        group.rebuild()
        sub.group = group
        self.count += 1

    def remove(self, sub: Subscription) -> None:
        group = sub.group
        sub.group = None
        if group is None or sub not in group.members:
            return
        group.members = tuple(s for s in group.members if s is not sub)
        self.count -= 1
        if group.members:
            group.rebuild()
        else:
            self.groups = {k: g for k, g in self.groups.items() if g is not group}


class WatchTable:
    """The process's watches: one event source, one reference-counted watch per directory.

    Use :meth:`current` to get the process's table. Thread-safe.

    :param polling: ``"auto"``, ``True`` or ``False`` (see :func:`parse_polling`).
    :param poll_interval: seconds between stats of polled paths.
    :param safety_interval: seconds between safety checks of every path.
    :param source: ``"inotify"`` (the table reads an inotify descriptor on
        its own thread) or ``"watchdog"`` (a watchdog Observer); ``None``:
        inotify where the platform has it, else watchdog.
    """

    _current: ClassVar[WatchTable | None] = None
    _current_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, polling: object = "auto", poll_interval: float = 1.0,
                 safety_interval: float = 30.0, source: EventSource | None = None) -> None:
        self.polling = parse_polling(polling)
        if source is None:
            source = "inotify" if INOTIFY_AVAILABLE else "watchdog"
        self.source: EventSource = source
        if poll_interval <= 0 or safety_interval <= 0:
            raise ValueError("poll_interval and safety_interval must be > 0")
        self.poll_interval = float(poll_interval)
        self.safety_interval = float(safety_interval)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._subs: set[Subscription] = set()
        self._observer: BaseObserver | None = None
        self._inotify: Inotify | None = None
        #: watch descriptor -> its watches (two only when one inode has two
        #: paths, e.g. a directory renamed under a watcher); replaced, never
        #: changed in place (read by the table's thread without the lock).
        self._wds: dict[int, tuple[_Watch, ...]] = {}
        self._overflow_logged = False
        self._inotify_refused: str | None = None
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        self._ticker_kick = threading.Event()
        #: What the running thread closes as it ends (see :meth:`_stop_threads`).
        self._ticker_handoff = _Handoff()

    # -- the process's table -------------------------------------------------

    @classmethod
    def current(cls) -> WatchTable:
        """The table of this process, created on first use from the app's settings.

        ``PINE_WS_POLLING``, ``PINE_WS_POLL_INTERVAL`` and
        ``PINE_WS_SAFETY_INTERVAL`` are read from the current app (or the
        defaults) when the table is created. A table inherited from a parent
        process (``fork``) is dropped, not stopped: its threads stayed behind,
        and closing its inotify descriptor would remove the parent's watches.
        """
        with cls._current_lock:
            table = cls._current
            if table is None or table.pid != os.getpid():
                table = cls(polling=setting("PINE_WS_POLLING"),
                            poll_interval=float(setting("PINE_WS_POLL_INTERVAL")),
                            safety_interval=float(setting("PINE_WS_SAFETY_INTERVAL")))
                cls._current = table
            return table

    # -- subscribing ---------------------------------------------------------

    def subscribe(self, path: str, event: threading.Event) -> Subscription:
        """Start setting ``event`` whenever ``path`` may have changed.

        The path need not exist, nor its directory. Pair with :meth:`unsubscribe`.

        :raises PineWSError: inotify refused and ``PINE_WS_POLLING`` is ``False``.
        """
        sub = Subscription(os.path.abspath(path), event, self)
        with self._lock:
            self._subs.add(sub)
        try:
            self.refresh(sub, force=True)
        except BaseException:
            self.unsubscribe(sub)
            raise
        self._ensure_ticker()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop signalling ``sub``; the last subscriber of a directory unschedules its watch.

        When no subscriber is left, the event source and the table's thread stop too, so
        an idle process holds no watcher thread. Idempotent.
        """
        stopped: list[threading.Thread] = []
        closing: Inotify | None = None
        with self._lock:
            if sub not in self._subs:
                return
            self._subs.discard(sub)
            self._detach(sub)
            if not self._subs:
                stopped, closing = self._stop_threads()
        for thread in stopped:
            if thread is not threading.current_thread():
                thread.join(2.0)
        if closing is not None:
            closing.close()  # no thread was waiting on it

    def refresh(self, sub: Subscription, *, force: bool = False) -> None:
        """Move ``sub`` to the right watch if its directory appeared, vanished or changed.

        Cheap when nothing changed (one ``stat``); the watcher calls it when
        :attr:`Subscription.needs_refresh` is set or its file is missing.
        """
        for _ in range(_ATTACH_TRIES):
            sub.needs_refresh = False
            where = _nearest_dir(sub.path)
            if where is None:
                return  # no ancestor at all (the root vanished?): the safety check retries
            dir_path, ident, wake_path, direct = where
            with self._lock:
                if sub not in self._subs:
                    return
                watch = sub.watch
                if (not force and watch is not None and watch.path == dir_path
                        and watch.ident == ident and not watch.dead and sub.wake_path == wake_path):
                    return
                self._detach(sub)
                try:
                    self._attach(sub, dir_path, ident, wake_path, direct)
                except (FileNotFoundError, NotADirectoryError):
                    continue  # the directory went between stat and watch: look again
            # Anything created before the new watch was in place is not
            # reported by it: let the watcher look once more.
            sub.poke()
            return

    # -- inside the lock -----------------------------------------------------

    def _attach(self, sub: Subscription, dir_path: str, ident: tuple[int, int],
                wake_path: str, direct: bool) -> None:
        watch = self._watches.get(dir_path)
        if watch is not None and (watch.ident != ident or watch.dead):
            self._drop_watch(watch)  # a removed directory, created again: a new watch
            watch = None
        sub.wake_path, sub.direct = wake_path, direct
        if watch is None:
            watch = _Watch(dir_path, ident)
            self._schedule(watch)
            self._watches[dir_path] = watch
        sub.watch = watch
        watch.add(sub)

    def _schedule(self, watch: _Watch) -> None:
        """Watch ``watch.path`` with inotify, or leave it polled (``observed`` None)."""
        if self.polling is True or self._inotify_refused is not None:
            if self.polling is False:
                raise PineWSError(f"inotify is refused ({self._inotify_refused}) and "
                                  "PINE_WS_POLLING is False")
            return
        try:
            if self.source == "inotify":
                source = self._inotify or self._start_inotify()
                wd = source.add_watch(watch.path)  # ENOSPC at the watch limit
                watch.wd = wd
                self._wds = {**self._wds, wd: (*self._wds.get(wd, ()), watch)}
            else:
                observer = self._observer or self._start_observer()
                watch.observed = observer.schedule(watch.handler, watch.path, recursive=False,
                                                   event_filter=EVENT_FILTER)
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            reason = f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
            if self.polling is False:
                raise PineWSError(
                    f"inotify refused a watch on {watch.path} ({reason}); raise "
                    "fs.inotify.max_user_watches / max_user_instances, or set "
                    "PINE_WS_POLLING to 'auto' or True") from exc
            if exc.errno != errno.ENOSPC:
                self._inotify_refused = reason  # no instance at all: poll everything from now on
            self._kick()

    def _start_inotify(self) -> Inotify:
        source = Inotify()  # inotify_init1: EMFILE at the instance limit
        self._inotify = source
        self._kick()  # a running thread waits on it from now on
        return source

    def _start_observer(self) -> BaseObserver:
        # Imported here, not at the top: on Linux watchdog 7.0 creates an
        # inotify instance on import, so the import itself can raise EMFILE.
        from watchdog.observers import Observer

        observer = Observer()  # inotify_init where it is inotify: EMFILE at the instance limit
        observer.name = "pine-ws-observer"
        observer.daemon = True
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        self._observer = observer
        return observer

    def _detach(self, sub: Subscription) -> None:
        watch = sub.watch
        if watch is None:
            return
        sub.watch = None
        watch.remove(sub)
        if not watch.count:
            self._unschedule(watch)
            if self._watches.get(watch.path) is watch:
                del self._watches[watch.path]

    def _drop_watch(self, watch: _Watch) -> None:
        """Forget a dead watch; its other subscribers are told to move."""
        self._unschedule(watch)
        del self._watches[watch.path]
        for other in watch.subs():
            other.watch = other.group = None
            other.move()
        watch.groups, watch.count = {}, 0

    def _unschedule(self, watch: _Watch) -> None:
        if watch.observed is not None and self._observer is not None:
            try:
                self._observer.unschedule(watch.observed)
            except KeyError:
                pass  # unscheduled already
        wd = watch.wd
        if wd >= 0 and self._inotify is not None:
            rest = tuple(w for w in self._wds.get(wd, ()) if w is not watch)
            if rest:  # the same directory under another path keeps the kernel's watch
                self._wds = {**self._wds, wd: rest}
            else:
                self._wds = {k: v for k, v in self._wds.items() if k != wd}
                try:
                    self._inotify.rm_watch(wd)
                except OSError:
                    logger.exception("inotify_rm_watch of %s", watch.path)
        watch.observed = None
        watch.wd = -1
        watch.dead = True

    def _stop_threads(self) -> tuple[list[threading.Thread], Inotify | None]:
        """Stop the event source and the thread: the threads to join, the fd to close then.

        The table's own thread is not joined: it closes the inotify
        descriptor itself as it ends (out of ``poll``, so the number is not
        reused under it), and closing one costs the kernel a grace period
        (up to ~16 ms measured) that a leaving watcher need not wait for.
        """
        threads: list[threading.Thread] = []
        if self._observer is not None:
            self._observer.stop()
            threads.append(self._observer)
            self._observer = None
        closing, self._inotify, self._wds = self._inotify, None, {}
        if self._ticker is not None:
            handoff = self._ticker_handoff
            if closing is not None and not handoff.ended:  # (ended: it failed; closed here)
                handoff.close = closing
                closing.wake()
                closing = None
            self._ticker_stop.set()
            self._ticker_kick.set()
            self._ticker = None
        self._inotify_refused = None  # limits may have been raised meanwhile: try again next time
        return threads, closing

    def _kick(self) -> None:
        """Wake the table's thread: it looks again at what to wait on, and polls now."""
        self._ticker_kick.set()
        if self._inotify is not None:
            self._inotify.wake()

    # -- the table's thread: inotify events, polling and safety checks -------

    def _ensure_ticker(self) -> None:
        with self._lock:
            if self._ticker is not None or not self._subs:
                return
            self._ticker_stop = threading.Event()
            self._ticker_kick = threading.Event()
            self._ticker_handoff = _Handoff()
            self._ticker = threading.Thread(target=self._run, name="pine-ws-watch",
                                            args=(self._ticker_stop, self._ticker_kick,
                                                  self._ticker_handoff),
                                            daemon=True)
            self._ticker.start()

    def _run(self, stop: threading.Event, kick: threading.Event, handoff: _Handoff) -> None:
        try:
            self._tick_loop(stop, kick)
        finally:
            with self._lock:
                handoff.ended = True
                closing, handoff.close = handoff.close, None
            if closing is not None:
                closing.close()

    def _tick_loop(self, stop: threading.Event, kick: threading.Event) -> None:
        """Wait on the inotify descriptor (or the kick), dispatch; poll and check when due.

        The one thread between the kernel and a subscriber's event: it reads
        the inotify records and signals their groups itself, with no queue in
        between.
        """
        now = time.monotonic()
        next_safety = now + self.safety_interval
        next_poll = now + self.poll_interval
        while True:
            with self._lock:
                # Checked under the lock that _stop_threads holds: once this
                # thread is told to stop, self._inotify may already be the
                # instance of a new subscriber's thread, which polls it too
                # (select.poll raises "concurrent poll() invocation", and it
                # would read the other thread's events and wakes). While
                # ``stop`` is unset, the instance is this thread's own.
                if stop.is_set():
                    return
                any_polled = any(w.polled for w in self._watches.values())
                source = self._inotify
            now = time.monotonic()
            timeout = next_safety - now
            if any_polled:
                timeout = min(timeout, next_poll - now)
            timeout = max(0.0, timeout)
            if source is None:
                kick.wait(timeout)
            else:
                events = source.wait(timeout)
                if stop.is_set():
                    # Stopped meanwhile: these records are the old instance's,
                    # and self._wds may already map a new one's descriptors.
                    return
                if events:
                    try:
                        self._deliver(events)
                    except Exception:  # this thread is every watcher's only source: it goes on
                        logger.exception("dispatching inotify events")
            kicked = kick.is_set()
            if kicked:
                kick.clear()
            if stop.is_set():
                return
            now = time.monotonic()
            safety = now >= next_safety
            if safety:
                next_safety = now + self.safety_interval
            poll = kicked or (any_polled and now >= next_poll)
            if poll:
                next_poll = now + self.poll_interval
            if safety or poll:
                try:
                    self.check(everything=safety)
                except Exception:  # the next tick tries again
                    logger.exception("the watch table's check")

    def _deliver(self, events: list[InotifyEvent]) -> None:
        """Signal the groups the records name (each name once per batch). Signals only, no lock."""
        wds = self._wds
        seen: set[tuple[int, bytes]] = set()
        for event in events:
            if event.mask & Mask.Q_OVERFLOW:
                self._overflowed()
                continue
            watches = wds.get(event.wd)
            if watches is None:
                continue  # a watch removed meanwhile (its IN_IGNORED, or events before it)
            if not event.name:
                if event.mask & SELF_GONE:
                    for watch in watches:
                        watch.gone()
                continue
            key = (event.wd, event.name)
            if key in seen:
                continue
            seen.add(key)
            name = os.fsdecode(event.name)
            for watch in watches:
                watch.signal(watch.prefix + name)

    def _overflowed(self) -> None:
        """The kernel's queue overflowed: events were lost, every subscriber reads again."""
        if not self._overflow_logged:
            self._overflow_logged = True
            logger.warning("the inotify event queue overflowed (fs.inotify.max_queued_events): "
                           "every watcher of this process looks at its file again")
        for watches in self._wds.values():
            for watch in watches:
                watch.signal_all()

    def check(self, *, everything: bool = True) -> int:
        """Stat watched paths and wake the subscribers whose file differs from what they read.

        Runs on the ticker thread: polled watches every poll interval,
        everything at each safety check. Public so that tests and tools can
        force a safety check.

        :param everything: check inotify watches too, not only polled ones.
        :returns: how many subscribers were woken.
        """
        with self._lock:
            snapshot = [(w, list(w.groups.values())) for w in self._watches.values()
                        if everything or w.polled]
        woken = 0
        for watch, groups in snapshot:
            if watch.dead or _ident(watch.path) != watch.ident:
                # Removed, replaced or moved away: the kernel watch follows
                # the old inode, so the subscribers must move.
                for group in groups:
                    for sub in group.members:
                        sub.move()
                        woken += 1
                continue
            for group in groups:
                # One stat per path, whatever the number of its subscribers
                # (they usually all name it alike; symlinked directories
                # may make them differ, each is stat'ed once).
                found: dict[str, os.stat_result | None] = {}
                appeared = bool(group.movers) and os.path.exists(group.wake_path)
                for sub in group.members:
                    if appeared and not sub.direct:
                        # a missing directory appeared (its event lost, or polled)
                        sub.move()
                        woken += 1
                        continue
                    path = sub.path
                    if path not in found:
                        found[path] = _stat(path)
                    if _lagging(sub.known, found[path]):
                        woken += 1
                        sub.event.set()
        return woken

    # -- introspection -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for tests and debugging: observers, watches, subscribers, mode."""
        with self._lock:
            polled = sum(1 for w in self._watches.values() if w.polled)
            watches = len(self._watches)
            mode: TableMode
            if not watches:
                mode = "idle"
            elif polled == 0:
                mode = "inotify"
            elif polled == watches:
                mode = "polling"
            else:
                mode = "mixed"
            return {
                "pid": self.pid,
                "mode": mode,
                "polling": self.polling,
                "inotify_refused": self._inotify_refused,
                # the event source: the table's inotify instance or a watchdog Observer
                "observers": int(self._observer is not None or self._inotify is not None),
                "watches": watches,
                "polled_watches": polled,
                "subscribers": len(self._subs),
                "dirs": sorted(self._watches),
                "ticker": self._ticker is not None,
                # per subscriber, to tell a lost signal from a stuck watcher
                "subscriptions": [
                    {"path": sub.path, "known": sub.known, "signalled": sub.event.is_set(),
                     "needs_refresh": sub.needs_refresh, "wake_path": sub.wake_path,
                     "watch": None if sub.watch is None else sub.watch.path,
                     "watch_dead": None if sub.watch is None else sub.watch.dead}
                    for sub in self._subs],
            }


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _lagging(known: Position | None, st: os.stat_result | None) -> bool:
    """Does the path's ``stat`` differ from what a subscriber has read (or appear, or vanish)?"""
    if st is None:
        return known is not None
    if known is None:
        return True
    return ((st.st_dev, st.st_ino) != (known.dev, known.ino) or st.st_size != known.offset
            or st.st_mtime_ns != known.mtime_ns)


def _nearest_dir(path: str) -> tuple[str, tuple[int, int], str, bool] | None:
    """Where to watch for ``path``: its directory, or the nearest existing ancestor.

    :returns: ``(directory, (st_dev, st_ino), wake_path, direct)``: the
        directory to watch (symlinks resolved: inotify reports events under
        the real path), its identity, the path in it whose events concern the
        subscriber, and whether that is the file itself.
    """
    parent = os.path.realpath(os.path.dirname(path))
    name = os.path.basename(path)
    child = os.path.join(parent, name)
    current = parent
    while True:
        try:
            st = os.stat(current)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            return current, (st.st_dev, st.st_ino), child, current == parent
        up = os.path.dirname(current)
        if up == current:
            return None
        child, current = current, up
