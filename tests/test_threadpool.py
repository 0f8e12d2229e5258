"""The worker's thread pool: all threads up front, futures as the executor's, a clean stop.

In-process, on real threads. A thread that cannot start is made to fail for
real, by asking for a stack no machine can map (as in test_no_thread_left.py).
"""

from __future__ import annotations

import threading
import time

import pytest

from flask_pine_ws.threadpool import WarmPool

WAIT = 10.0
#: 64 TiB: refused by pthread_create (mmap of the stack) under the kernel's overcommit check.
_UNMAPPABLE = 1 << 46


def _named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_every_thread_is_running_before_the_first_job() -> None:
    pool = WarmPool(5, name="test-warm")
    try:
        threads = _named("test-warm-")
        assert len(threads) == 5 and pool.size == 5
        assert all(t.daemon and t.is_alive() for t in threads)
    finally:
        pool.shutdown()
    assert not _named("test-warm-")


def test_results_and_exceptions_come_back_through_the_futures() -> None:
    pool = WarmPool(2, name="test-results")
    try:
        assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(WAIT) == 5
        failed = pool.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failed.result(WAIT)
        assert pool.submit(lambda: "still serving").result(WAIT) == "still serving"
    finally:
        pool.shutdown()


def test_as_many_jobs_run_at_once_as_there_are_threads_and_the_next_waits() -> None:
    pool = WarmPool(3, name="test-busy")
    release = threading.Event()
    started = threading.Semaphore(0)

    def hold() -> str:
        started.release()
        release.wait(WAIT)
        return threading.current_thread().name

    try:
        holding = [pool.submit(hold) for _ in range(3)]
        for _ in range(3):
            assert started.acquire(timeout=WAIT)
        waiting = pool.submit(lambda: "served")
        time.sleep(0.2)
        assert not waiting.done()  # every thread is held: the fourth job waits, it is not lost
        release.set()
        assert waiting.result(WAIT) == "served"
        assert len({f.result(WAIT) for f in holding}) == 3  # three different threads
    finally:
        release.set()
        pool.shutdown()


def test_shutdown_finishes_queued_jobs_then_refuses_new_ones() -> None:
    pool = WarmPool(1, name="test-stop")
    gate = threading.Event()
    first = pool.submit(gate.wait, WAIT)
    second = pool.submit(lambda: "queued before the stop")
    gate.set()
    pool.shutdown(wait=True)
    assert first.result(0) is True and second.result(0) == "queued before the stop"
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)
    assert not _named("test-stop-")


def test_shutdown_can_cancel_the_jobs_no_thread_took() -> None:
    pool = WarmPool(1, name="test-cancel")
    gate = threading.Event()
    taken = threading.Event()

    def hold() -> bool:
        taken.set()
        return gate.wait(WAIT)

    running = pool.submit(hold)
    assert taken.wait(WAIT)
    queued = [pool.submit(lambda: "never") for _ in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert running.result(WAIT) is True
    assert all(f.cancelled() for f in queued)
    for thread in _named("test-cancel-"):
        thread.join(WAIT)
    assert not _named("test-cancel-")


class _FailingAfter(WarmPool):
    """A pool whose third thread cannot start: thread creation fails for real."""

    def _start(self, name: str) -> threading.Thread:
        if name.endswith("-2"):
            old = threading.stack_size(_UNMAPPABLE)
            try:
                return super()._start(name)
            finally:
                threading.stack_size(old)
        return super()._start(name)


def test_a_thread_that_cannot_start_leaves_a_smaller_pool_that_serves(
        caplog: pytest.LogCaptureFixture) -> None:
    pool = _FailingAfter(5, name="test-short")
    try:
        assert pool.size == 2 and len(_named("test-short-")) == 2
        assert "started 2 of 5 request threads" in caplog.text
        assert [f.result(WAIT) for f in [pool.submit(lambda i=i: i) for i in range(6)]] == \
            list(range(6))
    finally:
        pool.shutdown()


def test_no_thread_at_all_is_an_error() -> None:
    old = threading.stack_size(_UNMAPPABLE)
    try:
        with pytest.raises(RuntimeError):
            WarmPool(3, name="test-none")
    finally:
        threading.stack_size(old)
    assert not _named("test-none-")


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        WarmPool(0)
