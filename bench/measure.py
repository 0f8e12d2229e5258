"""The measurements, each run against one started target.

Every wait is bounded: a target that never delivers is reported (lines lost,
bytes missing, clients that never got a line), never waited for forever.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import procstat
from clients import BurstSink, LineSink, Stream, WsStream
from lines import append, marker_line, probe_line
from targets import BENCH, Target

Result = dict[str, Any]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(ns: float) -> float:
    return round(ns / 1e6, 3)


async def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


_probe_count = 0


async def warm_up(path: Path, sinks: list[LineSink] | list[BurstSink],
                  timeout: float = 30) -> int:
    """Append probe lines until every client has one: each follows the file.

    Then wait until every client has the last probe written, so that no
    probe is still on its way when a measurement starts (with 1,000 clients
    a slow server may lag several probes behind). Returns how many clients
    never saw a probe within ``timeout``.
    """
    global _probe_count
    deadline = time.monotonic() + timeout
    wait = 0.25
    while time.monotonic() < deadline:
        _probe_count += 1
        append(path, probe_line(_probe_count))
        # Probe again only for clients that began following after this probe;
        # backing off, so that a slow server is not flooded with probes.
        found = await wait_for(lambda: all(s.probed for s in sinks), wait)
        wait = min(2.0, wait * 2)
        if found:
            await wait_for(_caught_up(sinks, _probe_count),
                           max(1.0, deadline - time.monotonic()), step=0.01)
            await asyncio.sleep(0.1)
            return 0
    return sum(not s.probed for s in sinks)


def _caught_up(sinks: list[LineSink] | list[BurstSink], last: int) -> Callable[[], bool]:
    return lambda: all(s.last_probe >= last for s in sinks)


async def run_writer(args: list[str], timeout: float) -> dict[str, int]:
    """Run writer.py as its own process (off this event loop) and return its report."""
    proc = subprocess.Popen([sys.executable, str(BENCH / "writer.py"), *args],
                            stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the writer did not finish")
            await asyncio.sleep(0.02)
        assert proc.stdout is not None
        report: dict[str, int] = json.loads(proc.stdout.read())
        return report
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


async def open_streams(target: Target, count: int, sink: Callable[[], Any],
                       concurrency: int = 50) -> tuple[list[Stream], int]:
    """Open ``count`` clients, ``concurrency`` handshakes at a time; returns (open, failed)."""
    gate = asyncio.Semaphore(concurrency)
    opened: list[Stream] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        stream = target.stream()
        async with gate:
            try:
                await asyncio.wait_for(stream.open(sink()), 60)
                opened.append(stream)
            except (OSError, TimeoutError, RuntimeError, Exception):  # noqa: BLE001 - counted
                failed += 1
                await close_streams([stream])

    await asyncio.gather(*(one() for _ in range(count)))
    return opened, failed


async def close_streams(streams: list[Stream]) -> None:
    async def one(stream: Stream) -> None:
        try:
            await asyncio.wait_for(stream.close(), 10)
        except Exception:  # noqa: BLE001 - a client that will not close is dropped
            pass

    for start in range(0, len(streams), 200):
        await asyncio.gather(*(one(s) for s in streams[start:start + 200]))


async def latency(target: Target, path: Path, rate: float, duration: float) -> Result:
    """One client; ``rate`` lines a second for ``duration`` s; write-to-receive times."""
    streams, failed = await open_streams(target, 1, LineSink)
    if failed:
        raise RuntimeError("could not connect")
    sink = streams[0].sink
    assert isinstance(sink, LineSink)
    try:
        if await warm_up(path, [sink]):
            raise RuntimeError("the client never saw a probe line")
        sent = (await run_writer(["latency", str(path), "--rate", str(rate),
                                  "--duration", str(duration)], duration + 30))["sent"]
        await wait_for(lambda: len(sink.latency) >= sent, 5)
    finally:
        await close_streams(streams)
    seqs = [s for s, _, _ in sink.latency]
    values = [(recv - sent_ns) / 1e6 for _, sent_ns, recv in sink.latency]
    return {
        "sent": sent, "received": len(set(seqs)), "lost": sent - len(set(seqs)),
        "duplicates": len(seqs) - len(set(seqs)), "in_order": seqs == sorted(seqs),
        "p50_ms": round(pct(values, 0.5), 3), "p90_ms": round(pct(values, 0.9), 3),
        "p99_ms": round(pct(values, 0.99), 3),
        "max_ms": round(max(values), 3) if values else float("nan"),
        "samples_ms": [round(v, 3) for v in values],
    }


async def burst(target: Target, path: Path, blob: bytes, timeout: float) -> Result:
    """``len(blob)`` bytes appended at once; MB/s until the client holds the last byte."""
    sink = BurstSink(blob)
    streams, failed = await open_streams(target, 1, lambda: sink)
    if failed:
        raise RuntimeError("could not connect")
    try:
        if await warm_up(path, [sink]):
            raise RuntimeError("the client never saw a probe line")
        report = await run_writer(["burst", str(path), "--size", str(len(blob))], 120)
        complete = await wait_for(sink.done.is_set, timeout, step=0.02)
    finally:
        await close_streams(streams)
    elapsed = (sink.last_ns - report["t0_ns"]) / 1e9 if sink.pos else float("nan")
    return {
        "bytes": len(blob), "received": sink.pos, "complete": complete and sink.pos == len(blob),
        "in_order": sink.in_order, "first_bad_byte": sink.first_bad,
        "seconds": round(elapsed, 3), "mb_s": round(sink.pos / 1e6 / elapsed, 2) if sink.pos else 0,
        "writer_seconds": round((report["t1_ns"] - report["t0_ns"]) / 1e9, 3),
    }


async def fanout(target: Target, path: Path, counts: list[int], idle: float,
                 appends: int) -> Result:
    """N clients on one file: one line's time to the last, and the server's RSS and idle CPU.

    Clients are added level by level (1, then up to 100, ...) and kept.
    """
    streams: list[Stream] = []
    results: Result = {}
    failed = 0
    try:
        for n in counts:
            if n > target.max_fanout:
                results[str(n)] = {"skipped": f"measured up to {target.max_fanout} clients"}
                continue
            more, bad = await open_streams(target, n - len(streams), LineSink)
            streams += more
            failed += bad
            sinks = [s.sink for s in streams if isinstance(s.sink, LineSink)]
            never = await warm_up(path, sinks, timeout=30)
            await asyncio.sleep(0.5)
            pids = target.pids(streams)
            settle = await settled(pids)
            rss = procstat.rss_bytes(pids)
            nthreads = procstat.threads(pids)
            coarse0, fine0 = procstat.cpu_ns(pids)
            await asyncio.sleep(idle)
            coarse1, fine1 = procstat.cpu_ns(pids)
            lasts: list[float] = []
            medians: list[float] = []
            missing = 0
            for k in range(appends):
                key = f"fan-{n}-{k}"
                t0 = append(path, marker_line(key, time.monotonic_ns()))
                await wait_for(_all_have(sinks, key), 10)
                got = [s.markers[key][1] - t0 for s in sinks if key in s.markers]
                missing += len(sinks) - len(got)
                if got:
                    lasts.append(max(got))
                    medians.append(statistics.median(got))
                await asyncio.sleep(0.2)
            results[str(n)] = {
                "clients": len(streams), "failed_connects": failed, "never_followed": never,
                "last_ms": ms(statistics.median(lasts)) if lasts else None,
                "median_client_ms": ms(statistics.median(medians)) if medians else None,
                "missing": missing, "rss_mb": round(rss / 2**20, 1), "settle_s": settle,
                "processes": len(pids), "threads": nthreads,
                "idle_cpu_ms": ms((coarse1 - coarse0) / idle * 10),
                "idle_cpu_ms_sched": ms((fine1 - fine0) / idle * 10),
            }
    finally:
        await close_streams(streams)
    return results


async def settled(pids: list[int], limit: float = 20.0) -> float:
    """Wait until the server is quiet; return how long it kept working, in seconds.

    Every client has the last line, but a server may still be at work (a
    backlog of file events dispatched to every watcher): its idle CPU is
    measured from the first half second in which it used under 10 ms.
    """
    start = time.monotonic()
    while time.monotonic() - start < limit:
        before = procstat.cpu_ns(pids)[1]
        await asyncio.sleep(0.5)
        if procstat.cpu_ns(pids)[1] - before < 10_000_000:
            break
    return round(max(0.0, time.monotonic() - start - 0.5), 1)


def _all_have(sinks: list[LineSink], key: str) -> Callable[[], bool]:
    return lambda: all(key in s.markers for s in sinks)


async def rotation(target: Target, path: Path, reps: int) -> Result:
    """The first line after ``mv log log.1; touch log``, and after a truncation."""
    streams, failed = await open_streams(target, 1, LineSink)
    if failed:
        raise RuntimeError("could not connect")
    sink = streams[0].sink
    assert isinstance(sink, LineSink)
    renamed: list[float] = []
    truncated: list[float] = []
    lost = 0
    try:
        if await warm_up(path, [sink]):
            raise RuntimeError("the client never saw a probe line")
        for k in range(reps):
            for kind, rotate, delays in (("mv", _rename, renamed), ("trunc", _truncate, truncated)):
                before = f"{kind}-before-{k}"
                append(path, marker_line(before, time.monotonic_ns()) * 20)  # > 1 line
                await wait_for(_all_have([sink], before), 10)
                await asyncio.sleep(0.1)
                key = f"{kind}-{k}"
                t0 = rotate(path)
                append(path, marker_line(key, t0))
                if await wait_for(_all_have([sink], key), 10):
                    delays.append(sink.markers[key][1] - t0)
                else:
                    lost += 1
                await asyncio.sleep(0.2)
    finally:
        await close_streams(streams)
    return {
        "rename_ms": ms(statistics.median(renamed)) if renamed else None,
        "truncate_ms": ms(statistics.median(truncated)) if truncated else None,
        "rename_all_ms": [ms(v) for v in renamed], "truncate_all_ms": [ms(v) for v in truncated],
        "lost": lost,
    }


def _rename(path: Path) -> int:
    """``mv log log.1; touch log``; returns the time of the mv."""
    t0 = time.monotonic_ns()
    os.rename(path, path.with_name(path.name + ".1"))
    path.touch()
    return t0


def _truncate(path: Path) -> int:
    t0 = time.monotonic_ns()
    os.truncate(path, 0)
    return t0


class _Counter:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.total = 0
        self.done = asyncio.Event()

    def feed(self, data: bytes, now_ns: int) -> None:
        self.total += len(data)
        if self.total >= self.expected:
            self.done.set()


async def client_capacity(workdir: Path, floor: type[Target], messages: int,
                          bulk_mb: int) -> Result:
    """The client's own ceiling, against the asyncio floor's ``/flood``."""
    target = floor(workdir, 1)
    path = workdir / "capacity.log"
    path.touch()
    await target.start(path)
    result: Result = {}
    try:
        for name, count, size in (("small", messages, 100),
                                  ("bulk", bulk_mb * 16, 65536)):
            url = f"ws://127.0.0.1:{target.port}/flood?count={count}&size={size}"
            counter = _Counter(count * size)
            stream = WsStream(url)
            t0 = time.monotonic_ns()
            await stream.open(counter)
            await wait_for(counter.done.is_set, 120, step=0.01)
            elapsed = (time.monotonic_ns() - t0) / 1e9
            await stream.close()
            # rates from what arrived, not from what was asked for
            result[name] = {"messages": count, "size": size, "received_bytes": counter.total,
                            "seconds": round(elapsed, 3),
                            "msgs_s": round(counter.total / size / elapsed),
                            "mb_s": round(counter.total / 1e6 / elapsed, 1)}
    finally:
        await target.stop()
    return result



