"""A slow link between two TUN devices: what ``tc qdisc ... netem rate R delay D`` does.

Some kernels have no ``sch_netem`` ("Specified qdisc kind is unknown"); this
process stands in for it. It owns two TUN devices (``--a`` and ``--b``,
created here, moved into network namespaces by the caller), and forwards
every IP packet read from one to the other as netem would: each direction
serialises its packets at ``--rate-mbit`` (a packet leaves when the one
before it has, plus its length at that rate), holds each for ``--delay-ms``
after that, and drops a packet that finds ``--limit`` packets already queued
(netem's default limit: 1000). It prints ``ready`` once both devices exist,
and runs until its stdin closes or it gets SIGTERM; the devices vanish with it.

Linux only, as root (``/dev/net/tun``)::

    python bench/delayline.py --a pine-s0 --b pine-c0 --rate-mbit 10 --delay-ms 50
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import struct
import sys
import time
from collections import deque

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    """A new TUN device ``name`` (IP packets, no packet-info header); its fd, non-blocking."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Direction:
    """One way of the link: a serialiser at ``rate`` bytes/s, then a fixed delay."""

    def __init__(self, src: int, dst: int, rate: float, delay: float, limit: int) -> None:
        self.src, self.dst = src, dst
        self.rate, self.delay, self.limit = rate, delay, limit
        self.queue: deque[tuple[float, bytes]] = deque()  # (when it arrives, packet)
        self.free_at = 0.0  # when the serialiser has sent what is queued
        self.forwarded = self.dropped = 0

    def take(self, now: float) -> None:
        """Read every packet waiting on ``src`` and schedule it."""
        while True:
            try:
                packet = os.read(self.src, 65536)
            except BlockingIOError:
                return
            except OSError:  # the device went with its namespace: the link is down
                raise SystemExit(0) from None
            if len(self.queue) >= self.limit:
                self.dropped += 1
                continue
            self.free_at = max(now, self.free_at) + len(packet) / self.rate
            self.queue.append((self.free_at + self.delay, packet))

    def give(self, now: float) -> float | None:
        """Write every packet due by ``now``; seconds until the next one is (``None``: empty)."""
        while self.queue and self.queue[0][0] <= now:
            _, packet = self.queue.popleft()
            try:
                os.write(self.dst, packet)
                self.forwarded += 1
            except OSError:
                self.dropped += 1  # the device is down (being torn down)
        return self.queue[0][0] - now if self.queue else None


def run(a: str, b: str, rate_mbit: float, delay_ms: float, limit: int) -> None:
    # A qdisc runs in the kernel, ahead of every process: on a busy machine
    # this one must not wait for a core behind the programs it carries.
    with contextlib.suppress(OSError):
        os.nice(-15)
    fa, fb = open_tun(a), open_tun(b)
    rate = rate_mbit * 1e6 / 8
    ways = {fa: Direction(fa, fb, rate, delay_ms / 1000, limit),
            fb: Direction(fb, fa, rate, delay_ms / 1000, limit)}
    poller = select.poll()
    for fd in ways:
        poller.register(fd, select.POLLIN)
    poller.register(sys.stdin.fileno(), select.POLLIN | select.POLLHUP)
    print("ready", flush=True)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    wait: float | None = None
    while not stopping:
        timeout = -1 if wait is None else max(0, int(wait * 1000 + 0.999))
        for fd, _ in poller.poll(timeout):
            if fd == sys.stdin.fileno():
                if not os.read(fd, 4096):
                    stopping = True
                continue
            ways[fd].take(time.monotonic())
        now = time.monotonic()
        waits = [w for w in (way.give(now) for way in ways.values()) if w is not None]
        wait = min(waits) if waits else None
    print(" ".join(f"{name}: {way.forwarded} forwarded, {way.dropped} dropped"
                   for name, way in ((a, ways[fa]), (b, ways[fb]))), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the first TUN device's name")
    parser.add_argument("--b", required=True, help="the second TUN device's name")
    parser.add_argument("--rate-mbit", type=float, default=10.0)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--limit", type=int, default=1000, help="packets queued per direction")
    args = parser.parse_args()
    run(args.a, args.b, args.rate_mbit, args.delay_ms, args.limit)


if __name__ == "__main__":
    main()
