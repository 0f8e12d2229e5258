"""Login for the viewer: HTTP basic auth, htpasswd files, a forward-auth header.

This module owns who may read the logs. :class:`Login` checks each request,
the page, its assets, the download and the WebSocket handshake alike (a
handshake is an ordinary GET until the view accepts it), and answers 401 with
``WWW-Authenticate: Basic`` before any upgrade (403 and no challenge when only
a proxy's header can let a request in). The command line uses it for
``--user/--password``, ``--htpasswd`` and ``--trust-header``; an app that
mounts the viewer uses the same object on its blueprint::

    from flask_pine_ws.auth import Login, load_htpasswd

    viewer = pine.viewer({"app": "/var/log/app.log"})
    Login(users=load_htpasswd("/etc/pine/htpasswd")).protect(viewer)
    app.register_blueprint(viewer, url_prefix="/logs")

Why basic auth: a browser asks once, then sends the credentials with every
request to the same protection space, WebSocket handshakes included, so
reconnects keep working without a cookie or a login page of our own.

A bcrypt check costs tens to hundreds of milliseconds by design, and a
page makes several requests (the page, its assets, the socket, the file
list every few seconds): credentials that were right are remembered for a
few minutes, keyed by a keyed hash (HMAC with a per-process random key, so
the table holds no password), in a bounded table. Wrong ones are checked in
full every time.

Passwords are compared in constant time (``hmac.compare_digest``, bcrypt's
own ``checkpw``), and an unknown user costs the same work as a known one, so
timing tells nothing. Repeated failures from one address are slowed down
(:class:`Throttle`): after five, that address gets 429 with ``Retry-After``
for a doubling delay, without its passwords being checked at all, and no
thread is held sleeping (an attacker cannot take the server's threads that
way). Its bookkeeping is a bounded LRU table.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from flask import Blueprint, Flask, Response, request

#: What an htpasswd entry holds: bcrypt (``htpasswd -B``), ``{SHA}`` (``-s``),
#: or a password in clear text (``--user/--password``, never from a file).
HashKind = Literal["bcrypt", "sha", "plain"]


class HtpasswdError(ValueError):
    """An htpasswd file cannot be used; the message says which line and why."""


@dataclass(frozen=True)
class Secret:
    """One user's stored password: its kind and its value (a hash, or clear text)."""

    kind: HashKind
    value: bytes

    @classmethod
    def plain(cls, password: str) -> Secret:
        return cls("plain", password.encode("utf-8"))

    def matches(self, password: bytes) -> bool:
        """Whether ``password`` is this one, in time independent of where they differ."""
        if self.kind == "plain":
            return hmac.compare_digest(password, self.value)
        if self.kind == "sha":
            digest = base64.b64encode(hashlib.sha1(password).digest())
            return hmac.compare_digest(digest, self.value)
        import bcrypt  # a runtime dependency; imported where used

        try:
            # bcrypt reads 72 bytes, and htpasswd hashed no more; bcrypt 5
            # refuses longer input instead of ignoring the rest.
            return bool(bcrypt.checkpw(password[:72], self.value))
        except ValueError:
            return False


def load_htpasswd(path: str | os.PathLike[str]) -> dict[str, Secret]:
    """Read an Apache htpasswd file: ``user:hash`` lines, bcrypt or ``{SHA}`` hashes.

    ``htpasswd -B`` writes bcrypt (``$2y$``, the safe choice), ``htpasswd -s``
    SHA-1 (``{SHA}``, unsalted: only for files that already exist). MD5
    (``$apr1$``, htpasswd's old default) and crypt entries are refused with the
    line's number: checking them needs code this project does not carry.

    :raises HtpasswdError: a line is malformed or uses another hash.
    :raises OSError: the file cannot be read.
    """
    users: dict[str, Secret] = {}
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, stored = line.partition(":")
            if not sep or not user or not stored:
                raise HtpasswdError(f"{path}:{number}: not a 'user:hash' line")
            users[user] = _secret(stored, f"{path}:{number}")
    if not users:
        raise HtpasswdError(f"{path}: no users in it")
    return users


def _secret(stored: str, where: str) -> Secret:
    if stored.startswith(("$2y$", "$2b$", "$2a$")):
        # bcrypt's library reads $2b$; Apache's $2y$ is the same algorithm.
        return Secret("bcrypt", ("$2b$" + stored[4:]).encode("ascii", "replace"))
    if stored.startswith("{SHA}"):
        value = stored[5:].encode("ascii", "replace")
        try:
            if len(base64.b64decode(value, validate=True)) == 20:
                return Secret("sha", value)
        except binascii.Error:
            pass
        raise HtpasswdError(f"{where}: a {{SHA}} entry must be base64 of 20 bytes")
    raise HtpasswdError(f"{where}: only bcrypt ($2y$, htpasswd -B) and {{SHA}} (htpasswd -s) "
                        "entries are supported; write the file with htpasswd -B")


class Throttle:
    """Slows down repeated login failures from one address, in bounded memory.

    An address's first ``free`` failures cost nothing; the next one makes it
    wait ``base_delay`` seconds, and each further failure twice as long, up to
    ``max_delay``; meanwhile its attempts are refused without being checked.
    The default, 4, locks an address after its fifth failure, as the command
    line's documentation says ("after five failures ... waits"). A success
    forgets the address. At most ``max_entries`` addresses are remembered
    (the least recently failing are forgotten first), so a flood of addresses
    costs a fixed amount of memory.
    """

    def __init__(self, *, free: int = 4, base_delay: float = 1.0, max_delay: float = 60.0,
                 max_entries: int = 10_000) -> None:
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_entries = max_entries
        self._lock = threading.Lock()
        #: address -> (failures, monotonic time before which it must wait)
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds ``address`` must still wait before it may try again (0: may try now)."""
        with self._lock:
            entry = self._entries.get(address)
        if entry is None:
            return 0.0
        return max(0.0, entry[1] - time.monotonic())

    def failed(self, address: str) -> None:
        with self._lock:
            failures = self._entries.pop(address, (0, 0.0))[0] + 1
            extra = failures - self.free
            delay = 0.0 if extra < 1 else min(self.max_delay, self.base_delay * 2 ** (extra - 1))
            self._entries[address] = (failures, time.monotonic() + delay)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._entries.pop(address, None)

    def __len__(self) -> int:
        return len(self._entries)


class Login:
    """Refuses every request without valid credentials: 401 and ``WWW-Authenticate: Basic``.

    :param users: user name -> :class:`Secret` (:func:`load_htpasswd`, or
        ``{"me": Secret.plain("pw")}``).
    :param trust_header: a header a forward-auth proxy in front sets to the
        logged-in user (``X-Forwarded-User``). A request with it non-empty is
        let in. Use it only when every request comes through that proxy and the
        proxy sets or removes the header itself: anyone reaching the server
        directly could send it. Without ``users``, a request without the header
        gets 403 and no ``WWW-Authenticate`` (no password could let it in).
    :param realm: shown by the browser's login dialog.
    :param throttle: the failure bookkeeping; one is made if not given.
    :param remember: seconds that credentials found right are taken as right
        without checking their hash again (0: check every request).
    """

    #: At most this many verified credentials are remembered.
    REMEMBERED = 1024

    def __init__(self, users: Mapping[str, Secret] | None = None, *,
                 trust_header: str | None = None, realm: str = "Logs",
                 throttle: Throttle | None = None, remember: float = 300.0) -> None:
        if not users and not trust_header:
            raise ValueError("a Login needs users, a trust_header, or both")
        if '"' in realm or "\\" in realm:
            raise ValueError("the realm may not contain '\"' or '\\'")
        self.users = dict(users or {})
        self.trust_header = trust_header
        self.realm = realm
        self.throttle = throttle if throttle is not None else Throttle()
        # Checked (and its answer dropped) when the user is unknown, so that an
        # unknown user costs the same work as a wrong password: a bcrypt check
        # of the file's own cost where the file holds bcrypt hashes.
        self._dummy = next(iter(self.users.values()), Secret.plain(""))
        self.remember = remember
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        #: HMAC of an Authorization token -> monotonic time it is remembered until
        self._verified: OrderedDict[bytes, float] = OrderedDict()

    def protect(self, target: Flask | Blueprint) -> None:
        """Check every request of ``target`` (an app, or a blueprint such as the viewer)."""
        target.before_request(self.check)

    def check(self) -> Response | None:
        """The refusal of the current request, or ``None`` to let it through.

        Usable as a ``before_request`` function, or called from one of your own.
        """
        if self.trust_header and request.headers.get(self.trust_header, "").strip():
            return None
        if not self.users:
            return self._no_header()
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            return self._challenge("This server needs a login.")
        address = request.remote_addr or "?"
        wait = self.throttle.wait(address)
        if wait > 0:
            response = Response("Too many failed logins from this address; try again in "
                                f"{int(wait) + 1} s.\n", status=429, mimetype="text/plain")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        if self._remembered(token.strip()) or self._valid(token.strip()):
            self.throttle.succeeded(address)
            return None
        self.throttle.failed(address)
        return self._challenge("Wrong user name or password.")

    def _remembered(self, token: str) -> bool:
        if self.remember <= 0:
            return False
        digest = hmac.new(self._key, token.encode("utf-8", "replace"), hashlib.sha256).digest()
        now = time.monotonic()
        with self._lock:
            until = self._verified.get(digest)
            if until is not None and until > now:
                return True
            self._verified.pop(digest, None)
        return False

    def _remember(self, token: str) -> None:
        if self.remember <= 0:
            return
        digest = hmac.new(self._key, token.encode("utf-8", "replace"), hashlib.sha256).digest()
        with self._lock:
            self._verified.pop(digest, None)
            self._verified[digest] = time.monotonic() + self.remember
            while len(self._verified) > self.REMEMBERED:
                self._verified.popitem(last=False)

    def _valid(self, token: str) -> bool:
        try:
            decoded = base64.b64decode(token, validate=True)
        except binascii.Error:
            return False
        user, sep, password = decoded.partition(b":")
        if not sep:
            return False
        secret = self.users.get(user.decode("utf-8", "replace"))
        if secret is None:
            self._dummy.matches(password)  # the same work as a wrong password
            return False
        if not secret.matches(password):
            return False
        self._remember(token)
        return True

    def _no_header(self) -> Response:
        """403 without a challenge: only the proxy's header lets in, a password never could.

        A 401 must carry ``WWW-Authenticate``, and ``Basic`` would make a browser
        ask for a password that nothing here checks. The header is not named:
        whoever reaches the port directly need not learn what to forge.
        """
        response = Response("Forbidden: the login header that the proxy in front of this "
                            "server sets is missing; open this page through that proxy.\n",
                            status=403, mimetype="text/plain")
        response.headers["Cache-Control"] = "no-store"
        return response

    def _challenge(self, message: str) -> Response:
        response = Response(message + "\n", status=401, mimetype="text/plain")
        response.headers["WWW-Authenticate"] = f'Basic realm="{self.realm}", charset="UTF-8"'
        response.headers["Cache-Control"] = "no-store"
        return response
