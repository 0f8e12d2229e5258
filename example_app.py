"""The main job in one command: a demo log, written live, in the browser viewer.

Run it with nothing else installed or started (beyond this package)::

    python example_app.py            # then open http://127.0.0.1:8000/

It writes ``./demo.log`` (a mix of levels, now and then a traceback, a line
written in two halves, a non-ASCII character) from a background thread, and
rotates it by rename (``demo.log`` -> ``demo.log.1``) every few hundred lines,
as logrotate would. It serves the viewer for it under gunicorn (gthread),
through the same code as ``flask-pine-ws serve``, and a ``/echo`` WebSocket
route, the smallest ``pine.new`` handler.

Options: ``--host`` / ``HOST`` (default 127.0.0.1), ``--port`` / ``PORT``
(default 8000; a port in use is said in one line, with the command to pick
another), ``--log`` (default ./demo.log), ``--interval`` (seconds between
lines), ``--rotate-every`` (lines).
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import socket
import sys
import threading
from datetime import UTC, datetime

from flask import Flask

from flask_pine_ws import Conn, Ctx, FlaskPineWS
from flask_pine_ws.cli import serve

_MESSAGES = [
    ("INFO", "http", "GET /api/orders/{n} 200 {ms}ms"),
    ("INFO", "http", "POST /api/cart 201 {ms}ms"),
    ("INFO", "http", "GET /healthz 200 1ms"),
    ("DEBUG", "db", "query orders.by_customer took {ms}ms (rows={n})"),
    ("DEBUG", "cache", "hit ratio 0.{n} over the last minute"),
    ("INFO", "worker", "job {n} done: sent 3 emails, café ☕ order confirmed ✓"),
    ("WARN", "http", "GET /api/search 200 {ms}ms: slow request (> 500ms)"),
    ("WARN", "pool", "connection pool at 90% ({n}/100)"),
    ("ERROR", "payments", "charge {n} failed: card declined (code=card_declined)"),
    ("ERROR", "worker", "job {n} failed, retrying in 30s"),
]

_TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/jobs.py", line 42, in run
    result = handler(payload)
  File "/srv/app/handlers.py", line 7, in handler
    return payload["customer"]["email"]
KeyError: 'email'
"""


def _line(rng: random.Random) -> str:
    level, logger, template = rng.choices(_MESSAGES, weights=[8, 4, 6, 4, 2, 3, 2, 1, 1, 1])[0]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    text = template.format(n=rng.randint(1, 9999), ms=rng.randint(2, 900))
    return f"{stamp} {level:<5} [{logger}] {text}\n"


def write_demo_log(path: str, stop: threading.Event, *, interval: float = 0.5,
                   rotate_every: int = 300) -> None:
    """Append demo lines to ``path`` until ``stop`` is set; rotate it by rename.

    Lines come in small bursts, sometimes a traceback, sometimes a line in two
    writes (the viewer shows the first half as partial until the end comes).
    """
    rng = random.Random()
    written = 0
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - reopened at each rotation
    try:
        while not stop.wait(interval * rng.uniform(0.3, 1.7)):
            for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
                line = _line(rng)
                if rng.random() < 0.05:
                    half = len(line) // 2
                    out.write(line[:half])
                    out.flush()
                    if stop.wait(0.8):
                        break
                    line = line[half:]
                out.write(line)
                if "failed" in line and rng.random() < 0.5:
                    out.write(_TRACEBACK)
                written += 1
            out.flush()
            if written >= rotate_every:
                # logrotate's default: rename, then the app opens a new file.
                out.close()
                os.replace(path, path + ".1")
                out = open(path, "a", encoding="utf-8")  # noqa: SIM115
                stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                out.write(f"{stamp} INFO  [demo] log rotated: the previous lines are in "
                          f"{os.path.basename(path)}.1\n")
                out.flush()
                written = 0
    finally:
        out.close()


def create_app(log_path: str) -> Flask:
    """The demo app: the viewer for ``log_path`` at ``/``, and ``/echo``."""
    app = Flask(__name__, static_folder=None)
    pine = FlaskPineWS(app)
    app.register_blueprint(pine.viewer({"demo.log": log_path}, title="flask-pine-ws demo"))

    @pine.new("/echo")
    def echo(conn: Conn, ctx: Ctx) -> None:
        while True:
            message = conn.receive()
            if message is not None:
                conn.send(message)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="flask-pine-ws demo: a live log in the browser")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                        help="address to listen on (HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                        help="port to listen on (PORT; default 8000; 0: any free port)")
    parser.add_argument("--log", default="demo.log", help="the demo log to write (./demo.log)")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between bursts of lines (default 0.5)")
    parser.add_argument("--rotate-every", type=int, default=300,
                        help="rotate the log after this many lines (default 300)")
    args = parser.parse_args(argv)
    log_path = os.path.abspath(args.log)
    listener = _listen(args.host, args.port)

    stop = threading.Event()
    # The writer runs in gunicorn's arbiter (this process); workers are forked
    # from it but never touch the writer's file object.
    writer = threading.Thread(target=write_demo_log, args=(log_path, stop),
                              kwargs={"interval": args.interval,
                                      "rotate_every": args.rotate_every},
                              name="demo-log-writer", daemon=True)
    writer.start()

    def ready(urls: list[str]) -> None:
        print(f"Writing a demo log to {log_path}", flush=True)
        for url in urls:
            echo = "ws" + url.removeprefix("http") + "echo"
            print(f"Live log viewer: {url}   (WebSocket echo: {echo})", flush=True)
        print("Ctrl-C to stop.", flush=True)

    try:
        serve(create_app(log_path), bind=f"fd://{listener.fileno()}", on_ready=ready)
    finally:
        stop.set()
        writer.join(5)
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is said in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        other = port + 1 if port else 0
        print(f"example_app.py: port {port} is in use on {host}; pick another one: "
              f"python example_app.py --port {other} (or PORT={other})",
              file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
