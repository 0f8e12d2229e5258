"""The thread pool of :class:`.worker.ThreadWorker`: every thread started before the first request.

gunicorn's ``gthread`` worker runs requests on a
:class:`concurrent.futures.ThreadPoolExecutor`, which starts a thread only
when a request finds none idle. A WebSocket holds its thread for its whole
life, so when a crowd connects every new connection starts a thread while
the others are being served, on the same GIL: in a burst of a thousand
connections at once, CPython's start of the executor's non-daemon threads
alone (each scans every other one, ``threading._maintain_shutdown_locks``:
quadratic in the pool's size) took about a tenth of the worker's GIL-held
time (py-spy). :class:`WarmPool` starts all of its threads when it is made,
in the worker's boot, before it accepts anything: about 16 KB of memory and
0.2 ms of CPU per thread, once.

Its threads are daemon threads, unlike the executor's: a stopping worker
does not wait for them at exit. gunicorn's own graceful stop still waits
for the requests in flight (up to ``--graceful-timeout``) before the worker
exits, and WebSockets are closed with 1001 before that (:mod:`.shutdown`);
what is still running past the graceful timeout would be killed by the
arbiter anyway.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, NamedTuple, TypeVar

_T = TypeVar("_T")

_log = logging.getLogger(__name__)


class _Job(NamedTuple):
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class WarmPool(Executor):
    """A fixed pool of ``size`` daemon threads, all started in ``__init__``.

    A drop-in for :class:`~concurrent.futures.ThreadPoolExecutor` where
    gunicorn uses one (``submit``, ``shutdown``; the futures are standard).
    A thread that cannot be started (the process's or the machine's limit
    on threads) is logged and left out: the pool runs with the threads it
    has, and a request waits for a free one, as it does when every thread
    of a full executor is busy.

    :raises RuntimeError: not a single thread could be started.
    """

    def __init__(self, size: int, name: str = "pine-ws-pool") -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one thread, not {size}")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shut = False
        self._threads: list[threading.Thread] = []
        for i in range(size):
            try:
                thread = self._start(f"{name}-{i}")
            except RuntimeError as exc:  # "can't start new thread"
                if not self._threads:
                    raise
                _log.error("started %d of %d request threads: %s", i, size, exc)
                break
            self._threads.append(thread)

    def _start(self, name: str) -> threading.Thread:
        thread = threading.Thread(target=self._work, name=name, daemon=True)
        thread.start()
        return thread

    @property
    def size(self) -> int:
        """How many threads the pool runs."""
        return len(self._threads)

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._jobs.put(_Job(future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more jobs; each thread ends once the jobs queued before are done.

        :param wait: return once every thread has ended.
        :param cancel_futures: cancel the jobs no thread has taken yet.
        """
        with self._lock:
            if not self._shut:
                self._shut = True
                if cancel_futures:
                    self._cancel_queued()
                for _ in self._threads:
                    self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()

    def _cancel_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.future.cancel()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = job.fn(*job.args, **job.kwargs)
            except BaseException as exc:  # noqa: BLE001  # the future carries it, as the executor's does
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            del job  # no reference to a finished request while waiting for the next


__all__ = ["WarmPool"]
