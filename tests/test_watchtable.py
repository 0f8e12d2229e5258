"""WatchTable in this process, on real directories: shared watches, signals, polling, safety.

The table is built directly (not the process's ``current()`` one), so each
test starts from nothing and the ``no_leaks`` fixture proves that the last
unsubscribe leaves no thread behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# watchdog 7.0 (the range's oldest) creates one inotify instance, and a thread
# reading it, for the whole process when watchdog.observers is first imported,
# and keeps them (7.1 starts them with an observer and ends them with it):
# imported here, before any test, they are not the first watchdog test's leak.
import watchdog.observers  # noqa: F401

from flask_pine_ws.errors import PineWSError
from flask_pine_ws.follower import Position
from flask_pine_ws.watchtable import Subscription, WatchTable, parse_polling

WAIT = 30.0  # generous: a noisy shared machine
# inotify instances are capped per user (128), and this machine's user is shared
INOTIFY_REFUSED = "inotify refused here (per-user instance limit?): the table fell back to polling"


@pytest.fixture(params=["inotify", "watchdog"])
def table(request: pytest.FixtureRequest) -> Iterator[WatchTable]:
    """A table on each event source: its own inotify descriptor, and watchdog's
    Observer (what other platforms use; inotify underneath here)."""
    t = WatchTable(polling="auto", poll_interval=0.2, safety_interval=30, source=request.param)
    subs: list[Subscription] = []
    original = t.subscribe

    def tracked(path: str, event: threading.Event) -> Subscription:
        sub = original(path, event)
        subs.append(sub)
        return sub

    t.subscribe = tracked  # type: ignore[method-assign]
    yield t
    for sub in subs:
        t.unsubscribe(sub)


def signalled(event: threading.Event) -> bool:
    ok = event.wait(WAIT)
    event.clear()
    return ok


def settle(table: WatchTable, directory: Path, *events: threading.Event) -> None:
    """Let the signals of earlier changes in ``directory`` arrive, then forget them.

    No sleep: a change to a sentinel file is signalled after them. With inotify
    the sentinel is in the same directory (one watch delivers its events in
    order); polling looks at every path in each tick, so the sentinel is
    elsewhere (a change in ``directory`` would be one more to forget), and it
    is changed twice, so that a tick under way at the first change is over.
    """
    polling = table.stats()["mode"] == "polling"
    place = directory.parent / f"{directory.name}-settle" if polling else directory
    place.mkdir(exist_ok=True)
    mark = threading.Event()
    sub = table.subscribe(str(place / ".settle"), mark)
    try:
        for n in range(2):
            mark.clear()
            (place / ".settle").write_text(str(n))
            assert mark.wait(WAIT), "the sentinel's change was not signalled"
    finally:
        table.unsubscribe(sub)
    for event in events:
        event.clear()


def test_one_observer_one_watch_per_directory(table: WatchTable, tmp_path: Path) -> None:
    events = [threading.Event() for _ in range(30)]
    subs = [table.subscribe(str(tmp_path / f"f{i % 3}.log"), e) for i, e in enumerate(events)]
    other = tmp_path / "sub"
    other.mkdir()
    table.subscribe(str(other / "x.log"), threading.Event())
    stats = table.stats()
    assert stats["observers"] == 1
    assert stats["watches"] == 2
    assert stats["subscribers"] == 31
    assert stats["mode"] == "inotify"
    for sub in subs[:29]:
        table.unsubscribe(sub)
    assert table.stats()["watches"] == 2  # one subscriber keeps the directory watched
    # the remaining subscriber still hears its file (its handler survived the others leaving)
    settle(table, tmp_path, events[29])
    (tmp_path / "f2.log").write_text("x")
    assert signalled(events[29])
    table.unsubscribe(subs[29])
    assert table.stats()["watches"] == 1


def test_signals_only_subscribers_of_that_name(table: WatchTable, tmp_path: Path) -> None:
    a, b = threading.Event(), threading.Event()
    table.subscribe(str(tmp_path / "a.log"), a)
    table.subscribe(str(tmp_path / "b.log"), b)
    settle(table, tmp_path, a, b)
    (tmp_path / "a.log").write_text("x")
    assert signalled(a)
    assert not b.wait(0.5)


def test_last_subscriber_stops_every_thread(tmp_path: Path) -> None:
    t = WatchTable()
    before = threading.active_count()
    sub = t.subscribe(str(tmp_path / "a.log"), threading.Event())
    assert threading.active_count() > before
    t.unsubscribe(sub)
    t.unsubscribe(sub)  # idempotent
    assert t.stats() | {"pid": 0} == {"subscriptions": [],
        "pid": 0, "mode": "idle", "polling": "auto", "inotify_refused": None, "observers": 0,
        "watches": 0, "polled_watches": 0, "subscribers": 0, "dirs": [],
        "ticker": False}
    deadline = time.monotonic() + WAIT
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before


class _GatedLock:
    """The table's lock, with a gate its thread stops at once, at the top of its loop.

    The interleaving a loaded machine makes now and then, made every time: the
    table's thread is held just before it looks at the table again, while the
    last subscriber leaves and a new one arrives (a client that disconnects
    during its catch-up, then the next).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.armed = False
        self.arrived = threading.Event()
        self.opened = threading.Event()

    def __enter__(self) -> None:
        if (self.armed and threading.current_thread().name == "pine-ws-watch"
                and sys._getframe(1).f_code.co_name == "_tick_loop"):
            self.armed = False
            self.arrived.set()
            self.opened.wait(WAIT)
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_a_stopped_thread_never_waits_on_the_next_threads_descriptor(tmp_path: Path) -> None:
    t = WatchTable(polling=False, safety_interval=30, source="inotify")
    gate = _GatedLock()
    t._lock = gate  # type: ignore[assignment]
    first, second = threading.Event(), threading.Event()
    sub = t.subscribe(str(tmp_path / "a.log"), first)
    old_thread, old_source = t._ticker, t._inotify
    assert old_thread is not None and old_source is not None
    gate.armed = True
    t._kick()  # out of its wait, through a check, to the top of its loop: held there
    assert gate.arrived.wait(WAIT)
    t.unsubscribe(sub)  # the last one: that thread is told to stop
    sub2 = t.subscribe(str(tmp_path / "b.log"), second)  # a new instance, a new thread
    try:
        assert t._inotify is not None and t._inotify is not old_source
        settle(t, tmp_path, second)  # the new thread is waiting on its instance
        gate.opened.set()
        # The old thread ends, closing its own instance, without touching the
        # new one (before, it waited on it beside the new thread: "concurrent
        # poll() invocation" in one of them, or it read the other's events).
        old_thread.join(WAIT)
        assert not old_thread.is_alive()
        assert old_source.closed
        (tmp_path / "b.log").write_text("x")
        assert signalled(second)
    finally:
        gate.opened.set()
        t.unsubscribe(sub2)


def test_rename_remove_create_all_signal(table: WatchTable, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x")
    ev = threading.Event()
    table.subscribe(str(log), ev)
    settle(table, tmp_path, ev)
    log.rename(tmp_path / "app.log.1")
    assert signalled(ev)
    log.write_text("new")
    assert signalled(ev)
    settle(table, tmp_path, ev)
    log.unlink()
    assert signalled(ev)


def test_missing_directories_are_followed_down_as_they_appear(
        table: WatchTable, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "app.log"
    ev = threading.Event()
    sub = table.subscribe(str(path), ev)
    assert table.stats()["mode"] == "inotify", INOTIFY_REFUSED
    assert table.stats()["dirs"] == [str(tmp_path)]
    settle(table, tmp_path, ev)
    (tmp_path / "a").mkdir()
    assert signalled(ev) and sub.needs_refresh
    table.refresh(sub)
    assert table.stats()["dirs"] == [str(tmp_path / "a")]
    (tmp_path / "a" / "b").mkdir()
    assert signalled(ev)
    table.refresh(sub)
    assert table.stats()["dirs"] == [str(tmp_path / "a" / "b")]
    settle(table, tmp_path / "a" / "b", ev)
    path.write_text("x")
    assert signalled(ev)


def test_directory_removed_and_created_again(table: WatchTable, tmp_path: Path) -> None:
    d = tmp_path / "logs"
    d.mkdir()
    ev = threading.Event()
    sub = table.subscribe(str(d / "app.log"), ev)
    assert table.stats()["mode"] == "inotify", INOTIFY_REFUSED
    settle(table, d, ev)
    shutil.rmtree(d)
    assert signalled(ev)
    table.refresh(sub)
    assert table.stats()["dirs"] == [str(tmp_path)]
    d.mkdir()
    assert signalled(ev)
    table.refresh(sub)
    assert table.stats()["dirs"] == [str(d)]
    settle(table, d, ev)
    (d / "app.log").write_text("again")
    assert signalled(ev)


def test_watched_directory_renamed_away(tmp_path: Path) -> None:
    """The kernel's watch follows the inode: the subscriber must move back to the path.

    On the table's own inotify descriptor, told at once (no safety check to
    hide behind); watchdog's observer asks for no ``IN_MOVE_SELF``: there only
    the safety check sees the rename.
    """
    t = WatchTable(polling=False, safety_interval=3600, source="inotify")
    d = tmp_path / "logs"
    d.mkdir()
    ev = threading.Event()
    sub = t.subscribe(str(d / "app.log"), ev)
    try:
        settle(t, d, ev)
        d.rename(tmp_path / "logs.old")
        assert signalled(ev) and sub.needs_refresh
        t.refresh(sub)
        assert t.stats()["dirs"] == [str(tmp_path)]
        (tmp_path / "logs.old" / "app.log").write_text("not followed: renamed away")
        d.mkdir()
        assert signalled(ev)
        t.refresh(sub)
        assert t.stats()["dirs"] == [str(d)]
        settle(t, d, ev)
        (d / "app.log").write_text("again")
        assert signalled(ev)
    finally:
        t.unsubscribe(sub)


def test_polling_follows_missing_directories_down(tmp_path: Path) -> None:
    t = WatchTable(polling=True, poll_interval=0.1, safety_interval=30)
    ev = threading.Event()
    sub = t.subscribe(str(tmp_path / "a" / "app.log"), ev)
    try:
        settle(t, tmp_path, ev)
        (tmp_path / "a").mkdir()
        assert signalled(ev) and sub.needs_refresh
        t.refresh(sub)
        assert t.stats()["dirs"] == [str(tmp_path / "a")]
    finally:
        t.unsubscribe(sub)


def test_polling_mode_signals_changes(tmp_path: Path) -> None:
    t = WatchTable(polling=True, poll_interval=0.1, safety_interval=30)
    log = tmp_path / "app.log"
    ev = threading.Event()
    sub = t.subscribe(str(log), ev)
    try:
        assert t.stats()["mode"] == "polling" and t.stats()["observers"] == 0
        settle(t, tmp_path, ev)
        assert not ev.wait(0.5)  # missing and known missing: nothing to say
        log.write_text("x")
        assert signalled(ev)
        st = log.stat()
        # the watcher read it all
        sub.known = Position(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        settle(t, tmp_path, ev)
        assert not ev.wait(0.5)
        with log.open("a") as out:
            out.write("more")
        assert signalled(ev)
    finally:
        t.unsubscribe(sub)


def test_safety_check_wakes_only_subscribers_behind(table: WatchTable, tmp_path: Path) -> None:
    """What recovers from a kernel queue overflow: compare files with what was read."""
    log = tmp_path / "app.log"
    log.write_text("12345")
    st = log.stat()
    behind, current = threading.Event(), threading.Event()
    s1 = table.subscribe(str(log), behind)
    s2 = table.subscribe(str(log), current)
    s1.known = Position(st.st_dev, st.st_ino, 2, st.st_mtime_ns)
    s2.known = Position(st.st_dev, st.st_ino, 5, st.st_mtime_ns)
    settle(table, tmp_path, behind, current)
    assert table.check() == 1
    assert behind.is_set() and not current.is_set()
    behind.clear()
    os.utime(log, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten to the same size
    assert table.check() == 2 and current.is_set()


def test_polling_false_with_inotify_refused_is_a_clear_error(tmp_path: Path) -> None:
    t = WatchTable(polling=False)
    t._inotify_refused = "EMFILE: simulated"  # what a refused inotify_init leaves behind
    with pytest.raises(PineWSError, match="PINE_WS_POLLING"):
        t.subscribe(str(tmp_path / "a.log"), threading.Event())
    assert t.stats()["subscribers"] == 0


AUTO_FALLBACK = r"""
import os, resource, sys, threading
from flask_pine_ws.watchtable import WatchTable
path = sys.argv[1]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
fillers = []
try:
    while True:
        fillers.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
t = WatchTable(polling="auto", poll_interval=0.1)
ev = threading.Event()
sub = t.subscribe(path, ev)  # inotify_init refused with EMFILE: polling instead
for fd in fillers:
    os.close(fd)
stats = t.stats()
ev.clear()
with open(path, "a") as out:
    out.write("x")
ok = ev.wait(5)
t.unsubscribe(sub)
print(stats["mode"], stats["observers"], bool(stats["inotify_refused"]), ok)
"""


def test_auto_falls_back_to_polling_when_inotify_is_refused(tmp_path: Path) -> None:
    # A real refusal, in a child process: at the descriptor limit inotify_init
    # fails with EMFILE, as it does at the kernel's instance limit.
    out = subprocess.run([sys.executable, "-c", AUTO_FALLBACK, str(tmp_path / "a.log")],
                         capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).parent.parent, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["polling", "0", "True", "True"]


def test_parse_polling() -> None:
    assert parse_polling("auto") == "auto"
    assert parse_polling("TRUE") is True and parse_polling(True) is True
    assert parse_polling("0") is False
    with pytest.raises(ValueError, match="PINE_WS_POLLING"):
        parse_polling("sometimes")
