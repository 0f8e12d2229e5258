"""ThreadWorker starts its request threads at boot; a crowd is then served without starting any.

Against a real gunicorn, counting the worker's threads in ``/proc``: plain
``gthread`` is the contrast (its executor starts a thread per request that
finds none idle), so the count is not one any worker would show.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import ServerFactory
from helpers import connect, http_get, wait_until
from server import Server

pytestmark = pytest.mark.integration

THREADS = 24


def os_threads(srv: Server) -> int:
    (worker,) = srv.worker_pids()
    return len(os.listdir(f"/proc/{worker}/task"))


def booted(srv: Server) -> Server:
    """The worker answered a request (it has booted and loaded the app)."""
    status, _, _ = http_get(srv.url + "/__ready")
    assert status == 200
    return srv


def test_the_worker_has_every_request_thread_before_the_crowd(server: ServerFactory) -> None:
    plain = booted(server("basic:app", threads=THREADS))
    assert os_threads(plain) < THREADS // 2  # gthread: started as requests come
    warm = booted(server("basic:app", threads=THREADS,
                         extra=["-k", "flask_pine_ws.worker.ThreadWorker"]))
    before = os_threads(warm)
    assert before > THREADS  # the pool's threads, the main thread, and the worker's helpers

    def echo(i: int) -> str:
        with connect(warm.ws_url + "/echo") as ws:
            ws.send(f"hello {i}")
            answer = ws.recv(timeout=30)
            assert isinstance(answer, str)
            return answer

    # twenty sockets at once (each holds a pool thread while open): all served
    with ThreadPoolExecutor(20) as clients:
        answers = list(clients.map(echo, range(20)))
    assert answers == [f"hello {i}" for i in range(20)]
    # no request thread was started for them: once their readers are gone,
    # the worker has the threads it booted with
    wait_until(lambda: os_threads(warm) <= before, message="only the booted threads left")
    assert "Traceback" not in warm.log()
