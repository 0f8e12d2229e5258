"""The extension: init_app, app factories, several apps, settings, routes, Ctx, refusals.

Apps are built in the test process to check what ``init_app`` and ``new()``
register; every WebSocket is served by gunicorn (tests/apps/basic.py,
tests/apps/multi.py) and driven by the ``websockets`` client.
"""

from __future__ import annotations

import copy
import json

import pytest
from flask import Blueprint, Flask, url_for
from websockets.exceptions import InvalidStatus

from flask_pine_ws import Config, Conn, Ctx, FlaskPineWS
from flask_pine_ws.config import DEFAULTS

import wsraw
from helpers import connect, http_get, wait_until


def handler(conn: Conn, ctx: Ctx) -> None:
    conn.send("hi")


def ws_rules(app: Flask) -> dict[str, set[str]]:
    """``{rule: methods}`` of the app's WebSocket rules."""
    return {r.rule: set(r.methods or ()) for r in app.url_map.iter_rules() if r.websocket}


# -- init_app, without a server ----------------------------------------------


def test_app_factory_registers_extension_and_every_default() -> None:
    pine = FlaskPineWS()
    app = Flask("factory")
    pine.init_app(app)
    assert app.extensions["pine_ws"] is pine
    for key, default in DEFAULTS.items():
        assert key.startswith("PINE_WS_")
        assert app.config[key] == default, key
    # mutable defaults are copies: one app changing its list changes no other
    app.config["PINE_WS_ALLOWED_ORIGINS"].append("https://x.example")
    assert DEFAULTS["PINE_WS_ALLOWED_ORIGINS"] == []
    other = Flask("other")
    pine.init_app(other)
    assert other.config["PINE_WS_ALLOWED_ORIGINS"] == []


def test_init_app_keeps_values_the_app_set() -> None:
    app = Flask("preset")
    app.config["PINE_WS_MAX_MESSAGE_SIZE"] = 123
    app.config["PINE_WS_ENABLE_COMPRESSION"] = False
    app.config["PINE_WS_SUBPROTOCOLS"] = ["mine"]
    FlaskPineWS(app)
    assert app.config["PINE_WS_MAX_MESSAGE_SIZE"] == 123
    assert app.config["PINE_WS_ENABLE_COMPRESSION"] is False
    assert app.config["PINE_WS_SUBPROTOCOLS"] == ["mine"]
    assert app.config["PINE_WS_PING_INTERVAL"] == DEFAULTS["PINE_WS_PING_INTERVAL"]


def test_second_init_app_is_refused_clearly() -> None:
    app = Flask("twice")
    pine = FlaskPineWS(app)
    before = copy.deepcopy(ws_rules(app))
    with pytest.raises(RuntimeError, match=r"already registered.*init_app once per app"):
        pine.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        FlaskPineWS().init_app(app)  # another extension object on the same app
    assert app.extensions["pine_ws"] is pine
    assert ws_rules(app) == before


def test_routes_before_and_after_init_app_reach_every_app() -> None:
    pine = FlaskPineWS()

    @pine.new("/before")
    def before(conn: Conn, ctx: Ctx) -> None:
        pass

    first, second = Flask("first"), Flask("second")
    pine.init_app(first)
    pine.init_app(second)

    @pine.new("/after")
    def after(conn: Conn, ctx: Ctx) -> None:
        pass

    third = Flask("third")
    pine.init_app(third)
    for app in (first, second, third):
        assert set(ws_rules(app)) == {"/before", "/after"}, app.name
        # the same rule answers plain requests too, with the 400 below
        plain = {r.rule for r in app.url_map.iter_rules() if not r.websocket}
        assert {"/before", "/after"} <= plain


def test_new_returns_the_function_unchanged() -> None:
    pine = FlaskPineWS()
    bp = Blueprint("bpx", __name__)
    assert pine.new("/x")(handler) is handler
    assert pine.new("/y", config=Config(ping_interval=1))(handler) is handler
    assert pine.new("/z", blueprint=bp, endpoint="z")(handler) is handler
    assert handler.__name__ == "handler"


def test_blueprint_routes_need_registration_and_get_its_prefix() -> None:
    pine = FlaskPineWS()
    bp = Blueprint("bpr", __name__, url_prefix="/pre")
    pine.new("/sock", blueprint=bp)(handler)
    app = Flask("withbp")
    pine.init_app(app)
    assert "/pre/sock" not in ws_rules(app)  # not on the apps, only on the blueprint
    app.register_blueprint(bp)
    assert "/pre/sock" in ws_rules(app)
    assert "bpr.handler" in app.view_functions


def test_route_options_pass_through_to_flask() -> None:
    pine = FlaskPineWS()
    app = Flask("opts")
    pine.init_app(app)
    pine.new("/item/<int:num>", endpoint="item_ws", defaults={"flag": "x"},
             strict_slashes=False)(handler)
    rule = next(r for r in app.url_map.iter_rules() if r.websocket and r.endpoint == "item_ws")
    assert rule.defaults == {"flag": "x"}
    assert rule.strict_slashes is False
    with app.test_request_context(base_url="https://site.example"):
        # from a page, url_for gives the socket's full URL, as a browser needs it
        assert url_for("item_ws", num=4) == "wss://site.example/item/4"


def test_config_must_be_a_config() -> None:
    pine = FlaskPineWS()
    with pytest.raises(TypeError, match="Config"):
        pine.new("/x", config={"ping_interval": 1})  # type: ignore[arg-type]


def test_route_on_an_app_without_the_extension_says_so() -> None:
    pine = FlaskPineWS()
    bp = Blueprint("orphan", __name__)
    pine.new("/orphan", blueprint=bp)(handler)
    app = Flask("noext")
    app.register_blueprint(bp)  # the extension was never initialised on app
    app.testing = True
    with pytest.raises(RuntimeError, match=r"forget to call pine\.init_app"):
        app.test_client().get("/orphan")


# -- served by gunicorn ------------------------------------------------------


def test_echo_ctx_params_and_query(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/echo") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\xffbin")
        assert ws.recv(timeout=10) == b"\x00\xffbin"
    with connect(srv.ws_url + "/ctx/5/bob?x=1&x=2&y=z",
                 additional_headers={"X-Test": "header value"}) as ws:
        got = json.loads(ws.recv(timeout=10))
    assert got["params"] == {"num": 5, "name": "bob"}  # 5 an int, as the converter gives it
    assert got["query"] == {"x": ["1", "2"], "y": ["z"]}
    assert got["path"] == "/ctx/5/bob"
    assert got["header"] == "header value"  # ctx.request: the handshake's request
    assert got["remote_addr"] == "127.0.0.1"
    assert got["subprotocol"] is None
    assert got["viewed_bytes"] == [0, 12]


def test_flask_route_options_reach_the_handler(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/typed/3/1.5/a/b") as ws:
        got = json.loads(ws.recv(timeout=10))
    assert got["params"] == {"num": 3, "ratio": 1.5, "rest": "a/b", "flag": "on"}
    assert got["types"] == {"num": "int", "ratio": "float", "rest": "str", "flag": "str"}
    assert got["endpoint"] == "typed_ep"
    # Werkzeug builds a WebSocket rule as a full URL (browsers need one)
    assert got["url"] == f"{srv.ws_url}/typed/7/0.5/x/y"


def test_late_route_and_blueprint_are_served(server) -> None:
    srv = server()
    with connect(srv.ws_url + "/late") as ws:
        assert ws.recv(timeout=10) == "late route"
    with connect(srv.ws_url + "/bp/ws") as ws:
        assert ws.recv(timeout=10) == "from blueprint"
    assert http_get(srv.url + "/bp/plain")[0::2] == (200, "plain")


def test_plain_http_request_gets_a_clear_400(server) -> None:
    srv = server(extra=["--access-logfile", "-"])
    for method in ("GET", "POST"):
        status, ctype, body = http_get(srv.url + "/echo", method=method)
        assert status == 400, (method, body)
        assert ctype.startswith("text/plain")
        assert "WebSocket endpoint" in body and "Upgrade: websocket" in body
    log = wait_until(lambda: '"POST /echo HTTP/1.1" 400' in srv.log() and srv.log())
    assert '"GET /echo HTTP/1.1" 400' in log
    assert "Traceback" not in log and "Error handling request" not in log


def test_handshake_headers_as_browsers_send_them(server) -> None:
    srv = server()
    for headers in ({"Connection": "keep-alive, Upgrade"},  # Firefox
                    {"Upgrade": "WebSocket", "Connection": "upgrade"}):
        answer = wsraw.handshake(srv.port, "/echo", headers)
        answer.sock.close()
        assert answer.status == 101, headers


def test_unsupported_version_gets_426(server) -> None:
    srv = server()
    answer = wsraw.handshake(srv.port, "/echo", {"Sec-WebSocket-Version": "8"})
    assert answer.status == 426
    assert answer.headers["sec-websocket-version"] == "13"
    assert b"version 13" in answer.body


def test_missing_key_gets_400(server) -> None:
    srv = server()
    answer = wsraw.handshake(srv.port, "/echo", {"Sec-WebSocket-Key": ""})
    assert answer.status == 400
    assert b"Sec-WebSocket-Key" in answer.body
    with pytest.raises(InvalidStatus) as info:  # and a real client hears the same on a 404
        connect(srv.ws_url + "/nowhere")
    assert info.value.response.status_code == 404


def test_several_apps_in_one_process_keep_their_own_settings(server) -> None:
    srv = server("multi:app")
    for prefix, proto, size in (("a", "proto.a", 1000), ("b", "proto.b", 2000)):
        with connect(f"{srv.ws_url}/{prefix}/who", subprotocols=["proto.a", "proto.b"]) as ws:
            got = json.loads(ws.recv(timeout=10))
            assert ws.subprotocol == proto
        assert got == {"app": f"app_{prefix}", "subprotocol": proto, "max": size}
        with connect(f"{srv.ws_url}/{prefix}/after") as ws:
            assert ws.recv(timeout=10) == f"after on app_{prefix}"
    with connect(f"{srv.ws_url}/c/who") as ws:
        assert json.loads(ws.recv(timeout=10)) == {"app": "app_c", "extension": "other"}
    with pytest.raises(InvalidStatus) as info:  # /after is not on the other extension's app
        connect(f"{srv.ws_url}/c/after")
    assert info.value.response.status_code == 404


@pytest.mark.parametrize("key", ["not base64 !!", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZQ"])
def test_malformed_key_gets_400(server, key: str) -> None:
    srv = server()
    answer = wsraw.handshake(srv.port, "/echo", {"Sec-WebSocket-Key": key})
    assert answer.status == 400
    assert b"base64 of 16 bytes" in answer.body
