"""The live log viewer: a page and a socket for each file the app names.

This module owns the server side of the browser viewer. :func:`make_viewer`
returns a Flask :class:`~flask.Blueprint` with:

- ``/`` the page (the file itself when there is one, a list when there are
  several), ``/<name>`` the page of one file;
- ``/ws/<name>`` the WebSocket that streams the file with :func:`watch_file`,
  speaking the ``pine.watch.v1`` subprotocol (offsets, file ids, rotation
  notices: see ``docs/protocol.md``) or plain text for a plain client;
- ``/_static/...`` the page's script and style, shipped inside the package
  (no CDN: the viewer works with no internet).

A client only ever sends a *name*; the path is looked up in the mapping the
app gave, so no request can make the server read another file. Unknown names
do not match any URL rule (Werkzeug's ``any`` converter): a 404 before any
upgrade. The query values a resuming client sends (``offset``, ``file``,
``lines``) are checked before a byte is read; a bad one closes the socket
with 1008 and a reason the page shows (a browser never sees the HTTP status
of a refused handshake, but it does see a close reason).

Auth: the blueprint's ``before_request`` runs for the page, the static files
and the WebSocket handshake alike (the handshake is an ordinary GET until the
view accepts it), so returning a 401/403 there refuses all three before
anything is sent::

    viewer = pine.viewer({"app": "/var/log/app.log"})

    @viewer.before_request
    def only_admins():
        if not current_user.is_admin:
            abort(403)

    app.register_blueprint(viewer, url_prefix="/logs")
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, jsonify, request, url_for
from markupsafe import escape

from .config import Config, setting
from .viewer_files import register_file_routes
from .watch import FRAMED_SUBPROTOCOL, watch_file

if TYPE_CHECKING:
    from .conn import Conn
    from .extension import Ctx, FlaskPineWS

#: The subprotocol of the viewer's socket: JSON control messages and binary
#: chunks of the file's exact bytes (``docs/protocol.md``).
SUBPROTOCOL = FRAMED_SUBPROTOCOL

#: What a file's name may look like: it appears in URLs and in the page.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: A file id as watch_file sends it: ``<st_dev>:<st_ino>``.
_FILE_ID = re.compile(r"^[0-9]{1,20}:[0-9]{1,20}$")
#: A non-negative decimal integer of sane length (no sign, no spaces, no 1e3).
_UINT = re.compile(r"^[0-9]{1,19}$")

#: The page's files, shipped inside the package (setup.cfg's package_data).
_STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class BadQuery(ValueError):
    """A query value of the viewer's socket is malformed; the message says which."""


def _shown(value: str) -> str:
    """``value`` quoted for a close reason, cut short: a reason holds at most 123 bytes."""
    return repr(value[:24]) + ("..." if len(value) > 24 else "")


def resume_options(query: Mapping[str, str], *, default_lines: int | None,
                   max_lines: int) -> dict[str, Any]:
    """Turn the socket's query string into :func:`watch_file` options.

    - ``offset=N`` (and ``file=<dev>:<ino>``, the file the offset is in): a
      client resuming from byte ``N``; ``lines`` is then ignored.
    - ``lines=N``: the last ``N`` lines first (``0``: only what comes next);
      at most ``max_lines``, what the page would keep anyway.
    - neither: ``default_lines``.

    :raises BadQuery: a value is malformed or out of range.
    """
    offset = query.get("offset")
    file_id = query.get("file")
    lines = query.get("lines")
    if file_id is not None and file_id != "" and not _FILE_ID.match(file_id):
        raise BadQuery(f"file {_shown(file_id)} must be a file id <dev>:<inode>, "
                       "as the open message gave it")
    if offset is not None:
        if not _UINT.match(offset):
            raise BadQuery(f"offset {_shown(offset)} must be a byte offset: a non-negative integer")
        return {"offset": int(offset), "file_id": file_id or None}
    if file_id:
        raise BadQuery(f"file {_shown(file_id)} is given without offset: send both to resume")
    if lines is not None:
        if not _UINT.match(lines) or int(lines) > max_lines:
            raise BadQuery(f"lines {_shown(lines)} must be an integer from 0 to {max_lines}")
        return {"lines": int(lines)}
    return {"lines": default_lines} if default_lines is not None else {}


def _check_files(files: Mapping[str, str | os.PathLike[str]]) -> Mapping[str, str]:
    if getattr(files, "live", False):
        # A live set (the command line's directories, flask_pine_ws.fileset):
        # its names are safe by construction and change while it serves.
        return files  # type: ignore[return-value]
    if not files:
        raise ValueError("the viewer needs at least one file: files={'app': '/var/log/app.log'}")
    checked: dict[str, str] = {}
    for name, path in files.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"file name {name!r} must be 1-100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (it appears in URLs)")
        # Absolute at registration: a worker's later chdir cannot move it.
        checked[name] = os.path.abspath(os.fspath(path))
    return checked


def _page_template() -> str:
    with open(os.path.join(_STATIC, "viewer.html"), encoding="utf-8") as f:
        return f.read()


def _json_for_html(obj: Any) -> str:
    # Inside <script type="application/json">: no "</script>" may appear, and
    # "<!--" could start an escaped-text state; \u003c is the same JSON string.
    text = json.dumps(obj, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


#: The page runs only its own script and style, and talks only to its origin:
#: a log line that got into the markup still could not run anything.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-src 'self'; "
        "connect-src 'self'{ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'self'")
#: A Host header fit to be named in the policy (anything else: 'self' alone).
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$")


def _policy(host: str) -> str:
    # CSP 3 lets 'self' cover ws:// and wss:// to the same host; older
    # browsers (Safari before 15.4) need the socket's origin spelled out.
    ws = f" ws://{host} wss://{host}" if _HOST.match(host) else ""
    return _CSP.format(ws=ws)


def make_viewer(pine: FlaskPineWS, files: Mapping[str, str | os.PathLike[str]], *,
                name: str = "pine_viewer", url_prefix: str | None = None,
                lines: int | None = 1000, max_lines: int = 5000, title: str = "Logs",
                root: str | os.PathLike[str] | None = None,
                config: Config | None = None) -> Blueprint:
    """Return a blueprint that serves the live viewer for ``files``.

    ::

        pine = FlaskPineWS(app)
        app.register_blueprint(
            make_viewer(pine, {"app": "/var/log/app.log", "jobs": "/var/log/jobs.log"}),
            url_prefix="/logs")

    :param pine: the extension the socket route is declared with (the app
        that registers the blueprint must have it initialised).
    :param files: name -> path. Clients only ever send a name; the path never
        comes from a request. Names appear in URLs: letters, digits, ``.``,
        ``_``, ``-``.
    :param name: the blueprint's name (endpoints are ``<name>.page`` ...);
        give each viewer of an app its own.
    :param url_prefix: where it is mounted (``register_blueprint`` may
        override it); ``None`` mounts it at the app's root.
    :param lines: how many lines a new page asks for first (``tail -n``);
        ``None``: watch_file's default window (``PINE_WS_BACKLOG_BYTES``).
        A page may ask for another number with ``?lines=N`` (at most
        ``max_lines``).
    :param max_lines: how many lines a page keeps; older ones are dropped, so
        a tab open for hours on a busy log keeps a flat memory. A page may ask
        for another cap with ``?max=N``.
    :param title: the page's title, before the file's name.
    :param root: passed to :func:`watch_file`: every path must resolve inside.
    :param config: the socket route's :class:`Config`; its ``subprotocols``
        are replaced by ``pine.watch.v1``.
    :returns: the blueprint; add ``before_request`` hooks to it for auth.
    """
    paths = _check_files(files)
    if lines is not None and (not isinstance(lines, int) or lines < 0):
        raise ValueError(f"lines must be a non-negative int or None, got {lines!r}")
    if not isinstance(max_lines, int) or max_lines < 1:
        raise ValueError(f"max_lines must be a positive int, got {max_lines!r}")
    if lines is not None and lines > max_lines:
        lines = max_lines  # the page would drop the rest at once
    ws_config = dataclasses.replace(config if config is not None else Config(),
                                    subprotocols=[SUBPROTOCOL])
    watch_root = os.fspath(root) if root is not None else None

    bp = Blueprint(name, __name__, url_prefix=url_prefix,
                   static_folder=_STATIC, static_url_path="/_static")
    live = bool(getattr(paths, "live", False))
    if live:
        # Names come and go: any name matches the rule, and one not in the
        # set now is a 404 before the view (before any upgrade).
        converter = "<file>"

        @bp.before_request
        def known_file() -> None:
            file = (request.view_args or {}).get("file")
            if file is not None and file not in paths:
                abort(404)
    else:
        # Werkzeug's "any" converter: a name not in the mapping matches no rule.
        converter = "<any({}):file>".format(",".join(f'"{n}"' for n in paths))
    template = _page_template()

    def listing() -> list[dict[str, str]]:
        return [{"name": n, "url": url_for(f"{name}.file_page", file=n)} for n in paths]

    def render(current: str | None) -> Response:
        settings = {
            "name": current,
            "files": listing(),
            # A live set: the page asks this URL for the list again now and then.
            "filesUrl": url_for(f"{name}.file_list") if live else None,
            # Only the path: Werkzeug builds a websocket rule as an absolute
            # ws:// URL from the Host it saw, which a proxy may have rewritten;
            # the page puts it on its own origin.
            "ws": urlsplit(url_for(f"{name}.stream", file=current)).path if current else None,
            "lines": lines,
            "maxLines": max_lines,
            "title": title,
        }
        heading = f"{current} · {title}" if current else title
        html = (template
                .replace("{{title}}", str(escape(heading)))
                .replace("{{static}}", url_for(f"{name}.static", filename="").rstrip("/"))
                .replace("{{config}}", _json_for_html(settings)))
        response = Response(html, mimetype="text/html")
        response.headers["Content-Security-Policy"] = _policy(request.host)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.route("/")
    def index() -> Response:
        return render(next(iter(paths)) if len(paths) == 1 and not live else None)

    @bp.route("/_files.json")
    def file_list() -> Response:
        response = jsonify(listing())
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.route(f"/{converter}")
    def file_page(file: str) -> Response:
        return render(file)

    @pine.new(f"/ws/{converter}", config=ws_config, blueprint=bp,
              endpoint="stream")
    def stream(conn: Conn, ctx: Ctx) -> None:
        try:
            options = resume_options(ctx.query, default_lines=lines, max_lines=max_lines)
        except BadQuery as exc:
            conn.close(1008, str(exc))
            return
        watch_file(paths[ctx.params["file"]], conn, root=watch_root, **options)

    def roots() -> list[str] | None:
        # As watch_file decides: the viewer's root, else PINE_WS_WATCH_ROOTS.
        value = watch_root if watch_root is not None else setting("PINE_WS_WATCH_ROOTS")
        if value is None:
            return None
        listed = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        return [os.path.realpath(os.fspath(r)) for r in listed]

    register_file_routes(bp, paths, converter, roots)
    return bp
