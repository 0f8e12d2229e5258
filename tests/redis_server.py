"""A real redis-server for the channel tests: a child process on a free port of 127.0.0.1.

Started with no persistence (``--save '' --appendonly no``) in the test's
temporary directory, stopped after the test; ``restart`` stops it and starts
a new one on the same port (what a Redis restart looks like to the workers).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` on ``127.0.0.1:port``; ``url`` is its ``redis://`` URL."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self._workdir = workdir
        self._argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port),
                      "--save", "", "--appendonly", "no", "--dir", str(workdir),
                      "--loglevel", "warning"]
        self._log = open(workdir / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = self._start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self._argv, stdout=self._log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return proc
            except OSError:
                pass
            time.sleep(0.05)
        stop_process(proc, signal.SIGKILL, 5)
        raise RuntimeError("redis-server not ready after 15 s")

    def kill(self) -> None:
        """Stop it at once (SIGKILL): the workers' connections break."""
        stop_process(self.proc, signal.SIGKILL, 5)

    def start(self) -> None:
        self.proc = self._start()

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM, 10)
        self._log.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    srv = RedisServer(workdir)
    try:
        yield srv
    finally:
        srv.stop()
