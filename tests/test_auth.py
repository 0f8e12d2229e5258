"""The login, the Host check and the served file set, in-process: their logic on real files.

What a client of the command line sees is in tests/test_cli_expose.py; here
are the rules: htpasswd entries as ``htpasswd`` writes them, constant-work
refusals, the failure throttle's delays and its bounded memory, the names a
server answers to, the scheme in the origin check, directory listings.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import bcrypt
import pytest
from flask import Flask

from flask_pine_ws import Config, FlaskPineWS
from flask_pine_ws.auth import HtpasswdError, Login, Secret, Throttle, load_htpasswd
from flask_pine_ws.fileset import FileSet
from flask_pine_ws.handshake import origin_allowed, refusal
from flask_pine_ws.hosts import host_allowed, trusted_names

from helpers import wait_until


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def sha_entry(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


def bcrypt_entry(password: str) -> str:
    # htpasswd -B writes $2y$ (Apache's spelling of the same algorithm).
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return "$2y$" + hashed[4:]


APP = Flask(__name__)


def status_of(login: Login, headers: dict[str, str], addr: str = "192.0.2.1") -> int:
    with APP.test_request_context("/", headers=headers, environ_base={"REMOTE_ADDR": addr}):
        refused = login.check()
        return 200 if refused is None else refused.status_code


def test_htpasswd_bcrypt_and_sha_entries_as_htpasswd_writes_them(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"# users\nann:{bcrypt_entry('s3cret')}\nbob:{sha_entry('hunter2')}\n\n")
    users = load_htpasswd(path)
    assert {u: s.kind for u, s in users.items()} == {"ann": "bcrypt", "bob": "sha"}
    login = Login(users)
    assert status_of(login, basic("ann", "s3cret")) == 200
    assert status_of(login, basic("bob", "hunter2")) == 200
    assert status_of(login, basic("ann", "hunter2")) == 401
    assert status_of(login, basic("bob", "s3cret")) == 401
    assert status_of(login, basic("carl", "s3cret")) == 401
    # bcrypt reads 72 bytes of a password, as htpasswd hashed it
    long = "x" * 100
    path.write_text(f"ann:{bcrypt_entry(long[:72])}\n")
    assert status_of(Login(load_htpasswd(path)), basic("ann", long)) == 200


@pytest.mark.parametrize(("line", "message"), [
    ("ann:$apr1$salt$hash", "only bcrypt"),
    ("ann:plaintext", "only bcrypt"),
    ("ann:{SHA}not-base64!", "base64 of 20 bytes"),
    ("no colon here", "not a 'user:hash' line"),
])
def test_htpasswd_other_entries_are_refused_with_the_line(tmp_path: Path, line: str,
                                                         message: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"ok:{sha_entry('x')}\n{line}\n")
    with pytest.raises(HtpasswdError, match=message) as info:
        load_htpasswd(path)
    assert f"{path}:2" in str(info.value)


def test_refusals_are_401_with_a_basic_challenge() -> None:
    login = Login({"me": Secret.plain("pw")}, realm="Logs")
    app = Flask(__name__)
    for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "Basic !!!"},
                    {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()},
                    basic("me", "PW"), basic("me", "pw ")):
        with app.test_request_context("/", headers=headers):
            refused = login.check()
            assert refused is not None and refused.status_code == 401, headers
            assert refused.headers["WWW-Authenticate"].startswith('Basic realm="Logs"')
    assert status_of(login, basic("me", "pw")) == 200
    # a password may hold a colon, and any UTF-8
    assert status_of(Login({"me": Secret.plain("a:b é")}), basic("me", "a:b é")) == 200


def test_trusted_header_lets_in_only_when_set() -> None:
    login = Login(trust_header="X-Forwarded-User")
    assert status_of(login, {"X-Forwarded-User": "ann"}) == 200
    for headers in ({"X-Forwarded-User": " "}, {}, basic("ann", "x")):  # no users: the header
        with APP.test_request_context("/", headers=headers):
            refused = login.check()
            # no password prompt: no password could let it in
            assert refused is not None and refused.status_code == 403, headers
            assert "WWW-Authenticate" not in refused.headers
    # without trust_header, the header means nothing
    assert status_of(Login({"me": Secret.plain("pw")}), {"X-Forwarded-User": "me"}) == 401
    with pytest.raises(ValueError):
        Login()


def test_repeated_failures_from_one_address_are_slowed_down() -> None:
    throttle = Throttle(free=3, base_delay=30, max_delay=120)
    login = Login({"me": Secret.plain("pw")}, throttle=throttle)
    for _ in range(3):
        assert status_of(login, basic("me", "bad"), "192.0.2.1") == 401
    # the fourth failure starts a delay; meanwhile even the right password waits
    assert status_of(login, basic("me", "bad"), "192.0.2.1") == 401
    assert 29 < throttle.wait("192.0.2.1") <= 30
    app = Flask(__name__)
    with app.test_request_context("/", headers=basic("me", "pw"),
                                  environ_base={"REMOTE_ADDR": "192.0.2.1"}):
        refused = login.check()
        assert refused is not None and refused.status_code == 429
        assert 29 <= int(refused.headers["Retry-After"]) <= 31
    # another address is not affected
    assert status_of(login, basic("me", "pw"), "192.0.2.2") == 200
    # the delay doubles, up to the cap
    throttle.failed("192.0.2.1")
    assert 59 < throttle.wait("192.0.2.1") <= 60
    for _ in range(5):
        throttle.failed("192.0.2.1")
    assert 119 < throttle.wait("192.0.2.1") <= 120
    # a success forgets the address
    throttle.succeeded("192.0.2.1")
    assert throttle.wait("192.0.2.1") == 0


def test_throttle_memory_is_bounded() -> None:
    throttle = Throttle(free=0, base_delay=10, max_entries=100)
    for i in range(5000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
    assert throttle.wait("10.0.19.135") > 0  # the latest are kept
    assert throttle.wait("10.0.0.0") == 0  # the oldest forgotten


def test_host_check_accepts_addresses_loopback_names_and_the_bound_name() -> None:
    names = trusted_names("127.0.0.1")
    for host in ("127.0.0.1:8000", "[::1]:8000", "localhost:8000", "LOCALHOST",
                 "app.localhost:8000", "192.0.2.7", "[2001:db8::1]"):
        assert host_allowed(host, names), host
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", "",
                 "127.0.0.1.evil.example", "evil.example:8000@127.0.0.1"):
        assert not host_allowed(host, names), host
    bound = trusted_names("logs.internal", ["logs.example.com", ".corp.example"])
    assert host_allowed("logs.internal:8000", bound)
    assert host_allowed("logs.example.com", bound)
    assert host_allowed("a.corp.example:443", bound)
    assert not host_allowed("example.com", bound)


def test_origin_scheme_must_match_a_secure_request() -> None:
    app = Flask(__name__)
    config = Config(check_origin=None, allowed_origins=[])
    cases = [
        ("https://site.example", "https", True),
        ("http://site.example", "https", False),  # http is not the origin of https
        ("https://site.example", "http", True),   # a TLS proxy in front without ProxyFix
        ("http://site.example", "http", True),
        ("file://site.example", "http", False),
        ("javascript://site.example", "http", False),
        ("ws://site.example", "http", False),
        ("null", "http", False),
    ]
    for origin, scheme, allowed in cases:
        with app.test_request_context("/", base_url=f"{scheme}://site.example"):
            from flask import request
            assert origin_allowed(origin, request, config) is allowed, (origin, scheme)


def test_handshake_refuses_a_host_outside_trusted_hosts() -> None:
    app = Flask(__name__)
    app.config["TRUSTED_HOSTS"] = ["logs.example.com"]
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    from flask import request
    with app.test_request_context("/ws", headers={**upgrade, "Host": "evil.example"}):
        refused = refusal(request, Config())
        assert refused is not None and refused.status_code == 400
        assert b"TRUSTED_HOSTS" in refused.get_data()
    with app.test_request_context("/ws", headers={**upgrade, "Host": "logs.example.com"}):
        assert refusal(request, Config()) is None


def test_trusted_hosts_hold_for_every_request_of_an_app_with_the_extension() -> None:
    # Flask 3.1 applies TRUSTED_HOSTS itself, 3.0 ignores it and the extension
    # applies it: either way the same answers, set before or after init_app.
    app = Flask(__name__)
    FlaskPineWS(app)
    app.add_url_rule("/", "index", lambda: "hello")
    client = app.test_client()
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 200  # not set
    app.config["TRUSTED_HOSTS"] = ["logs.example.com", ".corp.example"]
    for host, code in (("logs.example.com", 200), ("logs.example.com:8000", 200),
                       ("a.corp.example", 200), ("evil.example", 400),
                       ("logs.example.com.evil.example", 400)):
        assert client.get("/", headers={"Host": host}).status_code == code, host
    assert client.get("/nowhere", headers={"Host": "evil.example"}).status_code == 400


def test_file_set_lists_directories_again_with_stable_names(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("a\n")
    (logs / "notes.txt").write_text("n\n")
    (logs / "sub").mkdir()
    os.mkfifo(logs / "pipe.log")
    (tmp_path / "a.log").write_text("named\n")
    files = FileSet([str(tmp_path / "a.log")], [str(logs)], glob="*.log")
    # regular files only (no FIFO, no directory), the glob applied, named files first
    assert dict(files) == {"a.log": str(tmp_path / "a.log"), "a.log-2": str(logs / "a.log")}
    (logs / "b.log").write_text("b\n")
    files._at -= 10  # as if a second had passed
    assert files["b.log"] == str(logs / "b.log")
    assert "notes.txt" not in files
    assert set(files.roots()) >= {str(tmp_path), str(logs)}
    # a file named through a symlink: where it points at start is meant
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "x.log").write_text("x\n")
    (tmp_path / "link.log").symlink_to(tmp_path / "real" / "x.log")
    assert str(tmp_path / "real") in FileSet([str(tmp_path / "link.log")]).roots()


def test_right_credentials_are_remembered_for_a_while_in_bounded_memory() -> None:
    login = Login({"ann": Secret.plain("pw")}, remember=0.5)
    assert status_of(login, basic("ann", "pw")) == 200
    # remembered: not checked against the stored secret again (a bcrypt check
    # costs up to a second on a busy machine, and a page makes many requests)
    login.users["ann"] = Secret.plain("changed")
    assert status_of(login, basic("ann", "pw")) == 200
    assert all(b"pw" not in key for key in login._verified)  # keyed hashes only
    # wrong credentials are never remembered
    assert status_of(login, basic("ann", "nope")) == 401
    assert len(login._verified) == 1
    wait_until(lambda: status_of(login, basic("ann", "pw")) == 401, timeout=10,
               message="the remembered credentials to expire")
    assert status_of(login, basic("ann", "changed")) == 200

    class Small(Login):
        REMEMBERED = 50

    many = Small({f"u{i}": Secret.plain("pw") for i in range(300)})
    for i in range(300):
        assert status_of(many, basic(f"u{i}", "pw")) == 200
    assert len(many._verified) == 50
    assert Login.REMEMBERED == 1024
    assert status_of(Login({"a": Secret.plain("b")}, remember=0), basic("a", "b")) == 200
