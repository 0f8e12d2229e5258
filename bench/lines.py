"""The lines the benchmark writes, and how a client recognises them.

Every measurement appends lines of a known shape to the followed file, so that
one parser serves every target, whatever its framing (bytes as they come,
one message per line, socket.io events):

- ``P <k>``: a probe, written until every client has seen one, so that a
  measurement starts only once each client is really following the file;
- ``L <seq> <write ns> <padding>``: a latency line, 100 bytes, stamped with
  ``time.monotonic_ns()`` (CLOCK_MONOTONIC is one clock for every process);
- ``M <key> <write ns>``: a marker (fan-out, rotation, truncation), one line;
- the burst: :func:`burst_blob`, 100-byte lines numbered from 0, compared
  byte for byte by the client.
"""

from __future__ import annotations

import os
import time

LINE_BYTES = 100


def latency_line(seq: int, now_ns: int) -> bytes:
    """A 100-byte latency line: ``L <seq> <ns> xxx...\\n``."""
    head = f"L {seq:08d} {now_ns:020d} ".encode()
    return head + b"x" * (LINE_BYTES - 1 - len(head)) + b"\n"


def marker_line(key: str, now_ns: int) -> bytes:
    return f"M {key} {now_ns}\n".encode()


def probe_line(k: int) -> bytes:
    return f"P {k}\n".encode()


def burst_blob(size: int) -> bytes:
    """``size`` bytes (rounded down to whole lines) of numbered 100-byte lines."""
    count = size // LINE_BYTES
    pad = b"." * (LINE_BYTES - 12)
    return b"".join(b"%010d " % i + pad + b"\n" for i in range(count))


def append(path: str | os.PathLike[str], data: bytes) -> int:
    """Append ``data`` in one write and return the time just before it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        now = time.monotonic_ns()
        os.write(fd, data)
        return now
    finally:
        os.close(fd)
