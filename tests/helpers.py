"""Small helpers the server tests share: a client, reads until a size, HTTP reads, waits,
a server's worker stats, a raised fd limit, thread creation made to fail."""

from __future__ import annotations

import inspect
import json
import os
import resource
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as _connect

# websockets 17.1+ warns when connect() is not used in a `with` unless told
# legacy=True; older versions have no such flag.
_LEGACY = {"legacy": True} if "legacy" in inspect.signature(_connect).parameters else {}


def connect(url: str, **options: Any) -> ClientConnection:
    """The real client: the ``websockets`` sync client, no proxy, bounded waits."""
    options.setdefault("open_timeout", 10)
    options.setdefault("close_timeout", 5)
    options.setdefault("proxy", None)
    connection: ClientConnection = _connect(url, **_LEGACY, **options)
    return connection


def _recv_until(ws: ClientConnection, count: int, kind: type[Any], timeout: float) -> Any:
    """Messages of type ``kind`` joined until at least ``count`` long, all within ``timeout``."""
    got = kind()
    deadline = time.monotonic() + timeout
    while len(got) < count:
        msg = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert isinstance(msg, kind), msg
        got += msg
    return got


def recv_text(ws: ClientConnection, count: int, timeout: float = 60) -> str:
    """Text messages until at least ``count`` characters arrived (a bytes message fails)."""
    text: str = _recv_until(ws, count, str, timeout)
    return text


def recv_bytes(ws: ClientConnection, count: int, timeout: float = 60) -> bytes:
    """Binary messages until at least ``count`` bytes arrived (a text message fails)."""
    data: bytes = _recv_until(ws, count, bytes, timeout)
    return data


def http_get(url: str, method: str = "GET", timeout: float = 10) -> tuple[int, str, str]:
    """``(status, content type, body)`` of a plain HTTP request; error statuses included."""
    req = urllib.request.Request(url, method=method, data=b"" if method != "GET" else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def state(base_url: str) -> dict[str, Any]:
    """What the test app's handlers recorded (GET /state of tests/apps/basic.py)."""
    status, _, body = http_get(base_url + "/state")
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def events(base_url: str, name: str) -> list[dict[str, Any]]:
    return [e for e in state(base_url)["events"] if e["event"] == name]


def wait_until(predicate: Callable[[], Any], timeout: float = 15, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout}s (last: {value!r})")
        time.sleep(interval)


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def raised_fd_limit() -> Iterator[None]:
    """This process's fd limit raised to its hard limit (a socket per client), then restored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


#: 64 TiB: a thread stack refused by pthread_create (mmap of the stack) under the kernel's
#: overcommit check, so that starting a thread fails for real.
UNMAPPABLE_STACK = 1 << 46


@contextmanager
def no_new_threads() -> Iterator[None]:
    """Every thread started inside fails to start (``RuntimeError: can't start new thread``)."""
    old = threading.stack_size(UNMAPPABLE_STACK)
    try:
        yield
    finally:
        threading.stack_size(old)
