"""Where flask-pine-ws spends its time fanning one file out to many clients.

Starts flask-pine-ws (as the benchmark does) with N clients on one file,
appends a line R times a second, and samples the gunicorn worker with py-spy
(``pip install py-spy``) meanwhile: only the thread holding the GIL (``--gil``),
since with a thread per client the GIL is what serialises the work. Prints
the time to the last client per append, then the functions by share of the
samples, inclusive and self.

    python bench/profile.py --clients 1000 --appends 40 --rate 4 [--deflate]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import measure
import procstat
import targets
from clients import LineSink, Stream
from lines import append, marker_line


def summarize(raw: Path, top: int) -> str:
    """Inclusive and self shares per function from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  for f in stack.split(";")[1:]]  # the first frame is the thread
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    out = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        out.append(f"\n{title}:")
        for name, count in counter.most_common(top):
            out.append(f"  {100 * count / max(total, 1):5.1f}%  {name})")
    return "\n".join(out)


async def profile(args: argparse.Namespace, workdir: Path) -> None:
    cls = targets.PineDeflate if args.deflate else targets.PineOff
    target = cls(workdir, args.clients)
    log = workdir / "app.log"
    log.touch()
    await target.start(log)
    streams: list[Stream] = []
    try:
        streams, failed = await measure.open_streams(target, args.clients, LineSink)
        sinks = [s.sink for s in streams if isinstance(s.sink, LineSink)]
        never = await measure.warm_up(log, sinks)
        assert target.proc is not None
        worker = procstat.tree(target.proc.pid)[-1]
        pids = procstat.tree(target.proc.pid)
        print(f"{len(streams)} clients ({failed} failed, {never} never followed); worker {worker}:"
              f" {procstat.threads(pids)} threads, {procstat.rss_bytes(pids) / 2**20:.0f} MB RSS")
        raw = workdir / "py-spy.txt"
        duration = args.appends / args.rate + 2 if args.appends else args.idle
        gil = ["--gil"] if args.appends else []  # idle: every thread that runs
        cpu0 = procstat.cpu_ns(pids)
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(worker), *gil, "--nonblocking",
                                "--rate", "250", "--duration", str(int(duration) + 1),
                                "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await asyncio.sleep(1)
        lasts = []
        for k in range(args.appends):
            key = f"prof-{k}"
            t0 = append(log, marker_line(key, time.monotonic_ns()))
            await measure.wait_for(measure._all_have(sinks, key), 10)
            got = [s.markers[key][1] - t0 for s in sinks if key in s.markers]
            lasts.append(max(got) / 1e6 if got else float("nan"))
            await asyncio.sleep(max(0.0, 1 / args.rate - (time.monotonic_ns() - t0) / 1e9))
        try:
            _, err = spy.communicate(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        cpu1 = procstat.cpu_ns(pids)
        print(f"server CPU while sampled: {(cpu1[0] - cpu0[0]) / 1e6:.0f} ms (stat),"
              f" {(cpu1[1] - cpu0[1]) / 1e6:.0f} ms (schedstat) over {duration:.0f} s")
        if not lasts:
            lasts.append(float("nan"))
        print(f"last client: median {statistics.median(lasts):.1f} ms, max {max(lasts):.1f} ms"
              f" over {len(lasts)} appends")
        if raw.exists():
            print(summarize(raw, args.top))
        else:
            print("py-spy wrote nothing:", err.decode(errors="replace")[-1000:])
    finally:
        await measure.close_streams(streams)
        await target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--appends", type=int, default=40)
    parser.add_argument("--rate", type=float, default=4.0, help="appends a second")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="with --appends 0: seconds of idle to sample")
    parser.add_argument("--deflate", action="store_true", help="permessage-deflate on")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    try:
        with tempfile.TemporaryDirectory(prefix="pine-profile-") as tmp:
            asyncio.run(profile(args, Path(tmp)))
    finally:
        targets.stop_all()


if __name__ == "__main__":
    main()
