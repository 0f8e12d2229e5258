"""The watch table: how a process learns that a followed file may have changed.

:class:`WatchTable` owns the one watchdog Observer of the process and the
watches it holds, and nothing about reading files (that is :mod:`.follower`).
A watcher subscribes its path with a :class:`threading.Event`; the table sets
that event whenever the path may have changed, and the watcher reads.

Kernel and library facts this module is built around (see ``LIBRARIES.md``):

- One Observer per process, created lazily on first use, so that under
  gunicorn it is born in the worker, after the fork (a table inherited
  through ``fork`` is dropped and built again: its threads did not survive).
  It holds one inotify instance, whatever the number of watchers: the kernel
  caps instances per user (``max_user_instances``, often 128).
- One watch per *directory*, never per file: watching a file really watches
  its directory, and only the directory sees a rotation (a rename, a new file
  with the same name). The watch is shared by every subscriber of that
  directory and reference counted: the first subscriber schedules it, the
  others join with ``add_handler_for_watch``, each leaves with
  ``remove_handler_for_watch``, and the last one unschedules it
  (``unschedule`` drops every handler of a watch).
- Every watch uses the same ``event_filter``: two filters on one directory of
  one inotify instance overwrite each other's kernel mask. The filter leaves
  out open/close-without-write events, which the watchers' own reads cause.
- Handlers run on the observer's thread under its lock: they only set events
  (never I/O, never this table's lock, so scheduling under our lock cannot
  deadlock against a dispatch).
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
  only those: an idle watcher costs nothing but that stat.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from typing import Any, ClassVar

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

from .errors import PineWSError

#: The one event filter of every watch (see the module docstring).
EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileModifiedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent,
    DirCreatedEvent, DirDeletedEvent, DirMovedEvent,
]

#: errno values meaning "inotify refused": instance limit (or fd limit), watch limit, no inotify.
_REFUSED = (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOSYS)

#: How many times a subscription retries when its directory vanishes while being watched.
_ATTACH_TRIES = 8


def parse_polling(value: object) -> str | bool:
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
    :ivar known: what the watcher has read, ``(st_dev, st_ino, offset, st_mtime_ns)`` or
        ``None`` (no file open); the watcher keeps it current so that polling
        and safety checks wake it only when the file differs.
    :ivar needs_refresh: the watched directory changed (created, removed):
        the watcher should call :meth:`WatchTable.refresh`.
    """

    def __init__(self, path: str, event: threading.Event) -> None:
        self.path = path
        self.event = event
        self.known: tuple[int, int, int, int] | None = None
        self.needs_refresh = False
        self.watch: _Watch | None = None
        #: The path whose events concern this subscriber: the file itself when
        #: its directory is watched, else the next directory down from the
        #: watched ancestor.
        self.wake_path = ""
        self.direct = False
        self.handler = _Signal(self)

    def __repr__(self) -> str:
        return f"<Subscription {self.path!r}>"


class _Signal(FileSystemEventHandler):
    """A subscriber's handler: sets its event for events of its path. Signals only."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub

    def dispatch(self, event: FileSystemEvent) -> None:
        sub = self.sub
        watch = sub.watch
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if watch is not None and watch.path in (src, dest):
            # The watched directory itself was removed or moved: its watch is
            # dead (watchdog stops it); the subscriber must move.
            watch.dead = True
            sub.needs_refresh = True
            sub.event.set()
        elif sub.wake_path in (src, dest):
            if not sub.direct:
                sub.needs_refresh = True  # a missing directory on the way appeared
            sub.event.set()


class _Watch:
    """One watched directory and its subscribers."""

    def __init__(self, path: str, ident: tuple[int, int]) -> None:
        self.path = path
        self.ident = ident
        self.observed: ObservedWatch | None = None  # None: polled
        self.subs: set[Subscription] = set()
        self.dead = False

    @property
    def polled(self) -> bool:
        return self.observed is None


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
        from .config import setting

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
        sub = Subscription(os.path.abspath(path), event)
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
            sub.event.set()
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
            self._schedule(watch, sub)
            self._watches[dir_path] = watch
        elif watch.observed is not None:
            assert self._observer is not None
            self._observer.add_handler_for_watch(sub.handler, watch.observed)
        sub.watch = watch
        watch.subs.add(sub)

    def _schedule(self, watch: _Watch, sub: Subscription) -> None:
        """Watch ``watch.path`` with inotify, or leave it polled (``observed`` None)."""
        if self.polling is True or self._inotify_refused is not None:
            if self.polling is False:
                raise PineWSError(f"inotify is refused ({self._inotify_refused}) and "
                                  "PINE_WS_POLLING is False")
            return
        try:
            observer = self._observer or self._start_observer()
            watch.observed = observer.schedule(sub.handler, watch.path, recursive=False,
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
        watch.subs.discard(sub)
        if watch.observed is not None and self._observer is not None:
            if watch.subs:
                try:
                    self._observer.remove_handler_for_watch(sub.handler, watch.observed)
                except KeyError:
                    pass  # the watch is gone already (unscheduled with its handlers)
            else:
                self._unschedule(watch)
        if not watch.subs and self._watches.get(watch.path) is watch:
            del self._watches[watch.path]

    def _drop_watch(self, watch: _Watch) -> None:
        """Forget a dead watch; its other subscribers are told to move."""
        self._unschedule(watch)
        del self._watches[watch.path]
        for other in watch.subs:
            other.watch = None
            other.needs_refresh = True
            other.event.set()
        watch.subs.clear()

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
            snapshot = [(w, list(w.subs)) for w in self._watches.values()
                        if everything or w.polled]
        woken = 0
        for watch, subs in snapshot:
            if watch.dead or _ident(watch.path) != watch.ident:
                # Removed, replaced or moved away: the kernel watch follows
                # the old inode, so the subscribers must move.
                for sub in subs:
                    sub.needs_refresh = True
                    sub.event.set()
                woken += len(subs)
                continue
            for sub in subs:
                if not sub.direct and os.path.exists(sub.wake_path):
                    # a missing directory appeared (its event lost, or polled)
                    sub.needs_refresh = True
                    sub.event.set()
                    woken += 1
                elif _lagging(sub):
                    sub.event.set()
                    woken += 1
        return woken

    # -- introspection -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for tests and debugging: observers, watches, subscribers, mode."""
        with self._lock:
            polled = sum(1 for w in self._watches.values() if w.polled)
            watches = len(self._watches)
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


def _lagging(sub: Subscription) -> bool:
    """Does the path differ from what the subscriber has read (or appear, or vanish)?"""
    known = sub.known
    try:
        st = os.stat(sub.path)
    except OSError:
        return known is not None
    if known is None:
        return True
    return ((st.st_dev, st.st_ino) != known[:2] or st.st_size != known[2]
            or st.st_mtime_ns != known[3])


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
