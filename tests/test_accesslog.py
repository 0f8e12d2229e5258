"""The access log: one line per WebSocket session when it ends, under gunicorn and Werkzeug.

Real servers, a real client, and the server's own output read back: the line
has the path, 101, the duration, the bytes each way and the close code, and
nothing else is logged for the session (no 500, no second line).
"""

from __future__ import annotations

import os
import re
import time

import pytest

from conftest import ServerFactory
from helpers import connect, wait_until

pytestmark = pytest.mark.integration


def _session_lines(log: str, path: str) -> list[str]:
    return [line for line in log.splitlines() if f"GET {path} " in line]


def _figures(line: str) -> dict[str, str]:
    found = re.search(r"websocket (?P<duration>[0-9.]+)s in=(?P<bytes_in>\S+) "
                      r"out=(?P<bytes_out>\S+) close=(?P<close>\S+)$", line)
    assert found, line
    return found.groupdict()


def _one_session(url: str, code: int = 1000) -> None:
    payload = os.urandom(1000)  # random: permessage-deflate cannot shrink it
    with connect(url + "/echo") as ws:
        ws.send(payload)
        assert ws.recv(timeout=10) == payload
        time.sleep(0.3)
        ws.close(code)


def test_gunicorn_access_log_has_one_line_per_session(server: ServerFactory) -> None:
    srv = server("basic:app", extra=["--access-logfile", "-"])
    _one_session(srv.ws_url, 4001)
    wait_until(lambda: _session_lines(srv.log(), "/echo"), timeout=15)
    time.sleep(0.3)  # a second line, if any, would be there by now
    lines = _session_lines(srv.log(), "/echo")
    assert len(lines) == 1, srv.log()
    line = lines[0]
    # gunicorn's own format: address, time, request line, status, bytes sent, referer, agent
    gunicorn_format = r'127\.0\.0\.1 - - \[[^]]+\] "GET /echo HTTP/1\.1" 101 \d+ "-" "[^"]*"'
    assert re.match(gunicorn_format, line), line
    figures = _figures(line)
    assert float(figures["duration"]) >= 0.3
    # 1000 bytes each way at least (the message; the request and 101 around it)
    assert int(figures["bytes_in"]) > 1000 and int(figures["bytes_out"]) > 1000, line
    assert figures["close"] == "4001"
    assert "Traceback" not in srv.log()


def test_gunicorn_custom_format_names_the_sessions_figures(server: ServerFactory) -> None:
    fmt = "%(s)s %(U)s %({pine_ws.close_code}e)s %({pine_ws.bytes_in}e)s %(M)s"
    srv = server("basic:app", extra=["--access-logfile", "-", "--access-logformat", fmt])
    _one_session(srv.ws_url)
    wait_until(lambda: re.search(r"^101 /echo 1000 \d+ \d+$", srv.log(), re.M), timeout=15)


def test_gunicorn_without_an_access_log_writes_none(server: ServerFactory) -> None:
    srv = server("basic:app")
    _one_session(srv.ws_url)
    wait_until(lambda: "handler-ended" in _state_text(srv.url), timeout=15)
    assert not _session_lines(srv.log(), "/echo"), srv.log()


def _state_text(url: str) -> str:
    from helpers import http_get

    return http_get(url + "/state")[2]


def test_werkzeug_logs_the_session_once_with_101(server: ServerFactory) -> None:
    srv = server("basic:app", kind="werkzeug")
    _one_session(srv.ws_url)
    wait_until(lambda: _session_lines(srv.log(), "/echo"), timeout=15)
    time.sleep(0.5)
    lines = _session_lines(srv.log(), "/echo")
    assert len(lines) == 1, srv.log()
    assert re.match(r'127\.0\.0\.1 - - \[[^]]+\] "GET /echo HTTP/1\.1" 101 - websocket ',
                    lines[0]), lines[0]
    figures = _figures(lines[0])
    assert int(figures["bytes_in"]) > 1000 and int(figures["bytes_out"]) > 1000
    assert figures["close"] == "1000"
    assert " 500 " not in srv.log() and "Traceback" not in srv.log()
