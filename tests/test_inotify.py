"""The inotify reader on real directories, and the watch table reading it: events, overflow, fds.

Each test makes its own instance (the ``no_leaks`` fixture proves that
closing it releases both descriptors). A queue overflow is provoked for real:
an instance nobody reads, and more events than ``max_queued_events``.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flask_pine_ws.inotify import DIRECTORY_MASK, Inotify, InotifyEvent, Mask, parse
from flask_pine_ws.watchtable import WatchTable

WAIT = 30.0  # generous: a noisy shared machine
NAMED = (Mask.MODIFY | Mask.CLOSE_WRITE | Mask.MOVED_FROM | Mask.MOVED_TO | Mask.CREATE
         | Mask.DELETE | Mask.ATTRIB)


def collect(source: Inotify, until: tuple[Mask, bytes]) -> list[tuple[Mask, bytes]]:
    """The named events of ``source`` up to and including ``until``."""
    seen = [(Mask(e.mask & NAMED), e.name)
            for e in _drain_until(source, lambda e: (e.mask & NAMED, e.name) == until)]
    return seen


def max_queued_events() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def overflow(directory: Path) -> None:
    """More events than the kernel queues: two files written in turn (equal
    consecutive events are merged, alternating ones are not). The margin
    covers one read by a reader under way (64 KiB: 2,048 of these records)."""
    a, b = directory / "flood-a", directory / "flood-b"
    fa, fb = os.open(a, os.O_WRONLY | os.O_CREAT), os.open(b, os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(max_queued_events() // 2 + 2_100):
            os.write(fa, b"x")
            os.write(fb, b"x")
    finally:
        os.close(fa)
        os.close(fb)


def test_sees_create_modify_move_delete_in_the_directory(tmp_path: Path) -> None:
    with Inotify() as source:
        source.add_watch(str(tmp_path))
        log = tmp_path / "app.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.write(fd, b"one\n")
        os.close(fd)
        log.rename(tmp_path / "app.log.1")
        (tmp_path / "app.log.1").unlink()
        assert collect(source, (Mask.DELETE, b"app.log.1")) == [
            (Mask.CREATE, b"app.log"), (Mask.MODIFY, b"app.log"), (Mask.CLOSE_WRITE, b"app.log"),
            (Mask.MOVED_FROM, b"app.log"), (Mask.MOVED_TO, b"app.log.1"),
            (Mask.DELETE, b"app.log.1")]


def test_reads_are_not_reported(tmp_path: Path) -> None:
    """No open or close-without-write events: the watchers' own reads would wake them."""
    log = tmp_path / "app.log"
    log.write_text("x")
    with Inotify() as source:
        source.add_watch(str(tmp_path))
        assert log.read_text() == "x"
        (tmp_path / "mark").touch()
        assert collect(source, (Mask.CREATE, b"mark")) == [(Mask.CREATE, b"mark")]


def test_a_moved_pair_shares_its_cookie(tmp_path: Path) -> None:
    (tmp_path / "a").touch()
    with Inotify() as source:
        source.add_watch(str(tmp_path))
        (tmp_path / "a").rename(tmp_path / "b")
        events: list[InotifyEvent] = []
        while len(events) < 2:
            events += source.wait(WAIT)
        assert [(e.mask, e.name) for e in events] == [
            (Mask.MOVED_FROM, b"a"), (Mask.MOVED_TO, b"b")]
        assert events[0].cookie == events[1].cookie != 0


def test_add_and_remove_watches(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (tmp_path / "file").touch()
    with Inotify() as source:
        wd1, wd2 = source.add_watch(str(one)), source.add_watch(str(two))
        assert wd1 != wd2
        assert source.add_watch(str(one)) == wd1  # one watch per inode, whatever the calls
        with pytest.raises(FileNotFoundError):
            source.add_watch(str(tmp_path / "missing"))
        with pytest.raises(NotADirectoryError):
            source.add_watch(str(tmp_path / "file"))
        source.rm_watch(wd1)
        (one / "x").touch()
        (two / "y").touch()
        events = [e for e in _drain_until(source, lambda e: e.name == b"y")]
        assert (wd1, Mask.IGNORED) in [(e.wd, e.mask) for e in events]  # the removal, reported
        assert all(e.wd != wd1 or e.mask == Mask.IGNORED for e in events)  # nothing else of one
        source.rm_watch(wd1)  # gone already: not an error


def test_watched_directory_removed_reports_itself(tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    with Inotify() as source:
        wd = source.add_watch(str(d))
        d.rmdir()
        events = _drain_until(source, lambda e: bool(e.mask & Mask.IGNORED))
        assert [(e.wd, e.mask, e.name) for e in events] == [
            (wd, Mask.DELETE_SELF, b""), (wd, Mask.IGNORED, b"")]
        source.rm_watch(wd)  # the kernel dropped it: EINVAL, not an error


def _drain_until(source: Inotify, last: Callable[[InotifyEvent], bool]) -> list[InotifyEvent]:
    events: list[InotifyEvent] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for event in source.wait(1.0):
            events.append(event)
            if last(event):
                return events
    raise AssertionError(f"the awaited event did not come; seen {events}")


def test_a_descriptor_above_1024_is_waited_on(tmp_path: Path) -> None:
    """A server with thousands of sockets creates the instance late: past select's limit."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with Inotify() as source:
            assert source.fileno() > 1024
            source.add_watch(str(tmp_path))
            (tmp_path / "late").touch()
            assert collect(source, (Mask.CREATE, b"late"))[0] == (Mask.CREATE, b"late")
    finally:
        for fd in held:
            os.close(fd)


def test_parse_records_built_by_hand() -> None:
    header = struct.Struct("iIII")
    name = b"app.log".ljust(16, b"\0")
    data = (header.pack(3, Mask.MODIFY, 0, len(name)) + name
            + header.pack(-1, Mask.Q_OVERFLOW, 0, 0)
            + header.pack(3, Mask.DELETE_SELF, 0, 0))
    assert parse(data) == [InotifyEvent(3, Mask.MODIFY, 0, b"app.log"),
                           InotifyEvent(-1, Mask.Q_OVERFLOW, 0, b""),
                           InotifyEvent(3, Mask.DELETE_SELF, 0, b"")]
    assert parse(b"") == []
    with pytest.raises(ValueError, match="cut short"):
        parse(data[:-4])
    with pytest.raises(ValueError, match="cut short"):
        parse(header.pack(3, Mask.MODIFY, 0, 32) + name)


def test_a_real_queue_overflow_is_reported(tmp_path: Path) -> None:
    with Inotify() as source:
        source.add_watch(str(tmp_path))
        overflow(tmp_path)  # nobody reads meanwhile
        events: list[InotifyEvent] = []
        while batch := source.wait(0):
            events += batch
        assert len(events) == max_queued_events() + 1
        assert (events[-1].wd, events[-1].mask) == (-1, Mask.Q_OVERFLOW)


def test_wake_ends_a_wait_and_close_releases_both_descriptors(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    source = Inotify()
    assert len(set(os.listdir("/proc/self/fd")) - before) == 2  # inotify and its eventfd
    source.add_watch(str(tmp_path), DIRECTORY_MASK)
    woken: list[list[InotifyEvent]] = []
    waiter = threading.Thread(target=lambda: woken.append(source.wait(WAIT)))
    waiter.start()
    source.wake()
    waiter.join(WAIT)
    assert woken == [[]]  # woken, with no event
    source.close()
    source.close()  # idempotent
    assert source.closed and source.wait(0) == []
    assert set(os.listdir("/proc/self/fd")) == before


# -- the watch table on its own descriptor ------------------------------------

def test_table_wakes_every_subscriber_on_overflow(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A lost event must not strand a watcher: an overflow wakes every one, logged once."""
    table = WatchTable(polling=False, safety_interval=3600)  # no safety check to hide behind
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    events = [threading.Event() for _ in range(3)]
    subs = [table.subscribe(str(quiet / "a.log"), events[0]),
            table.subscribe(str(quiet / "b.log"), events[1]),
            table.subscribe(str(tmp_path / "c.log"), events[2])]
    try:
        assert table.stats()["mode"] == "inotify"
        caplog.set_level(logging.WARNING, logger="flask_pine_ws.watchtable")
        for _ in range(2):
            # Held, the table's lock keeps its thread from its next read: the
            # queue fills. No event concerns a.log, b.log or c.log.
            with table._lock:
                for event in events:
                    event.clear()
                overflow(tmp_path)
            assert [event.wait(WAIT) for event in events] == [True] * 3
        assert sum("overflowed" in r.getMessage() for r in caplog.records) == 1
    finally:
        for sub in subs:
            table.unsubscribe(sub)


def test_table_thread_is_the_only_one_and_unsubscribe_closes_it(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    table = WatchTable()
    sub = table.subscribe(str(tmp_path / "a.log"), threading.Event())
    names = [t.name for t in threading.enumerate()]
    assert names.count("pine-ws-watch") == 1 and "pine-ws-observer" not in names
    assert table.stats()["observers"] == 1
    table.unsubscribe(sub)  # the thread ends by itself, closing the descriptor as it goes
    deadline = time.monotonic() + WAIT
    while ("pine-ws-watch" in [t.name for t in threading.enumerate()]
           and time.monotonic() < deadline):
        time.sleep(0.01)
    assert "pine-ws-watch" not in [t.name for t in threading.enumerate()]
    assert set(os.listdir("/proc/self/fd")) == before


def test_table_inherited_through_fork_is_rebuilt(tmp_path: Path) -> None:
    """The child gets a table of its own; closing it leaves the parent's watches alone."""
    saved = WatchTable._current
    WatchTable._current = None
    parent_event = threading.Event()
    parent = WatchTable.current()
    sub = parent.subscribe(str(tmp_path / "parent.log"), parent_event)
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # the child: report in one line, never return into pytest
            try:
                child = WatchTable.current()
                ev = threading.Event()
                child_sub = child.subscribe(str(tmp_path / "child.log"), ev)
                ev.clear()
                (tmp_path / "child.log").write_text("x")
                ok = ev.wait(WAIT)
                mode = child.stats()["mode"]
                child.unsubscribe(child_sub)
                os.write(write_end, f"{child is not parent} {mode} {ok}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as report:
            read_end = -1
            assert report.read().decode() == "True inotify True"
        assert os.waitpid(pid, 0)[1] == 0
        parent_event.clear()
        (tmp_path / "parent.log").write_text("still heard")
        assert parent_event.wait(WAIT)
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
        parent.unsubscribe(sub)
        WatchTable._current = saved
