"""flask-sock beside flask-pine-ws: both kinds of route in one app under gunicorn, and
``watch_file(path, ws)`` on flask-sock's ``ws`` (tests/apps/sock_app.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from conftest import ServerFactory
from helpers import connect, http_get, recv_text, wait_until

pytestmark = pytest.mark.integration


def test_sock_and_pine_routes_in_one_app(server: ServerFactory, tmp_path: Path) -> None:
    srv = server("sock_app:app", env={"SOCK_LOG": str(tmp_path / "app.log")})
    for path in ("/sock/echo", "/pine/echo"):
        with connect(srv.ws_url + path) as ws:
            ws.send("hello " + path)
            assert ws.recv(timeout=10) == "hello " + path
            ws.send(b"\x00\xff")
            assert ws.recv(timeout=10) == b"\x00\xff"
    # the pine route refuses a foreign origin with 403; flask-sock's has no origin check
    with pytest.raises(InvalidStatus) as refused:
        connect(srv.ws_url + "/pine/echo", origin="https://evil.example")
    assert refused.value.response.status_code == 403
    assert "Traceback" not in srv.log()


def test_watch_file_follows_a_file_over_flask_socks_ws(server: ServerFactory,
                                                        tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("one\n")
    srv = server("sock_app:app", env={"SOCK_LOG": str(log)})
    with connect(srv.ws_url + "/sock/log") as ws:
        assert recv_text(ws, 4, timeout=20) == "one\n"
        with log.open("a") as f:
            f.write("two\n")
        assert recv_text(ws, 4, timeout=20) == "two\n"
        os.rename(log, tmp_path / "app.log.1")  # rotation: the new file from byte 0
        log.write_text("three\n")
        assert recv_text(ws, 6, timeout=20) == "three\n"
    # the client left: watch_file noticed and the flask-sock handler returned
    wait_until(lambda: json.loads(http_get(srv.url + "/ended")[2])["ended"] == ["sock-log"],
               timeout=10)
    assert "Traceback" not in srv.log()
