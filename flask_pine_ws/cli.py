"""The command line: ``flask-pine-ws serve FILE...``, the viewer under gunicorn.

This module owns turning a list of files into a running server, the way
frontail serves a log: it names each file, builds a Flask app with the viewer
(:mod:`flask_pine_ws.viewer`) mounted at ``/``, and runs it under gunicorn's
threaded worker (``gthread``: each open page holds one thread for its life)
through gunicorn's programmatic ``BaseApplication``. ``example_app.py`` runs
its app through :func:`serve` too, so the example and the command line are the
same code path.

The app is built in the arbiter, before the fork, as with ``--preload``: the
shutdown hook is therefore installed by gunicorn's ``post_worker_init``
(:func:`flask_pine_ws.shutdown.post_worker_init`), and watch_file creates its
observer lazily, in each worker, after the fork.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Flask

from . import shutdown
from .extension import FlaskPineWS

DEFAULT_PORT = 8000
DEFAULT_THREADS = 32


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def _non_negative(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()):
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    value = _non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``flask-pine-ws`` argument parser (its ``--help`` is the reference)."""
    parser = argparse.ArgumentParser(
        prog="flask-pine-ws",
        description="Live log viewer: follow files in the browser, as tail -F does.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve a live viewer for FILE... (run 'serve --help')",
        description=(
            "Serve a live viewer for FILE... in the browser, under gunicorn (gthread). "
            "Each file gets a page named after it; the page follows the end, pauses, "
            "filters (text or regex), keeps a bounded number of lines, and resumes "
            "without loss after a reconnect. Files are followed by name, as tail -F "
            "does: rotation and truncation are shown, and a file that does not exist "
            "yet is waited for."),
        epilog="Example: flask-pine-ws serve /var/log/app.log /var/log/worker.log --port 9001")
    serve.add_argument("files", nargs="+", metavar="FILE",
                       help="a file to follow; it may not exist yet (it is waited for)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; "
                            "use 0.0.0.0 to let other machines read these files)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT,
                       help=f"port to listen on (default: {DEFAULT_PORT}; 0: any free port, "
                            "printed at start)")
    serve.add_argument("--lines", type=_non_negative, default=1000,
                       help="lines a page shows from before it opened, as tail -n "
                            "(default: 1000; 0: only new lines)")
    serve.add_argument("--max-lines", type=_positive, default=5000,
                       help="lines a page keeps; older ones are dropped (default: 5000)")
    serve.add_argument("--workers", type=_positive, default=1,
                       help="gunicorn worker processes (default: 1)")
    serve.add_argument("--threads", type=_positive, default=DEFAULT_THREADS,
                       help="threads per worker; each open page holds one "
                            f"(default: {DEFAULT_THREADS})")
    serve.add_argument("--title", default="Logs", help="the page title (default: Logs)")
    # So that errors found after parsing print this command's usage.
    serve.set_defaults(command_parser=serve)
    return parser


def names_for(paths: Sequence[str]) -> dict[str, str]:
    """Name each file after its base name, made URL-safe and unique (``app.log``, ``app.log-2``)."""
    names: dict[str, str] = {}
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(os.path.normpath(path)))
        base = base.lstrip("._-")[:90] or "file"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names[name] = os.path.abspath(path)
    return names


def create_app(files: Mapping[str, str], *, lines: int | None = 1000, max_lines: int = 5000,
               title: str = "Logs") -> Flask:
    """A Flask app serving the viewer for ``files`` (name -> path) at ``/``."""
    # No app static route: the viewer's own files are under /_static.
    app = Flask("flask_pine_ws.cli", static_folder=None)
    pine = FlaskPineWS(app)
    app.register_blueprint(pine.viewer(files, lines=lines, max_lines=max_lines, title=title))
    return app


def _urls(server: Any) -> list[str]:
    urls = []
    for listener in server.LISTENERS:
        address = listener.sock.getsockname()
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            urls.append(f"http://{shown}:{port}/")
        else:
            urls.append(f"unix:{address}")
    return urls


def serve(app: Flask, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, workers: int = 1,
          threads: int = DEFAULT_THREADS, bind: str | None = None,
          on_ready: Callable[[list[str]], None] | None = None,
          log_level: str = "warning") -> None:
    """Run ``app`` under gunicorn (gthread) until it is stopped (Ctrl-C, SIGTERM).

    :param bind: a gunicorn bind address (``fd://3``, ``unix:/run/x.sock``);
        overrides ``host`` and ``port``.
    :param on_ready: called in the arbiter with the URLs it listens on, once
        listening (the default prints them).
    """
    from gunicorn.app.base import BaseApplication

    address = bind or (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    def ready(server: Any) -> None:
        urls = _urls(server)
        if on_ready is not None:
            on_ready(urls)
        else:
            for url in urls:
                print(f"flask-pine-ws: serving at {url}", flush=True)

    options: dict[str, Any] = {
        "bind": [address],
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        # Sockets close with 1001 at SIGTERM (shutdown hook): no long wait.
        "graceful_timeout": 10,
        "loglevel": log_level,
        "post_worker_init": shutdown.post_worker_init,
        "when_ready": ready,
    }

    class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            # gunicorn >= 25.1 opens a control socket at a fixed path: two
            # viewers would fight over it, and a log viewer needs none.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Flask:
            return app

    _Gunicorn().run()


def _check_files(paths: Sequence[str], parser: argparse.ArgumentParser) -> None:
    for path in paths:
        if os.path.isdir(path):
            parser.error(f"{path} is a directory; give the files in it to follow")
        if not os.path.exists(path):
            print(f"flask-pine-ws: {path} does not exist yet; its page waits for it to appear",
                  file=sys.stderr, flush=True)
        elif not os.access(path, os.R_OK):
            parser.error(f"{path} is not readable by this user")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flask-pine-ws`` and ``python -m flask_pine_ws``."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # no command: what there is to run, not an error
        return 0
    args = parser.parse_args(argv)
    _check_files(args.files, args.command_parser)
    if not _is_loopback(args.host):
        print(f"flask-pine-ws: listening on {args.host}: anyone who can reach it can read "
              "these files (there is no login)", file=sys.stderr, flush=True)
    app = create_app(names_for(args.files), lines=args.lines, max_lines=args.max_lines,
                     title=args.title)
    serve(app, host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0
