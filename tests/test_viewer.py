"""The viewer's server side under gunicorn: names, refusals, resume, auth, packaged assets.

A real gunicorn serves tests/apps/viewer_app.py; a real WebSocket client
(``websockets``) reads what the page would read. The page itself is driven in
Chromium by test_viewer_browser.py.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection

from flask_pine_ws import FlaskPineWS
from flask_pine_ws.viewer import SUBPROTOCOL, BadQuery, make_viewer, resume_options

from conftest import ServerFactory
from helpers import connect, http_get
from server import Server

STATIC = Path(__file__).parent.parent / "flask_pine_ws" / "static"


def start(server: ServerFactory, files: dict[str, Path], **env: str) -> Server:
    return server("viewer_app:app", env={
        "PINE_VIEWER_FILES": json.dumps({k: str(v) for k, v in files.items()}), **env})


def page_config(html: str) -> Any:
    """The settings the page reads (its ``pine-config`` JSON)."""
    match = re.search(r'id="pine-config"[^>]*>(.*?)</script>', html, re.S)
    assert match is not None, html
    return json.loads(match[1])


def framed(srv: Server, name: str, query: str = "", prefix: str = "/logs",
           **options: Any) -> ClientConnection:
    return connect(f"{srv.ws_url}{prefix}/ws/{name}{query}", subprotocols=[SUBPROTOCOL],
                   **options)


def read_until(ws: ClientConnection, done: Callable[[list[Any], bytes], bool],
               timeout: float = 15) -> tuple[list[Any], bytes]:
    """Messages until ``done(events, data)``: JSON events, and the bytes concatenated."""
    events: list[Any] = []
    data = b""
    while not done(events, data):
        message = ws.recv(timeout=timeout)
        if isinstance(message, bytes):
            data += message
        else:
            events.append(json.loads(message))
    return events, data


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            ws.recv(timeout=15)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


# -- the page and its names ----------------------------------------------------------


def test_page_lists_files_and_never_shows_their_paths(server: ServerFactory,
                                                      tmp_path: Path) -> None:
    app_log = tmp_path / "app.log"
    app_log.write_text("one\n")
    srv = start(server, {"app": app_log, "jobs": tmp_path / "jobs.log"})

    status, ctype, body = http_get(srv.url + "/logs/")
    assert status == 200 and ctype.startswith("text/html")
    config = page_config(body)
    assert config["name"] is None  # several files: the index lists them
    assert [f["name"] for f in config["files"]] == ["app", "jobs"]
    assert [f["url"] for f in config["files"]] == ["/logs/app", "/logs/jobs"]
    assert str(tmp_path) not in body

    status, _, body = http_get(srv.url + "/logs/jobs")
    assert status == 200
    config = page_config(body)
    assert config["name"] == "jobs" and config["ws"] == "/logs/ws/jobs"
    assert config["maxLines"] == 5000 and config["lines"] == 1000
    assert "<title>jobs · Logs</title>" in body


def test_one_file_is_shown_at_the_root(server: ServerFactory, tmp_path: Path) -> None:
    srv = start(server, {"only": tmp_path / "only.log"})
    _, _, body = http_get(srv.url + "/logs/")
    config = page_config(body)
    assert config["name"] == "only" and config["ws"] == "/logs/ws/only"


def test_page_has_a_strict_content_security_policy(server: ServerFactory,
                                                   tmp_path: Path) -> None:
    srv = start(server, {"app": tmp_path / "app.log"})
    with urllib.request.urlopen(srv.url + "/logs/app", timeout=10) as resp:
        csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert f"connect-src 'self' ws://127.0.0.1:{srv.port} wss://127.0.0.1:{srv.port};" in csp


def test_unknown_name_is_404_before_any_upgrade(server: ServerFactory, tmp_path: Path) -> None:
    srv = start(server, {"app": tmp_path / "app.log"})
    assert http_get(srv.url + "/logs/nope")[0] == 404
    for name in ("nope", "..%2F..%2Fetc%2Fpasswd", "app.log", "%2Fetc%2Fpasswd"):
        with pytest.raises(InvalidStatus) as info:
            framed(srv, name)
        assert info.value.response.status_code == 404, name


def test_the_path_never_comes_from_the_client(server: ServerFactory, tmp_path: Path) -> None:
    app_log = tmp_path / "app.log"
    app_log.write_text("the app's own log\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not show\n")
    srv = start(server, {"app": app_log})
    with connect(f"{srv.ws_url}/logs/ws/app?path={secret}&name={secret}") as ws:
        assert ws.recv(timeout=15) == "the app's own log\n"
    with pytest.raises(InvalidStatus):
        connect(f"{srv.ws_url}/logs/ws/{secret}")


def test_make_viewer_checks_names_and_numbers() -> None:
    pine = FlaskPineWS()
    for bad in ("", "../etc", "a/b", ".hidden", "sp ace", "x" * 101, "é"):
        with pytest.raises(ValueError, match="file name"):
            make_viewer(pine, {bad: "/tmp/x.log"})
    with pytest.raises(ValueError, match="at least one file"):
        make_viewer(pine, {})
    with pytest.raises(ValueError, match="lines"):
        make_viewer(pine, {"a": "/tmp/a.log"}, lines=-1)
    with pytest.raises(ValueError, match="max_lines"):
        make_viewer(pine, {"a": "/tmp/a.log"}, max_lines=0)


def test_viewer_mounts_where_the_app_says() -> None:
    app = Flask(__name__)
    pine = FlaskPineWS(app)
    app.register_blueprint(pine.viewer({"a": "/tmp/a.log"}), url_prefix="/admin/logs")
    app.register_blueprint(pine.viewer({"b": "/tmp/b.log"}, name="other",
                                       url_prefix="/b"))
    client = app.test_client()
    for path, status in [("/admin/logs/", 200), ("/admin/logs/a", 200),
                         ("/admin/logs/_static/viewer.js", 200), ("/admin/logs/b", 404),
                         ("/b/", 200), ("/b/b", 200), ("/b/_static/viewer.css", 200),
                         ("/b/a", 404), ("/a", 404)]:
        response = client.get(path)
        assert response.status_code == status, path
        response.close()
    # A plain GET of a socket route is refused with 400 (not a WebSocket), not 404.
    assert client.get("/admin/logs/ws/a").status_code == 400
    assert client.get("/b/ws/b").status_code == 400


# -- static assets ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["viewer.js", "viewer.css"])
def test_static_assets_come_from_the_package(server: ServerFactory, tmp_path: Path,
                                             name: str) -> None:
    srv = start(server, {"app": tmp_path / "app.log"})
    with urllib.request.urlopen(f"{srv.url}/logs/_static/{name}", timeout=10) as resp:
        assert resp.status == 200
        assert resp.read() == (STATIC / name).read_bytes()
    _, _, page = http_get(srv.url + "/logs/app")
    assert f'"/logs/_static/{name}"' in page
    assert "{{" not in page and "cdn" not in page.lower() and "https://" not in page


# -- the socket -------------------------------------------------------------------------


def test_plain_client_gets_the_text(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(1, 6)))
    srv = start(server, {"app": log}, PINE_VIEWER_LINES="2")
    with connect(f"{srv.ws_url}/logs/ws/app") as ws:
        assert ws.subprotocol is None
        assert ws.recv(timeout=15) == "line 4\nline 5\n"


def test_framed_client_gets_open_then_exact_bytes(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    content = "first\nsecond é\n".encode()
    log.write_bytes(content)
    srv = start(server, {"app": log})
    with framed(srv, "app") as ws:
        assert ws.subprotocol == SUBPROTOCOL
        events, data = read_until(ws, lambda e, d: len(d) >= len(content))
        assert events[0]["event"] == "open"
        assert events[0]["offset"] == 0 and events[0]["size"] == len(content)
        assert re.fullmatch(r"\d+:\d+", events[0]["file"])
        assert data == content
        with log.open("ab") as f:
            f.write(b"third\n")
        _, more = read_until(ws, lambda e, d: len(d) >= 6)
        assert more == b"third\n"


def test_lines_query_asks_for_the_last_lines(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(1, 101)))
    srv = start(server, {"app": log})
    with framed(srv, "app", "?lines=3") as ws:
        events, data = read_until(ws, lambda e, d: d.endswith(b"line 100\n"))
        assert data == b"line 98\nline 99\nline 100\n"
        assert events[0]["offset"] == log.stat().st_size - len(data)


def test_resume_from_offset_and_file_loses_and_repeats_nothing(server: ServerFactory,
                                                               tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"alpha\nbeta\n")
    srv = start(server, {"app": log}, PINE_VIEWER_LINES="none")
    with framed(srv, "app") as ws:
        events, data = read_until(ws, lambda e, d: d == b"alpha\nbeta\n")
    file_id = events[0]["file"]
    offset = events[0]["offset"] + len(data)
    with log.open("ab") as f:
        f.write(b"gamma\n")  # written while no one is connected
    with framed(srv, "app", f"?offset={offset}&file={file_id}") as ws:
        events, data = read_until(ws, lambda e, d: len(d) >= 6)
        assert events[0] == {"event": "open", "file": file_id, "offset": offset,
                             "size": log.stat().st_size}
        assert data == b"gamma\n"


def test_resume_with_another_file_restarts_it_with_a_notice(server: ServerFactory,
                                                            tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"new file\n")
    srv = start(server, {"app": log})
    with framed(srv, "app", "?offset=5&file=1:1") as ws:
        events, data = read_until(ws, lambda e, d: d == b"new file\n")
    assert data == b"new file\n"
    assert [e["event"] for e in events] == ["open", "rotated"]
    assert events[1]["how"] == "replaced" and events[1]["offset"] == 0


@pytest.mark.parametrize(("query", "reason"), [
    ("?offset=-1", "offset"),
    ("?offset=abc", "offset"),
    ("?offset=1e3", "offset"),
    ("?offset=", "offset"),
    ("?file=12:34", "without offset"),
    ("?offset=0&file=../../etc", "file"),
    ("?lines=abc", "lines"),
    ("?lines=5001", "lines"),
])
def test_bad_query_closes_1008_with_a_reason(server: ServerFactory, tmp_path: Path,
                                             query: str, reason: str) -> None:
    log = tmp_path / "app.log"
    log.write_text("x\n")
    srv = start(server, {"app": log})
    with framed(srv, "app", query) as ws:
        code, text = closed_with(ws)
    assert code == 1008
    assert reason in text


def test_resume_options_maps_the_query() -> None:
    opts = {"default_lines": 10, "max_lines": 100}
    assert resume_options({}, **opts) == {"lines": 10}
    assert resume_options({}, default_lines=None, max_lines=100) == {}
    assert resume_options({"lines": "0"}, **opts) == {"lines": 0}
    assert resume_options({"offset": "7"}, **opts) == {"offset": 7, "file_id": None}
    assert resume_options({"offset": "7", "file": "3:4", "lines": "5"}, **opts) == {
        "offset": 7, "file_id": "3:4"}
    with pytest.raises(BadQuery):
        resume_options({"lines": "101"}, **opts)


# -- auth -------------------------------------------------------------------------------


def test_before_request_guards_page_assets_and_socket(server: ServerFactory,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("private\n")
    srv = start(server, {"app": log})
    for path in ("/secure/", "/secure/app", "/secure/_static/viewer.js"):
        status, _, body = http_get(srv.url + path)
        assert status == 401 and body == "login required\n", path
    with pytest.raises(InvalidStatus) as info:
        framed(srv, "app", prefix="/secure")
    assert info.value.response.status_code == 401

    request = urllib.request.Request(srv.url + "/secure/app", headers={"X-Token": "secret"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    with framed(srv, "app", prefix="/secure",
                additional_headers={"X-Token": "secret"}) as ws:
        events, _ = read_until(ws, lambda e, d: d == b"private\n")
    assert events[0]["event"] == "open"
