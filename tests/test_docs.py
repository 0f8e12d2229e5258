"""The docs: every code sample runs as written, and the site builds with warnings as errors.

Samples are the fenced code blocks of the Markdown pages in ``docs/`` and of
the README, found at any indentation (inside a list item too). Each block is
preceded, on the line before its fence, by one of two markers:

- ``<!-- test: NAME -->``: the block runs, checked by ``CHECKS[NAME]`` below,
  which usually serves the sample under gunicorn (its module is the app module,
  a temporary directory gunicorn's working directory) and talks to it with a
  real client, asserting what the page says happens. Shell blocks run too, with
  the page's port replaced by a free one, and are probed the same way;
- ``<!-- not run: REASON -->``: the block cannot run here, and REASON (not
  empty) says why: it installs software, changes the machine, is another
  language's example, or is output rather than code.

A block with neither marker fails (an untagged ``python`` block included), as
do a tag without a check and a check no page uses: a sample cannot drop out of
the tests unnoticed. MyST directives (```` ```{toctree} ````) are not samples;
the site, with them, is built by ``sphinx-build -W``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import flask_pine_ws
from flask_pine_ws.config import DEFAULTS

from conftest import ServerFactory
from helpers import wait_until
from server import AT_ONCE, LONG_GRACE, Server

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = ROOT / "docs"
#: What the quickstart's samples call the server; a check puts the test server's address there.
DOC_ADDRESS = "127.0.0.1:5000"
TIMEOUT = 20  # seconds any single wait of these tests may take


@dataclass(frozen=True)
class Block:
    """One fenced code block of a docs page."""

    page: str
    line: int
    lang: str
    tag: str | None
    code: str
    #: Why the block is not run (``<!-- not run: REASON -->``), or ``None``.
    not_run: str | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})\s*([^\s`]*)")
_TAG = re.compile(r"^<!--\s*test:\s*([\w-]+)\s*-->$")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")


def _blocks_of(text: str, page: str) -> Iterator[Block]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        indent, fence, lang = opened.groups()
        previous = lines[i - 1].strip() if i else ""
        tag = _TAG.match(previous)
        not_run = _NOT_RUN.match(previous)
        end = i + 1
        # closed by a fence of the same character, at least as long, with nothing after it
        while end < len(lines) and not (
                lines[end].strip().startswith(fence)
                and set(lines[end].strip()) == {fence[0]}):
            end += 1
        code = textwrap.dedent("\n".join(
            line[len(indent):] if line.startswith(indent) else line
            for line in lines[i + 1:end]))
        yield Block(page, i + 1, lang.lower(), tag.group(1) if tag else None,
                    code + "\n", not_run.group(1) if not_run else None)
        i = end + 1


def all_blocks() -> list[Block]:
    pages = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    found = [block for page in pages
             for block in _blocks_of(page.read_text(encoding="utf-8"),
                                     page.relative_to(DOCS).as_posix())]
    readme = ROOT / "README.md"
    return found + list(_blocks_of(readme.read_text(encoding="utf-8"), readme.name))


#: Every sample; MyST directives (```{toctree}```) are markup, not samples.
BLOCKS = [b for b in all_blocks() if not b.lang.startswith("{")]
PYTHON = [b for b in BLOCKS if b.lang in ("python", "py")]


def _write(code: str, directory: Path, name: str = "docsample") -> Path:
    path = directory / f"{name}.py"
    path.write_text(code, encoding="utf-8")
    return path


def _run(code: str, cwd: Path,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script in ``cwd``, with the checkout importable."""
    script = _write(code, cwd, "docscript")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=60)


# -- the harness a check gets ------------------------------------------------


@dataclass
class Sample:
    """A sample under test: its block, a directory to run it in, servers to serve it."""

    block: Block
    tmp: Path
    server: ServerFactory

    def serve(self, env: dict[str, str] | None = None, extra: list[str] | None = None) -> Server:
        """Serve the sample as the app module ``docsample:app`` under gunicorn."""
        _write(self.block.code, self.tmp)
        return self.server("docsample:app", env=env,
                           extra=["--chdir", str(self.tmp), *(extra or [])])

    def next_block(self, tag: str) -> Block:
        """The first block tagged ``tag`` after this one on the same page."""
        for block in BLOCKS:
            if block.page == self.block.page and block.line > self.block.line and block.tag == tag:
                return block
        raise AssertionError(f"no block tagged {tag!r} after {self.block.id}")

    def previous_block(self, tag: str) -> Block:
        """The last block tagged ``tag`` before this one on the same page."""
        for block in reversed(BLOCKS):
            if block.page == self.block.page and block.line < self.block.line and block.tag == tag:
                return block
        raise AssertionError(f"no block tagged {tag!r} before {self.block.id}")


def ws(srv: Server, path: str, **kwargs: Any) -> ClientConnection:
    return ws_at(srv.ws_url + path, **kwargs)


def ws_at(url: str, **kwargs: Any) -> ClientConnection:
    """A real client: no proxy from the environment, bounded waits."""
    conn: ClientConnection = connect(url, proxy=None, open_timeout=TIMEOUT, **kwargs)
    return conn


def close_code(conn: ClientConnection) -> int | None:
    """Wait for the server to close ``conn`` and return its close code."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            conn.recv(timeout=deadline - time.monotonic())
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            break
    raise AssertionError("the server did not close the connection")


def refused_status(srv: Server, path: str, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        ws(srv, path, **kwargs)
    return refused.value.response.status_code


# -- checks: what each page says its sample does -----------------------------

Check = Callable[[Sample], None]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    def register(func: Check) -> Check:
        CHECKS[name] = func
        return func
    return register


@check("echo")
def _echo(sample: Sample) -> None:
    srv = sample.serve()
    with ws(srv, "/echo") as conn:
        conn.send(b"\x00\xffbinary")
        assert conn.recv(timeout=TIMEOUT) == b"\x00\xffbinary"
        conn.send("text")
        assert conn.recv(timeout=TIMEOUT) == "text"


def _run_client(code: str, port: int, cwd: Path) -> None:
    """Run the page's client sample against ``port``: it prints what the echo route sent."""
    assert DOC_ADDRESS in code, "a client sample talks to the page's address"
    done = _run(code.replace(DOC_ADDRESS, f"127.0.0.1:{port}"), cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n"


@check("client")
def _client(sample: Sample) -> None:
    """The client sample, against the server sample before it, served under gunicorn."""
    srv = Sample(sample.previous_block("echo"), sample.tmp, sample.server).serve()
    _run_client(sample.block.code, srv.port, sample.tmp)


def _commands(block: Block) -> list[str]:
    """The commands of a shell block: its lines without comments, blank lines, prompts."""
    lines = (line.split("#", 1)[0].strip() for line in block.code.splitlines())
    return [line.removeprefix("$ ") for line in lines if line]


#: The variable assignments a shell command may start with, and the command after them.
_ASSIGNMENTS = re.compile(r"((?:[A-Za-z_]\w*=(?:'[^']*'|\S*)\s+)*)(.*)", re.S)


@contextmanager
def serving_command(command: str, cwd: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Run a page's shell command that serves on ``port``, until it listens; stop it after.

    The command runs as printed, through ``sh``, with this interpreter's
    ``bin`` directory first on ``PATH`` (its ``flask``, ``gunicorn`` and
    ``flask-pine-ws`` scripts) and the checkout importable. Variables assigned
    before the command (``NAME='value' command``) are in its environment.
    """
    split = _ASSIGNMENTS.fullmatch(command)
    assert split, command
    assignments, rest = split.groups()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    log = cwd / f"command-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["sh", "-c", f"{assignments}exec {rest}"], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"{command!r} exited:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{command!r} not listening:\n{log.read_text()}"
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a worker left behind, if any
        except ProcessLookupError:
            pass


@check("serve-echo")
def _serve_echo(sample: Sample) -> None:
    """Both commands of the page serve its echo app: the client sample gets its echo."""
    _write(sample.previous_block("echo").code, sample.tmp, "echo")
    client = sample.next_block("client")
    commands = _commands(sample.block)
    assert [c.split()[0] for c in commands] == [".venv/bin/flask", ".venv/bin/gunicorn"], commands
    (sample.tmp / ".venv").symlink_to(sys.prefix)  # the page's .venv: this environment
    for command in commands:
        assert "5000" in command, command
        port = _free_port()
        with serving_command(command.replace("5000", str(port)), sample.tmp, port):
            _run_client(client.code, port, sample.tmp)


@check("cli-serve")
def _cli_serve(sample: Sample) -> None:
    """Each command of the page serves the files it names (a directory: those matching the
    glob), each on a page of its own, and the page's socket streams it."""
    var_log = sample.tmp / "var-log"
    (var_log / "app").mkdir(parents=True)
    for name in ("app.log", "worker.log", "app/web.log", "app/notes.txt"):
        (var_log / name).write_text(f"a line of {name}\n")
    commands = _commands(sample.block)
    assert len(commands) == 3, commands
    served = [["app.log", "worker.log"], ["web.log"], ["app.log"]]
    for command, names in zip(commands, served, strict=True):
        port = _free_port()
        command = command.replace("/var/log/", f"{var_log}/")
        command = (command.replace("--port 9001", f"--port {port}") if "--port" in command
                   else f"{command} --port {port}")
        with serving_command(command, sample.tmp, port):
            status, index = _http_status(f"http://127.0.0.1:{port}/")
            assert status == 200, index
            status, listing = _http_status(f"http://127.0.0.1:{port}/_files.json")
            assert [f["name"] for f in json.loads(listing)] == names, listing
            first = names[0]
            with ws_at(f"ws://127.0.0.1:{port}/ws/{first}") as conn:
                receive_text(conn, f"a line of {'app/' if first == 'web.log' else ''}{first}\n")


@check("logs")
def _logs(sample: Sample) -> None:
    (sample.tmp / "server.log").write_text("started\n")
    srv = sample.serve()
    page = urllib.request.urlopen(srv.url + "/", timeout=TIMEOUT).read().decode()
    assert "new WebSocket(" in page and "/ws/log" in page
    with ws(srv, "/ws/log") as conn:
        receive_text(conn, "started\n")
        with (sample.tmp / "server.log").open("a") as f:
            f.write("a new line\n")
        receive_text(conn, "a new line\n")


@check("routes")
def _routes(sample: Sample) -> None:
    srv = sample.serve()
    with ws(srv, "/rooms/7?nick=ann") as conn:
        assert json.loads(conn.recv(timeout=TIMEOUT)) == {
            "room": 7, "nick": "ann", "from": "127.0.0.1"}
        conn.send("hi")
        assert json.loads(conn.recv(timeout=TIMEOUT)) == {"said": "hi"}
    with ws(srv, "/admin/status") as conn:
        assert conn.recv(timeout=TIMEOUT) == "all good"
        assert close_code(conn) == 1000


@check("errors")
def _errors(sample: Sample) -> None:
    srv = sample.serve()
    with ws(srv, "/divide") as conn:
        conn.send("[6, 3]")
        assert json.loads(conn.recv(timeout=TIMEOUT)) == 2.0
        conn.send("[1, 0]")
        assert close_code(conn) == 1011
    deadline = time.monotonic() + TIMEOUT
    while "chat handler failed: ZeroDivisionError" not in srv.log():
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.05)
    assert "Traceback" not in srv.log()


@check("json")
def _json(sample: Sample) -> None:
    srv = sample.serve()
    with ws(srv, "/sum") as conn:
        conn.send("[1, 2, 3]")
        assert json.loads(conn.recv(timeout=TIMEOUT)) == {"sum": 6}
        conn.send("not json")
        assert "not valid JSON" in json.loads(conn.recv(timeout=TIMEOUT))["error"]
        conn.send("[4]")
        assert json.loads(conn.recv(timeout=TIMEOUT)) == {"sum": 4}


@check("clock")
def _clock(sample: Sample) -> None:
    srv = sample.serve()
    with ws(srv, "/clock") as conn:
        conn.send("hi")
        seen: list[dict[str, Any]] = []
        while not ({"echo": "hi"} in seen and any("tick" in m for m in seen)):
            seen.append(json.loads(conn.recv(timeout=TIMEOUT)))
        ticks = [m["tick"] for m in seen if "tick" in m]
        assert ticks == list(range(1, len(ticks) + 1))


@check("listener")
def _listener(sample: Sample) -> None:
    srv = sample.serve()
    with ws(srv, "/job?seconds=0.2") as conn:
        conn.send("still here?")  # wakes the handler: it must not end it
        assert conn.recv(timeout=TIMEOUT) == "done"
        assert close_code(conn) == 1000


@check("config")
def _config(sample: Sample) -> None:
    srv = sample.serve(env={"FLASK_PINE_WS_PING_INTERVAL": "10"})
    big = "x" * (100 * 1024)
    with ws(srv, "/upload") as conn:
        conn.send(big)
        assert json.loads(conn.recv(timeout=TIMEOUT)) == {"received": len(big)}
    with ws(srv, "/chat") as conn:
        conn.send("small")
        assert conn.recv(timeout=TIMEOUT) == "small"
        conn.send(big)
        assert close_code(conn) == 1009


@check("origin")
def _origin(sample: Sample) -> None:
    srv = sample.serve()
    own = f"http://127.0.0.1:{srv.port}"
    for origin in (own, "https://app.example.com", "https://docs.example.org", None):
        with ws(srv, "/feed", origin=origin) as conn:
            assert str(conn.recv(timeout=TIMEOUT)).startswith("welcome, ")
    for origin in ("https://evil.example", "http://app.example.com", "https://example.org.evil"):
        assert refused_status(srv, "/feed", origin=origin) == 403
    # behind one proxy: the forwarded host and scheme are what the origin must match
    forwarded = {"X-Forwarded-Host": "logs.example.net", "X-Forwarded-Proto": "https",
                 "X-Forwarded-For": "203.0.113.9"}
    with ws(srv, "/feed", origin="https://logs.example.net",
            additional_headers=forwarded) as conn:
        assert conn.recv(timeout=TIMEOUT) == "welcome, 203.0.113.9"
    assert refused_status(srv, "/feed", origin=own, additional_headers=forwarded) == 403
    with ws(srv, "/embed", origin="https://shop.partner.example") as conn:
        assert conn.recv(timeout=TIMEOUT) == "hello, partner"
    assert refused_status(srv, "/embed", origin=own) == 403


@check("auth")
def _auth(sample: Sample) -> None:
    srv = sample.serve(env={"SECRET_KEY": "test-secret", "ADMIN_PASSWORD": "pw"})
    assert refused_status(srv, "/ws/admin") == 401
    assert _post(srv, "/login", "password=wrong")[0] == 403
    status, cookie = _post(srv, "/login", "password=pw")
    assert status == 200 and cookie.startswith("session=")
    with ws(srv, "/ws/admin", additional_headers={"Cookie": cookie.split(";")[0]}) as conn:
        assert conn.recv(timeout=TIMEOUT) == "hello, admin"


def _post(srv: Server, path: str, form: str) -> tuple[int, str]:
    """POST a form; the status and the Set-Cookie header."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=TIMEOUT)
    try:
        conn.request("POST", path, form,
                     {"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Set-Cookie") or ""
    finally:
        conn.close()


def receive_text(conn: ClientConnection, expected: str) -> None:
    """Receive text messages until they add up to ``expected`` (and no more)."""
    got = ""
    deadline = time.monotonic() + TIMEOUT
    while len(got) < len(expected):
        message = conn.recv(timeout=max(0.1, deadline - time.monotonic()))
        assert isinstance(message, str)
        got += message
    assert got == expected


@check("watch")
def _watch(sample: Sample) -> None:
    logs = sample.tmp / "logs"
    log = logs / "app.log"
    srv = sample.serve()
    logs.mkdir()
    (pid,) = srv.worker_pids()
    with ws(srv, "/ws/app?lines=2") as conn:  # the file does not exist yet: waited for
        # created once the worker watches its directory and its watcher found no file and
        # waits (every thread of the worker asleep), not after a guessed sleep: created
        # earlier, the watcher would begin at its last 2 lines, as for any file
        wait_until(lambda: logs.stat().st_ino in _watched_inodes(pid), timeout=TIMEOUT,
                   message="the worker watching logs/")
        wait_until(lambda: _asleep(pid) and (time.sleep(0.05) or _asleep(pid)),
                   timeout=TIMEOUT, message="every thread of the worker waiting")
        log.write_text("one\ntwo\nthree\n")
        receive_text(conn, "one\ntwo\nthree\n")  # a new file: from byte 0
    with ws(srv, "/ws/app?lines=2") as conn:
        receive_text(conn, "two\nthree\n")
        with log.open("a") as f:
            f.write("four\n")
        receive_text(conn, "four\n")
        log.rename(logs / "app.log.1")  # rotation: the old file is drained first
        with (logs / "app.log.1").open("a") as f:
            f.write("last of the old\n")
        log.write_text("first of the new\n")
        receive_text(conn, "last of the old\nfirst of the new\n")
        log.write_text("")  # truncation (copytruncate)
        with log.open("a") as f:
            f.write("after\n")
        receive_text(conn, "after\n")
    resume_at = len(b"aft")
    with ws(srv, f"/ws/app?offset={resume_at}") as conn:
        receive_text(conn, "er\n")
    with ws(srv, "/ws/passwd") as conn:
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert closed.value.rcvd.reason == "path outside the allowed watch roots"


def _asleep(pid: int) -> bool:
    """Every thread of process ``pid`` is blocked (none running or ready to run)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        states.append(stat[stat.rindex(")") + 2])
    return bool(states) and all(state in "SD" for state in states)


def _watched_inodes(pid: int) -> set[int]:
    """The inodes process ``pid`` has inotify watches on (its ``fdinfo``)."""
    found = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:
            continue  # closed meanwhile
        found.update(int(m, 16) for m in re.findall(r"^inotify wd:\S+ ino:([0-9a-f]+)", text, re.M))
    return found


@check("overview")
def _overview(sample: Sample) -> None:
    """The first sample of the site and the README: an echo room and a live log."""
    (sample.tmp / "server.log").write_text("booted\n")
    srv = sample.serve()
    with ws(srv, "/ws/lobby") as conn:
        conn.send("hi")
        assert conn.recv(timeout=TIMEOUT) == "hi"
    with ws(srv, "/logs") as conn:
        receive_text(conn, "booted\n")
        with (sample.tmp / "server.log").open("a") as f:
            f.write("and a new line\n")
        receive_text(conn, "and a new line\n")


@check("pine-watch")
def _pine_watch(sample: Sample) -> None:
    (sample.tmp / "server.log").write_text("started\n")
    srv = sample.serve()
    with ws(srv, "/ws") as conn:
        receive_text(conn, "started\n")
        with (sample.tmp / "server.log").open("a") as f:
            f.write("then this\n")
        receive_text(conn, "then this\n")
    assert "Traceback" not in srv.log()


@check("viewer-mount")
def _viewer_mount(sample: Sample) -> None:
    (sample.tmp / "server.log").write_text("hello viewer\n")
    srv = sample.serve()
    status, listing = _http_status(srv.url + "/logs/")
    assert status == 200 and "server" in listing
    status, page = _http_status(srv.url + "/logs/server")
    assert status == 200 and "viewer.js" in page
    with ws(srv, "/logs/ws/server") as conn:
        receive_text(conn, "hello viewer\n")


_VIEWER_APP = """
from flask import Flask

from flask_pine_ws import FlaskPineWS

app = Flask(__name__)
pine = FlaskPineWS(app)
app.register_blueprint(pine.viewer({"app": "app.log"}), url_prefix="/logs")
"""


@check("resume-client")
def _resume_client(sample: Sample) -> None:
    """The page's resuming client, run as printed against the viewer's socket, through a
    server restart and a rotation: what it prints is the files' bytes, each once."""
    log = sample.tmp / "app.log"
    log.write_text("first\n")
    _write(_VIEWER_APP, sample.tmp, "viewerapp")
    srv = sample.server("viewerapp:app", extra=["--chdir", str(sample.tmp)])
    script = sample.block.code + "\n\nimport sys\n\nfollow(sys.argv[1])\n"
    _write(script, sample.tmp, "follower")
    out = sample.tmp / "follower.out"
    printed = lambda: out.read_text(encoding="utf-8")  # noqa: E731
    with out.open("wb") as sink:
        client = subprocess.Popen(
            [sys.executable, str(sample.tmp / "follower.py"), f"{srv.ws_url}/logs/ws/app"],
            cwd=sample.tmp, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        def shows(text: str) -> Callable[[], bool]:
            return lambda: client.poll() is None and printed().endswith(text)

        wait_until(shows("first\n"), timeout=TIMEOUT, message="the first line printed")
        with log.open("a") as f:
            f.write("second\n")
        wait_until(shows("second\n"), timeout=TIMEOUT, message="an appended line printed")
        def append_third() -> None:
            with log.open("a") as f:
                f.write("third, while it was away\n")

        # the client is closed with 1001 and comes back with its offset
        srv.restart(between=append_third)
        wait_until(shows("third, while it was away\n"), timeout=TIMEOUT,
                   message="the line written during the restart printed")
        log.rename(sample.tmp / "app.log.1")
        log.write_text("fourth, in the new file\n")
        wait_until(shows("fourth, in the new file\n"), timeout=TIMEOUT,
                   message="the new file's line printed")
    finally:
        client.kill()
        client.wait(TIMEOUT)
    assert printed() == ("first\nsecond\nthird, while it was away\n"
                         "\n--- renamed ---\n"
                         "fourth, in the new file\n"), printed()


@check("browser-echo")
def _browser_echo(sample: Sample) -> None:
    """The page's browser snippet, in headless Chromium, on a page of the echo server."""
    from playwright.sync_api import ConsoleMessage, sync_playwright

    srv = Sample(sample.previous_block("echo"), sample.tmp, sample.server).serve()
    logged: list[str] = []
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "log":  # not the browser's own notes, such as the page's 404
            logged.append(message.text)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(srv.url + "/echo")  # any page of the same site (a 404 here)
            page.evaluate("() => {\n" + sample.block.code + "}")
            deadline = time.monotonic() + TIMEOUT
            while "hello" not in logged:
                assert time.monotonic() < deadline, (logged, errors)
                page.wait_for_timeout(50)
        finally:
            browser.close()
    assert not errors and logged == ["hello"], (logged, errors)


_ECHO_APP = """
from flask import Flask

from flask_pine_ws import FlaskPineWS

app = Flask(__name__)
pine = FlaskPineWS(app)


@pine.new("/echo")
def echo(conn, ctx):
    conn.send("ready")
    while True:
        conn.send(conn.receive())
"""


@check("gunicorn-conf")
def _gunicorn_conf(sample: Sample) -> None:
    """With the page's config (--preload), SIGTERM closes a socket with 1001 at once."""
    conf = sample.tmp / "gunicorn.conf.py"
    conf.write_text(sample.block.code, encoding="utf-8")
    _write(_ECHO_APP, sample.tmp, "echoapp")
    # the command line's -b, -w, --threads and --graceful-timeout (the test harness's)
    # override the file's
    srv = sample.server("echoapp:app",
                        extra=["--chdir", str(sample.tmp), "-c", str(conf), *LONG_GRACE])
    with ws(srv, "/echo") as conn:
        assert conn.recv(timeout=TIMEOUT) == "ready"
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert close_code(conn) == 1001
        # well before gunicorn's graceful timeout (LONG_GRACE): not waited out
        assert time.monotonic() - started < AT_ONCE
    srv.proc.wait(AT_ONCE)
    assert "Traceback" not in srv.log()


@check("testing-app")
def _testing_app(sample: Sample) -> None:
    """The testing page's app and its pytest file, run by pytest as a user runs them."""
    _write(sample.block.code, sample.tmp, "myapp")
    _write(sample.next_block("testing-pytest").code, sample.tmp, "test_myapp")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
         "test_myapp.py"],
        cwd=sample.tmp, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b5 passed\b", done.stdout), done.stdout


@check("testing-pytest")
def _testing_pytest(sample: Sample) -> None:
    """Run by the check of the app sample before it (see ``_testing_app``)."""
    assert "from myapp import app, pine" in sample.block.code


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@check("nginx")
def _nginx(sample: Sample) -> None:
    """The page's nginx site, in front of gunicorn: the upgrade and the origin check pass."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is installed by scripts/install-system-deps.sh"
    _write(_ECHO_APP, sample.tmp, "echoapp")
    app = sample.server("echoapp:app", extra=["--chdir", str(sample.tmp)])
    port = _free_port()
    site = sample.block.code
    assert "listen 80;" in site and "server 127.0.0.1:8000;" in site
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{app.port};")
    (sample.tmp / "site.conf").write_text(site)
    for temp in ("body", "proxy"):
        (sample.tmp / temp).mkdir()
    (sample.tmp / "nginx.conf").write_text(textwrap.dedent(f"""\
        worker_processes 1;
        pid {sample.tmp}/nginx.pid;
        error_log {sample.tmp}/error.log;
        events {{ worker_connections 64; }}
        http {{
            access_log off;
            client_body_temp_path {sample.tmp}/body;
            proxy_temp_path {sample.tmp}/proxy;
            include {sample.tmp}/site.conf;
        }}
        """))
    argv = [nginx, "-p", str(sample.tmp), "-c", str(sample.tmp / "nginx.conf")]
    tested = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stderr
    proc = subprocess.Popen([*argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        # a browser page served through nginx: its Origin is nginx's address
        url = f"ws://127.0.0.1:{port}/echo"
        with ws_at(url, origin=f"http://127.0.0.1:{port}") as conn:
            assert conn.recv(timeout=TIMEOUT) == "ready"
            conn.send("through nginx")
            assert conn.recv(timeout=TIMEOUT) == "through nginx"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


def _http_status(url: str, cookie: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, ""


@check("viewer")
def _viewer(sample: Sample) -> None:
    from flask import Flask

    (sample.tmp / "logs").mkdir()
    (sample.tmp / "logs" / "app.log").write_text("hello\n")
    srv = sample.serve(env={"SECRET_KEY": "viewer-secret"})
    signer = Flask(__name__)
    signer.secret_key = "viewer-secret"
    serializer = signer.session_interface.get_signing_serializer(signer)  # type: ignore[attr-defined]
    admin = f"session={serializer.dumps({'role': 'admin'})}"
    guest = f"session={serializer.dumps({'role': 'guest'})}"
    # the guard refuses the page, its script and the handshake alike
    assert _http_status(srv.url + "/logs/app")[0] == 403
    assert _http_status(srv.url + "/logs/app", guest)[0] == 403
    assert _http_status(srv.url + "/logs/_static/viewer.js")[0] == 403
    assert refused_status(srv, "/logs/ws/app") == 403
    status, page = _http_status(srv.url + "/logs/app", admin)
    assert status == 200 and "viewer.js" in page and "My app" in page
    status, listing = _http_status(srv.url + "/logs/", admin)
    assert status == 200 and "worker" in listing
    assert _http_status(srv.url + "/logs/_static/viewer.js", admin)[0] == 200
    assert refused_status(srv, "/logs/ws/passwd", additional_headers={"Cookie": admin}) == 404
    with ws(srv, "/logs/ws/app", additional_headers={"Cookie": admin}) as conn:
        receive_text(conn, "hello\n")  # a plain client: the text
    with ws(srv, "/logs/ws/app", additional_headers={"Cookie": admin},
            subprotocols=["pine.watch.v1"]) as conn:
        opened = json.loads(conn.recv(timeout=TIMEOUT))
        assert opened["event"] == "open" and opened["offset"] == 0
        assert conn.recv(timeout=TIMEOUT) == b"hello\n"
    with ws(srv, f"/logs/ws/app?offset=3&file={opened['file']}",
            additional_headers={"Cookie": admin},
            subprotocols=["pine.watch.v1"]) as conn:
        assert json.loads(conn.recv(timeout=TIMEOUT))["offset"] == 3
        assert conn.recv(timeout=TIMEOUT) == b"lo\n"
    with ws(srv, "/logs/ws/app?offset=-1", additional_headers={"Cookie": admin}) as conn:
        assert close_code(conn) == 1008


# -- channels.md -------------------------------------------------------------


def _recv_json(conn: ClientConnection) -> Any:
    message = conn.recv(timeout=TIMEOUT)
    assert isinstance(message, str), message
    return json.loads(message)


_JOINED = {"system": "someone joined"}


def _recv_skipping_joins(conn: ClientConnection) -> str | bytes:
    """The next message that is not a member's ``someone joined`` notice."""
    while True:
        message = conn.recv(timeout=TIMEOUT)
        if not (isinstance(message, str) and message.startswith("{")
                and json.loads(message) == _JOINED):
            return message


@check("channels-rooms")
def _channels_rooms(sample: Sample) -> None:
    """Members of a room get what any member sends, themselves included; other rooms do not."""
    srv = sample.serve()
    with ws(srv, "/chat/lobby") as ann, ws(srv, "/chat/lobby") as bob, \
            ws(srv, "/chat/attic") as eve:
        assert _recv_json(eve) == _JOINED  # its own, published after it joined
        assert _recv_json(ann) == _JOINED
        # ann may have read its own notice before bob connected: one or two more notices
        ann.send("hi")
        assert _recv_skipping_joins(ann) == "hi"
        assert _recv_skipping_joins(bob) == "hi"
        bob.send(b"\x00\xff")
        assert ann.recv(timeout=TIMEOUT) == b"\x00\xff"  # bytes arrive as a binary message
        assert bob.recv(timeout=TIMEOUT) == b"\x00\xff"
        eve.send("attic only")
        assert eve.recv(timeout=TIMEOUT) == "attic only"
        bob.close()  # a member that left: the others go on
        ann.send("still here")
        assert ann.recv(timeout=TIMEOUT) == "still here"
    assert "Traceback" not in srv.log()


def _redis(sample: Sample) -> RedisServer:
    workdir = sample.tmp / "redis"
    workdir.mkdir()
    return RedisServer(workdir)


_USER_SIDE = """
from flask_pine_ws import Conn, Ctx

from docsample import app, pine


@pine.new("/user/<user_id>")
def notifications(conn: Conn, ctx: Ctx) -> None:
    conn.join(f"user-{ctx.params['user_id']}")
    conn.join("everyone")
    conn.send("joined")
    while True:
        conn.receive()
"""


@check("channels-job")
def _channels_job(sample: Sample) -> None:
    """The job and the CLI command, each in a process of its own, reach a browser's socket
    served by gunicorn, through a real Redis."""
    redis = _redis(sample)
    try:
        env = {"REDIS_URL": redis.url}
        _write(sample.block.code, sample.tmp)
        _write(_USER_SIDE, sample.tmp, "userside")
        srv = sample.server("userside:app", env=env, extra=["--chdir", str(sample.tmp)])
        with ws(srv, "/user/7") as seven, ws(srv, "/user/8") as eight:
            assert seven.recv(timeout=TIMEOUT) == "joined"
            assert eight.recv(timeout=TIMEOUT) == "joined"
            job = _run("from docsample import export_report\n\nexport_report(7)\n",
                       sample.tmp, env)
            assert job.returncode == 0, job.stderr
            assert [_recv_json(seven) for _ in range(4)] == [
                {"event": "progress", "percent": p} for p in (25, 50, 75, 100)]
            announced = subprocess.run(
                [sys.executable, "-m", "flask", "--app", "docsample", "announce"],
                cwd=sample.tmp, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                capture_output=True, text=True, timeout=60)
            assert announced.returncode == 0, announced.stderr
            for conn in (seven, eight):  # user 8 got no progress: the announcement comes first
                assert _recv_json(conn) == {"event": "maintenance at 22:00"}
        assert "Traceback" not in srv.log()
    finally:
        redis.stop()


_PAGE_REDIS = "redis://redis.internal:6379/0"


@check("channels-redis")
def _channels_redis(sample: Sample) -> None:
    """The page's app (its Redis at the test's), with the chat route of the page, under the
    page's gunicorn command (4 workers): every member gets what a job and a member publish."""
    assert _PAGE_REDIS in sample.block.code
    rooms = sample.previous_block("channels-rooms").code
    route = rooms[rooms.index("\n\n@pine.new"):]
    command = _commands(sample.next_block("channels-gunicorn"))
    assert len(command) == 1 and command[0].endswith(" app:app"), command
    redis = _redis(sample)
    try:
        app = (sample.block.code.replace(_PAGE_REDIS, redis.url)
               + "\nfrom flask_pine_ws import Conn, Ctx\n" + route)
        _write(app, sample.tmp, "app")
        port = _free_port()
        with serving_command(f"{command[0]} -b 127.0.0.1:{port}", sample.tmp, port) as proc:
            wait_until(lambda: len(Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                                   .read_text().split()) == 4,
                       timeout=60, message="gunicorn's 4 workers")
            with ExitStack() as stack:
                members = [stack.enter_context(ws_at(f"ws://127.0.0.1:{port}/chat/hall"))
                           for _ in range(8)]
                for member in members:
                    assert _recv_json(member) == _JOINED
                job = _run("from app import app, pine\n\nwith app.app_context():\n"
                           "    pine.publish('hall', 'from a job')\n", sample.tmp)
                assert job.returncode == 0, job.stderr
                for member in members:
                    assert _recv_skipping_joins(member) == "from a job"
                members[0].send("from a member")
                for member in members:
                    assert _recv_skipping_joins(member) == "from a member"
    finally:
        redis.stop()


@check("channels-gunicorn")
def _channels_gunicorn(sample: Sample) -> None:
    """Run by the check of the app before it (see ``_channels_redis``)."""
    assert _commands(sample.block) == [
        "gunicorn -k flask_pine_ws.worker.ThreadWorker --threads 100 -w 4 app:app"]


# -- development.md ----------------------------------------------------------


def _log_line_pattern(printed: str) -> re.Pattern[str]:
    """A printed access-log line with its variable fields (time, user agent, figures) open."""
    fields = [(r"\[[^\]]+\]", r"\[[^\]]+\]", True),
              (r'"Mozilla/5\.0 \.\.\."', r'"[^"]*"', False),
              (r"\d+\.\d{3}s", r"(?P<duration>\d+\.\d{3})s", True),
              (r"in=\d+", r"in=(?P<in>\d+)", True),
              (r"out=\d+", r"out=(?P<out>\d+)", True),
              (r'(?<=" 101 )\d+', r"(?P<b>\d+)", False)]
    line = printed.strip()
    for i, (printed_field, _, required) in enumerate(fields):
        line, count = re.subn(printed_field, f"@{i}@", line, count=1)
        assert count == 1 or not required, printed_field
    pattern = re.escape(line)
    for i, (_, open_field, _) in enumerate(fields):
        pattern = pattern.replace(f"@{i}@", open_field)
    return re.compile(pattern)


def _echo_session(url: str) -> None:
    with ws_at(url) as conn:
        assert conn.recv(timeout=TIMEOUT) == "ready"
        conn.send("hello")
        assert conn.recv(timeout=TIMEOUT) == "hello"


@check("werkzeug-access-line")
def _werkzeug_access_line(sample: Sample) -> None:
    """``flask run --debug`` logs a session once, when it ends, in the page's shape."""
    pattern = _log_line_pattern(sample.block.code)
    _write(_ECHO_APP, sample.tmp, "echoapp")
    port = _free_port()
    with serving_command(f"flask --app echoapp run --debug --no-reload --port {port}",
                         sample.tmp, port):
        _echo_session(f"ws://127.0.0.1:{port}/echo")
        log = sample.tmp / f"command-{port}.log"
        wait_until(lambda: pattern.search(log.read_text()) is not None, timeout=TIMEOUT,
                   message="the session's line")
        text = log.read_text()
    assert text.count("GET /echo") == 1, text
    found = pattern.search(text)
    assert found and int(found["in"]) > 0 and int(found["out"]) > 0, text


@check("gunicorn-access-line")
def _gunicorn_access_line(sample: Sample) -> None:
    """gunicorn's access log, default format: the session's figures follow; %(b)s is out."""
    pattern = _log_line_pattern(sample.block.code)
    _write(_ECHO_APP, sample.tmp, "echoapp")
    srv = sample.server("echoapp:app",
                        extra=["--chdir", str(sample.tmp), "--access-logfile", "-"])
    _echo_session(srv.ws_url + "/echo")
    wait_until(lambda: pattern.search(srv.log()) is not None, timeout=TIMEOUT,
               message="the session's line")
    found = pattern.search(srv.log())
    assert found and found["b"] == found["out"] and int(found["in"]) > 0, srv.log()


@check("stat-reloader")
def _stat_reloader(sample: Sample) -> None:
    """``python app.py`` runs Werkzeug's stat reloader, which reloads an edited module."""
    assert "port=5000" in sample.block.code
    port = _free_port()
    app = _write(sample.block.code.replace("port=5000", f"port={port}"), sample.tmp, "app")
    log = sample.tmp / f"command-{port}.log"
    with serving_command("python app.py", sample.tmp, port):
        # the parent listens before its reloader starts the serving child
        wait_until(lambda: "Restarting with" in log.read_text(), timeout=60,
                   message="the reloader")
        assert "Restarting with stat" in log.read_text(), log.read_text()
        assert _http_status(f"http://127.0.0.1:{port}/")[0] == 404  # served: no route at /
        time.sleep(1.5)  # a modification time the reloader can tell from the first
        app.write_text(app.read_text() + "\n# edited\n")
        wait_until(lambda: log.read_text().count("Restarting with stat") >= 2, timeout=60,
                   message="the reload")
        assert "Detected change in" in log.read_text()
        assert "Inotify" not in log.read_text()


# -- expose.md ---------------------------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as in ``/proc/net/tcp``) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _get(port: int, path: str, headers: dict[str, str] | None = None, *,
         context: Any = None) -> tuple[int, dict[str, str], str]:
    """``(status, headers, body)`` of one GET, no redirect followed."""
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection("127.0.0.1", port, timeout=TIMEOUT, context=context)
        if context is not None else http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read().decode())
    finally:
        conn.close()


def _basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _var_log(sample: Sample) -> Path:
    """The page's ``/var/log``, in the test's directory, with ``app.log`` and ``app/``."""
    var_log = sample.tmp / "var-log"
    (var_log / "app").mkdir(parents=True)
    (var_log / "app.log").write_text("a line of app.log\n")
    return var_log


@check("expose-serve")
def _expose_serve(sample: Sample) -> None:
    """On loopback only, one line per file with its URL, no login."""
    var_log = _var_log(sample)
    (command,) = _commands(sample.block)
    port = _free_port()
    command = command.replace("/var/log/", f"{var_log}/") + f" --port {port}"
    with serving_command(command, sample.tmp, port):
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
        printed = sample.tmp / f"command-{port}.log"
        wait_until(lambda: f"http://127.0.0.1:{port}/app.log" in printed.read_text(),
                   timeout=TIMEOUT, message="the file's URL printed")
        assert _get(port, "/")[0] == 200
        with ws_at(f"ws://127.0.0.1:{port}/ws/app.log") as conn:
            receive_text(conn, "a line of app.log\n")


@check("expose-glob")
def _expose_glob(sample: Sample) -> None:
    """A directory's files that match the glob, and one created later, in the page's list."""
    var_log = _var_log(sample)
    (var_log / "app" / "web.log").write_text("web\n")
    (var_log / "app" / "notes.txt").write_text("not a log\n")
    (command,) = _commands(sample.block)
    port = _free_port()
    command = command.replace("/var/log/", f"{var_log}/") + f" --port {port}"

    def listed() -> list[str]:
        return [f["name"] for f in json.loads(_get(port, "/_files.json")[2])]

    with serving_command(command, sample.tmp, port):
        assert listed() == ["web.log"]
        assert _get(port, "/notes.txt")[0] == 404
        (var_log / "app" / "worker.log").write_text("worker started\n")
        (var_log / "app" / "other.txt").write_text("excluded by the glob\n")
        wait_until(lambda: listed() == ["web.log", "worker.log"], timeout=TIMEOUT,
                   message="the new file listed")
        with ws_at(f"ws://127.0.0.1:{port}/ws/worker.log") as conn:
            receive_text(conn, "worker started\n")


def _htpasswd_lines(sample: Sample) -> tuple[str, str, str]:
    """The login block's commands: the one-user serve, htpasswd, the htpasswd serve."""
    lines = sample.block.code.replace("\\\n", " ").splitlines()
    commands = [" ".join(line.split()) for line in lines if line and not line.startswith("#")]
    assert len(commands) == 3, commands
    return commands[0], commands[1], commands[2]


@check("expose-login")
def _expose_login(sample: Sample) -> None:
    """Each way to a login asks for it (401) and lets the right user in; on 127.0.0.1 here
    (a test listens on loopback only) instead of the page's 0.0.0.0."""
    var_log = _var_log(sample)
    one_user, make_file, from_file = _htpasswd_lines(sample)
    users = sample.tmp / "flask-pine-ws.htpasswd"
    here = {"/var/log/": f"{var_log}/", "/etc/flask-pine-ws.htpasswd": str(users),
            "--host 0.0.0.0": "--host 127.0.0.1"}

    def localised(command: str) -> str:
        for old, new in here.items():
            command = command.replace(old, new)
        return command

    # htpasswd asks for the password twice; without a terminal it reads them from stdin
    made = subprocess.run(["sh", "-c", localised(make_file)], input="hunter2\nhunter2\n",
                          capture_output=True, text=True, timeout=60, start_new_session=True)
    assert made.returncode == 0, made.stderr
    assert users.read_text().startswith("ops:$2y$")  # bcrypt
    for command, password in ((one_user, "a long passphrase"), (from_file, "hunter2")):
        port = _free_port()
        with serving_command(f"{localised(command)} --port {port}", sample.tmp, port):
            status, head, _ = _get(port, "/")
            assert status == 401 and head["www-authenticate"].startswith("Basic")
            assert _get(port, "/", _basic("ops", "wrong"))[0] == 401
            assert _get(port, "/", _basic("ops", password))[0] == 200
            with pytest.raises(InvalidStatus) as refused:
                ws_at(f"ws://127.0.0.1:{port}/ws/app.log")
            assert refused.value.response.status_code == 401
            with ws_at(f"ws://127.0.0.1:{port}/ws/app.log",
                       additional_headers=_basic("ops", password)) as conn:
                receive_text(conn, "a line of app.log\n")


@check("expose-tls")
def _expose_tls(sample: Sample) -> None:
    """TLS with the page's options: https and wss, the login, the allowed host name."""
    import ssl

    var_log = _var_log(sample)
    users = sample.tmp / "users.htpasswd"
    subprocess.run(["htpasswd", "-c", "-b", "-B", str(users), "ops", "pw"], check=True,
                   capture_output=True, timeout=60)
    cert, key = sample.tmp / "cert.pem", sample.tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=logs.example.com",
                    "-addext", "subjectAltName=DNS:logs.example.com",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    (command,) = [" ".join(sample.block.code.replace("\\\n", " ").split())]
    port = _free_port()
    for old, new in (("/var/log/", f"{var_log}/"), ("/etc/flask-pine-ws.htpasswd", str(users)),
                     ("/etc/ssl/logs.example.com.pem", str(cert)),
                     ("/etc/ssl/logs.example.com.key", str(key)),
                     ("--host 0.0.0.0", "--host 127.0.0.1"), ("--port 8443", f"--port {port}")):
        assert command.count(old) == 1, old
        command = command.replace(old, new)
    context = ssl.create_default_context(cafile=str(cert))
    by_address = ssl.create_default_context(cafile=str(cert))
    by_address.check_hostname = False  # http.client reaches 127.0.0.1; the name goes in Host
    host = {"Host": f"logs.example.com:{port}"}
    login = _basic("ops", "pw")
    with serving_command(command, sample.tmp, port):
        # reached at 127.0.0.1, by the name the certificate and --allow-host give
        assert _get(port, "/", host, context=by_address)[0] == 401
        assert _get(port, "/", {**host, **login}, context=by_address)[0] == 200
        assert _get(port, "/", {"Host": f"evil.example:{port}", **login},
                    context=by_address)[0] == 400
        url = f"wss://logs.example.com:{port}/ws/app.log"
        with _ws_via(port, url, ssl=context, additional_headers=login,
                     origin=f"https://logs.example.com:{port}") as conn:
            receive_text(conn, "a line of app.log\n")
        with pytest.raises(InvalidStatus) as refused:  # http://host is not https://host
            _ws_via(port, url, ssl=context, additional_headers=login,
                    origin=f"http://logs.example.com:{port}")
        assert refused.value.response.status_code == 403


def _ws_via(port: int, url: str, **kwargs: Any) -> ClientConnection:
    """A client of ``url`` (its name in Host, and for TLS) connected to 127.0.0.1:``port``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        return ws_at(url, sock=sock, **kwargs)
    except BaseException:
        sock.close()
        raise


@check("expose-trust-header")
def _expose_trust_header(sample: Sample) -> None:
    """Under /logs/, with the header trusted and nothing without it; /logs redirects."""
    var_log = _var_log(sample)
    (var_log / "app" / "web.log").write_text("web\n")
    (command,) = _commands(sample.block)
    port = _free_port()
    assert command.count("--port 9001") == 1
    command = command.replace("/var/log/", f"{var_log}/").replace("--port 9001", f"--port {port}")
    user = {"X-Forwarded-User": "ann"}
    with serving_command(command, sample.tmp, port):
        status, head, _ = _get(port, "/logs/")
        assert status == 403 and "www-authenticate" not in head  # no prompt: only the header
        status, _, index = _get(port, "/logs/", user)
        assert status == 200 and "/logs/web.log" in index
        status, head, _ = _get(port, "/logs", user)
        assert status in (301, 308) and head["location"].endswith("/logs/")
        assert _get(port, "/web.log", user)[0] == 404
        with pytest.raises(InvalidStatus) as refused:
            ws_at(f"ws://127.0.0.1:{port}/logs/ws/web.log")
        assert refused.value.response.status_code == 403
        with ws_at(f"ws://127.0.0.1:{port}/logs/ws/web.log", additional_headers=user) as conn:
            receive_text(conn, "web\n")


@check("nginx-forward-auth")
def _nginx_forward_auth(sample: Sample) -> None:
    """The page's site in a real nginx, with a forward-auth service, in front of the page's
    command: only the service's user gets through, and a client's own header does not.
    (``tests/test_cli_expose.py`` drives the same site with a browser.)"""
    from test_cli_expose import auth_service, basic, forward_auth_site

    from nginx import nginx_in_front

    var_log = _var_log(sample)
    (var_log / "app" / "web.log").write_text("via the proxy\n")
    (command,) = _commands(sample.previous_block("expose-trust-header"))
    upstream = _free_port()
    command = command.replace("/var/log/", f"{var_log}/").replace("--port 9001",
                                                                   f"--port {upstream}")
    with auth_service() as auth_port, serving_command(command, sample.tmp, upstream), \
            nginx_in_front(upstream, sample.tmp / "nginx", site_for=lambda port:
                           forward_auth_site(port, upstream, auth_port)) as proxy:
        status, head, body = _get(proxy.port, "/logs/web.log", {"X-Forwarded-User": "forged"})
        assert status == 401 and head["www-authenticate"].startswith("Basic")
        assert "via the proxy" not in body
        assert _get(proxy.port, "/logs/", basic("ann", "pw"))[0] == 200
        with pytest.raises(InvalidStatus) as refused:
            ws_at(proxy.ws_url + "/logs/ws/web.log", additional_headers={
                "X-Forwarded-User": "forged"})
        assert refused.value.response.status_code == 401
        with ws_at(proxy.ws_url + "/logs/ws/web.log", additional_headers=basic("ann", "pw"),
                   origin=proxy.url) as conn:
            receive_text(conn, "via the proxy\n")
            with (var_log / "app" / "web.log").open("a") as f:
                f.write("more\n")
            receive_text(conn, "more\n")


@check("expose-in-app")
def _expose_in_app(sample: Sample) -> None:
    """The Login and TRUSTED_HOSTS of the page's app, under gunicorn
    (``tests/test_cli_expose.py`` runs this very block; its test is reused)."""
    import test_cli_expose

    text = (DOCS / "expose.md").read_text(encoding="utf-8")
    section = text[text.index("## In your own app"):]
    assert sample.block.code.strip() in section  # the block that test reads
    test_cli_expose.test_login_and_trusted_hosts_in_an_app_as_the_page_shows(
        sample.tmp, sample.server)


# -- flask_sock.md -----------------------------------------------------------


@check("flask-sock-beside")
def _flask_sock_beside(sample: Sample) -> None:
    """flask-sock's routes and the moved one, in one app under gunicorn; watch_file over
    flask-sock's ws follows the file and returns when the client leaves."""
    log = sample.tmp / "app.log"
    log.write_text("one\n")
    srv = sample.serve(env={"APP_LOG": str(log)})
    for path in ("/old/echo", "/echo"):
        with ws(srv, path) as conn:
            conn.send("hello " + path)
            assert conn.recv(timeout=TIMEOUT) == "hello " + path
            conn.send(b"\x00\xff")
            assert conn.recv(timeout=TIMEOUT) == b"\x00\xff"
    assert refused_status(srv, "/echo", origin="https://evil.example") == 403
    with ws(srv, "/old/echo", origin="https://evil.example") as conn:  # no origin check there
        conn.send("any origin")
        assert conn.recv(timeout=TIMEOUT) == "any origin"
    with ws(srv, "/old/logs") as conn:
        receive_text(conn, "one\n")
        with log.open("a") as f:
            f.write("two\n")
        receive_text(conn, "two\n")
    assert "Traceback" not in srv.log()


# -- quickstart.md -----------------------------------------------------------


@check("client-shell")
def _client_shell(sample: Sample) -> None:
    """The page's two commands, in a directory whose ``.venv`` is this interpreter's
    environment (websockets already there: the install changes nothing), against the echo
    sample served by gunicorn: the client prints the echo. (``tests/test_quickstart_shell.py``
    runs them in a fresh environment.)"""
    commands = _commands(sample.block)
    assert commands == [".venv/bin/pip install websockets", ".venv/bin/python client.py"]
    srv = Sample(sample.previous_block("echo"), sample.tmp, sample.server).serve()
    client = sample.next_block("client").code
    _write(client.replace(DOC_ADDRESS, f"127.0.0.1:{srv.port}"), sample.tmp, "client")
    (sample.tmp / ".venv").symlink_to(sys.prefix)
    done = subprocess.run(["sh", "-ec", "\n".join(commands)], cwd=sample.tmp,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "PIP_NO_INDEX": "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Requirement already satisfied: websockets" in done.stdout
    assert done.stdout.endswith("hello\n"), done.stdout


# -- the tests ---------------------------------------------------------------


def test_the_pages_have_samples() -> None:
    """The extraction itself works: a broken parser must not pass every page."""
    pages = {b.page for b in PYTHON}
    assert {"quickstart.md", "routes.md", "conn.md", "config.md"} <= pages
    assert all(b.code.strip() for b in PYTHON)


def test_every_tag_has_a_check_and_every_check_a_sample() -> None:
    tags = {b.tag for b in BLOCKS if b.tag}
    assert tags - set(CHECKS) == set(), "a sample is tagged with no check for it"
    assert set(CHECKS) - tags == set(), "a check has no sample left"


def test_every_block_runs_or_says_why_not() -> None:
    unmarked = [b.id for b in BLOCKS if b.tag is None and b.not_run is None]
    assert unmarked == [], "blocks with neither <!-- test: NAME --> nor <!-- not run: REASON -->"
    assert [b.id for b in BLOCKS if b.not_run == ""] == [], "a not-run marker needs a reason"
    # the samples a reader copies first all run
    assert all(b.tag for b in PYTHON), [b.id for b in PYTHON if not b.tag]


def test_the_parser_finds_what_a_page_holds() -> None:
    """Fences at any indentation, markers, and a block left unmarked are all found."""
    page = textwrap.dedent("""\
        <!-- test: echo -->
        ```python
        x = 1
        ```

        - in a list:

          <!-- not run: a reason -->
          ~~~~sh
          ls
          ~~~~

          ```python
          y = 2
          ```
        """)
    found = list(_blocks_of(page, "p.md"))
    assert [(b.line, b.lang, b.tag, b.not_run, b.code) for b in found] == [
        (2, "python", "echo", None, "x = 1\n"),
        (9, "sh", None, "a reason", "ls\n"),
        (13, "python", None, None, "y = 2\n")]


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.tag], ids=lambda b: f"{b.tag}@{b.id}")
def test_sample_does_what_the_page_says(block: Block, tmp_path: Path,
                                        server: ServerFactory) -> None:
    assert block.tag is not None
    CHECKS[block.tag](Sample(block, tmp_path, server))


def test_api_reference_covers_every_public_name() -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\.\. auto\w+:: flask_pine_ws\.(\w+)\s*$", text, re.M))
    assert set(flask_pine_ws.__all__) - documented == set()
    for name in flask_pine_ws.__all__:
        assert (getattr(flask_pine_ws, name).__doc__ or "").strip(), f"{name} has no docstring"


def test_extension_docstring_lists_every_setting() -> None:
    """``FlaskPineWS``'s docstring has its own table of keys: it must not drift either."""
    doc = flask_pine_ws.FlaskPineWS.__doc__ or ""
    listed = re.findall(r"^\s*``(PINE_WS_\w+)``\s", doc, re.M)
    assert listed == list(DEFAULTS)


def _config_table_script() -> Any:
    """scripts/render-config-table.py as a module (its name is not an importable one)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_config_table", ROOT / "scripts" / "render-config-table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_page_table_is_what_settings_render() -> None:
    """docs/config.md holds the table itself (it reads the same on the repository as on the
    site), so a key added, changed or removed in SETTINGS must be rendered into it."""
    script = _config_table_script()
    page = (DOCS / "config.md").read_text(encoding="utf-8")
    assert script.page_with_table(page) == page, (
        f"docs/config.md: the settings table is out of date; run {script.COMMAND}")


def test_settings_table_has_every_key_with_its_meaning() -> None:
    script = _config_table_script()
    rows = script.render().splitlines()[2:]
    assert [re.match(r"^\| `(PINE_WS_\w+)` \|", row).group(1)  # type: ignore[union-attr]
            for row in rows] == list(DEFAULTS)
    assert all(row.split(" | ")[3].strip(" |") for row in rows)
    assert script.show_default(5 * 1024 * 1024) == "`5242880` (5 MiB)"
    # a "*" of a pattern stays a character, not emphasis
    origins = next(row for row in rows if "PINE_WS_ALLOWED_ORIGINS" in row)
    assert '"\\*"' in origins and '"*"' not in origins


def test_route_fields_fall_back_to_their_keys() -> None:
    """The table's "Per route" column is true: an unset field takes its key's value."""
    from flask import Flask

    from flask_pine_ws import Config
    from flask_pine_ws.config import SETTINGS

    script = _config_table_script()
    app = Flask(__name__)
    fields = {s.key: s.field for s in SETTINGS}
    rows = {row.split(" | ")[0].strip("| `"): row.split(" | ")[2]
            for row in script.render().splitlines()[2:]}
    sentinels: dict[str, Any] = {
        "allowed_origins": ["https://x.example"], "subprotocols": ["p"],
        "enable_compression": False, "max_message_size": 7, "ping_interval": 3.0,
        "read_buffer_size": 11}
    for key, field in fields.items():
        assert rows[key] == (f"`Config({field}=...)`" if field else "app-wide only"), key
        if field is not None:
            app.config[key] = sentinels[field]
    resolved = Config().resolve(app)
    for key, field in fields.items():
        if field is not None:
            assert getattr(resolved, field) == sentinels[field], key


def test_cli_page_lists_every_option() -> None:
    from flask_pine_ws.cli import build_parser

    page = (DOCS / "cli.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(--[a-z-]+)` \|", page, re.M))
    parser = build_parser()
    serve = next(a for a in parser._subparsers._group_actions  # type: ignore[union-attr]
                 if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    options = {o for a in serve._actions for o in a.option_strings if o.startswith("--")}
    assert documented == options - {"--help"}
    for action in serve._actions:
        if action.option_strings and action.option_strings[0] in documented:
            row = re.search(rf"^\| `{action.option_strings[0]}` \| `([^`]*)` \|", page, re.M)
            assert row and row.group(1) == str(action.default), action.option_strings[0]


@pytest.mark.integration  # a whole Sphinx run: a third of the fast tier's time budget
def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "html" / "index.html").exists()
    assert "PINE_WS_WATCH_ROOTS" in (tmp_path / "html" / "config.html").read_text()
