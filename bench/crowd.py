"""The crowds: a thousand clients connecting at once to a backlog, ten thousand idle watchers.

Two cases measured apart from the one-file run of :mod:`measure`, each on a
target started for it (with the backlog, or sized for ten thousand sockets)
and stopped after it:

- :func:`backlog`: a file of 10,000 lines; ``clients`` connect at once, each
  asking for the last ``lines`` lines (``tail -n``). From the first connect
  until the last client holds its backlog (and the median client); each
  client's lines are checked against the file's last lines, then one line
  appended must reach every client, right after its backlog, exactly once.
- :func:`watchers`: ``count`` clients follow one empty file (no backlog);
  once every one has a probe line, the server's RSS, threads and idle CPU,
  then ``appends`` lines at ``rate`` a second, each checked to arrive at
  every client exactly once and in order.

Every wait is bounded (connects, deliveries, the whole case): what did not
happen is counted, not waited for. Thousands of clients are dropped at the
end without a closing handshake (:meth:`clients.Stream.abort`), then the
server is stopped, whatever happened before.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import procstat
from clients import RecordSink, Stream
from lines import LINE_BYTES, append, marker_line, probe_line
from measure import ms, settled, wait_for
from targets import Target

Result = dict[str, Any]

#: The backlog case's file: 10,000 numbered lines of 100 bytes (1 MB).
BACKLOG_FILE_LINES = 10_000


def backlog_line(i: int) -> bytes:
    head = b"B %08d " % i
    return head + b"b" * (LINE_BYTES - 1 - len(head)) + b"\n"


async def connect_many(target: Target, count: int, concurrency: int,
                       deadline: float) -> tuple[list[Stream], list[Stream], float]:
    """``count`` clients, ``concurrency`` handshakes at a time, within ``deadline`` s.

    Returns (connected, every stream made, seconds until the last handshake
    ended). Handshakes not done by the deadline are cancelled and counted as
    failed; every stream made is returned so that the caller drops them all.
    """
    gate = asyncio.Semaphore(concurrency)
    made: list[Stream] = []
    connected: list[Stream] = []
    last = time.monotonic()
    start = last

    async def one() -> None:
        nonlocal last
        async with gate:
            stream = target.stream()
            made.append(stream)
            await stream.open(RecordSink())
            connected.append(stream)
            last = time.monotonic()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    _, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    # failures are counted from what connected; their exceptions are not the result
    await asyncio.gather(*tasks, return_exceptions=True)
    return connected, made, round(last - start, 3)


async def drop(streams: list[Stream]) -> None:
    """Drop every client at once, then let the event loop see the sockets closed."""
    for stream in streams:
        try:
            stream.abort()
        except (OSError, RuntimeError):  # a client that is gone already
            pass
    await asyncio.sleep(0.5)


def _sinks(streams: list[Stream]) -> list[RecordSink]:
    return [s.sink for s in streams if isinstance(s.sink, RecordSink)]


def _cost(target: Target, streams: list[Stream]) -> Result:
    pids = target.pids(streams)
    return {"rss_mb": round(procstat.rss_bytes(pids) / 2**20, 1), "processes": len(pids),
            "threads": procstat.threads(pids)}


async def backlog(cls: type[Target], workdir: Path, clients: int, lines: int = 10,
                  timeout: float = 120.0) -> Result:
    """``clients`` connect at once to a file of 10,000 lines, each for its last ``lines``."""
    path = workdir / "backlog.log"
    content = b"".join(backlog_line(i) for i in range(BACKLOG_FILE_LINES))
    path.write_bytes(content)
    expected = content.split(b"\n")[-lines - 1:-1]
    target = cls(workdir, clients, backlog=lines)
    made: list[Stream] = []
    try:
        await target.start(path)
        before = target.pids([])
        cpu0, switches0 = procstat.cpu_ns(before)[1], procstat.context_switches(before)
        t0 = time.monotonic_ns()
        # every client at once: the only limit is how fast this one process opens sockets
        streams, made, connect_s = await connect_many(target, clients, clients, timeout)
        sinks = _sinks(streams)
        await wait_for(lambda: all(len(k.lines) >= lines for k in sinks), timeout, step=0.01)
        after = target.pids(streams)
        # the server's work for the burst: its CPU and how often its threads were switched
        burst_cpu_ms = (procstat.cpu_ns(after)[1] - cpu0) / 1e6
        switches = procstat.context_switches(after) - switches0
        done = [(k.times[lines - 1] - t0) for k in sinks if len(k.lines) >= lines]
        wrong = sum(k.lines[:lines] != expected for k in sinks if len(k.lines) >= lines)
        await asyncio.sleep(0.5)
        cost = _cost(target, streams)
        # then one line appended reaches every client, right after its backlog
        line = marker_line("after-backlog", time.monotonic_ns())
        t1 = append(path, line)
        await wait_for(lambda: all(len(k.lines) > lines for k in sinks), 30, step=0.01)
        got = [k.times[lines] - t1 for k in sinks if len(k.lines) > lines]
        await asyncio.sleep(0.3)  # anything more would be a line sent twice
        whole = [*expected, line.rstrip(b"\n")]
        return {
            "clients": clients, "lines": lines, "connected": len(streams),
            "failed_connects": clients - len(streams), "connect_s": connect_s,
            "with_backlog": len(done), "wrong_backlog": wrong,
            "last_ms": ms(max(done)) if done else None,
            "median_client_ms": ms(statistics.median(done)) if done else None,
            "line_last_ms": ms(max(got)) if got else None,
            "line_median_client_ms": ms(statistics.median(got)) if got else None,
            "line_missing": len(sinks) - len(got),
            "cpu_ms_per_client": round(burst_cpu_ms / max(len(streams), 1), 3),
            "switches_per_client": round(switches / max(len(streams), 1), 1),
            # exactly the last lines, then the appended one, nothing else
            "exact": sum(k.lines == whole for k in sinks), **cost,
        }
    finally:
        await drop(made)
        await target.stop()
        path.unlink(missing_ok=True)


def median_round(runs: list[Result]) -> Result:
    """The round with the median ``last_ms`` of several, whole, with every round's figure.

    A round that did not finish (an error, no client with its lines) counts as
    the slowest. The checks hold for all rounds: ``wrong_backlog`` and
    ``failed_connects`` are the worst round's, ``exact`` the least.
    """
    if len(runs) == 1:
        return runs[0]
    def key(run: Result) -> float:
        last = run.get("last_ms")
        return float("inf") if last is None else float(last)
    ordered = sorted(runs, key=key)
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["rounds_last_ms"] = [run.get("last_ms") for run in runs]
    finished = [run for run in runs if "error" not in run and "skipped" not in run]
    if finished and "error" not in median and "skipped" not in median:
        for name, worst in (("wrong_backlog", max), ("failed_connects", max), ("exact", min)):
            median[name] = worst(run.get(name, 0) for run in finished)
    return median


async def watchers(cls: type[Target], workdir: Path, count: int, appends: int = 20,
                   rate: float = 4.0, idle: float = 10.0, concurrency: int = 500,
                   connect_timeout: float = 240.0, follow_timeout: float = 60.0,
                   deliver_timeout: float = 30.0) -> Result:
    """``count`` idle watchers of one file; then ``appends`` lines, each to every one."""
    path = workdir / "watchers.log"
    path.touch()
    target = cls(workdir, count)
    made: list[Stream] = []
    try:
        await target.start(path)
        streams, made, connect_s = await connect_many(target, count, concurrency,
                                                      connect_timeout)
        sinks = _sinks(streams)
        never = await follow_all(path, sinks, timeout=follow_timeout)
        await asyncio.sleep(0.5)
        pids = target.pids(streams)
        settle = await settled(pids)
        cost = _cost(target, streams)
        coarse0, fine0 = procstat.cpu_ns(pids)
        await asyncio.sleep(idle)
        coarse1, fine1 = procstat.cpu_ns(pids)
        written: list[tuple[bytes, int]] = []
        start = time.monotonic()
        for k in range(appends):
            # an absolute schedule: a late append does not shift the next ones
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            line = marker_line(f"watch-{k}", time.monotonic_ns())
            written.append((line.rstrip(b"\n"), append(path, line)))
        want = [line for line, _ in written]
        await wait_for(_all_have(sinks, appends), deliver_timeout, step=0.02)
        await asyncio.sleep(0.3)  # anything more would be a line sent twice
        lasts: list[float] = []
        medians: list[float] = []
        missing = 0
        exact = 0
        for line, t0 in written:
            arrived = [s.times[i] - t0 for s in sinks for i in _index(s, line)]
            missing += len(sinks) - len(arrived)
            if arrived:
                lasts.append(max(arrived))
                medians.append(statistics.median(arrived))
        for s in sinks:
            exact += [x for x in s.lines if x.startswith(b"M watch-")] == want
        return {
            "clients": count, "connected": len(streams), "failed_connects": count - len(streams),
            "connect_s": connect_s, "never_followed": never, "settle_s": settle,
            "appends": appends, "rate": rate,
            # every line to every client, once, in order
            "exact": exact, "missing": missing,
            "last_ms": ms(statistics.median(lasts)) if lasts else None,
            "last_max_ms": ms(max(lasts)) if lasts else None,
            "median_client_ms": ms(statistics.median(medians)) if medians else None,
            **cost,
            "idle_cpu_ms": ms((coarse1 - coarse0) / idle * 10),
            "idle_cpu_ms_sched": ms((fine1 - fine0) / idle * 10),
        }
    finally:
        await drop(made)
        await target.stop()
        path.unlink(missing_ok=True)


async def follow_all(path: Path, sinks: list[RecordSink], timeout: float,
                     quiet: float = 5.0) -> int:
    """Probe lines until every client has one, then until each has the last; returns the
    clients that never had one.

    Patient where :func:`measure.warm_up` is quick: one probe to ten thousand
    clients may take seconds, and a probe every few hundred milliseconds would
    pile up lines the measurement then waits behind. A next probe only when
    the last one has reached every client that will get it (no new arrival
    for ``quiet`` seconds) and some still have none.
    """
    deadline = time.monotonic() + timeout
    k = 0
    while time.monotonic() < deadline:
        k += 1
        append(path, probe_line(10**6 + k))  # apart from measure's probe numbers
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = sum(s.last_probe >= 10**6 + k for s in sinks)
            if now == len(sinks) or (now == seen and time.monotonic() - since > quiet):
                break
            if now != seen:
                seen, since = now, time.monotonic()
            await asyncio.sleep(0.1)
        if all(s.last_probe >= 10**6 + k for s in sinks):
            return 0
    return sum(not s.probed for s in sinks)


def _index(sink: RecordSink, line: bytes) -> list[int]:
    """Where ``line`` first arrived at ``sink`` (a list of 0 or 1)."""
    try:
        return [sink.lines.index(line)]
    except ValueError:
        return []


def _all_have(sinks: list[RecordSink], appends: int) -> Callable[[], bool]:
    key = f"M watch-{appends - 1} ".encode()
    return lambda: all(any(x.startswith(key) for x in s.lines[-3:]) for s in sinks)
