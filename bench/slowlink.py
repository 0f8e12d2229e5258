"""A 5 MiB backlog over a slow link (10 Mbit/s, 50 ms each way), with and without deflate.

What a viewer across the world waits for: the time from connecting until the
last byte of a file's backlog (``watch_file(path, conn)``, the whole file) has
arrived, for each way the server may send it:

- ``off``: permessage-deflate not negotiated (the client offers it, as every
  browser does; the server declines);
- ``never``: negotiated, every message plain;
- ``always``: negotiated, every message compressed (zlib level 1);
- ``auto``: negotiated, each message compressed when that gets it there
  sooner (``PINE_WS_DEFLATE_CHOICE = "auto"``, the default).

The link: two network namespaces joined by ``bench/delayline.py``, a process
owning one TUN device in each, which serialises packets at ``--rate-mbit`` and
delays them ``--delay-ms`` each way, as ``tc qdisc ... netem rate 10mbit delay
50ms`` would (this kernel has no ``sch_netem``). gunicorn runs in one
namespace, the client (the ``websockets`` package, offering deflate) in the
other. The same on loopback (no namespace, no delay line) shows what the
choice costs where compressing does not pay. With ``--browser``, Debian's
headless Chromium in the client namespace opens the viewer of the same file
and the time until its last line is in the page is measured too.

Needs root (``ip netns``, ``/dev/net/tun``); everything it creates is removed
at the end, on error and on Ctrl-C too::

    sudo python bench/slowlink.py              # 3 runs each, about 2 minutes
    sudo python bench/slowlink.py --runs 5 --browser
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gunicorn_flags import NO_CONTROL_SOCKET

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from flask_pine_ws import tcpinfo  # noqa: E402 - the repository's package, found above

NS_SERVER, NS_CLIENT = "pine-slow-srv", "pine-slow-cli"
DEV_SERVER, DEV_CLIENT = "pine-slow-s0", "pine-slow-c0"
ADDR_SERVER, ADDR_CLIENT = "10.203.0.1", "10.203.0.2"
PORT = 8765
FRAMED = "pine.watch.v1"

#: name -> (PINE_WS_ENABLE_COMPRESSION, PINE_WS_DEFLATE_CHOICE)
MODES: dict[str, tuple[bool, str]] = {
    "off": (False, "auto"), "never": (True, "never"),
    "always": (True, "always"), "auto": (True, "auto"),
}

_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
_TEMPLATES = (
    "[http] GET /api/orders/{n} 200 {ms}ms", "[http] POST /api/cart 201 {ms}ms",
    "[db] query orders.by_customer took {ms}ms (rows={n})",
    "[worker] job {n} done: sent 3 emails, order confirmed",
    "[pool] connection pool at 90% ({n}/100)",
    "[payments] charge {n} failed: card declined (code=card_declined)",
)


def write_log(path: Path, size: int) -> int:
    """``size`` bytes at most of log lines (a timestamp, a level, a varied message)."""
    rng = random.Random(1)
    t = 1_764_000_000.0
    out = bytearray()
    while True:
        t += rng.expovariate(50)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"
        line = (f"{stamp} {rng.choice(_LEVELS):<5} "
                + rng.choice(_TEMPLATES).format(n=rng.randint(1, 99999), ms=rng.randint(1, 900))
                + "\n").encode()
        if len(out) + len(line) > size:
            break
        out += line
    path.write_bytes(out)
    return len(out)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


# -- the link ---------------------------------------------------------------------

@contextlib.contextmanager
def slow_link(rate_mbit: float, delay_ms: float) -> Iterator[None]:
    """Two namespaces joined by the delay line, torn down whatever happens."""
    for ns in (NS_SERVER, NS_CLIENT):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)  # a leftover
    line: subprocess.Popen[str] | None = None
    try:
        sh("ip", "netns", "add", NS_SERVER)
        sh("ip", "netns", "add", NS_CLIENT)
        line = subprocess.Popen(
            [sys.executable, str(BENCH / "delayline.py"), "--a", DEV_SERVER, "--b", DEV_CLIENT,
             "--rate-mbit", str(rate_mbit), "--delay-ms", str(delay_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert line.stdout is not None
        if line.stdout.readline().strip() != "ready":
            raise RuntimeError("the delay line did not start")
        for ns, dev, addr, peer in ((NS_SERVER, DEV_SERVER, ADDR_SERVER, ADDR_CLIENT),
                                    (NS_CLIENT, DEV_CLIENT, ADDR_CLIENT, ADDR_SERVER)):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", addr, "peer", peer, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (NS_SERVER, NS_CLIENT):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        if line is not None:
            with contextlib.suppress(OSError):
                assert line.stdin is not None
                line.stdin.close()  # its signal to stop
            try:
                line.wait(10)
            except subprocess.TimeoutExpired:
                line.kill()
                line.wait(10)


def in_ns(ns: str | None, argv: list[str]) -> list[str]:
    return argv if ns is None else ["ip", "netns", "exec", ns, *argv]


@contextlib.contextmanager
def server(ns: str | None, addr: str, log: Path, mode: str, workdir: Path) -> Iterator[None]:
    """gunicorn with ``slowlink_app`` in ``ns`` on ``addr:PORT``, stopped after use."""
    compression, choice = MODES[mode]
    env = {**os.environ, "BENCH_FILE": str(log), "PYTHONPATH": str(ROOT),
           "PINE_WS_ENABLE_COMPRESSION": json.dumps(compression),
           "PINE_WS_DEFLATE_CHOICE": json.dumps(choice)}
    out = (workdir / f"server-{mode}-{addr}.log").open("wb")
    proc = subprocess.Popen(
        in_ns(ns, [sys.executable, "-m", "gunicorn", "-k", "gthread", "-w", "1", "--threads",
                   "8", "-b", f"{addr}:{PORT}", *NO_CONTROL_SOCKET, "--chdir", str(BENCH),
                   "slowlink_app:app"]),
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.close()


def run_client(ns: str | None, argv: list[str], timeout: float) -> Any:
    done = subprocess.run(in_ns(ns, [sys.executable, str(BENCH / "slowlink.py"), *argv]),
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


# -- the client (runs in the client namespace) ----------------------------------------

def wait_ready(addr: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((addr, PORT), timeout=2) as sock:
                sock.sendall(b"GET /__ready HTTP/1.0\r\n\r\n")
                if b" 200 " in sock.recv(100):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no server at {addr}:{PORT} after {timeout} s")
        time.sleep(0.1)


async def fetch_backlog(addr: str, expected: bytes) -> dict[str, Any]:
    """Connect, read the framed backlog to its last byte, check it byte for byte."""
    from websockets.asyncio.client import connect  # the bench extra's client

    started = time.monotonic()
    async with connect(f"ws://{addr}:{PORT}/watch", subprotocols=[FRAMED],  # type: ignore[list-item]
                       compression="deflate", max_size=None, open_timeout=30) as ws:
        opened = time.monotonic()
        size: int | None = None
        parts: list[bytes] = []
        got = 0
        while size is None or got < size:
            msg = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(msg, str):
                event = json.loads(msg)
                if event["event"] == "open":
                    size = int(event["size"]) - int(event["offset"])
                continue
            parts.append(msg)
            got += len(msg)
        done = time.monotonic()
        info = tcpinfo.read(ws.transport.get_extra_info("socket"))
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
    if b"".join(parts) != expected:
        raise RuntimeError("the backlog arrived altered")
    return {"seconds": done - started, "handshake": opened - started,
            "wire_bytes": info.bytes_received if info else None,
            "deflate": bool(extensions and "permessage-deflate" in extensions)}


def browser_backlog(addr: str, last_line: str, timeout: float = 120.0) -> dict[str, Any]:
    """Headless Chromium on the viewer: seconds until the file's last line is in the page."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    js = ("last => { const l = document.querySelectorAll('#log .line');"
          " return l.length > 0 && l[l.length - 1].textContent === last; }")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 600})
            started = time.monotonic()
            page.goto(f"http://{addr}:{PORT}/logs/app", timeout=timeout * 1000)
            page.wait_for_function(js, arg=last_line, timeout=timeout * 1000, polling=20)
            return {"seconds": time.monotonic() - started}
        finally:
            browser.close()


def client_main(args: argparse.Namespace) -> None:
    wait_ready(args.addr)
    results = []
    if args.browser:
        last = Path(args.file).read_text(encoding="utf-8").splitlines()[-1]
        browser_backlog(args.addr, last)  # once, not timed: Chromium's caches and the page's files
        results = [browser_backlog(args.addr, last) for _ in range(args.runs)]
    else:
        expected = Path(args.file).read_bytes()
        for _ in range(args.runs):
            results.append(asyncio.run(fetch_backlog(args.addr, expected)))
    print(json.dumps(results))


# -- the driver -------------------------------------------------------------------

def measure(ns_server: str | None, ns_client: str | None, addr: str, log: Path,
            workdir: Path, runs: int, browser: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in MODES:
        with server(ns_server, addr, log, mode, workdir):
            argv = ["client", "--addr", addr, "--file", str(log), "--runs", str(runs)]
            runs_ws = run_client(ns_client, argv, 600)
            row: dict[str, Any] = {"runs": runs_ws}
            if browser:
                row["browser"] = run_client(ns_client, [*argv, "--browser"], 900)
        seconds = [r["seconds"] for r in runs_ws]
        row["median"] = statistics.median(seconds)
        row["wire_bytes"] = statistics.median(r["wire_bytes"] or 0 for r in runs_ws)
        row["deflate"] = runs_ws[0]["deflate"]
        if browser:
            row["browser_median"] = statistics.median(r["seconds"] for r in row["browser"])
        out[mode] = row
        shown = f", viewer {row['browser_median']:.2f} s" if browser else ""
        print(f"    {mode:6}: {row['median']:.3f} s (runs {', '.join(f'{s:.3f}' for s in seconds)})"
              f", {row['wire_bytes'] / 1e6:.2f} MB on the wire{shown}", flush=True)
    return out


def table(name: str, rows: dict[str, Any], size: int, browser: bool) -> str:
    base = rows["off"]["median"]
    head = "| server sends | deflate | seconds | MB on the wire | MB/s of log | x off |"
    rule = "|---|---|--:|--:|--:|--:|"
    if browser:
        head += " viewer: last line shown, s | x off |"
        rule += "--:|--:|"
    lines = [f"{name}:", "", head, rule]
    for mode, row in rows.items():
        line = (f"| {mode} | {'yes' if row['deflate'] else 'no'} | {row['median']:.3f} "
                f"| {row['wire_bytes'] / 1e6:.2f} | {size / 1e6 / row['median']:.2f} "
                f"| {row['median'] / base:.2f}x |")
        if browser:
            line += (f" {row['browser_median']:.2f} "
                     f"| {row['browser_median'] / rows['off']['browser_median']:.2f}x |")
        lines.append(line)
    return "\n".join(lines)


def driver_main(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("slowlink.py needs root (ip netns, /dev/net/tun)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(130))
    results: dict[str, Any] = {"rate_mbit": args.rate_mbit, "delay_ms": args.delay_ms,
                               "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="pine-slowlink-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        log = workdir / "app.log"
        size = write_log(log, int(args.mib * 2**20))
        results["backlog_bytes"] = size
        print(f"backlog: {size:,} bytes of log lines; {args.runs} runs each, medians", flush=True)
        print(f"  slow link ({args.rate_mbit:g} Mbit/s, {args.delay_ms:g} ms each way)", flush=True)
        with slow_link(args.rate_mbit, args.delay_ms):
            results["slow"] = measure(NS_SERVER, NS_CLIENT, ADDR_SERVER, log, workdir,
                                      args.runs, args.browser)
        print("  loopback", flush=True)
        results["loopback"] = measure(None, None, "127.0.0.1", log, workdir, args.runs,
                                      args.browser)
    print()
    print(table(f"Slow link ({args.rate_mbit:g} Mbit/s, {args.delay_ms:g} ms each way)",
                results["slow"], size, args.browser))
    print()
    print(table("Loopback", results["loopback"], size, args.browser))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    if args.md:
        MARKDOWN.write_text(markdown(results, args))
        print(f"\nwritten: {MARKDOWN}")
    return 0


#: The section ``bench/report.py`` appends to docs/benchmarks.md.
MARKDOWN = BENCH / "slowlink.md"


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    size = results["backlog_bytes"]
    slow, loop = results["slow"], results["loopback"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip()
    kernel = os.uname().release
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    browser = " --browser" if args.browser else ""
    viewer = ("; with `--browser`, the viewer in headless Chromium (in the client namespace): "
              "from opening its page to its last line being the file's last line"
              if args.browser else "")
    rate, delay = f"{args.rate_mbit:g} Mbit/s", f"{args.delay_ms:g} ms"
    viewer_note = (f" The viewer's times include the page's own work on {size / 2**20:.0f} MiB "
                   f"of lines, which the loopback rows show (~{loop['off']['browser_median']:.1f} "
                   f"s): over the slow link it shows the last line "
                   f"{slow['off']['browser_median'] - slow['auto']['browser_median']:.1f} s "
                   "sooner with `auto` than with `off`."
                   if args.browser else "")
    return f"""## Slow link

A {size / 2**20:.0f} MiB backlog of log lines (`watch_file(path, conn)`: the whole file) over
{rate} with {delay} each way, from connecting to the last byte received
(the `websockets` client, offering permessage-deflate as browsers do){viewer}.
Medians of {args.runs} runs; `python bench/slowlink.py --runs {args.runs}{browser} --md`
({when}, flask-pine-ws at `{commit}`, Linux {kernel}).

This kernel has no `sch_netem` (`tc qdisc add ... netem` answers "Specified qdisc kind is
unknown"), so the link is emulated as netem would do it: two network namespaces joined by
`bench/delayline.py`, a process owning one TUN device in each, which serialises each
direction's packets at {rate} and then holds each {delay} (netem's order: rate, then
delay; 1,000 packets of queue). gunicorn runs in one namespace, the client in the other.

- **off**: deflate not negotiated; **never**: negotiated, every message plain; **always**:
  every message compressed (zlib level 1); **auto**: each message compressed when that gets it
  there sooner (`PINE_WS_DEFLATE_CHOICE`, the default).

{table(f"Over {rate}, {delay} each way", slow, size, args.browser)}

{table("On loopback (no delay line)", loop, size, args.browser)}

Over the slow link compressing wins by the ratio ({slow["auto"]["wire_bytes"] / 1e6:.2f} MB
on the wire instead of {slow["off"]["wire_bytes"] / 1e6:.2f}) and `auto` compresses from the
first message: a fresh connection's round trip and window already put its rate far below
zlib's. On loopback `auto` sends every chunk plain, as `off` does; there the whole backlog
takes tens of milliseconds, and the plain rows differ by the noise of a shared machine, while
`always` pays zlib for nothing.{viewer_note}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    client = sub.add_parser("client", help="(internal) the client, in its namespace")
    client.add_argument("--addr", required=True)
    client.add_argument("--file", required=True)
    client.add_argument("--runs", type=int, default=3)
    client.add_argument("--browser", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (medians)")
    parser.add_argument("--mib", type=float, default=5.0, help="the backlog, MiB")
    parser.add_argument("--rate-mbit", type=float, default=10.0)
    parser.add_argument("--delay-ms", type=float, default=50.0, help="each way")
    parser.add_argument("--browser", action="store_true",
                        help="also time the viewer in headless Chromium")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--md", action="store_true",
                        help="write bench/slowlink.md (docs/benchmarks.md's section)")
    args = parser.parse_args()
    if args.command == "client":
        client_main(args)
        return 0
    return driver_main(args)


if __name__ == "__main__":
    sys.exit(main())
