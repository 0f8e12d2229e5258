"""The Flask extension: :class:`FlaskPineWS`, its ``new()`` routes and :class:`Ctx`.

This module owns how a WebSocket route is registered and run: the extension
pattern (``init_app``, app factories, several apps, blueprints), the request
life of one connection (refuse or accept, run the handler, report its error,
close, reap), and how the request ends under each server. The extension
object holds no app: per-app settings live in ``app.config``, and the routes
declared on it are registered on every app it is initialised on.

Why not flask-sock's ``Sock.route``: it returns ``None`` instead of the
function, cannot refuse a handshake with an HTTP status (no origin check), and
under Werkzeug's server writes a 200 after the close frame. What it does right
is kept: the socket is taken from the WSGI environ, and under gunicorn the
request ends by raising ``StopIteration`` from the response, so that gunicorn
writes nothing more on the socket.
"""

from __future__ import annotations

import copy
import functools
import os
import socket
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from flask import Blueprint, Flask, Request, Response, current_app, has_app_context, request
from werkzeug.datastructures import MultiDict

from . import accesslog, channels, hosts, limits, shutdown
from .compression import parse_choice
from .config import DEFAULTS, SETTINGS, Config
from .conn import Conn
from .errors import ConnectionClosed
from .handshake import refusal
from .protocol import Mode, NoThreadLeft

if TYPE_CHECKING:
    from .testing import TestClient

Handler = Callable[[Conn, "Ctx"], Any]
H = TypeVar("H", bound=Handler)

EXTENSION_KEY = "pine_ws"


class _Route(NamedTuple):
    """A route declared on the extension, registered on every app it is initialised on."""

    rule: str
    handler: Handler
    config: Config
    options: dict[str, Any]


class Ctx:
    """What Pine's ``*pine.Ctx`` gives a handler.

    :ivar request: the Flask request of the handshake (headers, cookies,
        ``remote_addr``); usable for the whole life of the connection.
    :ivar params: the URL variables, as Flask's converters give them.
    :ivar query: the query string, a ``MultiDict`` (``ctx.query.get("offset")``).
    """

    __slots__ = ("request", "params", "query")

    def __init__(self, request: Request, params: Mapping[str, Any],
                 query: MultiDict[str, str]) -> None:
        self.request = request
        self.params = dict(params)
        self.query = query

    def __repr__(self) -> str:
        return f"<Ctx {self.request.path!r} params={self.params!r}>"


class _SocketTakenOver(Response):
    """The response of a finished WebSocket request: writes nothing on the socket.

    The socket belonged to the WebSocket; any byte the server wrote now would
    follow the close frame and read as a broken frame in the browser. It
    writes the session's access line (:mod:`.accesslog`) as the request ends.
    """

    def __init__(self, mode: Mode, session: accesslog.Session | None = None) -> None:
        super().__init__()
        self._mode = mode
        self._session = session

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self._session is not None:
            self._session.log(environ, start_response)
        if self._mode == "gunicorn":
            # gunicorn's gthread worker ends the request without a response
            # when the app raises StopIteration (what flask-sock relies on).
            raise StopIteration()
        if self._session is None:
            # No session began (the client left during the handshake): to
            # Werkzeug's server a ConnectionError is a dropped client, not logged.
            raise ConnectionAbortedError("the client left during the handshake")
        # Werkzeug's server: the request's status is the 101 the WebSocket
        # began with (an exception here read as a 500 under the debugger of
        # `flask run --debug`). The socket is shut down first, so that
        # Werkzeug's attempt to write that status line fails as a dropped
        # connection (silently) instead of following the close frame.
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already
        start_response("101 Switching Protocols",
                       [("Upgrade", "websocket"), ("Connection", "Upgrade")])
        return []


class FlaskPineWS:
    """The extension: WebSocket routes in one decorator, as Pine's ``websocket.New``.

    ::

        pine = FlaskPineWS(app)          # or FlaskPineWS(), then pine.init_app(app)

        @pine.new("/ws/<room>", config=Config(ping_interval=20))
        def chat(conn: Conn, ctx: Ctx) -> None:
            while True:
                conn.send(conn.receive())

    ``init_app`` sets every ``PINE_WS_*`` key it reads with
    ``app.config.setdefault``, so an app overrides any of them before or after.
    The keys and their defaults (what each means: the settings table of
    :doc:`/config`):

    {settings}
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._routes: list[_Route] = []
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension, and every route declared so far, on ``app``.

        :raises RuntimeError: the extension is already registered on ``app``.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A FlaskPineWS extension is already registered on this app; call "
                "init_app once per app and reach it with app.extensions['pine_ws'].")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, copy.copy(value))
        app.extensions[EXTENSION_KEY] = self
        self._apps.add(app)
        hosts.honour_trusted_hosts(app)  # Flask 3.0 ignores TRUSTED_HOSTS
        for rule, handler, config, options in self._routes:
            _add_route(app, rule, handler, config, options)
        shutdown.install()

    def new(self, rule: str, *, config: Config | None = None,
            blueprint: Blueprint | None = None, **options: Any) -> Callable[[H], H]:
        """Decorate ``handler(conn, ctx)`` to serve WebSocket connections at ``rule``.

        :param rule: the URL rule, with Flask's converters (``/ws/<int:id>``).
        :param config: this route's :class:`Config`; unset fields take the
            app's ``PINE_WS_*`` values.
        :param blueprint: register the route on this blueprint instead of the
            apps the extension is initialised on (register the blueprint on an
            app that has the extension).
        :param options: passed to Flask's ``add_url_rule`` (``endpoint``,
            ``defaults``, ``host``, ...).
        :returns: the handler, unchanged.
        """
        cfg = config if config is not None else Config()
        if not isinstance(cfg, Config):
            raise TypeError(f"config must be a flask_pine_ws.Config, not {type(cfg).__name__}")

        def decorator(handler: H) -> H:
            if blueprint is not None:
                _add_route(blueprint, rule, handler, cfg, options)
                return handler
            self._routes.append(_Route(rule, handler, cfg, options))
            for app in list(self._apps):
                _add_route(app, rule, handler, cfg, options)
            return handler

        return decorator

    def publish(self, channel: str, message: Any) -> None:
        """Send ``message`` to every connection that joined ``channel``.

        ``str`` arrives as a text message, ``bytes`` as a binary one, anything
        else as JSON text. Needs an app context, nothing more: call it in a
        request, a background thread, a CLI command, or a job in another
        process (with ``PINE_WS_MESSAGE_QUEUE`` naming the same Redis)::

            with app.app_context():
                pine.publish("room-1", {"event": "done"})

        Never waits for a member: each has a queue and a sender of its own.

        :raises ChannelError: the message queue (Redis) is unreachable
            (at once; nothing was published).
        :raises TypeError: ``message`` cannot be encoded as JSON.
        :raises RuntimeError: there is no app context.
        """
        if not has_app_context():
            raise RuntimeError("pine.publish needs an app context: call it in a request, "
                               "or inside `with app.app_context():`")
        channels.publish(channel, message)

    def test_client(self, app: Flask) -> TestClient:
        """A client that opens WebSocket connections to ``app``'s routes in this process.

        ::

            with pine.test_client(app).connect("/echo") as conn:
                conn.send("hi")
                assert conn.receive() == "hi"

        The route runs for real (the app's guards, the origin check, the
        handler, ``watch_file``) on a socket pair; see :mod:`flask_pine_ws.testing`.
        """
        from .testing import TestClient  # lazily: only tests need it

        return TestClient(app)

    def viewer(self, files: Mapping[str, str | os.PathLike[str]], **options: Any) -> Blueprint:
        """Return a blueprint serving the live log viewer for ``files`` (name -> path).

        ::

            app.register_blueprint(pine.viewer({"app": "/var/log/app.log"}),
                                     url_prefix="/logs")

        Guard it with the blueprint's ``before_request`` (it runs for the page,
        its static files and the WebSocket handshake). The options are
        :func:`flask_pine_ws.viewer.make_viewer`'s.
        """
        from .viewer import make_viewer  # lazily: most apps never serve the viewer

        return make_viewer(self, files, **options)



def _settings_index() -> str:
    """A reST table of every key and its default, made from :data:`.config.SETTINGS`."""
    width = max(len(s.key) for s in SETTINGS) + 4
    rule = "=" * width + " " + "=" * 30
    rows = [f"{'``' + s.key + '``':<{width}} ``{s.default!r}``" for s in SETTINGS]
    return "\n    ".join([rule, *rows, rule])


# The docstring's table is made from the settings, so it cannot drift from them
# (``python -OO`` strips docstrings: then there is none to fill).
if FlaskPineWS.__doc__ is not None:
    FlaskPineWS.__doc__ = FlaskPineWS.__doc__.replace("{settings}", _settings_index())

def _add_route(target: Flask | Blueprint, rule: str, handler: Handler, config: Config,
               options: dict[str, Any]) -> None:
    options = dict(options)
    endpoint = options.pop("endpoint", None) or handler.__name__
    options.pop("methods", None)  # a handshake is a GET; anything else is refused
    view = _make_view(handler, config)
    # Werkzeug matches an upgrade request only against websocket rules, and a
    # plain request only against the others: register both, so that a plain
    # GET reaches the view and gets a clear 400 instead of a bare mismatch.
    target.add_url_rule(rule, endpoint, view, websocket=True, **options)
    target.add_url_rule(rule, endpoint, view, methods=["GET", "POST", "PUT", "DELETE"],
                        **options)


def _make_view(handler: Handler, config: Config) -> Callable[..., Response]:
    @functools.wraps(handler)
    def view(**params: Any) -> Response:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        if EXTENSION_KEY not in app.extensions:
            raise RuntimeError("FlaskPineWS is not initialised on this app: did you "
                               "forget to call pine.init_app(app)?")
        cfg = config.resolve(app)
        refused = refusal(request, cfg)
        if refused is not None:
            return refused
        if shutdown.stopping.is_set():
            return Response("The server is shutting down.\n", status=503, mimetype="text/plain")
        session = accesslog.Session(request.environ)
        try:
            conn = Conn(request.environ, cfg,
                        send_timeout=float(app.config["PINE_WS_SEND_TIMEOUT"]),
                        close_timeout=float(app.config["PINE_WS_CLOSE_TIMEOUT"]),
                        pong_timeout=float(app.config["PINE_WS_PONG_TIMEOUT"]),
                        max_queued_messages=int(app.config["PINE_WS_MAX_QUEUED_MESSAGES"]),
                        max_queued_bytes=int(app.config["PINE_WS_MAX_QUEUED_BYTES"]),
                        deflate_choice=parse_choice(app.config["PINE_WS_DEFLATE_CHOICE"]))
        except NoThreadLeft as exc:
            # Nothing was written yet: the client gets a status it can act on.
            session.stop(None)
            app.logger.warning("WebSocket refused: no thread left for its reader (%s); "
                               "raise the process's or the machine's thread limits", exc)
            return Response("The server has no thread left for another WebSocket; "
                            "try again later.\n", status=503, mimetype="text/plain",
                            headers={"Retry-After": "5"})
        except OSError:
            # The client left while the 101 was being written (a reset, a
            # closed tab): nothing to serve, and nothing worth a traceback
            # and a 500 written to a dead socket.
            session.stop(None)
            mode: Mode = "gunicorn" if "gunicorn.socket" in request.environ else "werkzeug"
            return _SocketTakenOver(mode)
        except BaseException:
            session.stop(None)  # releases its descriptor
            raise
        shutdown.register(conn)
        try:
            _run(handler, conn, Ctx(request._get_current_object(),  # type: ignore[attr-defined]
                                      params, request.args), cfg, app)
        finally:
            shutdown.unregister(conn)
            channels.leave_all(conn)
            conn.finish()
            session.stop(conn.close_code)
        return _SocketTakenOver(conn.mode, session)

    return limits.capped(view)


def _run(handler: Handler, conn: Conn, ctx: Ctx, cfg: Config, app: Flask) -> None:
    try:
        handler(conn, ctx)
    except ConnectionClosed:
        pass  # the client left: the normal end of most handlers
    except Exception as exc:  # reported below, then 1011 to the client
        if cfg.error is not None:
            try:
                cfg.error(exc)
            except Exception:
                app.logger.exception("The error callback of %s failed", ctx.request.path)
        else:
            app.logger.exception("WebSocket handler for %s failed", ctx.request.path)
        if conn.connected:
            conn.close(1011, "internal server error")
