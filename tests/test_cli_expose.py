"""The command line exposed: login, TLS, a prefix, directories, the Host check, the roots.

Each test runs ``python -m flask_pine_ws serve ...`` as a user runs it (real
gunicorn on a free port of 127.0.0.1), and talks to it as a browser or a
script does: raw HTTP, the ``websockets`` client, real headless Chromium
logging in through its own basic-auth support, and a real nginx in front
doing forward auth (``auth_request``) with the site of ``docs/expose.md``.
TLS uses a certificate made in the test with ``openssl``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from test_cli import Running, run_cli, serving
from test_viewer_browser import CHROMIUM, CHROMIUM_ARGS, LINES_JS
from websockets.exceptions import ConnectionClosed, InvalidStatus

import wsraw
from helpers import connect, wait_until
from nginx import nginx_in_front

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXPOSE_PAGE = ROOT / "docs" / "expose.md"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def port_of(srv: Running) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def request(srv: Running, path: str, headers: dict[str, str] | None = None, *,
            context: ssl.SSLContext | None = None,
            host: str | None = None) -> tuple[int, dict[str, str], str]:
    """``(status, headers, body)`` of one GET, exactly as sent (no redirect followed)."""
    port = port_of(srv)
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=context)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def handshake_status(srv: Running, path: str, headers: dict[str, str] | None = None,
                     host: str | None = None) -> wsraw.Handshake:
    answer = wsraw.handshake(port_of(srv), path, headers, host=host)
    answer.sock.close()
    return answer


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page_with_login(browser: Browser, url: str, user: str | None, password: str | None,
                         *, expect_live: bool = True) -> tuple[object, list[str]]:
    """Open ``url`` in a new context that logs in with the browser's own basic auth."""
    errors: list[str] = []
    options: dict[str, object] = {"ignore_https_errors": True}
    if user is not None:
        options["http_credentials"] = {"username": user, "password": password}
    context = browser.new_context(**options)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    if expect_live:
        wait_until(lambda: page.evaluate("document.body.dataset.state") == "live",
                   timeout=30, message="the page's live state")
    return page, errors


def assert_refused_in_browser(browser: Browser, url: str, secret: str,
                              password: str | None = "bad") -> None:
    """No password or a wrong one: Chromium gives up after the 401, and shows nothing."""
    context = (browser.new_context(http_credentials={"username": "ops", "password": password})
               if password is not None else browser.new_context())
    page = context.new_page()
    try:
        page.goto(url)
    except PlaywrightError as exc:
        assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    else:
        assert secret not in page.content()
    finally:
        context.close()


# -- login ----------------------------------------------------------------------------


def test_without_valid_credentials_everything_gets_401_before_any_upgrade(
        tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("secret line\n")
    with serving(tmp_path, str(log), "--port", "0", "--user", "ops",
                 "--password", "pa:ss wörd") as srv:
        good, wrong = basic("ops", "pa:ss wörd"), basic("ops", "nope")
        # (three failures only: after five, an address is slowed down with 429)
        checks = [(path, {}) for path in ("/", "/app.log", "/_static/viewer.js",
                                          "/_files.json", "/ws/app.log")]
        checks += [("/", wrong), ("/_static/viewer.js", basic("other", "pa:ss wörd"))]
        for path, headers in checks:
            status, head, body = request(srv, path, headers)
            assert status == 401, (path, headers)
            assert head["www-authenticate"].startswith("Basic realm=")
            assert "secret line" not in body
        status, _, page = request(srv, "/", good)
        assert status == 200 and '"/ws/app.log"' in page
        assert request(srv, "/_static/viewer.js", good)[0] == 200

        # the WebSocket handshake: 401, no 101, no accept header, nothing streamed
        for headers in ({}, wrong):
            answer = handshake_status(srv, "/ws/app.log", headers)
            assert answer.status == 401 and "sec-websocket-accept" not in answer.headers
            assert answer.headers["www-authenticate"].startswith("Basic")
            assert b"secret line" not in answer.body + answer.rest
        with pytest.raises(InvalidStatus) as info:
            connect(srv.ws_url + "/ws/app.log")
        assert info.value.response.status_code == 401

        with connect(srv.ws_url + "/ws/app.log", additional_headers=good) as ws:
            assert ws.recv(timeout=15) == "secret line\n"
        # the same handshake replayed without its credentials
        answer = handshake_status(srv, "/ws/app.log", {
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": srv.url})
        assert answer.status == 401
        # a path outside the served set, logged in: 404 before any upgrade
        for path in ("/ws/other.log", "/ws/..%2Fapp.log", "/ws/%2Fetc%2Fpasswd",
                     "/ws/app.log/../../etc/passwd"):
            answer = handshake_status(srv, path, good)
            assert answer.status == 404, path
        assert "Traceback" not in srv.err.read_text()


def test_repeated_failures_are_slowed_down(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    with serving(tmp_path, str(log), "--port", "0", "--user", "ops", "--password", "pw") as srv:
        # four failures: the right password still gets in (and the count starts again)
        statuses = [request(srv, "/", basic("ops", f"guess{i}"))[0] for i in range(4)]
        assert statuses == [401] * 4
        assert request(srv, "/", basic("ops", "pw"))[0] == 200
        # five failures, as the docs say: the address waits, even with the right password
        statuses = [request(srv, "/", basic("ops", f"guess{i}"))[0] for i in range(5)]
        assert statuses == [401] * 5
        status, head, _ = request(srv, "/", basic("ops", "pw"))
        assert status == 429 and int(head["retry-after"]) >= 1
        wait_until(lambda: request(srv, "/", basic("ops", "pw"))[0] == 200, timeout=30,
                   interval=0.5, message="the delay to pass")


def test_trust_header_alone_answers_403_without_a_password_prompt(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("behind the proxy\n")
    with serving(tmp_path, str(log), "--port", "0", "--trust-header", "X-Forwarded-User") as srv:
        # a prompt could never succeed (no users): refused, without WWW-Authenticate
        for headers in ({}, {"X-Forwarded-User": " "}, basic("ops", "pw")):
            for path in ("/", "/app.log", "/_static/viewer.js", "/_files.json"):
                status, head, body = request(srv, path, headers)
                assert status == 403, (path, headers)
                assert "www-authenticate" not in head
                assert "header" in body and "missing" in body and "behind" not in body
            answer = handshake_status(srv, "/ws/app.log", headers)
            assert answer.status == 403 and "www-authenticate" not in answer.headers
            assert "sec-websocket-accept" not in answer.headers
        user = {"X-Forwarded-User": "ann"}
        status, _, page = request(srv, "/", user)
        assert status == 200 and '"/ws/app.log"' in page
        with connect(srv.ws_url + "/ws/app.log", additional_headers=user) as ws:
            assert ws.recv(timeout=15) == "behind the proxy\n"


def htpasswd(*args: str) -> None:
    """Apache's own htpasswd tool (apache2-utils)."""
    tool = shutil.which("htpasswd")
    assert tool, "htpasswd is installed by scripts/install-system-deps.sh"
    subprocess.run([tool, *args], check=True, capture_output=True, timeout=60)


def test_htpasswd_bcrypt_and_sha_users_log_in(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    users = str(tmp_path / "users")
    htpasswd("-c", "-b", "-B", users, "ann", "s3cret")  # bcrypt, $2y$
    htpasswd("-b", "-s", users, "bob", "hunter2")  # {SHA}
    with serving(tmp_path, str(log), "--port", "0", "--htpasswd", "users") as srv:
        assert request(srv, "/", basic("ann", "s3cret"))[0] == 200
        assert request(srv, "/", basic("bob", "hunter2"))[0] == 200
        assert request(srv, "/", basic("ann", "hunter2"))[0] == 401
        with connect(srv.ws_url + "/ws/app.log", additional_headers=basic("ann", "s3cret")) as ws:
            assert ws.recv(timeout=15) == "x\n"
    htpasswd("-c", "-b", "-m", str(tmp_path / "md5"), "ann", "s3cret")  # $apr1$
    refused = run_cli("serve", str(log), "--htpasswd", str(tmp_path / "md5"))
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "htpasswd -B" in refused.stderr


def test_password_from_the_environment(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    os.environ["FLASK_PINE_WS_PASSWORD"] = "from-env"
    try:
        with serving(tmp_path, str(log), "--port", "0", "--user", "ops") as srv:
            assert request(srv, "/", basic("ops", "from-env"))[0] == 200
            assert request(srv, "/", basic("ops", "x"))[0] == 401
    finally:
        del os.environ["FLASK_PINE_WS_PASSWORD"]


def test_browser_logs_in_with_basic_auth_and_follows_the_file(
        tmp_path: Path, browser: Browser) -> None:
    log = tmp_path / "app.log"
    log.write_text("first\n")
    with serving(tmp_path, str(log), "--port", "0", "--user", "ops", "--password", "pw") as srv:
        page, errors = open_page_with_login(browser, srv.url + "/app.log", "ops", "pw")
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))  # type: ignore[attr-defined]
        with log.open("a") as f:
            f.write("second\n")
        wait_until(lambda: page.evaluate(LINES_JS) == ["first", "second"],  # type: ignore[attr-defined]
                   timeout=20, message="the lines")
        # the worker stops (its sockets close with 1001) and gunicorn starts another:
        # the page reconnects, still logged in
        workers = [int(p) for task in Path(f"/proc/{srv.proc.pid}/task").iterdir()
                   for p in (task / "children").read_text().split()]
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGTERM)
        # (evaluate: Playwright's sync API delivers events only while it is called)
        wait_until(lambda: page.evaluate("1") and sockets,  # type: ignore[attr-defined]
                   timeout=40, message="the page's new socket")
        with log.open("a") as f:
            f.write("third\n")
        wait_until(lambda: page.evaluate(LINES_JS) == ["first", "second", "third"],  # type: ignore[attr-defined]
                   timeout=40, message="the lines after a reconnect")
        assert sockets, "the page did not reconnect"  # with the browser's cached login
        assert not errors
        # without credentials the browser gets the 401 and no page
        assert_refused_in_browser(browser, srv.url + "/app.log", "first", password=None)
        assert_refused_in_browser(browser, srv.url + "/app.log", "first")


# -- binding ---------------------------------------------------------------------------


def test_non_loopback_without_a_login_exits_2_with_one_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        result = run_cli("serve", str(log), "--host", host)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "--no-auth" in result.stderr
        assert "without a login" in result.stderr and result.stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--user", "ops"], "--user needs --password"),
    (["--password", "pw"], "--password needs --user"),
    (["--user", "ops", "--password", "pw", "--no-auth"], "--no-auth contradicts"),
    (["--certfile", "app.log"], "TLS needs both --certfile and --keyfile"),
    (["--certfile", "nowhere.pem", "--keyfile", "nowhere.key"], "--certfile: nowhere.pem"),
    (["--htpasswd", "nowhere"], "--htpasswd:"),
])
def test_inconsistent_login_or_tls_options_exit_2_with_one_line(
        tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "app.log").write_text("x\n")
    result = subprocess.run([sys.executable, "-m", "flask_pine_ws", "serve", "app.log", *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_port_in_use_exits_1_at_once_with_one_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = run_cli("serve", str(log), "--port", str(port))
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0]
    # gunicorn's own bind retries for 5 s; this does not retry at all
    assert "Retrying" not in result.stderr and elapsed < 5, elapsed


def test_version_and_one_line_per_file_at_start(tmp_path: Path) -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and re.fullmatch(r"flask-pine-ws \S+\n", result.stdout)
    assert run_cli("serve", "--version").stdout == result.stdout
    (tmp_path / "a.log").write_text("a\n")
    (tmp_path / "b.log").write_text("b\n")
    with serving(tmp_path, "a.log", "b.log", "--port", "0", "--prefix", "/logs") as srv:
        out = srv.out.read_text()
        assert f"{tmp_path / 'a.log'} at {srv.url}/logs/a.log" in out
        assert f"{tmp_path / 'b.log'} at {srv.url}/logs/b.log" in out


# -- TLS -----------------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl, "openssl is installed by scripts/install-system-deps.sh"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def two_certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two directories, each with its own self-signed ``cert.pem`` and ``key.pem``."""
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    make_certificate(first)
    make_certificate(second)
    return first, second


@pytest.mark.parametrize(("cert", "key", "message"), [
    ("first/cert.pem", "second/key.pem",
     "--keyfile: {tmp}/second/key.pem is not the private key of the certificate in "
     "{tmp}/first/cert.pem"),
    ("app.log", "first/key.pem", "--certfile: {tmp}/app.log holds no PEM certificate"),
    ("first/key.pem", "first/key.pem", "--certfile: {tmp}/first/key.pem holds no PEM certificate"),
    ("first/cert.pem", "app.log", "--keyfile: {tmp}/app.log holds no PEM private key"),
    ("first/cert.pem", "first/encrypted.key", "--keyfile: {tmp}/first/encrypted.key is encrypted"),
    ("first/cert.pem", "nowhere.key", "--keyfile: {tmp}/nowhere.key is not a file readable"),
])
def test_a_certificate_and_key_that_cannot_serve_exit_2_with_one_line(
        tmp_path: Path, two_certificates: tuple[Path, Path], cert: str, key: str,
        message: str) -> None:
    first, second = two_certificates
    shutil.copytree(first, tmp_path / "first")
    shutil.copytree(second, tmp_path / "second")
    openssl = shutil.which("openssl")
    assert openssl
    subprocess.run([openssl, "pkey", "-in", str(tmp_path / "first" / "key.pem"), "-aes256",
                    "-passout", "pass:secret", "-out", str(tmp_path / "first" / "encrypted.key")],
                   check=True, capture_output=True, timeout=60)
    (tmp_path / "app.log").write_text("a log line, not a certificate\n")
    result = run_cli("serve", str(tmp_path / "app.log"), "--port", "0",
                     "--certfile", str(tmp_path / cert), "--keyfile", str(tmp_path / key))
    assert result.returncode == 2
    assert result.stderr.startswith(f"flask-pine-ws: {message.format(tmp=tmp_path)}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""  # nothing served, no URL printed


def test_a_matching_certificate_and_key_serve_https(
        tmp_path: Path, two_certificates: tuple[Path, Path]) -> None:
    first, _ = two_certificates
    log = tmp_path / "app.log"
    log.write_text("over tls\n")
    context = ssl.create_default_context(cafile=str(first / "cert.pem"))
    with serving(tmp_path, str(log), "--port", "0", "--certfile", str(first / "cert.pem"),
                 "--keyfile", str(first / "key.pem")) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        status, _, page = request(srv, "/", context=context)
        assert status == 200 and '"/ws/app.log"' in page
        with connect(srv.ws_url + "/ws/app.log", ssl=context) as ws:
            assert ws.recv(timeout=15) == "over tls\n"


def test_tls_serves_https_and_the_page_uses_wss(tmp_path: Path, browser: Browser) -> None:
    cert, key = make_certificate(tmp_path)
    log = tmp_path / "app.log"
    log.write_text("over tls\n")
    context = ssl.create_default_context(cafile=str(cert))
    with serving(tmp_path, str(log), "--port", "0", "--user", "ops", "--password", "pw",
                 "--certfile", str(cert), "--keyfile", str(key)) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        assert request(srv, "/", context=context)[0] == 401
        assert request(srv, "/", basic("ops", "pw"), context=context)[0] == 200
        with connect(srv.ws_url + "/ws/app.log", ssl=context,
                     additional_headers=basic("ops", "pw")) as ws:
            assert srv.ws_url.startswith("wss://")
            assert ws.recv(timeout=15) == "over tls\n"
        # the origin check compares the scheme: http://host is not the origin of https://host
        with pytest.raises(InvalidStatus) as info:
            connect(srv.ws_url + "/ws/app.log", ssl=context, origin=srv.url.replace(  # type: ignore[arg-type]
                "https://", "http://"), additional_headers=basic("ops", "pw"))
        assert info.value.response.status_code == 403
        with connect(srv.ws_url + "/ws/app.log", ssl=context, origin=srv.url,  # type: ignore[arg-type]
                     additional_headers=basic("ops", "pw")) as ws:
            assert ws.recv(timeout=15) == "over tls\n"

        sockets: list[str] = []
        errors: list[str] = []
        in_browser = browser.new_context(ignore_https_errors=True,
                                         http_credentials={"username": "ops", "password": "pw"})
        pg = in_browser.new_page()
        pg.on("websocket", lambda ws: sockets.append(ws.url))
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(srv.url + "/app.log")
        wait_until(lambda: pg.evaluate("document.body.dataset.state") == "live", timeout=30,
                   message="the page's live state")
        wait_until(lambda: pg.evaluate(LINES_JS) == ["over tls"], timeout=30,
                   message="the lines")
        assert sockets and all(u.startswith("wss://127.0.0.1:") for u in sockets), sockets
        assert not errors


# -- prefix and directories ----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/logs", "/logs/"])
def test_prefix_serves_everything_under_it(tmp_path: Path, browser: Browser,
                                           prefix: str) -> None:
    (tmp_path / "a.log").write_text("aaa\n")
    (tmp_path / "b.log").write_text("bbb\n")
    with serving(tmp_path, "a.log", "b.log", "--port", "0", "--prefix", prefix) as srv:
        status, head, _ = request(srv, "/logs")
        assert status == 308 and head["location"].endswith("/logs/")
        status, _, index = request(srv, "/logs/")
        assert status == 200
        settings = json.loads(re.search(r'id="pine-config"[^>]*>(.*?)</script>', index)[1])  # type: ignore[index]
        assert [f["url"] for f in settings["files"]] == ["/logs/a.log", "/logs/b.log"]
        assert 'href="/logs/_static/viewer.css"' in index
        _, _, page_a = request(srv, "/logs/a.log")
        assert json.loads(re.search(r'id="pine-config"[^>]*>(.*?)</script>',  # type: ignore[index]
                                    page_a)[1])["ws"] == "/logs/ws/a.log"
        assert request(srv, "/logs/_static/viewer.js")[0] == 200
        for outside in ("/", "/a.log", "/_static/viewer.js", "/ws/a.log"):
            assert request(srv, outside)[0] == 404, outside
        assert handshake_status(srv, "/ws/a.log").status == 404
        with connect(srv.ws_url + "/logs/ws/b.log") as ws:
            assert ws.recv(timeout=15) == "bbb\n"

        # in the browser: from the index, a link, the socket, all under the prefix
        context = browser.new_context()
        pg = context.new_page()
        sockets: list[str] = []
        pg.on("websocket", lambda ws: sockets.append(ws.url))
        pg.goto(srv.url + prefix)
        pg.click("text=b.log")
        wait_until(lambda: pg.evaluate("document.body.dataset.state") == "live", timeout=30,
                   message="the page's live state")
        assert pg.url.startswith(srv.url + "/logs/b.log")
        wait_until(lambda: pg.evaluate(LINES_JS) == ["bbb"], timeout=30, message="the lines")
        assert sockets and all("/logs/ws/b.log" in u for u in sockets), sockets


def test_the_printed_address_under_a_prefix_is_the_viewer(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("aaa\n")
    (tmp_path / "b.log").write_text("bbb\n")
    with serving(tmp_path, "a.log", "b.log", "--port", "0", "--prefix", "/logs") as srv:
        printed = re.search(r"serving at (\S+)", srv.out.read_text())
        assert printed, srv.out.read_text()
        url = urllib.parse.urlsplit(printed[1])
        assert printed[1] == f"{srv.url}/logs/" and url.path == "/logs/"
        # exactly the printed URL, no redirect followed
        status, head, index = request(srv, url.path)
        assert status == 200 and head["content-type"].startswith("text/html")
        assert 'id="pine-config"' in index and '"/logs/a.log"' in index


def test_directory_serves_its_files_and_new_ones_appear_without_reload(
        tmp_path: Path, browser: Browser) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("app\n")
    (logs / "notes.txt").write_text("not a log\n")
    (logs / "sub").mkdir()
    with serving(tmp_path, str(logs), "--port", "0", "--glob", "*.log") as srv:
        assert json.loads(request(srv, "/_files.json")[2]) == [
            {"name": "app.log", "url": "/app.log"}]
        assert request(srv, "/notes.txt")[0] == 404
        assert handshake_status(srv, "/ws/notes.txt").status == 404

        pg = browser.new_context().new_page()
        pg.goto(srv.url + "/app.log")
        wait_until(lambda: pg.evaluate("document.body.dataset.state") == "live", timeout=30,
                   message="the page's live state")
        wait_until(lambda: pg.evaluate(LINES_JS) == ["app"], timeout=30, message="the lines")
        pg.evaluate("window.sameDocument = true")
        (logs / "worker.log").write_text("worker started\n")
        (logs / "other.txt").write_text("excluded by the glob\n")
        pg.wait_for_selector("#files a:text('worker.log')", timeout=30_000)
        assert pg.locator("#files a").all_inner_texts() == ["app.log", "worker.log"]
        assert pg.evaluate("window.sameDocument === true")  # the same page: no reload
        assert pg.evaluate(LINES_JS) == ["app"]
        pg.click("#files a:text('worker.log')")
        wait_until(lambda: pg.evaluate(LINES_JS) == ["worker started"], timeout=30,
                   message="the new file's lines")


def test_a_trailing_slash_is_a_directory_waited_for(tmp_path: Path) -> None:
    later = tmp_path / "later"
    with serving(tmp_path, "later/", "--port", "0") as srv:
        assert "later/ does not exist yet; its files are listed when it appears" in (
            srv.err.read_text())
        assert json.loads(request(srv, "/_files.json")[2]) == []
        later.mkdir()
        (later / "app.log").write_text("in the new directory\n")
        wait_until(lambda: json.loads(request(srv, "/_files.json")[2]) == [
            {"name": "app.log", "url": "/app.log"}], timeout=15, interval=0.2,
            message="the directory's file in the list")
        with connect(srv.ws_url + "/ws/app.log") as ws:
            assert ws.recv(timeout=15) == "in the new directory\n"
    # a slash after a file's name: refused, not waited for as a directory
    (tmp_path / "app.log").write_text("x\n")
    result = run_cli("serve", str(tmp_path / "app.log") + "/", "--port", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "is not a directory" in result.stderr


# -- roots ---------------------------------------------------------------------------


def test_a_served_file_swapped_for_a_link_outside_is_refused_with_1008(tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    log = served / "app.log"
    log.write_text("inside\n")
    outside = tmp_path / "private.txt"
    outside.write_text("private\n")
    with serving(tmp_path, str(log), "--port", "0") as srv:
        with connect(srv.ws_url + "/ws/app.log") as ws:
            assert ws.recv(timeout=15) == "inside\n"
        for target in (outside, Path("/dev/zero")):
            log.unlink(missing_ok=True)
            log.symlink_to(target)
            with connect(srv.ws_url + "/ws/app.log") as ws:
                with pytest.raises(ConnectionClosed) as info:
                    message = ws.recv(timeout=15)
                    pytest.fail(f"streamed {message[:50]!r} from {target}")
                assert info.value.rcvd is not None and info.value.rcvd.code == 1008
                assert "outside" in info.value.rcvd.reason
        # a watcher already following when the swap happens is refused too
        log.unlink()
        log.write_text("again\n")
        with connect(srv.ws_url + "/ws/app.log") as ws:
            assert ws.recv(timeout=15) == "again\n"
            log.unlink()
            log.symlink_to(outside)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    message = ws.recv(timeout=30)
                    assert "private" not in message
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008


def test_root_option_widens_where_files_may_lead(tmp_path: Path) -> None:
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    served.mkdir()
    elsewhere.mkdir()
    (elsewhere / "real.log").write_text("real\n")
    log = served / "app.log"
    log.write_text("x\n")
    with serving(tmp_path, str(log), "--port", "0", "--root", str(served),
                 "--root", str(elsewhere)) as srv:
        log.unlink()
        log.symlink_to(elsewhere / "real.log")
        with connect(srv.ws_url + "/ws/app.log") as ws:
            assert ws.recv(timeout=15) == "real\n"


# -- the Host check (DNS rebinding) ---------------------------------------------------


def test_dns_rebinding_host_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("local secret\n")
    with serving(tmp_path, str(log), "--port", "0", "--allow-host", "logs.example") as srv:
        port = port_of(srv)
        evil = f"evil.example:{port}"
        # the rebinding page: its own name as Host and as Origin (same-origin in its eyes)
        status, _, body = request(srv, "/", host=evil)
        assert status == 400 and "local secret" not in body and "--allow-host" in body
        answer = handshake_status(srv, "/ws/app.log", {"Origin": f"http://{evil}"}, host=evil)
        assert answer.status == 400 and "sec-websocket-accept" not in answer.headers
        assert request(srv, "/_static/viewer.js", host=evil)[0] == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"logs.example:{port}",
                     f"[::1]:{port}"):
            assert request(srv, "/", host=host)[0] == 200, host
        answer = wsraw.handshake(port, "/ws/app.log", {"Origin": f"http://localhost:{port}"},
                                 host=f"localhost:{port}")
        try:
            assert answer.status == 101
        finally:
            answer.sock.close()
        # the origin check compares the scheme: other schemes are never the origin
        for origin in (f"file://127.0.0.1:{port}", f"javascript://127.0.0.1:{port}",
                       f"https://127.0.0.1:{port}.evil.example", "null"):
            assert handshake_status(srv, "/ws/app.log", {"Origin": origin}).status == 403, origin


# -- behind nginx with forward auth ----------------------------------------------------


def forward_auth_site(port: int, upstream: int, auth_port: int) -> str:
    """The nginx site of docs/expose.md, pointed at the test's servers."""
    text = EXPOSE_PAGE.read_text(encoding="utf-8")
    found = re.search(r"<!-- test: nginx-forward-auth -->\n```nginx\n(.*?)\n```", text, re.S)
    assert found, "docs/expose.md lost its forward-auth site"
    site = found.group(1) + "\n"
    for old, new in (("listen 80;", f"listen 127.0.0.1:{port};"),
                     ("http://127.0.0.1:9001", f"http://127.0.0.1:{upstream}"),
                     ("http://127.0.0.1:9091/verify", f"http://127.0.0.1:{auth_port}/verify")):
        assert site.count(old) == 1, old
        site = site.replace(old, new)
    return site


class _Verify(BaseHTTPRequestHandler):
    """A forward-auth service: 200 and ``X-User`` for ann:pw, else 401 and a challenge."""

    def do_GET(self) -> None:
        if self.path == "/verify" and self.headers.get("Authorization") == basic(
                "ann", "pw")["Authorization"]:
            self.send_response(200)
            self.send_header("X-User", "ann")
        else:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="SSO"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def auth_service() -> Iterator[int]:
    httpd = HTTPServer(("127.0.0.1", 0), _Verify)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        thread.join(10)
        httpd.server_close()


def test_behind_nginx_forward_auth(tmp_path: Path, browser: Browser) -> None:
    log = tmp_path / "app.log"
    log.write_text("via the proxy\n")
    with auth_service() as auth_port, serving(
            tmp_path, str(log), "--port", "0", "--prefix", "/logs",
            "--trust-header", "X-Forwarded-User") as srv:
        # directly, without the header: 403, and no password prompt
        status, head, _ = request(srv, "/logs/")
        assert status == 403 and "www-authenticate" not in head
        with nginx_in_front(port_of(srv), tmp_path / "nginx", site_for=lambda port:
                            forward_auth_site(port, port_of(srv), auth_port)) as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
            try:
                conn.request("GET", "/logs/app.log", headers={"X-Forwarded-User": "forged"})
                resp = conn.getresponse()
                assert resp.status == 401 and resp.getheader("WWW-Authenticate", "").startswith(
                    "Basic")
                assert b"via the proxy" not in resp.read()
            finally:
                conn.close()
            with pytest.raises(InvalidStatus) as info:
                connect(proxy.ws_url + "/logs/ws/app.log")
            assert info.value.response.status_code == 401
            with connect(proxy.ws_url + "/logs/ws/app.log",
                         additional_headers=basic("ann", "pw")) as ws:
                assert ws.recv(timeout=15) == "via the proxy\n"

            page, errors = open_page_with_login(browser, proxy.url + "/logs/", "ann", "pw")
            with log.open("a") as f:
                f.write("more\n")
            wait_until(lambda: page.evaluate(LINES_JS) == ["via the proxy", "more"],  # type: ignore[attr-defined]
                       timeout=30, message="the lines through nginx")
            assert not errors
            assert_refused_in_browser(browser, proxy.url + "/logs/", "via the proxy")
            assert_refused_in_browser(browser, proxy.url + "/logs/", "via the proxy",
                                      password=None)



# -- the same login in an app ----------------------------------------------------------


def test_login_and_trusted_hosts_in_an_app_as_the_page_shows(tmp_path: Path, server) -> None:
    text = EXPOSE_PAGE.read_text(encoding="utf-8")
    section = text[text.index("## In your own app"):]
    found = re.search(r"```python\n(.*?)\n```", section, re.S)
    assert found, "docs/expose.md lost its in-app sample"
    log = tmp_path / "app.log"
    log.write_text("in the app\n")
    code = found.group(1)
    assert code.count('"/var/log/app.log"') == 1
    (tmp_path / "expose_sample.py").write_text(code.replace('"/var/log/app.log"',
                                                            repr(str(log))))
    srv = server("expose_sample:app", extra=["--chdir", str(tmp_path)])
    good = basic("ops", "a long passphrase")
    host = f"localhost:{srv.port}"

    def get(path: str, headers: dict[str, str], host: str = host) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=15)
        try:
            conn.request("GET", path, headers={"Host": host, **headers})
            return conn.getresponse().status
        finally:
            conn.close()

    assert get("/logs/", {}) == 401
    assert get("/logs/_static/viewer.js", basic("ops", "wrong")) == 401
    assert get("/logs/", good) == 200
    assert get("/logs/", good, host="evil.example") == 400  # TRUSTED_HOSTS
    for headers, expected in (({}, 401), (good, 101)):
        answer = wsraw.handshake(srv.port, "/logs/ws/app", headers, host=host)
        answer.sock.close()
        assert answer.status == expected
    answer = wsraw.handshake(srv.port, "/logs/ws/app", {**good, "Origin": "http://evil.example"},
                             host="evil.example")
    answer.sock.close()
    assert answer.status == 400
    with connect(f"ws://{host}/logs/ws/app", additional_headers=good) as ws:
        assert ws.recv(timeout=15) == "in the app\n"
