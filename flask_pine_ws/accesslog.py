"""The access log of WebSocket sessions: one line per session, when it ends.

A WebSocket request never gets the server's own access line: under gunicorn
the request ends by raising ``StopIteration`` (so that gunicorn writes nothing
on the socket), and under Werkzeug's server it ended with a dropped
connection, or, under ``flask run --debug``, with the debugger's
``"GET /echo HTTP/1.1" 500 -``. This module writes the line instead, through
the server's own access log:

- under gunicorn, to its ``gunicorn.access`` logger (so only with
  ``--access-logfile`` or a logging configuration), formatted with its
  ``access_log_format``; the status is 101 and ``%(b)s`` the bytes sent. With
  gunicorn's default format the line ends with the session's figures
  (``websocket 12.345s in=120 out=5230 close=1000``); a format of your own can
  name them as environ atoms: ``%({pine_ws.duration}e)s``,
  ``%({pine_ws.bytes_in}e)s``, ``%({pine_ws.bytes_out}e)s``,
  ``%({pine_ws.close_code}e)s``.
- under Werkzeug's server, to its ``werkzeug`` logger, in its format, as
  ``"GET /echo HTTP/1.1" 101 - websocket 12.345s in=120 out=5230 close=1000``;
  Werkzeug's own line for the request (``101 -``) is left out.

Bytes are counted by the kernel (``TCP_INFO``: bytes received, and bytes sent
and acknowledged), from the accepted handshake to the end, handshake response
and TLS records included; ``-`` where there are no such counters (a Unix
socket, a system without them). Nothing is counted per message: the cost is
two ``getsockopt`` calls per session, and under gunicorn, only while its
access log is on, one duplicated descriptor per open session (gunicorn closes
the socket before the session's end is logged).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any

from . import tcpinfo

#: gunicorn's default ``access_log_format``: lines in it get the session's figures appended.
_GUNICORN_DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

_local = threading.local()


def _tcp_counts(sock: socket.socket | None) -> tuple[int, int] | None:
    """``(sent and acknowledged, received)`` bytes of a TCP socket so far, or ``None``."""
    info = tcpinfo.read(sock)
    return None if info is None else (info.bytes_acked, info.bytes_received)


def _raw_socket(environ: dict[str, Any]) -> socket.socket | None:
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    return sock if isinstance(sock, socket.socket) else None


class Session:
    """One WebSocket session's figures, from the accepted handshake to its end.

    Create it before the handshake is answered, call :meth:`stop` when the
    connection is over (always: it releases what it holds), then :meth:`log`
    from the response that ends the request.
    """

    def __init__(self, environ: dict[str, Any]) -> None:
        self.started = time.monotonic()
        self.duration = 0.0
        self.bytes_in: int | None = None
        self.bytes_out: int | None = None
        self.close_code: int | None = None
        self._probe: socket.socket | None = None
        self._base: tuple[int, int] | None = None
        self._dup = False
        sock = _raw_socket(environ)
        if sock is None:
            return
        if "gunicorn.socket" in environ:
            # gunicorn's socket is closed when the session ends, before the
            # line is written: read the counters through a descriptor of our
            # own, and only if the line will be written at all.
            if not logging.getLogger("gunicorn.access").handlers:
                return
            try:
                self._probe = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:
                return
            self._dup = True
        else:
            self._probe = sock
        self._base = _tcp_counts(self._probe)

    def stop(self, close_code: int | None) -> None:
        """The session is over: note its duration, bytes and close code; release the probe."""
        self.duration = time.monotonic() - self.started
        self.close_code = close_code
        end = _tcp_counts(self._probe)
        if self._base is not None and end is not None:
            self.bytes_out = end[0] - self._base[0]
            self.bytes_in = end[1] - self._base[1]
        probe, self._probe = self._probe, None
        if probe is not None and self._dup:
            probe.close()

    @property
    def figures(self) -> str:
        """``websocket 12.345s in=120 out=5230 close=1000`` (``-`` for what is unknown)."""
        return (f"websocket {self.duration:.3f}s in={_or_dash(self.bytes_in)} "
                f"out={_or_dash(self.bytes_out)} close={_or_dash(self.close_code)}")

    def log(self, environ: dict[str, Any], start_response: Any) -> None:
        """Write the session's line to the access log of the server it ran under."""
        environ["pine_ws.duration"] = f"{self.duration:.3f}"
        environ["pine_ws.bytes_in"] = _or_dash(self.bytes_in)
        environ["pine_ws.bytes_out"] = _or_dash(self.bytes_out)
        environ["pine_ws.close_code"] = _or_dash(self.close_code)
        try:
            if "gunicorn.socket" in environ:
                _log_gunicorn(self, environ, start_response)
            else:
                _log_werkzeug(self, environ)
        except Exception:  # a log line must never fail a request
            logging.getLogger(__name__).exception("could not write the WebSocket access line")


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _log_gunicorn(session: Session, environ: dict[str, Any], start_response: Any) -> None:
    """Through ``gunicorn.access``, in the configured ``access_log_format``."""
    access = logging.getLogger("gunicorn.access")
    if not access.handlers:
        return  # no access log configured: gunicorn writes none either
    # gunicorn's start_response is a method of its Response, which holds the
    # request and the configuration: the atoms are gunicorn's own.
    response = getattr(start_response, "__self__", None)
    cfg = getattr(response, "cfg", None)
    fmt = getattr(cfg, "access_log_format", None)
    if response is None or cfg is None or not isinstance(fmt, str):
        access.info("%s %s", _request_line(environ), session.figures)
        return
    from gunicorn import glogging  # only under gunicorn, which is then imported already

    logger = object.__new__(glogging.Logger)  # its formatting only: no handlers set up
    logger.cfg = cfg
    seconds = timedelta(seconds=session.duration)
    atoms = logger.atoms(_Upgraded(session.bytes_out), response.req, environ, seconds)
    line = fmt % logger.atoms_wrapper_class(atoms)
    if fmt == _GUNICORN_DEFAULT_FORMAT:
        line = f"{line} {session.figures}"
    access.info("%s", line)


class _Upgraded:
    """What gunicorn's atoms read of a response, for a 101 that it never wrote itself."""

    status = "101 Switching Protocols"

    def __init__(self, sent: int | None) -> None:
        self.sent = sent
        self.headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


def _request_line(environ: dict[str, Any]) -> str:
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    return (f'{environ.get("REMOTE_ADDR", "-")} "{environ.get("REQUEST_METHOD", "GET")} '
            f'{target} {environ.get("SERVER_PROTOCOL", "HTTP/1.1")}" 101')


def _log_werkzeug(session: Session, environ: dict[str, Any]) -> None:
    """Through the ``werkzeug`` logger, in the format of Werkzeug's request lines."""
    from werkzeug._internal import _log

    _install_filter()
    # Werkzeug writes its own line for this request when the 101 ends it;
    # this one says more: its line is dropped (see _DropUpgradeLine).
    _local.drop_upgrade_line = True
    target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    when = time.strftime("%d/%b/%Y %H:%M:%S")
    _log("info", '%s - - [%s] "%s %s %s" 101 - %s', environ.get("REMOTE_ADDR", "-"), when,
         environ.get("REQUEST_METHOD", "GET"), target,
         environ.get("SERVER_PROTOCOL", "HTTP/1.1"), session.figures)


class _DropUpgradeLine(logging.Filter):
    """Drops Werkzeug's own ``101 -`` line of a session whose line was just written."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(_local, "drop_upgrade_line", False):
            return True
        args = record.args
        if isinstance(args, tuple) and len(args) == 3 and "101" in str(args[1]):
            _local.drop_upgrade_line = False
            return False
        return True


_filter_lock = threading.Lock()


def _install_filter() -> None:
    logger = logging.getLogger("werkzeug")
    with _filter_lock:
        if not any(isinstance(f, _DropUpgradeLine) for f in logger.filters):
            logger.addFilter(_DropUpgradeLine())
