"""What each thread hop costs between an append and the thread that sends it.

On Linux flask-pine-ws's watch table reads its own inotify descriptor on its
one thread and sets the ``threading.Event`` of the thread that reads and
sends: one hop. watchdog's observer (what the table uses on other platforms)
takes four before that Event: its inotify reader thread, a delay queue, the
emitter thread, the observer's queue, the dispatcher thread (which runs the
handler). The asyncio floor reads the inotify fd in its event loop: no hop at
all. This measures, in one process, the time from ``write()`` to:

- ``raw``: a thread blocked in ``select`` on a raw inotify fd (ctypes);
- ``watchdog``: watchdog's handler, on the dispatcher thread;
- ``watchdog+event``: a thread woken by an Event the handler sets;
- ``table+event``: a thread woken by its Event subscribed to a
  :class:`~flask_pine_ws.watchtable.WatchTable` on its own inotify
  descriptor (what a watcher, or the broadcast hub, sees on Linux);
- ``table/watchdog+event``: the same on a table whose events come from
  watchdog's observer (``source="watchdog"``: other platforms).

The recorders run at once, so each append wakes them all: they share the
GIL as a server's threads do, and watchdog's four threads slow the others.
Read the ratios between rows of one run; ``--only`` runs fewer of them.

    python bench/hops.py [--count 1000] [--rate 200] [--only raw,table]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import statistics
import tempfile
import threading
import time
from pathlib import Path

from watchdog.events import FileModifiedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from flask_pine_ws.watchtable import EventSource, Subscription, WatchTable

IN_MODIFY = 0x2
#: set by each recorder, so that the writer sleeps until all of them have the append
DONE = threading.Event()


def raw_waiter(path: Path, stamps: list[int], stop: threading.Event) -> threading.Thread:
    libc = ctypes.CDLL(None, use_errno=True)
    fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0 or libc.inotify_add_watch(fd, str(path.parent).encode(), IN_MODIFY) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify: {os.strerror(err)} (max_user_instances is per user)")

    def run() -> None:
        try:
            while not stop.is_set():
                if select.select([fd], [], [], 0.2)[0]:
                    now = time.monotonic_ns()
                    os.read(fd, 65536)
                    stamps.append(now)
                    DONE.set()
        finally:
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class Handler(FileSystemEventHandler):
    def __init__(self, path: Path, stamps: list[int], wake: threading.Event) -> None:
        self.path = str(path)
        self.stamps = stamps
        self.wake = wake

    def dispatch(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileModifiedEvent) and event.src_path == self.path:
            self.stamps.append(time.monotonic_ns())
            self.wake.set()
            DONE.set()


def event_waiter(wake: threading.Event, stamps: list[int],
                 stop: threading.Event) -> threading.Thread:
    """A thread that stamps each time ``wake`` wakes it (a watcher's thread)."""

    def run() -> None:
        while not stop.is_set():
            if wake.wait(0.2):
                wake.clear()
                stamps.append(time.monotonic_ns())
                DONE.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


GROUPS = ("raw", "watchdog", "table", "table-watchdog")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--only", default=",".join(GROUPS),
                        help="comma-separated recorders to run (fewer threads share the GIL): "
                             + ", ".join(GROUPS))
    args = parser.parse_args()
    groups = args.only.split(",")
    if not set(groups) <= set(GROUPS):
        parser.error(f"--only takes {', '.join(GROUPS)}")
    with tempfile.TemporaryDirectory(prefix="pine-hops-") as tmp:
        path = Path(tmp) / "app.log"
        path.touch()
        stop = threading.Event()
        rows: dict[str, list[int]] = {}  # row -> the stamps of the current append
        threads: list[threading.Thread] = []
        observers: list[BaseObserver] = []
        tables: list[tuple[WatchTable, Subscription]] = []
        if "raw" in groups:
            rows["raw"] = []
            threads.append(raw_waiter(path, rows["raw"], stop))
        if "watchdog" in groups:
            rows["watchdog"], rows["watchdog+event"] = [], []
            wake = threading.Event()
            observer = Observer()
            observer.schedule(Handler(path, rows["watchdog"], wake), tmp)
            observer.start()
            observers.append(observer)
            threads.append(event_waiter(wake, rows["watchdog+event"], stop))
        sources: dict[str, EventSource] = {"table": "inotify", "table-watchdog": "watchdog"}
        for group, source in sources.items():
            if group not in groups:
                continue
            name = "table+event" if source == "inotify" else "table/watchdog+event"
            rows[name] = []
            table = WatchTable(polling=False, source=source)
            table_wake = threading.Event()
            tables.append((table, table.subscribe(str(path), table_wake)))
            threads.append(event_waiter(table_wake, rows[name], stop))
        time.sleep(0.5)
        results: dict[str, list[float]] = {name: [] for name in rows}
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for _ in range(args.count):
                for stamps in rows.values():
                    stamps.clear()
                t0 = time.monotonic_ns()
                os.write(fd, b"x" * 99 + b"\n")
                # a blocking wait, not a poll: the main thread holds no GIL meanwhile
                deadline = time.monotonic() + 1
                while not all(rows.values()) and time.monotonic() < deadline:
                    DONE.wait(0.05)
                    DONE.clear()
                for name, stamps in rows.items():
                    if stamps:
                        results[name].append((stamps[0] - t0) / 1e3)
                time.sleep(1 / args.rate)
        finally:
            os.close(fd)
            stop.set()
            for observer in observers:
                observer.stop()
                observer.join(5)
            for table, sub in tables:
                table.unsubscribe(sub)
            for thread in threads:
                thread.join(5)
    for name, values in results.items():
        values.sort()
        print(f"{name:21} p50 {statistics.median(values):7.0f} us   p99 "
              f"{values[int(0.99 * (len(values) - 1))]:7.0f} us   ({len(values)} appends)")


if __name__ == "__main__":
    main()
