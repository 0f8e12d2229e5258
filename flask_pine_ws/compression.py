"""Whether to compress one message: the rule, and what it is measured from.

permessage-deflate is negotiated per connection, but RFC 7692 lets a sender
send any message uncompressed (RSV1 clear). Every browser offers the
extension, so whether it pays is decided here, per message, by which way the
message reaches the peer sooner:

- sent plain, it costs ``size / link`` seconds on the wire;
- compressed, it costs ``size / zlib`` seconds of CPU (zlib's measured rate)
  and then ``size * ratio / link`` on the wire; while the socket still holds
  ``queued`` bytes that take ``queued / link`` to leave, compressing overlaps
  with that wait and costs only what exceeds it.

So a message is compressed when
``max(size / zlib, queued / link) + size * ratio / link < queued / link + size / link``:
on an idle socket, when the link is slower than ``zlib x (1 - ratio)``. With
zlib at level 1 on log text (~170 MB/s, ratio ~0.12 on a 2 GHz core) that is
below ~150 MB/s: a 10 Mbit/s link compresses everything, loopback nothing. A
message under :data:`MIN_SIZE` bytes is never compressed (a frame's TCP/IP
packet costs 52 bytes anyway, and zlib's call costs ~4 us).

The figures: ``link`` is what the kernel says of the connection
(:mod:`.tcpinfo`: the larger of its delivery rate and its congestion window
per round trip, so a fresh connection already has a figure from its
handshake); ``zlib`` is the rate of the compressions this process did
(byte-weighted, decaying), starting from :data:`PRIOR_RATE`; ``ratio`` is the
connection's own (its content), starting from the process's. A connection
whose ratio says "not worth it" while its link is slow still compresses one
message in :data:`PROBE_EVERY` to see whether its content changed. Without a
link figure (a Unix socket behind a local proxy) every message is compressed,
as before the choice existed.

Level 1 (``zlib.compressobj(1, ...)``), not zlib's default 6: on log lines it
is ~3x faster (170 against 58 MB/s) for a ratio of 0.12 against 0.09, and the
ratio lost is worth less than the time on any link slow enough to compress for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from .tcpinfo import TcpInfo

#: ``PINE_WS_DEFLATE_CHOICE``: per message (``"auto"``), or every message one way.
Choice = Literal["auto", "always", "never"]

CHOICES: tuple[Choice, ...] = ("auto", "always", "never")

#: zlib's level: see the module's docstring for why 1.
LEVEL = 1

#: A message shorter than this is never compressed.
MIN_SIZE = 128

#: zlib's rate (input bytes a second) before this process measured any.
PRIOR_RATE = 150e6

#: The compressed share of a message's bytes before any was measured.
PRIOR_RATIO = 0.15

#: A connection whose content compresses too little to pay still compresses
#: one message in this many, to notice when it starts paying.
PROBE_EVERY = 16

#: How much of the past each new measurement keeps (byte-weighted sums).
_DECAY = 0.9


def parse_choice(value: object) -> Choice:
    """``PINE_WS_DEFLATE_CHOICE`` checked: ``"auto"``, ``"always"`` or ``"never"``."""
    for choice in CHOICES:
        if value == choice:
            return choice
    raise ValueError(f"PINE_WS_DEFLATE_CHOICE must be one of {', '.join(CHOICES)}, "
                     f"not {value!r}")


def compress_wins(size: int, *, zlib_rate: float, ratio: float, link_rate: float,
                  queued: int = 0) -> bool:
    """Whether ``size`` bytes compressed reach the peer before the same bytes sent plain.

    :param zlib_rate: input bytes a second zlib compresses here.
    :param ratio: compressed bytes per input byte expected for this message.
    :param link_rate: bytes a second the connection carries; ``0``: unknown
        (then compressing wins, as the link may be slow).
    :param queued: bytes waiting in the socket ahead of this message.
    """
    if size < MIN_SIZE:
        return False
    if link_rate <= 0:
        return True
    wait = queued / link_rate
    plain = wait + size / link_rate
    compressed = max(size / zlib_rate, wait) + size * ratio / link_rate
    return compressed < plain


class Meter:
    """Decaying, byte-weighted sums of what zlib did: its rate and its ratio.

    Updated without a lock: a lost update between threads only drops one
    sample from an average.
    """

    def __init__(self, rate: float = PRIOR_RATE, ratio: float = PRIOR_RATIO) -> None:
        # Seeded as if 64 KiB had been measured at the prior figures.
        self._in = 65536.0
        self._out = 65536.0 * ratio
        self._seconds = 65536.0 / rate

    @property
    def rate(self) -> float:
        return self._in / self._seconds if self._seconds > 0 else PRIOR_RATE

    @property
    def ratio(self) -> float:
        return self._out / self._in

    def record(self, size: int, compressed: int, seconds: float) -> None:
        self._in = self._in * _DECAY + size
        self._out = self._out * _DECAY + compressed
        self._seconds = self._seconds * _DECAY + seconds


#: This process's zlib: the rate is the machine's, shared by every connection.
PROCESS = Meter()


class Chooser:
    """One connection's choice, message by message (called under its send lock)."""

    def __init__(self, choice: Choice = "auto", meter: Meter = PROCESS) -> None:
        self.choice = choice
        self._meter = meter
        self._own = Meter(meter.rate, meter.ratio)  # this connection's content
        self._declined = 0  # messages in a row sent plain for their ratio alone

    def decide(self, size: int, read_info: Callable[[], TcpInfo | None]) -> bool:
        """Whether to compress a message of ``size`` bytes; ``read_info``: the socket's now.

        ``read_info`` is called only when the answer depends on it (one
        ``getsockopt``): not for a small message, nor under a fixed choice.
        """
        if self.choice != "auto":
            return self.choice == "always" and size > 0
        if size < MIN_SIZE:
            return False
        info = read_info()
        link = info.link_rate if info is not None else 0.0
        queued = info.notsent if info is not None else 0
        rate = self._meter.rate
        if compress_wins(size, zlib_rate=rate, ratio=self._own.ratio, link_rate=link,
                         queued=queued):
            self._declined = 0
            return True
        if compress_wins(size, zlib_rate=rate, ratio=0.0, link_rate=link, queued=queued):
            # Only the ratio says no: look again now and then.
            self._declined += 1
            if self._declined >= PROBE_EVERY:
                self._declined = 0
                return True
        return False

    def record(self, size: int, compressed: int, seconds: float) -> None:
        """One message compressed: ``size`` bytes into ``compressed`` in ``seconds``."""
        self._meter.record(size, compressed, seconds)
        self._own.record(size, compressed, seconds)


__all__ = ["CHOICES", "LEVEL", "MIN_SIZE", "Choice", "Chooser", "Meter", "compress_wins",
           "parse_choice"]
