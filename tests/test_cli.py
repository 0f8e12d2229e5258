"""The command line, run as a user runs it: ``python -m flask_pine_ws serve FILE...``.

The server listens on ``--port 0`` (a free port) and prints its URL, which
the test reads; a real WebSocket client then reads the file through it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from flask_pine_ws.cli import build_parser, names_for

from helpers import connect, http_get, wait_until

# the command line as a child process, most of them serving
pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flask_pine_ws", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


class Running:
    """A server started from the command line; ``url`` is the one it printed."""

    def __init__(self, proc: subprocess.Popen[bytes], out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err
        match = wait_until(
            lambda: self._exited() or re.search(r"(https?://\S+:[0-9]+/)", out.read_text()),
            timeout=30, message="the printed URL")
        assert not isinstance(match, bool), f"exited early:\n{err.read_text()}"
        self.url: str = match[1].rstrip("/")
        self.ws_url = "ws" + self.url.removeprefix("http")

    def _exited(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exited with {self.proc.returncode}:\n{self.err.read_text()}")
        return False


@contextmanager
def serving(tmp_path: Path, *args: str, module: list[str] | None = None) -> Iterator[Running]:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    argv = [sys.executable, *(module or ["-m", "flask_pine_ws", "serve"]), *args]
    with out.open("wb") as fout, err.open("wb") as ferr:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=fout, stderr=ferr,
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "PYTHONPATH": str(ROOT)},
                                start_new_session=True)
    try:
        yield Running(proc, out, err)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stray workers, if any
        except ProcessLookupError:
            pass
        proc.wait(5)


# -- options ---------------------------------------------------------------------------


def test_help_explains_every_option() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for option in ("PATH", "--host", "--port", "--lines", "--max-lines", "--workers",
                   "--threads", "--title", "--user", "--password", "--htpasswd",
                   "--trust-header", "--no-auth", "--certfile", "--keyfile", "--prefix",
                   "--glob", "--allow-host", "--root", "--version"):
        assert option in result.stdout, option
    assert "127.0.0.1" in result.stdout and "tail -F" in result.stdout
    serve = build_parser().parse_args(["serve", "x"]).command_parser
    for action in serve._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"
    top = run_cli("--help")
    assert top.returncode == 0 and "serve" in top.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["serve"], "required: PATH"),
    (["serve", "x.log", "--port", "70000"], "--port: must be a port from 0 to 65535"),
    (["serve", "x.log", "--port", "http"], "--port: must be a whole number"),
    (["serve", "x.log", "--workers", "0"], "--workers: must be at least 1"),
    (["serve", "x.log", "--lines", "-5"], "--lines: must be a whole number"),
    (["serve", "x.log", "--bogus"], "unrecognized arguments: --bogus"),
    (["tail", "x.log"], "invalid choice: 'tail'"),
])
def test_bad_option_is_a_clear_error(args: list[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_files_are_named_after_their_base_names() -> None:
    assert names_for(["/var/log/app.log", "/srv/app.log", "weird name!.log", "/x/.hidden"]) == {
        "app.log": "/var/log/app.log",
        "app.log-2": "/srv/app.log",
        "weird_name_.log": os.path.abspath("weird name!.log"),
        "hidden": "/x/.hidden",
    }


# -- serving ---------------------------------------------------------------------------


def test_serve_streams_the_file_and_stops_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    with serving(tmp_path, str(log), "--port", "0", "--lines", "3", "--workers", "2") as srv:
        assert srv.url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        status, ctype, page = http_get(srv.url + "/")
        assert status == 200 and ctype.startswith("text/html")
        assert '"name": "app.log"' in page and '"/ws/app.log"' in page
        assert http_get(srv.url + "/_static/viewer.js")[0] == 200

        with connect(srv.ws_url + "/ws/app.log") as ws:
            assert ws.recv(timeout=15) == "line 7\nline 8\nline 9\n"
            with log.open("a") as f:
                f.write("appended\n")
            assert ws.recv(timeout=15) == "appended\n"

            # SIGTERM: the socket is closed with 1001 at once, and the server exits.
            srv.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=15)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        assert srv.proc.wait(20) == 0


def test_missing_file_is_waited_for_with_a_message(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    with serving(tmp_path, str(log), "--port", "0") as srv:
        assert f"{log} does not exist yet" in srv.err.read_text()
        with connect(srv.ws_url + "/ws/later.log", subprotocols=["pine.watch.v1"]) as ws:
            events = [json.loads(ws.recv(timeout=15)) for _ in range(2)]
            assert [e["event"] for e in events] == ["open", "waiting"]
            log.write_text("finally\n")
            rotated = json.loads(ws.recv(timeout=15))
            assert rotated["event"] == "rotated" and rotated["how"] == "replaced"
            assert ws.recv(timeout=15) == b"finally\n"


def test_several_files_each_get_a_page(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("a\n")
    (tmp_path / "b.log").write_text("b\n")
    with serving(tmp_path, "a.log", "b.log", "--port", "0", "--title", "Mine") as srv:
        _, _, index = http_get(srv.url + "/")
        assert '"/a.log"' in index and '"/b.log"' in index and "<title>Mine</title>" in index
        with connect(srv.ws_url + "/ws/b.log") as ws:
            assert ws.recv(timeout=15) == "b\n"
        assert http_get(srv.url + "/c.log")[0] == 404


def test_example_app_serves_a_rotating_demo_log_and_echo(tmp_path: Path) -> None:
    demo = tmp_path / "demo.log"
    with serving(tmp_path, "--port", "0", "--log", str(demo), "--interval", "0.02",
                 "--rotate-every", "15", module=[str(ROOT / "example_app.py")]) as srv:
        assert "Live log viewer" in srv.out.read_text()
        assert http_get(srv.url + "/")[0] == 200
        with connect(srv.ws_url + "/echo") as ws:
            ws.send("hello")
            assert ws.recv(timeout=15) == "hello"
        with connect(srv.ws_url + "/ws/demo.log", subprotocols=["pine.watch.v1"]) as ws:
            seen: set[str] = set()
            data = b""
            while "rotated" not in seen or not re.search(rb"ERROR|WARN", data):
                message = ws.recv(timeout=30)
                if isinstance(message, bytes):
                    data += message
                else:
                    seen.add(json.loads(message)["event"])
            assert b" INFO " in data
        assert (tmp_path / "demo.log.1").exists()
