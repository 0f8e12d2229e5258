"""The names a server answers to: a ``Host`` check against DNS rebinding.

This module owns which ``Host`` headers the command line's server accepts.
DNS rebinding: a page at ``http://evil.example:8000`` in the local user's
browser makes ``evil.example`` resolve to ``127.0.0.1``; its requests then
reach a loopback-only server, same-origin in the browser's eyes (the Origin
is ``http://evil.example:8000`` and so is the Host, so the origin check alone
passes). What gives it away is the Host: a name the server does not answer
to. So the server accepts only:

- an IP address (``127.0.0.1:8000``, ``[::1]:8000``, ``192.0.2.7``): a
  rebinding page always reaches the server under its own *name*;
- ``localhost`` and names under it (``app.localhost``);
- the host it is bound to, when that is a name, and this machine's own names
  (``socket.gethostname()``, its fully qualified name) when it listens on
  every address;
- names given by option (``--allow-host logs.example.com``; a leading dot,
  ``.example.com``, accepts every name under it), as Flask's ``TRUSTED_HOSTS``.

Anything else gets 400 before any route runs, WebSocket handshakes included.
Apps that mount the viewer set Flask's own ``TRUSTED_HOSTS`` instead (the
handshake honours it too: :mod:`flask_pine_ws.handshake`). Flask applies it
from 3.1 on; on 3.0 the extension does (:func:`honour_trusted_hosts`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from flask import Flask, Response, current_app, request
from werkzeug.sansio.utils import host_is_trusted
from werkzeug.wsgi import get_host

#: Addresses that mean "every interface" when bound.
_WILDCARDS = {"0.0.0.0", "::", ""}

#: Whether Flask applies ``TRUSTED_HOSTS`` itself: 3.1 added the setting (and
#: its default, ``None``); 3.0 ignores it.
FLASK_TRUSTS_HOSTS = "TRUSTED_HOSTS" in Flask.default_config


def _hostname(host: str) -> str:
    """The name or address of a ``Host`` value, without port or brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def trusted_names(bound: str, extra: Iterable[str] = ()) -> list[str]:
    """The names (besides IP addresses) a server bound to ``bound`` answers to."""
    names = ["localhost", ".localhost"]
    host = _hostname(bound)
    if host in _WILDCARDS:
        for name in (socket.gethostname(), socket.getfqdn()):
            if name and not is_ip(name):
                names.append(name.lower())
    elif not is_ip(host):
        names.append(host)
    names.extend(n.strip().lower() for n in extra if n.strip())
    return list(dict.fromkeys(names))


def host_allowed(host: str, names: Iterable[str]) -> bool:
    """Whether a request's ``Host`` header is an IP address or one of ``names``."""
    name = _hostname(host)
    if not name:
        return False
    if is_ip(name):
        return True
    return host_is_trusted(host.strip().lower(), list(names))


def guard_hosts(app: Flask, names: Iterable[str]) -> None:
    """Refuse, with 400, every request of ``app`` whose ``Host`` is not allowed."""
    allowed = list(names)

    def check() -> Response | None:
        host = request.environ.get("HTTP_HOST", "")
        if host_allowed(host, allowed):
            return None
        return Response(f"This server does not answer to the host name {host[:100]!r} "
                        "(start it with --allow-host NAME to add one).\n",
                        status=400, mimetype="text/plain")

    # First of all the app's hooks: before the login, before any route.
    app.before_request_funcs.setdefault(None, []).insert(0, check)


def honour_trusted_hosts(app: Flask) -> None:
    """Refuse with 400, as Flask 3.1 does, a request whose ``Host`` ``TRUSTED_HOSTS`` lacks.

    Only where Flask does not do it itself (3.0, which setup.cfg's range
    admits): there the setting the docs tell apps to set would silently do
    nothing, and the viewer would answer to any ``Host`` (DNS rebinding). The
    setting is read per request, so it may be set after the extension.
    """
    if FLASK_TRUSTS_HOSTS:
        return

    def check() -> None:
        trusted = current_app.config.get("TRUSTED_HOSTS")
        if trusted is None:  # Flask 3.1's default: no check
            return
        request.trusted_hosts = trusted  # request.host checks them too from now on
        # werkzeug's own check, the one Flask 3.1 makes while routing: it
        # raises SecurityError, a BadRequest, which Flask answers with 400.
        get_host(request.environ, trusted)

    # First of all the app's hooks, as Flask 3.1 refuses before any of them runs.
    app.before_request_funcs.setdefault(None, []).insert(0, check)
