"""Behind a real nginx, configured as ``docs/deployment.md`` recommends.

nginx (Debian's package) is started by each test on 127.0.0.1 with the page's
site block (see ``tests/nginx.py``), in front of gunicorn running
``tests/apps/deploy_app.py``. What must hold there:

- streams pass through byte-exact: every byte value, UTF-8, a large backlog
  and appends of every size, partial lines included;
- a quiet socket outlives nginx's ``proxy_read_timeout`` because the server
  pings (and, as a control, is cut without pings: the timeout is real);
- the origin check sees the browser's host behind the proxy, with ``ProxyFix``
  too, and a client cannot talk its way past it with forged forwarding headers.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

import wsraw
from conftest import ServerFactory
from helpers import connect, http_get
from nginx import nginx_in_front, recommended_site
from server import Server

# nginx in front of gunicorn, both child processes
pytestmark = pytest.mark.integration

SUB = ["pine.watch.v1"]


def start(server: ServerFactory, files: dict[str, Path], **env: str) -> Server:
    full = {"PINE_DEPLOY_FILES": json.dumps({k: str(v) for k, v in files.items()}), **env}
    return server("deploy_app:app", env=full)


def test_the_docs_site_is_what_the_tests_run() -> None:
    # The points of the page these tests rely on; if they go, so does the test's premise.
    site = recommended_site()
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;", "proxy_buffering off;",
                 "proxy_read_timeout 60s;", "proxy_set_header X-Forwarded-Host $http_host;"):
        assert line in site, line


def test_streams_pass_through_nginx_byte_exact(server: ServerFactory, tmp_path: Path) -> None:
    rng = random.Random(6)
    log = tmp_path / "app.log"
    backlog = bytes(range(256)) * 64 + "héllo wörld ✓ 😀\n".encode() * 2000
    backlog += rng.randbytes(1_500_000)
    log.write_bytes(backlog)
    srv = start(server, {"app": log}, PINE_WS_CHUNK_BYTES="16384")
    with nginx_in_front(srv.port, tmp_path / "nginx") as proxy:
        received = bytearray()
        with connect(f"{proxy.ws_url}/logs/ws/app?offset=0", subprotocols=SUB,
                     max_size=None) as ws:
            opened = json.loads(ws.recv(timeout=20))
            assert opened["event"] == "open" and opened["offset"] == 0
            expected = bytearray(backlog)
            # appends of every size, partial lines included, while the backlog streams
            with open(log, "ab") as f:
                for size in [1, 2, 3, 7, 100, 4095, 4096, 4097, 65536, 200_000] * 3:
                    piece = rng.randbytes(size)
                    f.write(piece)
                    f.flush()
                    expected += piece
            deadline = time.monotonic() + 60
            while len(received) < len(expected):
                assert time.monotonic() < deadline, f"{len(received)} of {len(expected)} bytes"
                message = ws.recv(timeout=20)
                assert isinstance(message, bytes), message
                received += message
        assert received == expected
        # the plain (text) format through nginx: the content as text, UTF-8 intact
        text = "línea ✓ 😀 " * 5000 + "\n"
        log2 = tmp_path / "text.log"
        log2.write_text(text, encoding="utf-8")
        srv2 = start(server, {"t": log2})
        with nginx_in_front(srv2.port, tmp_path / "nginx2") as proxy2:
            got = ""
            with connect(f"{proxy2.ws_url}/logs/ws/t", max_size=None) as ws:
                while len(got) < len(text):
                    message = ws.recv(timeout=20)
                    assert isinstance(message, str)
                    got += message
            assert got == text
    assert "[crit]" not in proxy.error_log() and "[emerg]" not in proxy.error_log()


def _quiet_for(ws: object, seconds: float) -> None:
    """Receive nothing for ``seconds``: the socket must stay open and silent."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            message = ws.recv(timeout=left)  # type: ignore[attr-defined]
        except TimeoutError:
            return
        raise AssertionError(f"nothing was written, yet got {message!r}")


def test_pings_keep_a_quiet_socket_past_nginx_read_timeout(server: ServerFactory,
                                                           tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    log.write_bytes(b"first\n")
    pinged = start(server, {"q": log}, PINE_WS_PING_INTERVAL="1")
    with nginx_in_front(pinged.port, tmp_path / "nginx", read_timeout="3s") as proxy:
        # ping_interval=None: the client sends no pings of its own, only the server's count
        with connect(f"{proxy.ws_url}/logs/ws/q?offset=0", subprotocols=SUB,
                     ping_interval=None) as ws:
            assert json.loads(ws.recv(timeout=20))["event"] == "open"
            assert ws.recv(timeout=20) == b"first\n"
            _quiet_for(ws, 10)  # more than three read timeouts
            with open(log, "ab") as f:
                f.write(b"after ten quiet seconds\n")
            assert ws.recv(timeout=20) == b"after ten quiet seconds\n"


def test_without_pings_nginx_cuts_a_quiet_socket(server: ServerFactory, tmp_path: Path) -> None:
    # The control: the read timeout above is real, and pings are what beat it.
    log = tmp_path / "quiet.log"
    log.write_bytes(b"first\n")
    silent = start(server, {"q": log}, PINE_WS_PING_INTERVAL="0")
    with nginx_in_front(silent.port, tmp_path / "nginx", read_timeout="3s") as proxy:
        with connect(f"{proxy.ws_url}/logs/ws/q?offset=0", subprotocols=SUB,
                     ping_interval=None) as ws:
            assert json.loads(ws.recv(timeout=20))["event"] == "open"
            assert ws.recv(timeout=20) == b"first\n"
            began = time.monotonic()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=20)
            assert 2 < time.monotonic() - began < 15
        assert "upstream timed out" in proxy.error_log()


def _status(port: int, path: str, host: str, **headers: str) -> int:
    shake = wsraw.handshake(port, path, headers, host=host)
    if shake.status == 101:
        shake.sock.close()
    return shake.status


@pytest.mark.parametrize("proxyfix", [False, True], ids=["host-header", "proxyfix"])
def test_origin_check_sees_the_browsers_host_behind_nginx(server: ServerFactory, tmp_path: Path,
                                                          proxyfix: bool) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"x\n")
    env = {"PINE_DEPLOY_PROXYFIX": "1"} if proxyfix else {}
    srv = start(server, {"app": log}, **env)
    with nginx_in_front(srv.port, tmp_path / "nginx") as proxy:
        path = "/logs/ws/app"
        site = "logs.example.com"
        # a page of the site itself, reached through the proxy
        assert _status(proxy.port, path, site, Origin=f"http://{site}") == 101
        assert _status(proxy.port, path, f"{site}:{proxy.port}",
                       Origin=f"http://{site}:{proxy.port}") == 101
        # another site's page: refused before the upgrade
        assert _status(proxy.port, path, site, Origin="http://evil.example") == 403
        assert _status(proxy.port, path, site, Origin=f"https://{site}.evil.example") == 403
        # forged forwarding headers do not help: nginx sets them from what it saw
        assert _status(proxy.port, path, site, Origin="http://evil.example",
                       **{"X-Forwarded-Host": "evil.example"}) == 403
        # no Origin (not a browser): allowed, as without a proxy
        assert _status(proxy.port, path, site) == 101
    if proxyfix:
        # ProxyFix really reads X-Forwarded-Host: the same request straight to gunicorn
        assert _status(srv.port, path, f"127.0.0.1:{srv.port}", Origin=f"http://{site}",
                       **{"X-Forwarded-Host": site}) == 101
    else:
        assert _status(srv.port, path, f"127.0.0.1:{srv.port}", Origin=f"http://{site}",
                       **{"X-Forwarded-Host": site}) == 403
    log_text = srv.log()
    assert "Traceback" not in log_text, log_text


def test_plain_requests_still_work_through_nginx(server: ServerFactory, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b"x\n")
    srv = start(server, {"app": log})
    with nginx_in_front(srv.port, tmp_path / "nginx") as proxy:
        status, ctype, body = http_get(proxy.url + "/logs/")
        assert status == 200 and ctype.startswith("text/html") and "app" in body
        # a plain GET of the socket URL: the app's clear 400, not a hang
        assert http_get(proxy.url + "/logs/ws/app")[0] == 400
