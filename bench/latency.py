"""The latency step of ``bench/run.py`` alone: one client, its write-to-receive times.

Each round starts the asyncio floor and each flask-pine-ws target in turn on
a fresh file, measures one client's latency (``measure.latency``: ``--rate``
lines a second for ``--duration`` seconds) and stops it. Rounds repeat the
sequence, so that the floor and flask-pine-ws see the same moments of a
shared machine; the report gives each round's p50 and p99 with their ratio to
the floor of that round, and the medians over the rounds.

    python bench/latency.py [--rounds 3] [--duration 10] [--targets pine,pine-deflate]

To compare two versions of the code, run it in each checkout, alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import measure
import targets


async def round_of(names: list[str], rate: float, duration: float) -> dict[str, Any]:
    classes = {cls.name: cls for cls in targets.ALL}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pine-latency-") as tmp:
        for name in ["asyncio", *names]:
            tdir = Path(tmp) / name
            tdir.mkdir()
            log = tdir / "app.log"
            log.touch()
            target = classes[name](tdir, 1)
            try:
                await target.start(log)
                result = await measure.latency(target, log, rate, duration)
            finally:
                await target.stop()
            out[name] = {k: result[k] for k in ("sent", "lost", "p50_ms", "p99_ms")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--targets", default="pine,pine-deflate",
                        help="comma-separated targets besides the floor (see bench/run.py)")
    parser.add_argument("--json", type=Path, help="also write every round here")
    args = parser.parse_args()
    names = [n for n in args.targets.split(",") if n and n != "asyncio"]
    rounds: list[dict[str, Any]] = []
    for n in range(args.rounds):
        result = asyncio.run(round_of(names, args.rate, args.duration))
        rounds.append(result)
        floor = result["asyncio"]
        print(f"round {n + 1}: floor p50 {floor['p50_ms']:.3f} p99 {floor['p99_ms']:.3f} ms",
              flush=True)
        for name in names:
            r = result[name]
            print(f"  {name:14} p50 {r['p50_ms']:.3f} ms ({r['p50_ms'] / floor['p50_ms']:.2f}x)"
                  f"  p99 {r['p99_ms']:.3f} ms ({r['p99_ms'] / floor['p99_ms']:.2f}x)"
                  f"  lost {r['lost']}", flush=True)
    print("medians over the rounds:")
    for name in ["asyncio", *names]:
        p50 = statistics.median(r[name]["p50_ms"] for r in rounds)
        p99 = statistics.median(r[name]["p99_ms"] for r in rounds)
        ratio = statistics.median(r[name]["p50_ms"] / r["asyncio"]["p50_ms"] for r in rounds)
        ratio99 = statistics.median(r[name]["p99_ms"] / r["asyncio"]["p99_ms"] for r in rounds)
        print(f"  {name:14} p50 {p50:.3f} ms ({ratio:.2f}x)  p99 {p99:.3f} ms ({ratio99:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1))


if __name__ == "__main__":
    main()
