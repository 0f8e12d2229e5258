"""The example app's chat: two browsers' worth of clients in one room, on the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import serving

from helpers import connect, http_get
from server import ROOT

pytestmark = pytest.mark.integration


def test_example_app_chat_on_a_channel(tmp_path: Path) -> None:
    with serving(tmp_path, "--port", "0", "--log", str(tmp_path / "demo.log"),
                 module=[str(ROOT / "example_app.py")]) as srv:
        status, kind, page = http_get(srv.url + "/chat")
        assert status == 200 and "text/html" in kind and "chat/ws/" in page
        with connect(srv.ws_url + "/chat/ws/lobby") as alice:
            assert json.loads(alice.recv(timeout=15)) == {"system": "someone joined"}
            with connect(srv.ws_url + "/chat/ws/lobby") as bob:
                assert json.loads(bob.recv(timeout=15)) == {"system": "someone joined"}
                assert json.loads(alice.recv(timeout=15)) == {"system": "someone joined"}
                bob.send("hello from bob")
                for ws in (alice, bob):
                    assert json.loads(ws.recv(timeout=15)) == {"text": "hello from bob"}
            assert json.loads(alice.recv(timeout=15)) == {"system": "someone left"}
