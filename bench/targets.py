"""The targets: how to start each server on a file, reach it, and stop it.

Every server binds 127.0.0.1 on a free port, runs in a session of its own (so
that stopping it stops its children: websocketd's and frontail's ``tail``,
gunicorn's workers) and is listed in :data:`RUNNING` until stopped, so that
``run.py`` stops whatever is left on an error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import procstat
from clients import CHILDREN, SocketIOStream, Stream, TailStream, WsStream
from gunicorn_flags import NO_CONTROL_SOCKET

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FRONTAIL = BENCH / "node_modules" / "frontail" / "index.js"

#: Every server process started and not yet stopped.
RUNNING: set[subprocess.Popen[bytes]] = set()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the benchmark dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM to the process group, then SIGKILL; reaps the leader."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind, if any
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    RUNNING.discard(proc)


def stop_all() -> None:
    """Every server still running, and every client ``tail``."""
    for proc in list(RUNNING):
        stop_process(proc, timeout=3)
    for child in list(CHILDREN):
        child.kill()
        child.wait(5)
        CHILDREN.discard(child)


async def wait_http(port: int, proc: subprocess.Popen[bytes], log: Path,
                    timeout: float = 30) -> None:
    """Until the server answers an HTTP request on ``port`` (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 1)
            writer.write(b"GET /__ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(reader.read(5), 2)
            writer.close()
            await writer.wait_closed()
            if head.startswith(b"HTTP/"):
                return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout} s: {log.read_text()[-2000:]}")


class Target:
    """One thing measured. Subclasses say how to start it and how to be its client."""

    name = ""
    label = ""
    #: per-line framing: the peers whose burst the issue expects at ~2% of the floor
    per_line = False
    #: the most fan-out clients it is measured with
    max_fanout = 1_000_000

    def __init__(self, workdir: Path, max_clients: int, backlog: int = 0) -> None:
        self.workdir = workdir
        self.max_clients = max_clients
        #: the last lines of the file each client gets on connect (``tail -n``)
        self.backlog = backlog
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.path = ""

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    async def start(self, path: Path) -> None:
        self.path = str(path)
        self.port = free_port()
        log = self.workdir / f"{self.name}.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(), env={**os.environ, **self.env()}, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=BENCH, preexec_fn=_die_with_parent)
        RUNNING.add(self.proc)
        await wait_http(self.port, self.proc, log)

    async def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def stream(self) -> Stream:
        raise NotImplementedError

    def pids(self, streams: list[Stream]) -> list[int]:
        return procstat.tree(self.proc.pid) if self.proc else []


class TailFloor(Target):
    """``tail -n0 -F FILE`` into a pipe, one process per client: no network at all."""

    name, label = "tail", "floor: tail -F into a pipe"
    #: Past ~128 processes the user's inotify instances run out (other programs
    #: on the machine fail to get one too) and every further tail polls once a
    #: second: no floor any more. websocketd's rows show what that costs.
    max_fanout = 100

    async def start(self, path: Path) -> None:
        self.path = str(path)

    def stream(self) -> Stream:
        return TailStream(self.path, self.backlog)

    def pids(self, streams: list[Stream]) -> list[int]:
        return [s.proc.pid for s in streams
                if isinstance(s, TailStream) and s.proc and s.proc.poll() is None]


class AsyncioFloor(Target):
    name, label = "asyncio", "floor: asyncio + inotify"

    def argv(self) -> list[str]:
        return [sys.executable, str(BENCH / "floor_server.py"), self.path,
                "--port", str(self.port)]

    def stream(self) -> Stream:
        return WsStream(f"ws://127.0.0.1:{self.port}/logs?lines={self.backlog}")


class Websocketd(Target):
    name, label = "websocketd", "websocketd + tail -F"
    per_line = True

    def argv(self) -> list[str]:
        return ["websocketd", "--address=127.0.0.1", f"--port={self.port}",
                "--loglevel=error", "tail", f"-n{self.backlog}", "-F", self.path]

    def stream(self) -> Stream:
        return WsStream(f"ws://127.0.0.1:{self.port}/", lines=True)


class Frontail(Target):
    name, label = "frontail", "frontail"
    per_line = True

    def argv(self) -> list[str]:
        return ["node", str(FRONTAIL), "-h", "127.0.0.1", "-p", str(self.port),
                "-n", str(self.backlog),
                "--disable-usage-stats", self.path]

    def stream(self) -> Stream:
        # frontail's namespace: the md5 of its file arguments joined by spaces
        return SocketIOStream(self.port, hashlib.md5(self.path.encode()).hexdigest())


class Pine(Target):
    """flask-pine-ws under the worker its deployment notes recommend (gunicorn gthread with a
    deadline for headers and its threads started at boot): a pool thread per socket, and
    a reader thread once its client sends something (here: never, pings are off)."""

    compression = False
    app = "pine_app:app"

    def argv(self) -> list[str]:
        threads = self.max_clients + 50
        return [sys.executable, "-m", "gunicorn", "-k", "flask_pine_ws.worker.ThreadWorker",
                "-w", "1",
                "--threads", str(threads), "--worker-connections", str(2 * threads),
                "--backlog", "2048", "--timeout", "120", "--graceful-timeout", "5",
                *NO_CONTROL_SOCKET, "--log-level", "warning",
                "-b", f"127.0.0.1:{self.port}", self.app]

    def env(self) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        return {"BENCH_FILE": self.path, "PYTHONPATH": path,
                "BENCH_COMPRESSION": "1" if self.compression else "0"}

    def stream(self) -> Stream:
        return WsStream(f"ws://127.0.0.1:{self.port}/logs?lines={self.backlog}")


class PineOff(Pine):
    name, label = "pine", "flask-pine-ws (no compression)"


class PineDeflate(Pine):
    name, label = "pine-deflate", "flask-pine-ws (permessage-deflate)"
    compression = True


class PineShared(Pine):
    """Not the project: shared_app.py, a prototype of the proposed fan-out design."""

    name, label = "pine-shared", "prototype: one read, one frame, many sockets"
    app = "shared_app:app"


ALL: list[type[Target]] = [TailFloor, AsyncioFloor, Websocketd, Frontail, PineOff, PineDeflate,
                           PineShared]
#: What a run measures unless told (``--targets``): the prototype only on demand.
DEFAULT = [t for t in ALL if t is not PineShared]
