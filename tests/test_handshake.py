"""The upgrade's HTTP side in this process: ``refusal`` on real Flask requests.

Each request is built by Flask's ``test_request_context`` (a real ``Request``
from a WSGI environ, as a server makes it); no server runs (the fast tier).
What a client sees of the same refusals over TCP is in ``test_extension.py``
and ``test_origin.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Request, Response, request

from flask_pine_ws import Config
from flask_pine_ws.handshake import refusal

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key: base64 of 16 bytes
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": KEY}


def refused(headers: dict[str, str], *, config: Config | None = None, method: str = "GET",
            base_url: str = "http://logs.example:8080") -> Response | None:
    app = Flask(__name__)
    with app.test_request_context("/ws", method=method, headers=headers, base_url=base_url):
        return refusal(request, (config or Config()).resolve(app))


def status(response: Response | None) -> int | None:
    return None if response is None else response.status_code


def test_a_proper_upgrade_is_accepted() -> None:
    assert refused(UPGRADE) is None
    # header values as browsers and proxies write them
    assert refused({**UPGRADE, "Upgrade": "WebSocket",
                    "Connection": "keep-alive, Upgrade"}) is None
    # a tab, and bytes above 0x7f (obs-text, latin-1 in the environ), are allowed
    assert refused({**UPGRADE, "X-Note": "a\tb \xe9"}) is None


@pytest.mark.parametrize(("change", "code", "says"), [
    ({"Upgrade": ""}, 400, "WebSocket endpoint"),
    ({"Connection": "keep-alive"}, 400, "WebSocket endpoint"),
    ({"Sec-WebSocket-Version": "8"}, 426, "version 13"),
    ({"Sec-WebSocket-Key": ""}, 400, "lacks its Sec-WebSocket-Key"),
    ({"Sec-WebSocket-Key": "not base64 !!"}, 400, "not base64 of 16 bytes"),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400, "not base64 of 16 bytes"),
    ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}, 400, "not base64 of 16 bytes"),
    ({"Sec-WebSocket-Protocol": "a\x7fb"}, 400, "Sec-Websocket-Protocol header holds a control"),
    ({"X-Note": "a\x01b"}, 400, "X-Note header holds a control byte"),
], ids=["no upgrade", "no connection upgrade", "version 8", "no key", "bad key",
        "short key", "unpadded key", "DEL in a header", "control byte in any header"])
def test_broken_handshakes_are_refused_with_a_reason(change: dict[str, str], code: int,
                                                     says: str) -> None:
    response = refused({**UPGRADE, **change})
    assert response is not None and response.status_code == code
    assert response.mimetype == "text/plain" and says in response.get_data(as_text=True)
    if code == 426:
        assert response.headers["Sec-WebSocket-Version"] == "13"


def test_only_get_upgrades() -> None:
    assert status(refused(UPGRADE, method="POST")) == 405


@pytest.mark.parametrize(("origin", "code"), [
    ("http://logs.example:8080", None),
    ("HTTP://LOGS.EXAMPLE:8080", None),
    ("https://logs.example:8080", None),  # the scheme is not compared, the host and port are
    ("http://logs.example", 403),
    ("http://logs.example:8081", 403),
    ("http://evil.example:8080", 403),
    ("http://logs.example.evil:8080", 403),
    ("null", 403),
    ("", 403),
])
def test_origin_must_name_the_requests_own_host(origin: str, code: int | None) -> None:
    response = refused({**UPGRADE, "Origin": origin})
    assert status(response) == code
    if response is not None:
        assert repr(origin) in response.get_data(as_text=True)


def test_default_ports_are_left_out_on_both_sides() -> None:
    for base_url, origin in [("http://logs.example", "http://logs.example:80"),
                             ("http://logs.example:80", "http://logs.example"),
                             ("https://logs.example", "https://logs.example:443")]:
        assert refused({**UPGRADE, "Origin": origin}, base_url=base_url) is None, origin


def test_no_origin_is_a_non_browser_client() -> None:
    assert refused(UPGRADE) is None


def test_allowed_origins_exact_and_patterns() -> None:
    config = Config(allowed_origins=["https://app.example.com", "https://*.partner.example"])
    for origin in ("https://app.example.com", "https://shop.partner.example",
                   "HTTPS://APP.EXAMPLE.COM"):
        assert refused({**UPGRADE, "Origin": origin}, config=config) is None, origin
    for origin in ("http://app.example.com", "https://partner.example.evil"):
        assert status(refused({**UPGRADE, "Origin": origin}, config=config)) == 403, origin
    everyone = Config(allowed_origins=["*"])
    assert refused({**UPGRADE, "Origin": "https://any.example"}, config=everyone) is None


def test_check_origin_callable_decides_and_sees_the_request() -> None:
    seen: list[tuple[str, Any]] = []

    def check(origin: str, req: Request) -> bool:
        seen.append((origin, req.headers.get("X-Tenant")))
        return origin == "https://tenant.example"

    config = Config(check_origin=check)
    headers = {**UPGRADE, "X-Tenant": "t1"}
    assert refused({**headers, "Origin": "https://tenant.example"}, config=config) is None
    assert status(refused({**headers, "Origin": "http://logs.example:8080"},
                          config=config)) == 403  # even the own host: the callable decides
    assert seen == [("https://tenant.example", "t1"), ("http://logs.example:8080", "t1")]


def test_check_origin_false_accepts_every_origin() -> None:
    config = Config(check_origin=False)
    assert refused({**UPGRADE, "Origin": "https://evil.example"}, config=config) is None


def test_a_broken_request_is_refused_before_its_origin_is_looked_at() -> None:
    calls: list[str] = []

    def check(origin: str, req: Request) -> bool:
        calls.append(origin)
        return True

    response = refused({**UPGRADE, "Sec-WebSocket-Version": "8",
                        "Origin": "https://evil.example"}, config=Config(check_origin=check))
    assert status(response) == 426 and calls == []
