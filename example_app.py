"""The main job in one command: a demo log, written live, in the browser viewer.

Run it with nothing else installed or started (beyond this package)::

    .venv/bin/python example_app.py   # then open http://127.0.0.1:8000/

It writes ``./demo.log`` (a mix of levels, now and then a traceback, a line
written in two halves, a non-ASCII character) from a background thread, and
rotates it by rename (``demo.log`` -> ``demo.log.1``) every few hundred lines,
as logrotate would. It serves the viewer for it under gunicorn (gthread),
through the same code as ``flask-pine-ws serve``, a ``/echo`` WebSocket
route, the smallest ``pine.new`` handler, and a small chat at ``/chat`` on a
channel (``conn.join`` and ``pine.publish``; within the process by default,
across workers and hosts with ``PINE_WS_MESSAGE_QUEUE=redis://...``).

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
import sys
import threading
from datetime import UTC, datetime

from flask import Flask, Response

from flask_pine_ws import Conn, Ctx, FlaskPineWS
from flask_pine_ws.cli import PortInUse, serve

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

    queue = os.environ.get("PINE_WS_MESSAGE_QUEUE")
    if queue:  # redis://host:6379/0: the chat spans every worker and host on it
        app.config["PINE_WS_MESSAGE_QUEUE"] = queue

    @pine.new("/echo")
    def echo(conn: Conn, ctx: Ctx) -> None:
        while True:
            message = conn.receive()
            if message is not None:
                conn.send(message)

    @app.get("/chat")
    def chat_page() -> Response:
        return Response(_CHAT_PAGE, mimetype="text/html")

    @pine.new("/chat/ws/<room>")
    def chat(conn: Conn, ctx: Ctx) -> None:
        room = ctx.params["room"]
        conn.join(room)  # every message published to the room from now on
        pine.publish(room, {"system": "someone joined"})
        try:
            while True:
                text = conn.receive()
                if isinstance(text, str) and text.strip():
                    pine.publish(room, {"text": text[:500]})
        finally:
            pine.publish(room, {"system": "someone left"})

    return app


_CHAT_PAGE = """<!doctype html>
<meta charset="utf-8"><title>flask-pine-ws chat</title>
<style>body{font:15px system-ui;margin:2em auto;max-width:40em}#log{border:1px solid #ccc;
height:20em;overflow:auto;padding:.5em}.system{color:#777;font-style:italic}</style>
<h1>Chat in room <code id="room"></code></h1>
<p>Open this page in two tabs. <a href="/">Back to the live log</a></p>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" size="50" autofocus>
<button>Send</button></form>
<script>
const room = new URLSearchParams(location.search).get("room") || "lobby";
document.getElementById("room").textContent = room;
const log = document.getElementById("log");
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const base = location.pathname.replace(/chat$/, "");
const ws = new WebSocket(scheme + location.host + base + "chat/ws/" + encodeURIComponent(room));
ws.onmessage = (event) => {
  const msg = JSON.parse(event.data);
  const line = document.createElement("div");
  line.textContent = msg.text ?? msg.system;
  if (msg.system) line.className = "system";
  log.append(line);
  log.scrollTop = log.scrollHeight;
};
ws.onclose = (event) => { log.append(`closed (${event.code})`); };
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const text = document.getElementById("text");
  if (text.value) ws.send(text.value);
  text.value = "";
};
</script>
"""


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
            print(f"Chat on a channel: {url}chat", flush=True)
        print("Ctrl-C to stop.", flush=True)

    try:
        serve(create_app(log_path), host=args.host, port=args.port, on_ready=ready)
    except PortInUse as exc:
        other = args.port + 1 if args.port else 0
        what = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        # The interpreter as it was run (.venv/bin/python), not a bare "python"
        # that a fresh Debian shell does not have.
        python = os.path.relpath(sys.executable)
        if python.startswith(".."):
            python = sys.executable
        print(f"example_app.py: port {args.port} {what} on {args.host}; "
              f"pick another one: {python} example_app.py --port {other} (or PORT={other})",
              file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        stop.set()
        writer.join(5)


if __name__ == "__main__":
    main()
