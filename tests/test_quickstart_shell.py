"""The quickstart's shell commands, run as written in a fresh shell.

A copy of the checkout, a ``bash`` with no virtual environment active (only the
system's ``PATH`` and the machine's pip settings), and the page's commands in
order: create ``.venv`` and install, serve ``echo.py`` with ``.venv/bin/flask``
and with ``.venv/bin/gunicorn``, install the client's ``websockets`` and run
``client.py``, serve ``logs.py``. The only change to a command is the port
(5000 on the page, a free one here).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import connect, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "quickstart.md"
_FENCE = re.compile(r"^```(\w*)\s*$")


def _blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of the page, in order."""
    blocks, lang, lines = [], None, []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        fence = _FENCE.match(line)
        if lang is None and fence:
            lang, lines = fence.group(1), []
        elif lang is not None and line.strip() == "```":
            blocks.append((lang, "\n".join(lines) + "\n"))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def _block(lang: str, marker: str) -> str:
    found = [code for kind, code in _blocks() if kind == lang and marker in code]
    assert len(found) == 1, f"one {lang} block with {marker!r} on the page"
    return found[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Shell:
    """A fresh shell in ``cwd``: the system's PATH, no virtual environment."""

    def __init__(self, cwd: Path, home: Path) -> None:
        self.cwd = cwd
        base = os.path.dirname(getattr(sys, "_base_executable", sys.executable))
        self.env = {"PATH": f"{base}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
                    "LANG": "C.UTF-8", **{k: v for k, v in os.environ.items()
                                          if k.startswith("PIP_")}}

    def run(self, script: str, timeout: float = 600) -> str:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    @contextmanager
    def background(self, command: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
        with log.open("wb") as out:
            proc = subprocess.Popen(["bash", "-c", command], cwd=self.cwd,
                                    env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _wait_serving(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_until(up, timeout=60, interval=0.2)


def test_the_quickstart_runs_as_written_in_a_fresh_shell(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".venv", ".git", "*.egg-info", "build", "dist", "_build", "__pycache__", ".*_cache",
        "node_modules", "results", "demo.log*"))
    (tmp_path / "home").mkdir()
    shell = Shell(checkout, tmp_path / "home")

    shell.run(_block("sh", "python3 -m venv .venv\n"))  # the install
    (checkout / "echo.py").write_text(_block("python", "def echo("))
    port = _free_port()
    for command in _block("sh", "--app echo run").splitlines():
        command = command.replace("5000", str(port))
        log = tmp_path / f"server-{port}.log"
        with shell.background(command, log) as proc:
            _wait_serving(port, proc, log)
            with connect(f"ws://127.0.0.1:{port}/echo") as ws:
                ws.send("from the test")
                assert ws.recv(timeout=20) == "from the test"
            client = _block("python", "websockets.sync.client")
            (checkout / "client.py").write_text(client.replace("5000", str(port)))
            printed = shell.run(_block("sh", "client.py"))
            assert printed.splitlines()[-1] == "hello"
        port = _free_port()

    (checkout / "logs.py").write_text(_block("python", "def log("))
    serve, append = _block("sh", "logs:app").splitlines()
    log = tmp_path / "logs-server.log"
    with shell.background(serve.replace("5000", str(port)), log) as proc, \
            shell.background(append, tmp_path / "append.log"):
        _wait_serving(port, proc, log)
        with connect(f"ws://127.0.0.1:{port}/ws/log") as ws:
            first = ws.recv(timeout=30)  # the file so far, then each line as it comes
            assert isinstance(first, str) and first.endswith("\n")
            started = time.monotonic()
            more = ws.recv(timeout=30)
            assert isinstance(more, str) and more.endswith("\n")
            assert time.monotonic() - started < 30
