"""The origin check: refused before the upgrade, with HTTP 403 and no socket.

Routes of tests/apps/basic.py under gunicorn: ``/echo`` has the default
(same origin), ``/origins`` an ``allowed_origins`` list, ``/customorigin`` a
``check_origin`` callable, ``/anyorigin`` ``check_origin=False``.
"""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

import wsraw
from helpers import connect


def refused_status(url: str, origin: str) -> int:
    """The HTTP status a real client gets when its handshake is refused."""
    with pytest.raises(InvalidStatus) as info:
        connect(url, origin=origin)  # type: ignore[arg-type]
    return info.value.response.status_code


def status(port: int, path: str, origin: str | None, *, host: str | None = None,
           headers: dict[str, str] | None = None) -> int:
    """The status of a raw handshake with exactly this Host and Origin."""
    answer = wsraw.handshake(port, path, {"Origin": origin or "", **(headers or {})}, host=host)
    answer.sock.close()
    if answer.status != 101:
        assert answer.body, "a refusal says why"
    return answer.status


def test_cross_site_origin_gets_403_and_no_socket(server) -> None:
    srv = server()
    assert refused_status(srv.ws_url + "/echo", "http://evil.example") == 403
    answer = wsraw.handshake(srv.port, "/echo", {"Origin": "http://evil.example"})
    assert answer.status == 403
    assert "sec-websocket-accept" not in answer.headers
    assert b"evil.example" in answer.body and b"cross-origin" in answer.body
    # same host name, other port: another origin
    assert status(srv.port, "/echo", "http://127.0.0.1:1") == 403
    assert status(srv.port, "/echo", f"http://localhost:{srv.port}") == 403
    assert status(srv.port, "/echo", "null") == 403  # a sandboxed or file:// page
    assert "Traceback" not in srv.log()


def test_same_origin_and_no_origin_are_accepted(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/echo", origin=f"http://127.0.0.1:{srv.port}") as ws:  # type: ignore[arg-type]
        ws.send("same")
        assert ws.recv(timeout=10) == "same"
    with connect(srv.ws_url + "/echo") as ws:  # websockets sends no Origin by default
        ws.send("none")
        assert ws.recv(timeout=10) == "none"
    # case does not matter in a host name
    assert status(srv.port, "/echo", f"HTTP://127.0.0.1:{srv.port}") == 101


def test_default_ports_are_normalised(server) -> None:
    srv = server()
    for host, origin in (("site.example", "http://site.example:80"),
                         ("site.example:80", "http://site.example"),
                         ("Site.Example:80", "http://site.example:80")):
        assert status(srv.port, "/echo", origin, host=host) == 101, (host, origin)
    assert status(srv.port, "/echo", "http://site.example:8080", host="site.example") == 403
    assert status(srv.port, "/echo", "http://site.example", host="site.example:8080") == 403
    # An https page on a plain-HTTP request is accepted: behind a TLS proxy
    # without ProxyFix the page is https and the request http.
    assert status(srv.port, "/echo", "https://site.example:443", host="site.example") == 101
    assert status(srv.port, "/echo", "https://site.example", host="site.example") == 101


def test_allowed_origins_exact_and_pattern(server) -> None:
    srv = server()
    url = srv.ws_url + "/origins"
    with connect(url, origin="https://ok.example") as ws:  # type: ignore[arg-type]
        assert ws.recv(timeout=10) == "in"
    with connect(url, origin="https://a.trusted.example") as ws:  # type: ignore[arg-type]
        assert ws.recv(timeout=10) == "in"
    assert status(srv.port, "/origins", "https://OK.example") == 101
    assert status(srv.port, "/origins", "https://x.y.trusted.example") == 101
    assert refused_status(url, "https://ok.example.evil") == 403
    assert refused_status(url, "http://ok.example") == 403
    assert refused_status(url, "https://trusted.example") == 403
    assert status(srv.port, "/origins", f"http://127.0.0.1:{srv.port}") == 101  # own host still


def test_check_origin_callable_decides(server) -> None:
    srv = server()
    url = srv.ws_url + "/customorigin"
    with connect(url, origin="http://anything.custom") as ws:  # type: ignore[arg-type]
        assert ws.recv(timeout=10) == "in"
    assert refused_status(url, "http://anything.other") == 403
    # the callable replaces the same-origin rule: even the own host is refused here
    assert refused_status(url, f"http://127.0.0.1:{srv.port}") == 403
    assert status(srv.port, "/customorigin", None) == 101  # no Origin: not a browser


def test_check_origin_false_accepts_every_origin(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/anyorigin", origin="http://evil.example") as ws:  # type: ignore[arg-type]
        assert ws.recv(timeout=10) == "in"
    assert status(srv.port, "/anyorigin", "null") == 101


def test_proxyfix_forwarded_host_is_the_origin_to_match(server) -> None:
    srv = server(env={"PINE_TEST_PROXYFIX": "1"})
    forwarded = {"X-Forwarded-Host": "public.example", "X-Forwarded-Proto": "https",
                 "X-Forwarded-For": "203.0.113.9"}
    assert status(srv.port, "/echo", "https://public.example", headers=forwarded) == 101
    # the origin of the raw Host (the proxy's upstream address) is not the site
    assert status(srv.port, "/echo", f"http://127.0.0.1:{srv.port}", headers=forwarded) == 403
    assert status(srv.port, "/echo", "https://other.example", headers=forwarded) == 403
    # a real client through the same "proxy" headers
    with connect(srv.ws_url + "/echo", origin="https://public.example",  # type: ignore[arg-type]
                 additional_headers=forwarded) as ws:
        ws.send("via proxy")
        assert ws.recv(timeout=10) == "via proxy"


def test_scheme_counts_http_is_not_the_origin_of_https(server) -> None:
    srv = server(env={"PINE_TEST_PROXYFIX": "1"})
    secure = {"X-Forwarded-Host": "public.example", "X-Forwarded-Proto": "https",
              "X-Forwarded-For": "203.0.113.9"}
    assert status(srv.port, "/echo", "https://public.example", headers=secure) == 101
    # a page on plain http (anyone's on the way) may not open the https site's socket
    assert status(srv.port, "/echo", "http://public.example", headers=secure) == 403
    assert status(srv.port, "/echo", "http://public.example:443", headers=secure) == 403
    # other schemes are never an origin, whatever their host
    for origin in ("file://public.example", "javascript://public.example",
                   "wss://public.example", "chrome-extension://public.example"):
        assert status(srv.port, "/echo", origin, headers=secure) == 403, origin
    for origin in ("file://127.0.0.1", "javascript://127.0.0.1"):
        assert status(srv.port, "/echo", origin.replace("127.0.0.1", f"127.0.0.1:{srv.port}")
                      ) == 403, origin
