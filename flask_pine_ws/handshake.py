"""The HTTP side of the upgrade: what is refused before any socket is accepted.

A refused handshake is an ordinary HTTP error response (400, 403, 426), never
an accepted socket closed afterwards, so that browsers, proxies and scripts see
why. The origin check lives here because it must run before the upgrade:
neither simple-websocket nor flask-sock checks the origin at all, which leaves
every route open to cross-site WebSocket hijacking.
"""

from __future__ import annotations

import base64
import re
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from flask import Request, Response, current_app
from werkzeug.sansio.utils import host_is_trusted

from .config import Config

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
#: The request schemes served over TLS: only an https page is their origin.
_SECURE = {"https", "wss"}
#: What RFC 9110 5.5 does not allow in a field value: control bytes other than
#: HTAB (SP, VCHAR and obs-text are allowed). The WSGI environ holds the
#: values decoded as latin-1, so a byte is the code point of the same number.
_INVALID_FIELD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _netloc(scheme: str, host: str) -> str:
    """``host[:port]`` in lower case, the scheme's default port left out."""
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}") and not host.endswith("]"):
        host = host[: -len(f":{default}")]
    return host


def origin_allowed(origin: str, request: Request, config: Config) -> bool:
    """Whether a browser's ``Origin`` may open a socket on this route.

    The default, as gorilla's ``checkSameOrigin`` which Pine adopted: the
    origin's host (and port) must be the request's ``Host``; behind a proxy,
    ``werkzeug.middleware.proxy_fix.ProxyFix`` makes that the forwarded host.
    ``allowed_origins`` adds exact origins or fnmatch patterns.

    The scheme counts too: only an ``http`` or ``https`` page is an origin
    (``file://``, ``javascript://`` and the rest never are), and a request
    that came over TLS accepts only an ``https`` page (``http://host`` is not
    the origin of ``https://host``: a page on plain HTTP can be anyone's). An
    ``https`` page on a request that arrived as plain HTTP is accepted: that is
    a TLS proxy in front without ``ProxyFix``, and the page is the safer one.
    """
    check = config.check_origin
    if check is False:
        return True
    if check is not None and check is not True:
        return bool(check(origin, request))
    for pattern in config.allowed_origins or ():
        if pattern == "*" or fnmatchcase(origin.lower(), pattern.lower()):
            return True
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (a sandboxed page, a file:// page), another scheme, garbage
    if request.scheme in _SECURE and scheme != "https":
        return False
    return _netloc(scheme, parts.netloc) == _netloc(request.scheme, request.host)


def refusal(request: Request, config: Config) -> Response | None:
    """The HTTP response refusing this upgrade request, or ``None`` to accept it."""
    headers = request.headers
    for name, value in headers.items():
        # Checked here because servers differ: gunicorn 27 refuses such a
        # request with 400 itself, gunicorn 23 rejects only NUL, CR and LF and
        # passes the rest to the app, which would then upgrade.
        if _INVALID_FIELD_VALUE.search(value):
            return _text(400, f"The {name} header holds a control byte, "
                              "which HTTP does not allow in a header value.")
    connection = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    if headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in connection:
        return _text(400, "This URL is a WebSocket endpoint: connect with a WebSocket client "
                          "(a GET with 'Upgrade: websocket' and 'Connection: Upgrade').")
    if request.method != "GET":
        return _text(405, "A WebSocket handshake is a GET request.")
    if headers.get("Sec-WebSocket-Version", "").strip() != "13":
        response = _text(426, "Unsupported WebSocket version: this server speaks version 13.")
        response.headers["Sec-WebSocket-Version"] = "13"
        return response
    key = headers.get("Sec-WebSocket-Key", "").strip()
    if not key:
        return _text(400, "The WebSocket handshake lacks its Sec-WebSocket-Key header.")
    if not _valid_key(key):
        # RFC 6455 4.2.1: base64 of 16 random bytes; gorilla refuses others too.
        return _text(400, "The Sec-WebSocket-Key header is not base64 of 16 bytes.")
    trusted = current_app.config.get("TRUSTED_HOSTS")
    if trusted and not host_is_trusted(headers.get("Host", ""), trusted):
        # Flask 3.1 refuses these while routing already; 3.0 does not.
        return _text(400, "The Host header names a host this server does not answer to "
                          "(TRUSTED_HOSTS).")
    origin = headers.get("Origin")
    if origin is not None and not origin_allowed(origin, request, config):
        return _text(403, f"Origin {origin!r} may not open a WebSocket here "
                          "(cross-origin request refused).")
    return None


def _valid_key(key: str) -> bool:
    try:
        return len(key) == 24 and len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def _text(status: int, message: str) -> Response:
    return Response(message + "\n", status=status, mimetype="text/plain")
