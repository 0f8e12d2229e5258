"""The watch table: how a process learns that a followed file may have changed.

:class:`WatchTable` owns the one watchdog Observer of the process and the
watches it holds, and nothing about reading files (that is :mod:`.follower`).
A watcher subscribes its path with a :class:`threading.Event`; the table sets
that event whenever the path may have changed, and the watcher reads.

Kernel and library facts this module is built around (read from watchdog's sources):

- One Observer per process, created lazily on first use, so that under
  gunicorn it is born in the worker, after the fork (a table inherited
  through ``fork`` is dropped and built again: its threads did not survive).
  It holds one inotify instance, whatever the number of watchers: the kernel
  caps instances per user (``max_user_instances``, often 128).
- One watch per *directory*, never per file: watching a file really watches
  its directory, and only the directory sees a rotation (a rename, a new file
  with the same name). The watch is shared by every subscriber of that
  directory and reference counted: the first subscriber schedules it (with
  the watch's one handler, below), the others join its groups, and the last
  one to leave unschedules it.
- Every watch uses the same ``event_filter``: two filters on one directory of
  one inotify instance overwrite each other's kernel mask. The filter leaves
  out open/close-without-write events, which the watchers' own reads cause.
- One handler per watch, dispatching per *path*: the subscribers of one
  watched directory are grouped by the name they follow, so a file event
  costs one dictionary lookup and one call per interested party, not one
  handler call per subscriber (watchdog calls every handler of a watch for
  every event: with a handler per subscriber, one append to a file that
  1,000 clients follow cost 1,000 calls on the observer thread, under the
  GIL, before the first byte was read).
- One subscriber per followed path, usually: the path's :mod:`.feed`
  subscribes once for all the watchers of the file, and passes an event on
  to them, so an append costs the table one call however many follow it.
- Handlers run on the observer's thread under its lock: they only set events
  (never I/O, never this table's lock, so scheduling under our lock cannot
  deadlock against a dispatch). They read the groups without a lock: what
  they read is rebuilt, never changed in place (copy on write, under the
  table's lock), so a dispatch sees either the old or the new state.
- A directory that does not exist cannot be watched: its nearest existing
  ancestor is watched instead, and the subscriber moves down as the
  directories appear (``mkdir -p`` while a watcher waits). A watched directory
  that is removed stops its watch; the subscriber is told to move.
- Polling (``PINE_WS_POLLING``): ``True`` always (NFS, CIFS, some Docker
  volumes send no events), ``False`` never, ``"auto"`` where inotify is refused
  (``EMFILE``: instance limit, ``ENOSPC``: watch limit). One thread per
  process stats the polled paths every ``PINE_WS_POLL_INTERVAL`` seconds.
- The same thread makes a rare safety check (``PINE_WS_SAFETY_INTERVAL``) of
  every path: a full kernel queue drops events with only a log line, so it
  wakes the watchers whose file differs from what they have read. It wakes
  only those, and stats each path once per check (or poll), whatever the
  number of its subscribers: 1,000 idle watchers of one file cost one
  ``stat`` and 1,000 tuple comparisons.
"""

from __future__ import annotations

import errno
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
from watchdog.observers.api import BaseObserver, ObservedWatch

from .config import setting
from .errors import PineWSError

if TYPE_CHECKING:
    from .follower import Position

#: ``PINE_WS_POLLING``, normalised: ``"auto"``, always (``True``) or never (``False``).
Polling = Literal["auto"] | bool

#: How a table watches now (its stats): nothing, all by inotify, all polled, or both.
TableMode = Literal["idle", "inotify", "polling", "mixed"]

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
    lock), never changed in place: the observer thread reads them without a
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
        groups = watch.groups
        if watch.path in (src, dest):
            # The watched directory itself was removed or moved: its watch is
            # dead (watchdog stops it); every subscriber must move.
            watch.dead = True
            for every in groups.values():
                for sub in every.members:
                    sub.move()
            return
        for name in (src, dest):
            group = groups.get(name)
            if group is None:
                continue
            for target in group.targets:
                target()
            for sub in group.movers:  # a missing directory on the way appeared
                sub.move()


class _Watch:
    """One watched directory and its subscribers, grouped by wake path."""

    def __init__(self, path: str, ident: tuple[int, int]) -> None:
        self.path = path
        self.ident = ident
        self.observed: ObservedWatch | None = None  # None: polled
        #: wake path -> group; replaced, never changed in place (read by the observer thread).
        self.groups: dict[str, _Group] = {}
        self.count = 0  # subscribers, over every group
        self.dead = False
        self.handler = _Dispatch(self)

    @property
    def polled(self) -> bool:
        return self.observed is None

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
    """The process's watches: one Observer, one reference-counted watch per directory.

    Use :meth:`current` to get the process's table. Thread-safe.

    :param polling: ``"auto"``, ``True`` or ``False`` (see :func:`parse_polling`).
    :param poll_interval: seconds between stats of polled paths.
    :param safety_interval: seconds between safety checks of every path.
    """

    _current: ClassVar[WatchTable | None] = None
    _current_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, polling: object = "auto", poll_interval: float = 1.0,
                 safety_interval: float = 30.0) -> None:
        self.polling = parse_polling(polling)
        if poll_interval <= 0 or safety_interval <= 0:
            raise ValueError("poll_interval and safety_interval must be > 0")
        self.poll_interval = float(poll_interval)
        self.safety_interval = float(safety_interval)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._subs: set[Subscription] = set()
        self._observer: BaseObserver | None = None
        self._inotify_refused: str | None = None
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        self._ticker_kick = threading.Event()

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

        When no subscriber is left, the observer and the ticker stop too, so
        an idle process holds no watcher thread. Idempotent.
        """
        stopped: list[threading.Thread] = []
        with self._lock:
            if sub not in self._subs:
                return
            self._subs.discard(sub)
            self._detach(sub)
            if not self._subs:
                stopped = self._stop_threads()
        for thread in stopped:
            if thread is not threading.current_thread():
                thread.join(2.0)

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
            self._ticker_kick.set()

    def _start_observer(self) -> BaseObserver:
        from watchdog.observers.inotify import InotifyObserver

        observer = InotifyObserver()  # inotify_init: EMFILE at the instance limit
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
        watch.observed = None
        watch.dead = True

    def _stop_threads(self) -> list[threading.Thread]:
        threads: list[threading.Thread] = []
        if self._observer is not None:
            self._observer.stop()
            threads.append(self._observer)
            self._observer = None
        if self._ticker is not None:
            self._ticker_stop.set()
            self._ticker_kick.set()
            threads.append(self._ticker)
            self._ticker = None
        self._inotify_refused = None  # limits may have been raised meanwhile: try again next time
        return threads

    # -- the polling and safety thread ---------------------------------------

    def _ensure_ticker(self) -> None:
        with self._lock:
            if self._ticker is not None or not self._subs:
                return
            self._ticker_stop = threading.Event()
            self._ticker_kick = threading.Event()
            self._ticker = threading.Thread(target=self._tick_loop, name="pine-ws-watch-ticker",
                                            args=(self._ticker_stop, self._ticker_kick),
                                            daemon=True)
            self._ticker.start()

    def _tick_loop(self, stop: threading.Event, kick: threading.Event) -> None:
        next_safety = time.monotonic() + self.safety_interval
        while not stop.is_set():
            with self._lock:
                any_polled = any(w.polled for w in self._watches.values())
            now = time.monotonic()
            timeout = next_safety - now
            if any_polled:
                timeout = min(timeout, self.poll_interval)
            kick.wait(max(0.0, timeout))
            kick.clear()
            if stop.is_set():
                return
            now = time.monotonic()
            safety = now >= next_safety
            if safety:
                next_safety = now + self.safety_interval
            self.check(everything=safety)

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
                "observers": 0 if self._observer is None else 1,
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
