"""Server shutdown: every live connection closed with 1001 at once.

A WebSocket never ends by itself, so gunicorn's graceful stop (SIGTERM) would
wait out ``graceful_timeout`` for sockets that are not going to finish. This
module keeps a process-wide set of live connections and, when the worker is
told to stop, closes each with 1001 ("going away"), so handlers and file
watchers return and the worker exits at once.

At once means in parallel: a connection whose handler is stuck writing to a
client that does not read holds its send lock for up to the send timeout, and
its close waits up to a second before it cuts the socket. So every
connection first gets its close frame without any waiting where it can (the
lock free and the socket taking the frame: every healthy client, in one
pass); each of the others then gets a thread of its own, so no client waits
for another one's second.

The hook wraps the SIGTERM handler that gunicorn's worker installs. gunicorn
loads the app (and so calls ``init_app``) in the worker's main thread after it
has set its signal handlers, which is where :func:`install` finds it. With
``--preload`` the app is loaded in the arbiter instead: add
:func:`post_worker_init` to the gunicorn configuration (``flask-pine-ws serve``
does).
"""

from __future__ import annotations

import signal
import threading
import weakref
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .conn import Conn

_live: weakref.WeakSet[Conn] = weakref.WeakSet()
_lock = threading.Lock()
#: Set once the process is shutting down: new connections are refused with 1001.
stopping = threading.Event()


def register(conn: Conn) -> None:
    """Track ``conn`` until :func:`unregister`; a stopping server closes it."""
    with _lock:
        _live.add(conn)
    if stopping.is_set():
        conn.abort_for_shutdown()


def unregister(conn: Conn) -> None:
    with _lock:
        _live.discard(conn)


def live_count() -> int:
    """How many connections this process holds open."""
    with _lock:
        return len(_live)


def close_all() -> None:
    """Mark the process as stopping and close every live connection with 1001.

    Returns at once: the closing happens on a thread of its own, since a
    signal handler must not block on a connection's lock.
    """
    stopping.set()
    with _lock:
        conns = list(_live)

    def run() -> None:
        slow = [conn for conn in conns if not conn.close_at_once_for_shutdown()]
        closers = [threading.Thread(target=conn.abort_for_shutdown, name="pine-ws-shutdown",
                                    daemon=True) for conn in slow]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    threading.Thread(target=run, name="pine-ws-shutdown", daemon=True).start()


def _is_gunicorn_worker(obj: Any) -> bool:
    return any(cls.__module__.startswith("gunicorn.workers") for cls in type(obj).__mro__)


def _wrap_sigterm() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "_pine_ws", False):
        return  # installed already (several apps, or init_app and the hook)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        close_all()
        if callable(previous):
            previous(signum, frame)

    on_sigterm._pine_ws = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, on_sigterm)


def install() -> None:
    """Hook SIGTERM when running in a gunicorn worker's main thread; else do nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    owner = getattr(handler, "__self__", None)
    if getattr(handler, "_pine_ws", False) or (owner is not None and _is_gunicorn_worker(owner)):
        _wrap_sigterm()


def post_worker_init(worker: Any) -> None:
    """gunicorn server hook: close connections with 1001 when the worker stops.

    Needed only with ``--preload``; put ``from flask_pine_ws.shutdown import
    post_worker_init`` in ``gunicorn.conf.py``.
    """
    stopping.clear()  # the arbiter's copy of the flag, inherited by fork
    _wrap_sigterm()
