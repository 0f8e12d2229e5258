"""``Config`` and ``setting`` in this process: what a route's settings resolve to, and the
values refused at construction (no server: the fast tier)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from flask import Flask

from flask_pine_ws import Config, FlaskPineWS
from flask_pine_ws.config import DEFAULTS, ROUTE_KEYS, SETTINGS, setting

#: Each field ``resolve`` fills, with the key it falls back to.
FIELDS = {
    "allowed_origins": "PINE_WS_ALLOWED_ORIGINS",
    "subprotocols": "PINE_WS_SUBPROTOCOLS",
    "enable_compression": "PINE_WS_ENABLE_COMPRESSION",
    "max_message_size": "PINE_WS_MAX_MESSAGE_SIZE",
    "ping_interval": "PINE_WS_PING_INTERVAL",
    "read_buffer_size": "PINE_WS_READ_BUFFER_SIZE",
}
#: The fields that no app-wide key backs: they only make sense for one route.
ROUTE_ONLY = {"check_origin", "error"}
#: A value for each, unlike its default.
OTHER: dict[str, Any] = {
    "allowed_origins": ["https://a.example"], "subprotocols": ["chat.v2"],
    "enable_compression": False, "max_message_size": 7, "ping_interval": 3.5,
    "read_buffer_size": 11,
}


def test_unset_fields_take_the_defaults_on_an_app_without_the_keys() -> None:
    resolved = Config().resolve(Flask(__name__))
    for field, key in FIELDS.items():
        assert getattr(resolved, field) == DEFAULTS[key], field
    assert resolved.check_origin is None and resolved.error is None


def test_unset_fields_take_the_apps_values() -> None:
    app = Flask(__name__)
    for field, key in FIELDS.items():
        app.config[key] = OTHER[field]
    resolved = Config().resolve(app)
    for field in FIELDS:
        assert getattr(resolved, field) == OTHER[field], field


def test_fields_set_on_the_route_win_over_the_app() -> None:
    app = Flask(__name__)
    FlaskPineWS(app)
    app.config["PINE_WS_PING_INTERVAL"] = 99.0
    app.config["PINE_WS_ENABLE_COMPRESSION"] = True
    route = Config(ping_interval=0, enable_compression=False, max_message_size=0,
                   allowed_origins=[], subprotocols=[])
    resolved = route.resolve(app)
    # falsy values are values, not "unset"
    assert resolved.ping_interval == 0 and resolved.enable_compression is False
    assert resolved.max_message_size == 0
    assert resolved.allowed_origins == [] and resolved.subprotocols == []
    assert route.ping_interval == 0 and route.resolve(app) == resolved  # a copy; no change


def test_check_origin_and_error_are_kept_as_given() -> None:
    def check(origin: str, request: object) -> bool:
        return origin.endswith(".example")

    def report(exc: BaseException) -> None:
        pass

    resolved = Config(check_origin=check, error=report).resolve(Flask(__name__))
    assert resolved.check_origin is check and resolved.error is report


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"allowed_origins": "https://a.example"}, TypeError, "allowed_origins must be a list"),
    ({"subprotocols": "chat"}, TypeError, "subprotocols must be a list"),
    ({"max_message_size": -1}, ValueError, "max_message_size must be a non-negative int"),
    ({"max_message_size": 1.5}, ValueError, "max_message_size must be a non-negative int"),
    ({"max_message_size": "1024"}, ValueError, "max_message_size must be a non-negative int"),
    ({"read_buffer_size": -4}, ValueError, "read_buffer_size must be a non-negative int"),
    ({"ping_interval": -0.5}, ValueError, "ping_interval must be >= 0"),
    ({"error": "log it"}, TypeError, "error must be callable"),
])
def test_bad_values_are_refused_when_the_route_is_declared(
        options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Config(**options)


def test_setting_reads_the_current_app_else_the_default() -> None:
    assert setting("PINE_WS_SEND_TIMEOUT") == DEFAULTS["PINE_WS_SEND_TIMEOUT"]
    app = Flask(__name__)
    app.config["PINE_WS_SEND_TIMEOUT"] = 1.25
    with app.app_context():
        assert setting("PINE_WS_SEND_TIMEOUT") == 1.25
        assert setting("PINE_WS_CHUNK_BYTES") == DEFAULTS["PINE_WS_CHUNK_BYTES"]
    with pytest.raises(KeyError, match="PINE_WS_NOPE"):
        setting("PINE_WS_NOPE")


def test_every_key_is_declared_once_with_a_one_line_doc() -> None:
    keys = [s.key for s in SETTINGS]
    assert len(keys) == len(set(keys))
    for s in SETTINGS:
        assert re.fullmatch(r"PINE_WS_[A-Z_]+", s.key), s.key
        assert s.doc.strip() and "\n" not in s.doc and s.doc.endswith("."), s.key
    assert list(DEFAULTS) == keys
    assert all(DEFAULTS[s.key] is s.default for s in SETTINGS)


def test_every_config_field_falls_back_to_one_key_or_is_route_only() -> None:
    names = {f.name for f in dataclasses.fields(Config)}
    backed = [s.field for s in SETTINGS if s.field is not None]
    assert len(backed) == len(set(backed)), "two keys back one field"
    assert set(backed) <= names, "a key names a field Config does not have"
    assert names - set(backed) == ROUTE_ONLY, "a Config field maps to no key"
    assert ROUTE_KEYS == FIELDS


def test_the_extensions_docstring_lists_every_key_with_its_default() -> None:
    doc = FlaskPineWS.__doc__ or ""
    rows = re.findall(r"^\s*``(PINE_WS_\w+)``\s+``(.*)``$", doc, re.M)
    assert rows == [(s.key, repr(s.default)) for s in SETTINGS]
    assert "{settings}" not in doc
