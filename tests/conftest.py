"""Fixtures every test composes: real servers, and a guard against leaks.

``server`` starts gunicorn (gthread) or Werkzeug's server in a child process on
a free port of 127.0.0.1 and stops it after the test. ``no_leaks`` (autouse)
fails any test that leaves a thread, a file descriptor or a process behind
in the test process, the classic bugs of long-lived sockets: it compares with
what was there before the test, so only the test's own leaks count, and the
test process is a subreaper, so an orphaned grandchild counts too.

Tests that start a real server (the ``server`` fixture, nginx, Chromium, the
CLI) are marked ``integration``; ``pytest -m "not integration"`` is the fast
tier of in-process tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leaks import Leaks, become_subreaper
from server import Server, gunicorn_argv, werkzeug_argv


def pytest_configure(config: pytest.Config) -> None:
    become_subreaper()


#: Fixtures that start a real server: a test using one is an integration test.
SERVER_FIXTURES = frozenset({"server", "confined"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a server fixture starts a real server: it is integration.

    Modules that start servers otherwise (nginx, Chromium, the CLI as a child
    process) say so themselves with ``pytestmark = pytest.mark.integration``.
    """
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before = Leaks()
    yield
    deadline = time.monotonic() + 5
    while True:
        threads, fds, procs = before.threads_since(), before.fds_since(), before.procs_since()
        if not (threads or fds or procs) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not threads, f"test leaked threads: {threads}"
    assert not fds, f"test leaked file descriptors: {fds}"
    assert not procs, f"test leaked processes (pid: state): {procs}"


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
