"""The channel tests' app: members that join a room, and publishing over HTTP.

``/member/<room>`` joins ``room`` and says so (``{"joined": <worker pid>}``),
then obeys its client: ``leave``, ``join``, ``say <text>`` (publish to the
room). ``POST /publish/<room>`` publishes ``count`` messages ``<prefix>:<i>``
(padded to ``size`` bytes; ``kind`` text, bytes or json) inside the request.
``/stats`` reports the worker: pid, RSS, threads, members per room.
``PINE_WS_*`` come from the environment (``PINE_WS_MESSAGE_QUEUE`` names Redis).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import request

from flask_pine_ws import ChannelError, Conn, Ctx, FlaskPineWS
from flask_pine_ws.channels.backend import current

from common import base_app

pine = FlaskPineWS()


@pine.new("/member/<room>")
def member(conn: Conn, ctx: Ctx) -> None:
    room = ctx.params["room"]
    conn.join(room)
    conn.send_json({"joined": os.getpid()})
    while True:
        command = conn.receive()
        if command == "leave":
            conn.leave(room)
            conn.send_json({"left": True})
        elif command == "join":
            conn.join(room)
            conn.send_json({"joined": os.getpid()})
        elif isinstance(command, str) and command.startswith("say "):
            pine.publish(room, command[4:])


def message(prefix: str, i: int, size: int) -> str:
    text = f"{prefix}:{i}:"
    return text + "x" * max(0, size - len(text))


app = base_app(__name__, pine)


@app.post("/publish/<room>")
def publish(room: str) -> tuple[dict[str, Any], int]:
    count = int(request.args.get("count", "1"))
    size = int(request.args.get("size", "0"))
    prefix = request.args.get("prefix", "m")
    kind = request.args.get("kind", "text")
    started = time.monotonic()
    try:
        for i in range(count):
            text = message(prefix, i, size)
            if kind == "bytes":
                pine.publish(room, text.encode())
            elif kind == "json":
                pine.publish(room, {"prefix": prefix, "i": i})
            else:
                pine.publish(room, text)
    except ChannelError as exc:
        return {"error": str(exc), "seconds": time.monotonic() - started}, 503
    return {"published": count, "seconds": time.monotonic() - started}, 200


@app.get("/stats")
def stats() -> dict[str, Any]:
    with open(f"/proc/{os.getpid()}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    registry = current().registry
    return {"pid": os.getpid(), "rss_kib": rss,
            "threads": [t.name for t in threading.enumerate()],
            "members": {room: registry.members(room) for room in registry.channels()}}
