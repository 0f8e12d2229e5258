"""Real servers for the tests: gunicorn (gthread) and Werkzeug's, as child processes.

Each server listens on 127.0.0.1, on a socket the test process binds first
(port 0, so two tests never race for a port) and hands to gunicorn as
``fd://N``. The server's output goes to a file the test can read, to assert
that nothing was logged that should not have been (a traceback, a 500).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

APPS = Path(__file__).parent / "apps"
#: The repository root: children import flask_pine_ws from here even when the
#: package is not installed (gunicorn runs with --chdir into APPS).
ROOT = Path(__file__).parent.parent


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /__ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()}")


class Loopback:
    """Something listening on ``127.0.0.1:port``; ``url`` and ``ws_url`` point at it."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Send ``sig`` (the process's graceful stop), then SIGKILL its group after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class Server(Loopback):
    """One server process; ``url`` and ``ws_url`` point at it."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, *,
                 ready_timeout: float = 30, kind: str = "gunicorn") -> None:
        self.kind = kind
        self.log_path = log
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self.port = self._listener.getsockname()[1]
        fd = self._listener.fileno()
        pythonpath = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1",
                    "PINE_TEST_LISTEN_FD": str(fd), "PYTHONPATH": pythonpath}
        argv = [a.replace("{fd}", str(fd)) for a in argv]
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self._spawn_args = (argv, full_env, fd, ready_timeout)
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv, env, fd, ready_timeout = self._spawn_args
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, pass_fds=(fd,),
                                     start_new_session=True)
        try:
            _wait_listening(self.port, self.proc, self.log_path, ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self.proc

    def restart(self, timeout: float = 15, between: Callable[[], object] | None = None) -> None:
        """Stop the server (SIGTERM) and start a new one on the same listening socket.

        The port stays open in between: a client connecting meanwhile waits in
        the listener's backlog and is served by the new process. ``between`` is
        called while no server runs.
        """
        self._end(timeout)
        if between is not None:
            between()
        self._spawn()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The gunicorn workers (children of the arbiter), or the server itself."""
        if self.kind != "gunicorn":
            return [self.proc.pid]
        pids = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(p) for p in children)
        return pids

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the whole process group goes."""
        self._end(timeout)
        self._listener.close()
        self._log_file.close()
        return self.proc.returncode

    def _end(self, timeout: float) -> None:
        stop_process(self.proc, signal.SIGTERM, timeout)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray workers, if any
        except ProcessLookupError:
            pass


#: Extra gunicorn options: a graceful timeout far beyond any wait of a test, so that a
#: worker closing its sockets at once on SIGTERM is told from one waiting the timeout
#: out with a generous bound (a minute) instead of a tight clock.
LONG_GRACE = ["--graceful-timeout", "120"]
#: The bound on "at once" with LONG_GRACE: half its graceful timeout.
AT_ONCE = 60.0


def _gunicorn_has_control_socket() -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS)


#: gunicorn 25.1 and newer open a control socket at a fixed path, which two servers of
#: one test run would share; the releases before it have neither the socket nor the flag.
NO_CONTROL_SOCKET = ["--no-control-socket"] if _gunicorn_has_control_socket() else []


def gunicorn_argv(app: str, *, threads: int = 32, workers: int = 1,
                  extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", str(threads),
            "-w", str(workers), "-b", "fd://{fd}", *NO_CONTROL_SOCKET,
            "--graceful-timeout", "20", "--timeout", "60", "--log-level", "info",
            "--chdir", str(APPS), *(extra or []), app]


def werkzeug_argv(app: str) -> list[str]:
    return [sys.executable, str(APPS / "run_werkzeug.py"), app]
