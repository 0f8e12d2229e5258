"""Benchmark flask-pine-ws against the floor and its peers, in one run.

    python bench/run.py            # the full run (under 10 minutes), writes docs/
    python bench/run.py --quick    # fewer clients, shorter, smaller (under 2 minutes)
    python bench/run.py --smoke    # the asyncio floor and flask-pine-ws only (the test)
    python bench/run.py --cases backlog,watchers   # only the crowds (crowd.py)

Each target is started on a fresh file in a temporary directory, measured
(latency, burst, rotation, fan-out, then a 10 GiB sparse file), and stopped
before the next; then the crowds, each on a target started for it: a
thousand clients connecting at once for the last 10 lines, and ten thousand
idle watchers on one worker. Results go to ``bench/results/<date>-<mode>.json`` and, with
``--docs`` (the default of the full run), to ``docs/benchmarks.md`` and
``docs/img/``. Whatever happens (an error, Ctrl-C, SIGTERM), every process
started is stopped before the command returns.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import crowd
import measure
import report
import targets
from lines import burst_blob

RESULTS = targets.BENCH / "results"
#: The parts of a run (``--cases``): the one-file measurements, then the crowds.
CASES = ("main", "backlog", "watchers")
#: The targets of the ten-thousand-watchers case: one process each (a `tail`
#: per client, as the tail floor and websocketd run, is 10,000 processes).
WATCHER_TARGETS = ("asyncio", "frontail", "pine", "pine-deflate")


@dataclass
class Plan:
    """How much of everything a mode measures."""

    mode: str
    targets: list[str]
    rate: float = 200.0
    duration: float = 10.0
    burst_bytes: int = 50_000_000
    burst_timeout: float = 60.0
    fanout: list[int] = field(default_factory=lambda: [1, 100, 500, 1000])
    idle: float = 10.0
    appends: int = 3
    #: each a move and a truncation; sub-millisecond figures: the median of 5 steadies them
    rotations: int = 5
    filesize_duration: float = 3.0
    capacity_messages: int = 100_000
    capacity_mb: int = 100
    cases: list[str] = field(default_factory=lambda: list(CASES))
    #: clients connecting at once, each for the last ``backlog_lines`` lines
    backlog_clients: int = 1000
    backlog_lines: int = 10
    #: rounds of the backlog case, the targets taking turns in each (a shared machine's
    #: noise moves one round of it by a third); the median round is reported
    backlog_rounds: int = 5
    #: idle watchers on one worker, then lines appended at ``watch_rate`` a second
    watchers: int = 10_000
    watch_appends: int = 20
    watch_rate: float = 4.0


PLANS = {
    "full": Plan("full", [t.name for t in targets.DEFAULT]),
    "quick": Plan("quick", [t.name for t in targets.DEFAULT], duration=2.0, burst_bytes=5_000_000,
                  burst_timeout=20.0, fanout=[1, 100], idle=2.0, rotations=2,
                  filesize_duration=1.0, capacity_messages=20_000, capacity_mb=20,
                  backlog_clients=200, backlog_rounds=1, watchers=1000, watch_appends=10),
    "smoke": Plan("smoke", ["asyncio", "pine"], duration=2.0, burst_bytes=2_000_000,
                  burst_timeout=20.0, fanout=[1, 10], idle=1.0, appends=2, rotations=1,
                  filesize_duration=1.0, capacity_messages=5_000, capacity_mb=5,
                  backlog_clients=20, backlog_rounds=2, watchers=50, watch_appends=5,
                  watch_rate=10.0),
}

SPARSE_BYTES = 10 * 2**30


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "missing"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    packages = {}
    for name in ("flask", "wsproto", "watchdog", "gunicorn", "websockets",
                 "matplotlib"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "missing"
    frontail = targets.BENCH / "node_modules" / "frontail" / "package.json"
    rev = _version(["git", "-C", str(targets.ROOT), "rev-parse", "--short", "HEAD"])
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "packages": packages, "flask_pine_ws": rev,
        "websocketd": _version(["dpkg-query", "-W", "-f=websocketd ${Version}", "websocketd"]),
        "node": _version(["node", "--version"]),
        "frontail": json.loads(frontail.read_text())["version"] if frontail.exists() else "missing",
        "tail": _version(["tail", "--version"]),
        "inotify_max_user_instances": int(
            Path("/proc/sys/fs/inotify/max_user_instances").read_text()),
    }


async def step(name: str, what: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        result = await what
    except Exception as exc:  # noqa: BLE001 - recorded; the run goes on with the next step
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}"}
    seconds = time.monotonic() - t0
    print(f"    {name}: {seconds:.1f} s  {report.brief(name.split()[0], result)}", flush=True)
    return result


async def bench_target(cls: type[targets.Target], plan: Plan, workdir: Path,
                       blob: bytes) -> dict[str, Any]:
    tdir = workdir / cls.name
    tdir.mkdir()
    log = tdir / "app.log"
    log.touch()
    target = cls(tdir, max(plan.fanout))
    result: dict[str, Any] = {"label": cls.label}
    print(f"  {cls.label}", flush=True)
    try:
        await target.start(log)
        result["latency"] = await step("latency", measure.latency(
            target, log, plan.rate, plan.duration))
        result["burst"] = await step("burst", measure.burst(
            target, log, blob, plan.burst_timeout))
        result["rotation"] = await step("rotation", measure.rotation(
            target, log, plan.rotations))
        result["fanout"] = await step("fanout", measure.fanout(
            target, log, plan.fanout, plan.idle, plan.appends))
    except Exception as exc:  # noqa: BLE001 - a target that does not start is reported
        traceback.print_exc()
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await target.stop()
    big = tdir / "big.log"
    with open(big, "wb") as out:
        out.truncate(SPARSE_BYTES)  # sparse: 10 GiB long, no block written
    try:
        await target.start(big)
        result["filesize"] = await step("filesize", measure.latency(
            target, big, plan.rate, plan.filesize_duration))
        result["filesize"]["file_bytes"] = SPARSE_BYTES
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        result["filesize"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await target.stop()
        big.unlink()
    return result


async def bench(plan: Plan, workdir: Path) -> dict[str, Any]:
    print(f"flask-pine-ws benchmark, {plan.mode} run", flush=True)
    out: dict[str, Any] = {"command": " ".join(["python bench/run.py", *sys.argv[1:]]),
                           "machine": machine(), "plan": asdict(plan), "targets": {}}
    print("  client capacity (against the asyncio floor)", flush=True)
    out["capacity"] = await step("capacity", measure.client_capacity(
        workdir, targets.AsyncioFloor, plan.capacity_messages, plan.capacity_mb))
    if "main" in plan.cases:
        blob = burst_blob(plan.burst_bytes)
        for cls in targets.ALL:
            if cls.name in plan.targets:
                out["targets"][cls.name] = await bench_target(cls, plan, workdir, blob)
    for case in ("backlog", "watchers"):
        if case not in plan.cases:
            continue
        print(f"  {case}", flush=True)
        chosen = [cls for cls in targets.ALL if cls.name in plan.targets
                  and (case != "watchers" or cls.name in WATCHER_TARGETS)]
        rounds: dict[str, list[dict[str, Any]]] = {cls.name: [] for cls in chosen}
        for r in range(plan.backlog_rounds if case == "backlog" else 1):
            for cls in chosen:  # the targets take turns: a slow minute hits them all
                rounds[cls.name].append(await crowd_case(case, cls, plan, workdir, r))
        for cls in chosen:
            entry = out["targets"].setdefault(cls.name, {"label": cls.label})
            entry[case] = crowd.median_round(rounds[cls.name])
    return out


async def crowd_case(case: str, cls: type[targets.Target], plan: Plan,
                     workdir: Path, round_: int = 0) -> dict[str, Any]:
    """One target in one crowd case (:mod:`crowd`), on a directory of its own."""
    tdir = workdir / f"{case}-{cls.name}-{round_}"
    tdir.mkdir()
    if case == "backlog":
        if plan.backlog_clients > cls.max_fanout:
            return {"skipped": f"measured up to {cls.max_fanout} clients"}
        return await step(f"{case} {cls.name}", crowd.backlog(
            cls, tdir, plan.backlog_clients, plan.backlog_lines))
    return await step(f"{case} {cls.name}", crowd.watchers(
        cls, tdir, plan.watchers, plan.watch_appends, plan.watch_rate, plan.idle))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer clients, shorter, smaller")
    mode.add_argument("--smoke", action="store_true", help="the floor and flask-pine-ws, tiny")
    parser.add_argument("--targets", help="comma-separated subset of: "
                        + ", ".join(t.name for t in targets.ALL))
    parser.add_argument("--fanout", help="comma-separated client counts (e.g. 1,1000)")
    parser.add_argument("--cases", help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--backlog-clients", type=int, help="clients of the backlog case")
    parser.add_argument("--watchers", type=int, help="clients of the idle-watchers case")
    parser.add_argument("--docs", action=argparse.BooleanOptionalAction, default=None,
                        help="write docs/benchmarks.md and docs/img/ (default: full run only)")
    parser.add_argument("--out", type=Path, help="the results JSON (default: bench/results/)")
    args = parser.parse_args()
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.targets:
        plan.targets = [t.strip() for t in args.targets.split(",")]
        unknown = set(plan.targets) - {t.name for t in targets.ALL}
        if unknown:
            parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if args.fanout:
        plan.fanout = [int(n) for n in args.fanout.split(",")]
    if args.cases:
        plan.cases = [c.strip() for c in args.cases.split(",")]
        if set(plan.cases) - set(CASES):
            parser.error(f"unknown cases: {', '.join(sorted(set(plan.cases) - set(CASES)))}")
    if args.backlog_clients:
        plan.backlog_clients = args.backlog_clients
    if args.watchers:
        plan.watchers = args.watchers
    if "frontail" in plan.targets and not targets.FRONTAIL.exists():
        parser.error("frontail is not installed: run bench/setup.sh")
    # a socket and, for tail and websocketd, a pipe per client, plus the files; the
    # servers inherit it (ten thousand watchers: as many sockets in the server)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(16384, plan.watchers + 1000)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:  # allowed with CAP_SYS_RESOURCE only
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            soft, hard = need, need
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, need)), hard))
    if "watchers" in plan.cases and resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        parser.error(f"{plan.watchers} watchers need {need} open files; the limit is {hard}")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="pine-bench-") as tmp:
            results = asyncio.run(bench(plan, Path(tmp)))
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr)
        return 130
    finally:
        targets.stop_all()
    results["seconds"] = round(time.monotonic() - started, 1)
    out = args.out or RESULTS / (
        dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{plan.mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"results: {out} ({results['seconds']} s)")
    if args.docs if args.docs is not None else plan.mode == "full":
        doc = report.write_docs(results, targets.ROOT / "docs")
        print(f"report: {doc}")
    print(report.summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
