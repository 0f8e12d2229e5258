"""Fixtures every test composes: real servers, and a guard against leaks.

``server`` starts gunicorn (gthread) or Werkzeug's server in a child process on
a free port of 127.0.0.1 and stops it after the test. ``no_leaks`` (autouse)
fails any test that leaves a thread, a file descriptor or a child process
behind in the test process, the classic bugs of long-lived sockets.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server import Server, gunicorn_argv, werkzeug_argv


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for task in Path(f"/proc/{me}/task").iterdir():
        try:
            found.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    threads = set(threading.enumerate())
    fds = _fds()
    yield
    deadline = time.monotonic() + 5
    while True:
        extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        # a fd opened by the test and still open; listing /proc/self/fd itself
        # opens one, which the set difference absorbs on both sides
        extra_fds = [fd for fd in _fds() - fds if os.path.exists(f"/proc/self/fd/{fd}")]
        children = _children()
        if not (extra_threads or extra_fds or children) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    details = {
        fd: os.readlink(f"/proc/self/fd/{fd}") for fd in extra_fds
        if os.path.exists(f"/proc/self/fd/{fd}")
    }
    assert not extra_threads, f"test leaked threads: {extra_threads}"
    assert not details, f"test leaked file descriptors: {details}"
    assert not children, f"test leaked child processes: {children}"


ServerFactory = Callable[..., Server]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers: ``server("basic:app", env={...}, threads=32, kind="gunicorn")``."""
    started: list[Server] = []

    def start(app: str = "basic:app", *, env: dict[str, str] | None = None,
              threads: int = 32, workers: int = 1, kind: str = "gunicorn",
              extra: list[str] | None = None) -> Server:
        argv = (gunicorn_argv(app, threads=threads, workers=workers, extra=extra)
                if kind == "gunicorn" else werkzeug_argv(app))
        log = tmp_path / f"server-{len(started)}.log"
        srv = Server(argv, env or {}, log, kind=kind)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
