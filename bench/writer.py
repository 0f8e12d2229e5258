"""The writer process: appends latency lines at a fixed rate, or the burst.

A process of its own, so that the client's event loop never delays a write or
its timestamp. Prints one JSON object when done.

    python bench/writer.py latency FILE --rate 200 --duration 10
    python bench/writer.py burst FILE --size 50000000
"""

from __future__ import annotations

import argparse
import json
import os
import time

from lines import LINE_BYTES, burst_blob, latency_line

#: The burst is written in blocks of whole lines: as fast as the disk cache
#: takes it, so that the readers, not the writer, set the pace.
BLOCK_LINES = 655


def write_latency(path: str, rate: float, duration: float) -> dict[str, int]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    count = int(rate * duration)
    start = time.monotonic()
    try:
        for seq in range(count):
            # An absolute schedule: a late write does not shift the next ones.
            delay = start + seq / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            os.write(fd, latency_line(seq, time.monotonic_ns()))
    finally:
        os.close(fd)
    return {"sent": count}


def write_burst(path: str, size: int) -> dict[str, int]:
    blob = burst_blob(size)
    block = BLOCK_LINES * LINE_BYTES
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        t0 = time.monotonic_ns()
        view = memoryview(blob)
        for start in range(0, len(blob), block):
            chunk = view[start:start + block]
            while chunk:
                chunk = chunk[os.write(fd, chunk):]
        t1 = time.monotonic_ns()
    finally:
        os.close(fd)
    return {"bytes": len(blob), "t0_ns": t0, "t1_ns": t1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["latency", "burst"])
    parser.add_argument("path")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=50_000_000)
    args = parser.parse_args()
    if args.mode == "latency":
        result = write_latency(args.path, args.rate, args.duration)
    else:
        result = write_burst(args.path, args.size)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
