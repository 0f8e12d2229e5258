"""``flask run --debug``: sessions logged honestly (101, not 500), and the reloader reloads.

With watchdog installed (a dependency), Werkzeug's reloader uses it by default;
it watches every directory on ``sys.path`` recursively, the standard library's
included, for every kind of event, and on a machine where other Python
processes run its inotify queue overflows over and over and edits are missed.
The docs' remedy is the stat reloader (``app.run(debug=True,
reloader_type="stat")``, which ``flask run`` has no option for): with it, an
edit of the app's module restarts the server, and the next connection runs the
new code.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import connect, wait_until
from server import ROOT

pytestmark = pytest.mark.integration

APP = textwrap.dedent('''\
    from flask import Flask

    from flask_pine_ws import FlaskPineWS

    app = Flask(__name__)
    pine = FlaskPineWS(app)
    VERSION = "one"


    @pine.new("/echo")
    def echo(conn, ctx):
        conn.send(VERSION)
        while True:
            conn.send(conn.receive())


    if __name__ == "__main__":  # the docs' way to the stat reloader
        import os

        app.run(debug=True, reloader_type="stat", port=int(os.environ["PORT"]))
    ''')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=["default", "stat"])
def debug_server(request: pytest.FixtureRequest,
                 tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """``flask --app dbgapp run --debug`` in ``tmp_path``: (port, app file, output file)."""
    app_file = tmp_path / "dbgapp.py"
    app_file.write_text(APP)
    out = tmp_path / "flask.log"
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PORT": str(port)}
    argv = ([sys.executable, "dbgapp.py"] if request.param == "stat" else
            [sys.executable, "-m", "flask", "--app", "dbgapp", "run", "--debug",
             "--host", "127.0.0.1", "--port", str(port)])
    with out.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_until(lambda: _accepts(port) or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, out.read_text()
        yield port, app_file, out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _greeting(port: int) -> str:
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=30) as ws:
        greeting = ws.recv(timeout=10)
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
    assert isinstance(greeting, str)
    return greeting


@pytest.mark.parametrize("debug_server", ["default"], indirect=True)
def test_a_session_is_logged_as_101_not_500(debug_server: tuple[int, Path, Path]) -> None:
    port, _, out = debug_server
    assert _greeting(port) == "one"
    assert "Restarting with watchdog" in out.read_text()  # watchdog is installed
    wait_until(lambda: '"GET /echo HTTP/1.1" 101 - websocket' in out.read_text(), timeout=15)
    time.sleep(0.5)
    log = out.read_text()
    assert log.count("GET /echo") == 1, log
    assert " 500 " not in log and "Traceback" not in log and "Debugging middleware" not in log


@pytest.mark.parametrize("debug_server", ["stat"], indirect=True)
def test_the_stat_reloader_reloads_an_edited_module(
        debug_server: tuple[int, Path, Path]) -> None:
    port, app_file, out = debug_server
    assert _greeting(port) == "one"
    assert "Restarting with stat" in out.read_text(), out.read_text()
    time.sleep(1.5)  # a modification time the reloader can tell from the first
    app_file.write_text(APP.replace('VERSION = "one"', 'VERSION = "two"'))
    wait_until(lambda: out.read_text().count("Restarting with stat") >= 2, timeout=30)

    def reloaded() -> bool:
        try:
            return _greeting(port) == "two"
        except OSError:
            return False  # the new process is still starting

    wait_until(reloaded, timeout=30, interval=0.3)
    assert "Detected change in" in out.read_text()
