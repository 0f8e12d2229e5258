"""The command line: ``flask-pine-ws serve PATH...``, the viewer under gunicorn.

This module owns turning a list of files and directories into a running
server, the way frontail serves a log: it names each file
(:mod:`flask_pine_ws.fileset`), builds a Flask app with the viewer
(:mod:`flask_pine_ws.viewer`) mounted at ``/`` or ``--prefix``, guarded by a
login (:mod:`flask_pine_ws.auth`) and a ``Host`` check against DNS rebinding
(:mod:`flask_pine_ws.hosts`), and runs it under gunicorn's
threaded worker (``gthread``: each open page holds one thread for its life)
through gunicorn's programmatic ``BaseApplication``. ``example_app.py`` runs
its app through :func:`serve` too, so the example and the command line are the
same code path.

The app is built in the arbiter, before the fork, as with ``--preload``: the
shutdown hook is therefore installed by gunicorn's ``post_worker_init``
(:func:`flask_pine_ws.shutdown.post_worker_init`), and watch_file creates its
inotify reader lazily, in each worker, after the fork.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import ipaddress
import os
import re
import socket
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Flask

from . import shutdown
from .auth import HtpasswdError, Login, Secret, load_htpasswd
from .extension import FlaskPineWS
from .fileset import FileSet, names_for, readable_file
from .hosts import guard_hosts, trusted_names

__all__ = ["build_parser", "create_app", "main", "names_for", "serve"]

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


def _version() -> str:
    try:
        return importlib.metadata.version("flask-pine-ws")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _prefix(text: str) -> str:
    value = "/" + text.strip().strip("/")
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+|/", value):
        raise argparse.ArgumentTypeError(
            f"must be a URL path of letters, digits, '.', '_', '~', '-' and '/', got {text!r}")
    return value


#: Where ``--password`` may come from instead of the command line (which
#: every user of the machine sees in ``ps``).
PASSWORD_ENV = "FLASK_PINE_WS_PASSWORD"


def build_parser() -> argparse.ArgumentParser:
    """The ``flask-pine-ws`` argument parser (its ``--help`` is the reference)."""
    parser = argparse.ArgumentParser(
        prog="flask-pine-ws",
        description="Live log viewer: follow files in the browser, as tail -F does.")
    parser.add_argument("--version", action="version", version=f"flask-pine-ws {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve a live viewer for PATH... (run 'serve --help')",
        description=(
            "Serve a live viewer for files in the browser, under gunicorn (gthread). "
            "Each file gets a page named after it; the page follows the end, pauses, "
            "filters (text or regex), keeps a bounded number of lines, and resumes "
            "without loss after a reconnect. Files are followed by name, as tail -F "
            "does: rotation and truncation are shown, and a file that does not exist "
            "yet is waited for. A directory serves every readable file in it, new ones "
            "included. Listening beyond this machine needs a login (--user/--password, "
            "--htpasswd, --trust-header) or an explicit --no-auth."),
        epilog=("Example: flask-pine-ws serve /var/log/app.log /var/log/worker.log --port 9001\n"
                "         flask-pine-ws serve /var/log/app/ --glob '*.log' --host 0.0.0.0 "
                "--htpasswd /etc/logs.htpasswd --certfile cert.pem --keyfile key.pem"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("files", nargs="+", metavar="PATH",
                       help="a file to follow (it may not exist yet: it is waited for), or a "
                            "directory: every readable regular file in it, new ones included "
                            "(ending with /, a directory that may not exist yet)")
    serve.add_argument("--glob", default=None, metavar="PATTERN",
                       help="serve only the files of a directory whose names match this "
                            "shell pattern ('*.log'); named files are served anyway")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; "
                            "0.0.0.0 lets other machines in and needs a login or --no-auth)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT,
                       help=f"port to listen on (default: {DEFAULT_PORT}; 0: any free port, "
                            "printed at start)")
    serve.add_argument("--prefix", type=_prefix, default="/", metavar="/PATH",
                       help="serve everything under this URL path, for a proxy that routes "
                            "by path (default: /)")
    serve.add_argument("--user", default=None, metavar="NAME",
                       help="log in with this user name (basic auth) and --password")
    serve.add_argument("--password", default=None,
                       help="the password of --user; it shows in ps: prefer the "
                            f"{PASSWORD_ENV} environment variable or --htpasswd")
    serve.add_argument("--htpasswd", default=None, metavar="FILE",
                       help="log in with the users of this Apache htpasswd file "
                            "(bcrypt entries, htpasswd -B; or {SHA}, htpasswd -s)")
    serve.add_argument("--trust-header", default=None, metavar="HEADER",
                       help="let in requests that carry this header (X-Forwarded-User), "
                            "set by a forward-auth proxy in front; only that proxy may reach "
                            "the port")
    serve.add_argument("--no-auth", action="store_true",
                       help="listen beyond loopback without a login: anyone who reaches "
                            "the port reads these files")
    serve.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                       help="a host name the server answers to besides its addresses, "
                            "localhost and the --host name (repeatable; .example.com: "
                            "every name under it); other names are refused (DNS rebinding)")
    serve.add_argument("--root", action="append", default=None, metavar="DIR",
                       help="a directory the served files may resolve into, symlinks "
                            "followed (repeatable; default: the served files' own "
                            "directories); a file swapped for a link elsewhere is refused")
    serve.add_argument("--certfile", default=None, metavar="FILE",
                       help="serve over TLS (https, wss) with this certificate (PEM)")
    serve.add_argument("--keyfile", default=None, metavar="FILE",
                       help="the private key of --certfile (PEM)")
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
    serve.add_argument("--version", action="version", version=f"flask-pine-ws {_version()}",
                       default=None, help="print the version and exit")
    # So that errors found after parsing print this command's usage.
    serve.set_defaults(command_parser=serve)
    return parser


def create_app(files: Mapping[str, str], *, lines: int | None = 1000, max_lines: int = 5000,
               title: str = "Logs", prefix: str | None = None, login: Login | None = None,
               hosts: Sequence[str] | None = None,
               roots: Sequence[str] | None = None) -> Flask:
    """A Flask app serving the viewer for ``files`` (name -> path) at ``/`` or ``prefix``.

    :param login: checks every request (page, assets, list, handshake).
    :param hosts: the host names it answers to (IP addresses always);
        ``None``: no ``Host`` check.
    :param roots: the directories the files may resolve into
        (``PINE_WS_WATCH_ROOTS``).
    """
    # No app static route: the viewer's own files are under /_static.
    app = Flask("flask_pine_ws.cli", static_folder=None)
    pine = FlaskPineWS(app)
    if roots is not None:
        app.config["PINE_WS_WATCH_ROOTS"] = list(roots)
    if login is not None:
        login.protect(app)  # app-wide: before the viewer's own hooks (no name probing)
    if hosts is not None:
        guard_hosts(app, hosts)  # first of all
    app.register_blueprint(pine.viewer(files, lines=lines, max_lines=max_lines, title=title),
                           url_prefix=None if prefix in (None, "/") else prefix)
    return app


def _urls(server: Any, scheme: str = "http") -> list[str]:
    urls = []
    for listener in server.LISTENERS:
        address = listener.sock.getsockname()
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            shown = f"[{host}]" if ":" in host else host
            urls.append(f"{scheme}://{shown}:{port}/")
        else:
            urls.append(f"unix:{address}")
    return urls


class PortInUse(OSError):
    """The address to listen on is taken (or not this machine's)."""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, bound here, so a taken port fails at once.

    gunicorn's own bind retries five times, a second apart, before it gives up.

    :raises PortInUse: the port is taken, or the address is not this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise PortInUse(exc.errno, exc.strerror) from exc
        raise
    sock.set_inheritable(True)
    return sock


def serve(app: Flask, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, workers: int = 1,
          threads: int = DEFAULT_THREADS, bind: str | None = None,
          on_ready: Callable[[list[str]], None] | None = None,
          log_level: str = "warning", certfile: str | None = None,
          keyfile: str | None = None) -> None:
    """Run ``app`` under gunicorn (gthread) until it is stopped (Ctrl-C, SIGTERM).

    :param bind: a gunicorn bind address (``fd://3``, ``unix:/run/x.sock``);
        overrides ``host`` and ``port``.
    :param on_ready: called in the arbiter with the URLs it listens on, once
        listening (the default prints them).
    :param certfile: serve TLS with this certificate (and ``keyfile``).
    :raises PortInUse: ``host:port`` is taken (before gunicorn starts).
    """
    from gunicorn.app.base import BaseApplication

    if bind is None:
        # gunicorn takes the descriptor over (and closes it when it stops).
        bind = f"fd://{listen(host, port).detach()}"
    scheme = "https" if certfile else "http"

    def ready(server: Any) -> None:
        urls = _urls(server, scheme)
        if on_ready is not None:
            on_ready(urls)
        else:
            for url in urls:
                print(f"flask-pine-ws: serving at {url}", flush=True)

    options: dict[str, Any] = {
        "bind": [bind],
        "workers": workers,
        # gthread, with a deadline for a request's line and headers
        # (PINE_WS_HEADER_TIMEOUT): a client that sends one byte and nothing
        # more holds no thread, and gets 408.
        "worker_class": "flask_pine_ws.worker.ThreadWorker",
        "threads": threads,
        # Sockets close with 1001 at SIGTERM (shutdown hook): no long wait.
        "graceful_timeout": 10,
        "loglevel": log_level,
        "post_worker_init": shutdown.post_worker_init,
        "when_ready": ready,
    }
    if certfile:
        options["certfile"] = certfile
        options["keyfile"] = keyfile

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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Refused(Exception):
    """A reason not to start: one line, exit status 2."""


def _file_set(args: argparse.Namespace, notices: list[str]) -> FileSet:
    """The served set; what is waited for is added to ``notices``, said once nothing is refused."""
    files: list[str] = []
    directories: list[str] = []
    for path in args.files:
        # A trailing slash means a directory, as for cp or rsync, whether it
        # exists yet or not (os.path.isdir("app.log/") is False for a file too).
        meant_directory = path.endswith(("/", os.sep))
        if os.path.isdir(path):
            if not os.access(path, os.R_OK | os.X_OK):
                raise _Refused(f"{path} is a directory this user may not list")
            directories.append(path)
        elif meant_directory and os.path.exists(path.rstrip("/" + os.sep)):
            raise _Refused(f"{path} ends with '/', but {path.rstrip('/' + os.sep)} is not a "
                           "directory; name the file without the slash")
        elif meant_directory:
            # Waited for as a missing file is: its files are listed once it appears.
            notices.append(f"{path} does not exist yet; its files are listed when it appears")
            directories.append(path)
        elif not os.path.lexists(path):
            notices.append(f"{path} does not exist yet; its page waits for it to appear")
            files.append(path)
        elif not readable_file(path):
            raise _Refused(f"{path} is not a regular file readable by this user")
        else:
            files.append(path)
    return FileSet(files, directories, glob=args.glob)


def _login(args: argparse.Namespace) -> Login | None:
    users: dict[str, Secret] = {}
    password = args.password if args.password is not None else os.environ.get(PASSWORD_ENV)
    if args.user is not None:
        if not password:
            raise _Refused(f"--user needs --password (or the {PASSWORD_ENV} environment "
                           "variable)")
        users[args.user] = Secret.plain(password)
    elif args.password is not None:
        raise _Refused("--password needs --user")
    if args.htpasswd is not None:
        try:
            users.update(load_htpasswd(args.htpasswd))
        except (OSError, HtpasswdError) as exc:
            raise _Refused(f"--htpasswd: {exc}") from exc
    if args.no_auth and (users or args.trust_header):
        raise _Refused("--no-auth contradicts the login options given with it")
    if not users and not args.trust_header:
        return None
    return Login(users, trust_header=args.trust_header)


class _PasswordAsked(Exception):
    """The key is encrypted: OpenSSL asked for its passphrase."""


def _no_password() -> bytes:
    # gunicorn has no passphrase option: each worker would prompt on the
    # terminal for it (or fail) at every start. Refused here instead.
    raise _PasswordAsked


def _check_tls(args: argparse.Namespace) -> None:
    """Load the certificate and key as gunicorn will, so a bad pair stops the start.

    gunicorn reads them only once it serves: a key that does not match, or a
    log file given as a certificate, would start a server whose every
    connection fails, with nothing but a warning in its log.
    """
    if (args.certfile is None) != (args.keyfile is None):
        raise _Refused("TLS needs both --certfile and --keyfile")
    if args.certfile is None:
        return
    cert, key = args.certfile, args.keyfile
    for option, path in (("--certfile", cert), ("--keyfile", key)):
        if not readable_file(path):
            raise _Refused(f"{option}: {path} is not a file readable by this user")
    # Certificates alone first: load_cert_chain's errors do not say which of
    # the two files they are about ("PEM lib" for either).
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError) as exc:
        raise _Refused(f"--certfile: {cert} holds no PEM certificate{_reason(exc)}") from exc
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
    except _PasswordAsked as exc:
        raise _Refused(f"--keyfile: {key} is encrypted and gunicorn cannot ask for its "
                       "passphrase; give it decrypted (openssl pkey -in KEY -out KEY.plain)"
                       ) from exc
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise _Refused(f"--keyfile: {key} is not the private key of the certificate in "
                           f"{cert}") from exc
        raise _Refused(f"--keyfile: {key} holds no PEM private key{_reason(exc)}") from exc
    except OSError as exc:  # made unreadable since the check above
        raise _Refused(f"--keyfile: {key}: {exc.strerror}") from exc


def _reason(exc: OSError) -> str:
    """Why OpenSSL or the OS refused, in a few words (" (key values mismatch)"), or nothing.

    OpenSSL's message names its C source line instead ("[SSL] PEM lib
    (_ssl.c:3926)"); these reasons only repeat what the refusal says.
    """
    if not isinstance(exc, ssl.SSLError):
        return f" ({exc.strerror})"
    if exc.reason is None or exc.reason in ("NO_CERTIFICATE_OR_CRL_FOUND", "PEM_LIB",
                                            "NO_START_LINE"):
        return ""
    return f" ({exc.reason.replace('_', ' ').lower()})"


def _announce(files: FileSet, base_urls: list[str], prefix: str) -> None:
    under = "" if prefix == "/" else prefix
    # With the prefix: the bare address is a 404 under --prefix.
    for base in base_urls:
        print(f"flask-pine-ws: serving at {base.rstrip('/')}{under}/", flush=True)
    base = base_urls[0].rstrip("/") + under
    for name, path in files.items():
        print(f"flask-pine-ws: {path} at {base}/{name}", flush=True)
    for directory in files.directories:
        pattern = f" ({files.glob})" if files.glob else ""
        print(f"flask-pine-ws: {directory}{os.sep}{pattern} files, new ones included, "
              f"listed at {base}/", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flask-pine-ws`` and ``python -m flask_pine_ws``."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # no command: what there is to run, not an error
        return 0
    args = parser.parse_args(argv)
    notices: list[str] = []
    try:
        files = _file_set(args, notices)
        login = _login(args)
        _check_tls(args)
        if login is None and not args.no_auth and not _is_loopback(args.host):
            raise _Refused(f"refusing to listen on {args.host} without a login: give "
                           "--user/--password, --htpasswd or --trust-header, or --no-auth "
                           "to let anyone who reaches the port read these files")
    except _Refused as exc:
        print(f"flask-pine-ws: {exc}", file=sys.stderr, flush=True)
        return 2
    for notice in notices:
        print(f"flask-pine-ws: {notice}", file=sys.stderr, flush=True)
    if login is None and not _is_loopback(args.host):
        print(f"flask-pine-ws: listening on {args.host} with --no-auth: anyone who can reach "
              "it can read these files", file=sys.stderr, flush=True)
    elif login is not None and not login.users and not _is_loopback(args.host):
        print(f"flask-pine-ws: listening on {args.host} with --trust-header only: anyone who "
              f"reaches the port directly can send {args.trust_header}; let only the proxy "
              "reach it", file=sys.stderr, flush=True)
    roots = [os.path.abspath(r) for r in args.root] if args.root else files.roots()
    app = create_app(files, lines=args.lines, max_lines=args.max_lines, title=args.title,
                     prefix=args.prefix, login=login, roots=roots,
                     hosts=trusted_names(args.host, args.allow_host or ()))
    # One address may not hold every thread: a few stay for everyone else.
    app.config["PINE_WS_MAX_PER_ADDRESS"] = max(1, args.threads - 4)
    try:
        serve(app, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
              certfile=args.certfile, keyfile=args.keyfile,
              on_ready=lambda urls: _announce(files, urls, args.prefix))
    except PortInUse as exc:
        print(f"flask-pine-ws: cannot listen on {args.host}:{args.port}: {exc.strerror}; "
              "choose another port with --port N (--port 0 picks a free one)",
              file=sys.stderr, flush=True)
        return 1
    return 0
