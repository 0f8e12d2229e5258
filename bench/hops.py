"""What each thread hop costs between an append and the thread that sends it.

flask-pine-ws learns of an append through watchdog: its inotify reader
thread, a delay queue, the emitter thread, the observer's queue, the
dispatcher thread (which runs the handler), then a ``threading.Event`` that
wakes the thread that reads and sends. The asyncio floor reads the inotify fd
in its event loop: no hop at all. This measures, in one process, the time from
``write()`` to:

- ``raw``: a thread blocked in ``select`` on a raw inotify fd (ctypes);
- ``watchdog``: watchdog's handler, on the dispatcher thread;
- ``watchdog+event``: a thread woken by an Event the handler sets (what a
  watcher, or the broadcast hub, sees).

    python bench/hops.py [--count 1000] [--rate 200]
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

IN_MODIFY = 0x2
#: set by each recorder, so that the writer sleeps until all three have the append
DONE = threading.Event()


def raw_waiter(path: Path, stamps: list[int], stop: threading.Event) -> threading.Thread:
    libc = ctypes.CDLL(None, use_errno=True)
    fd: int = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    libc.inotify_add_watch(fd, str(path.parent).encode(), IN_MODIFY)

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pine-hops-") as tmp:
        path = Path(tmp) / "app.log"
        path.touch()
        raw: list[int] = []
        dog: list[int] = []
        woken: list[int] = []
        stop = threading.Event()
        wake = threading.Event()
        raw_thread = raw_waiter(path, raw, stop)
        observer = Observer()
        observer.schedule(Handler(path, dog, wake), tmp)
        observer.start()

        def waiter() -> None:
            while not stop.is_set():
                if wake.wait(0.2):
                    wake.clear()
                    woken.append(time.monotonic_ns())
                    DONE.set()

        wake_thread = threading.Thread(target=waiter, daemon=True)
        wake_thread.start()
        time.sleep(0.5)
        results: dict[str, list[float]] = {"raw": [], "watchdog": [], "watchdog+event": []}
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for _ in range(args.count):
                for stamps in (raw, dog, woken):
                    stamps.clear()
                t0 = time.monotonic_ns()
                os.write(fd, b"x" * 99 + b"\n")
                # a blocking wait, not a poll: the main thread holds no GIL meanwhile
                deadline = time.monotonic() + 1
                while not (raw and dog and woken) and time.monotonic() < deadline:
                    DONE.wait(0.05)
                    DONE.clear()
                for name, stamps in zip(results, (raw, dog, woken), strict=True):
                    if stamps:
                        results[name].append((stamps[0] - t0) / 1e3)
                time.sleep(1 / args.rate)
        finally:
            os.close(fd)
            stop.set()
            observer.stop()
            observer.join(5)
            raw_thread.join(5)
            wake_thread.join(5)
    for name, values in results.items():
        values.sort()
        print(f"{name:15} p50 {statistics.median(values):7.0f} us   p99 "
              f"{values[int(0.99 * (len(values) - 1))]:7.0f} us   ({len(values)} appends)")


if __name__ == "__main__":
    main()
