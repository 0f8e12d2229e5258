"""The docs: every code sample runs as written, and the site builds with warnings as errors.

Samples are the fenced ``python`` blocks of the Markdown pages in ``docs/``
(other people's pages included). Each is written to a module of its own in a
temporary directory and run in a child process, exactly as printed:

- a block with no tag is imported (``python -c "import docsample"``) and must
  exit 0: it defines an app, a hook, a config, and none of it may fail;
- a block preceded by ``<!-- test: NAME -->`` is checked by ``CHECKS[NAME]``
  below, which usually serves the sample under gunicorn (its module is the app
  module, the temporary directory gunicorn's working directory) and talks to it
  with a real WebSocket client, asserting what the page says happens;
- ``<!-- test: client -->`` marks a client sample, run by the check of the
  server sample before it with the page's address replaced by the server's.

A tag without a check, or a check no page uses, fails: a sample cannot drop out
of the tests unnoticed. The nginx sample of the deployment page is checked by
``nginx -t``, and the site itself by ``sphinx-build -W``.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import flask_pine_ws
from flask_pine_ws.config import DEFAULTS

from conftest import ServerFactory
from server import Server

ROOT = Path(__file__).resolve().parent.parent
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

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^\s`]*)")
_TAG = re.compile(r"^<!--\s*test:\s*([\w-]+)\s*-->$")


def _blocks_of(page: Path) -> Iterator[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, lang = opened.groups()
        previous = lines[i - 1].strip() if i else ""
        tag = _TAG.match(previous)
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        yield Block(page.relative_to(DOCS).as_posix(), i + 1, lang.lower(),
                    tag.group(1) if tag else None, "\n".join(lines[i + 1:end]) + "\n")
        i = end + 1


def all_blocks() -> list[Block]:
    pages = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
    return [block for page in pages for block in _blocks_of(page)]


BLOCKS = all_blocks()
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
    client = sample.next_block("client")
    done = _run(client.code.replace(DOC_ADDRESS, f"127.0.0.1:{srv.port}"), sample.tmp)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello\n"


@check("client")
def _client(sample: Sample) -> None:
    """Run by the check of the server sample before it (see ``_echo``)."""
    assert DOC_ADDRESS in sample.block.code, "a client sample talks to the page's address"


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
    with ws(srv, "/ws/app?lines=2") as conn:  # the file does not exist yet: waited for
        time.sleep(0.3)
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
        time.sleep(0.5)
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
    # the command line's -b, -w and --threads (the test harness's) override the file's
    srv = sample.server("echoapp:app", extra=["--chdir", str(sample.tmp), "-c", str(conf)])
    with ws(srv, "/echo") as conn:
        assert conn.recv(timeout=TIMEOUT) == "ready"
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert close_code(conn) == 1001
        # well before gunicorn's graceful timeout (the page's 10 s; the harness's 20 s)
        assert time.monotonic() - started < 8
    srv.proc.wait(TIMEOUT)
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


@pytest.mark.parametrize("block", [b for b in PYTHON if b.tag is None], ids=lambda b: b.id)
def test_sample_runs(block: Block, tmp_path: Path) -> None:
    _write(block.code, tmp_path)
    done = subprocess.run([sys.executable, "-c", "import docsample"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{block.id} failed:\n{done.stderr}"


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


def test_settings_table_has_every_key_with_its_meaning() -> None:
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import pine_ws_settings
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    comments = pine_ws_settings.key_comments()
    assert list(comments) == list(DEFAULTS)
    assert all(comments.values())
    assert pine_ws_settings.show_default(5 * 1024 * 1024) == "5242880 (5 MiB)"
    assert pine_ws_settings.route_field("PINE_WS_PING_INTERVAL") == "ping_interval"
    assert pine_ws_settings.route_field("PINE_WS_BACKLOG_BYTES") is None


def test_route_fields_fall_back_to_their_keys() -> None:
    """The table's "Per route" column is true: an unset field takes its key's value."""
    from flask import Flask

    from flask_pine_ws import Config

    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import pine_ws_settings
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    app = Flask(__name__)
    fields = {key: pine_ws_settings.route_field(key) for key in DEFAULTS}
    sentinels: dict[str, Any] = {
        "allowed_origins": ["https://x.example"], "subprotocols": ["p"],
        "enable_compression": False, "max_message_size": 7, "ping_interval": 3.0,
        "read_buffer_size": 11}
    for key, field in fields.items():
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


def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "html" / "index.html").exists()
    assert "PINE_WS_WATCH_ROOTS" in (tmp_path / "html" / "config.html").read_text()
