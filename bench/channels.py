"""Channels: flask-pine-ws against Flask-SocketIO on the same Redis, in one run.

Both servers run under gunicorn gthread with 2 workers (Flask-SocketIO in
threading mode, its documented setup there, simple-websocket underneath; its
clients use the websocket transport only, so no sticky sessions are needed)
and share one ``redis-server`` started here on a free port. Publishing is
done from this process, as a job would: ``pine.publish`` in an app context,
and Flask-SocketIO's write-only ``SocketIO(message_queue=...).emit(...,
to=room)``. The clients are ``websockets`` asyncio connections in this
process (Socket.IO's Engine.IO 4 framing spoken directly), so both targets
are read by the same client code.

- fan-out: 1,000 members of one room over the 2 workers; one message
  published; time until the last member has it (median of ``--rounds``),
  messages 0.3 s apart, then 3 s apart (after idle);
- throughput: 10 members of another room; ``--messages`` published as fast
  as ``--publishers`` processes of their own go (4, each its own sequence);
  messages per second until the last member has the last one, every member
  checked for every message, once, in each publisher's order (median of 3),
  beside the publishers' own rate;
- RSS of the server (arbiter and workers) with the 1,010 members connected.

Run from the repository root (a few minutes; needs redis-server, the
``bench`` extra)::

    python bench/channels.py [--members 1000] [--messages 5000] [--rounds 7] [--plot]

``--plot`` writes ``docs/img/bench-channels.png``. The results JSON goes to
``--out`` (default ``bench/results/channels-<date>.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT / "tests"))
from redis_server import RedisServer  # noqa: E402

from server import Server, gunicorn_argv  # noqa: E402

LABELS = {"pine": "flask-pine-ws", "socketio": "Flask-SocketIO"}


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total / 1024


class Member:
    """One client in a room: records when each message arrived (``perf_counter``)."""

    def __init__(self, ws: ClientConnection, kind: str, room: Room) -> None:
        self.ws, self.kind, self.room = ws, kind, room
        self.got: list[str] = []

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                now = time.perf_counter()
                assert isinstance(raw, str)
                if self.kind == "socketio":
                    if raw == "2":  # Engine.IO ping
                        await self.ws.send("3")
                        continue
                    if not raw.startswith("42"):
                        continue
                    text = json.loads(raw[2:])[1]
                else:
                    text = raw
                self.got.append(text)
                self.room.arrived(text, now)
        except Exception:  # noqa: BLE001 - the connection closed at the end of the run
            pass


class Room:
    """Counts each message's arrivals; wakes a waiter when every member has it."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self._count: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._waiting: dict[str, asyncio.Event] = {}

    def arrived(self, text: str, now: float) -> None:
        n = self._count.get(text, 0) + 1
        self._count[text] = n
        self._last[text] = now
        if n == len(self.members) and text in self._waiting:
            self._waiting[text].set()

    def expect(self, text: str) -> asyncio.Event:
        event = self._waiting[text] = asyncio.Event()
        return event

    def last(self, text: str) -> float:
        return self._last[text]


async def join(kind: str, base: str, room_name: str, room: Room,
               gate: asyncio.Semaphore) -> Member:
    async with gate:
        if kind == "pine":
            ws = await connect(f"{base}/member/{room_name}", open_timeout=120, ping_interval=None,
                               compression=None, max_size=None, proxy=None)
            assert await asyncio.wait_for(ws.recv(), 60) == "joined"
        else:
            ws = await connect(f"{base}/socket.io/?EIO=4&transport=websocket", open_timeout=120,
                               ping_interval=None, compression=None, max_size=None, proxy=None)
            opening = await asyncio.wait_for(ws.recv(), 60)
            assert isinstance(opening, str) and opening.startswith("0{"), opening
            await ws.send("40")
            connected = await asyncio.wait_for(ws.recv(), 60)
            assert isinstance(connected, str) and connected.startswith("40"), connected
            await ws.send(f'420["join",{json.dumps(room_name)}]')
            ack = await asyncio.wait_for(ws.recv(), 60)
            assert ack == '430["joined"]', ack
    member = Member(ws, kind, room)
    room.members.append(member)
    return member


def publisher(kind: str, redis_url: str) -> tuple[Callable[[str, str], None], Callable[[], None]]:
    """``publish(room, text)`` as a job in another process would, and its cleanup."""
    if kind == "pine":
        from flask import Flask

        from flask_pine_ws import FlaskPineWS

        app = Flask("publisher")
        app.config["PINE_WS_MESSAGE_QUEUE"] = redis_url
        pine = FlaskPineWS(app)
        ctx = app.app_context()
        ctx.push()
        return pine.publish, ctx.pop
    from flask_socketio import SocketIO

    sio = SocketIO(message_queue=redis_url)

    def emit(room: str, text: str) -> None:
        sio.emit("msg", text, to=room)

    return emit, lambda: None


async def measure(kind: str, srv: Server, redis_url: str,
                  args: argparse.Namespace) -> dict[str, Any]:
    publish, cleanup = publisher(kind, redis_url)
    publish("warm-up", "-")  # the connection made before the clock starts
    gate = asyncio.Semaphore(64)
    big, small = Room(), Room()
    started = time.monotonic()
    members = await asyncio.gather(
        *(join(kind, srv.ws_url, "big", big, gate) for _ in range(args.members)),
        *(join(kind, srv.ws_url, "small", small, gate) for _ in range(10)))
    connect_s = time.monotonic() - started
    tasks = [asyncio.create_task(m.run()) for m in members]
    await asyncio.sleep(1.0)
    pids = [srv.proc.pid, *srv.worker_pids()]
    result: dict[str, Any] = {"connect_s": round(connect_s, 2), "rss_mib": round(rss_mib(pids), 1),
                              "workers": len(pids) - 1}

    # warm: messages 0.3 s apart; after idle: 3 s apart (flask-pine-ws ends a
    # member's sender thread after 2 s without work, and starts it again)
    for label, pause in (("", 0.3), ("_idle", 3.0)):
        fanout: list[float] = []
        for r in range(args.rounds):
            text = f"fan{label}-{r}"
            done = big.expect(text)
            await asyncio.sleep(pause)
            t0 = time.perf_counter()
            await asyncio.to_thread(publish, "big", text)
            await asyncio.wait_for(done.wait(), 120)
            fanout.append((big.last(text) - t0) * 1000)
        result[f"fanout{label}_ms"] = [round(x, 1) for x in fanout]
        result[f"fanout{label}_median_ms"] = round(statistics.median(fanout), 1)

    rates: list[float] = []
    publish_rates: list[float] = []  # the publisher's loop alone: what it could offer
    for r in range(3):
        # --publishers processes of their own, as jobs are (the clients' event
        # loop here does not share their interpreter), each its own sequence
        each = args.messages // args.publishers
        sequences = [[f"tp{r}.{p}-{i}" for i in range(each)] for p in range(args.publishers)]
        done = [small.expect(seq[-1]) for seq in sequences]
        before = [len(m.got) for m in small.members]
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--publisher", kind, redis_url, f"tp{r}.{p}", str(each),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            for p in range(args.publishers)]
        for proc in procs:
            assert proc.stdout is not None
            assert (await asyncio.wait_for(proc.stdout.readline(), 60)).strip() == b"ready"
        t0 = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        published = max([float((await asyncio.wait_for(proc.stdout.readline(), 300)).strip())
                         for proc in procs if proc.stdout is not None])
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 60)
        for event in done:
            await asyncio.wait_for(event.wait(), 300)
        elapsed = max(small.last(seq[-1]) for seq in sequences) - t0
        publish_rates.append(each * args.publishers / published)
        for m, b in zip(small.members, before, strict=True):
            got = m.got[b:]
            assert len(got) == each * args.publishers, f"{kind}: a message missing or twice"
            for p, seq in enumerate(sequences):
                mine = [t for t in got if t.startswith(f"tp{r}.{p}-")]
                assert mine == seq, f"{kind}: a member missed or reordered messages"
        rates.append(each * args.publishers / elapsed)
        await asyncio.sleep(0.5)
    result["msgs_s"] = [round(x) for x in rates]
    result["msgs_s_median"] = round(statistics.median(rates))
    result["publisher_msgs_s_median"] = round(statistics.median(publish_rates))
    result["rss_after_mib"] = round(rss_mib(pids), 1)

    await asyncio.gather(*(m.ws.close() for m in members), return_exceptions=True)
    for t in tasks:
        t.cancel()
    cleanup()
    return result


def start(kind: str, redis_url: str, members: int, log: Path) -> Server:
    threads = members // 2 + 100
    app = "channels_apps:pine_app" if kind == "pine" else "channels_apps:socketio_app"
    argv = gunicorn_argv(app, threads=threads, workers=2,
                         extra=["--worker-connections", str(threads * 2), "--backlog", "2048"])
    argv[argv.index("--chdir") + 1] = str(BENCH)
    env = {"BENCH_REDIS": redis_url, "BENCH_TARGET": kind}
    return Server(argv, env, log, ready_timeout=60)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("pine", "socketio") if k in results["targets"]]
    panels = [("fanout_median_ms", f"one message to {results['members']:,} members\n"
               "until the last has it (ms, lower is better)"),
              ("msgs_s_median", "messages per second, one channel,\n10 members (higher is better)"),
              ("rss_mib", f"server RSS with {results['members'] + 10:,} members\n"
               "(MiB, lower is better)")]
    colours = {"pine": "#2b7bba", "socketio": "#e08a2c"}
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, (key, title) in zip(axes, panels, strict=True):
        values = [results["targets"][k][key] for k in kinds]
        bars = ax.bar([LABELS[k] for k in kinds], values, color=[colours[k] for k in kinds],
                      label=[LABELS[k] for k in kinds])
        ax.bar_label(bars, fmt="{:,.0f}", fontsize=10)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=10)
        ax.margins(y=0.15)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in kinds]
    fig.legend(handles, [LABELS[k] + (" (threading, gunicorn gthread)" if k == "socketio" else
                                      " (gunicorn gthread)") for k in kinds],
               loc="lower center", ncol=2, fontsize=10, frameon=False)
    fig.suptitle("Channels on one Redis, 2 gunicorn workers (medians)", fontsize=12)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def publisher_process(kind: str, redis_url: str, prefix: str, count: int) -> None:
    """``--publisher``: publish ``<prefix>-<i>`` to the room ``small`` on ``go``; print seconds."""
    publish, cleanup = publisher(kind, redis_url)
    publish("warm-up", "-")  # the connection made before the clock starts
    texts = [f"{prefix}-{i}" for i in range(count)]
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for text in texts:
        publish("small", text)
    print(time.perf_counter() - t0, flush=True)
    cleanup()


def main() -> None:
    if sys.argv[1:2] == ["--publisher"]:
        kind, url, prefix, count = sys.argv[2:6]
        publisher_process(kind, url, prefix, int(count))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--targets", default="pine,socketio")
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a socket per member, both ends
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "members": args.members,
        "messages": args.messages, "rounds": args.rounds, "publishers": args.publishers,
        "cpus": os.cpu_count(),
        "targets": {}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        try:
            for kind in args.targets.split(","):
                srv = start(kind, redis.url, args.members, Path(tmp) / f"{kind}.log")
                try:
                    results["targets"][kind] = asyncio.run(measure(kind, srv, redis.url, args))
                finally:
                    srv.stop()
                print(kind, json.dumps(results["targets"][kind]), flush=True)
        finally:
            redis.stop()
    results["seconds"] = round(time.monotonic() - started, 1)
    targets = results["targets"]
    if "pine" in targets and "socketio" in targets:
        pine, peer = targets["pine"], targets["socketio"]
        results["ratios"] = {
            "fanout": round(peer["fanout_median_ms"] / pine["fanout_median_ms"], 2),
            "fanout_idle": round(peer["fanout_idle_median_ms"] / pine["fanout_idle_median_ms"], 2),
            "msgs_s": round(pine["msgs_s_median"] / peer["msgs_s_median"], 2),
            "rss": round(peer["rss_mib"] / pine["rss_mib"], 2)}
        print("ratios (>1: flask-pine-ws ahead):", json.dumps(results["ratios"]))
    out = args.out or BENCH / "results" / f"channels-{results['date'][:10]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print("results:", out)
    if args.plot:
        plot(results, ROOT / "docs" / "img" / "bench-channels.png")


if __name__ == "__main__":
    main()
