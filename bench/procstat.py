"""What a server costs, read from /proc: its process tree, RSS, CPU time and context switches.

RSS is ``VmRSS`` summed over every process of the tree (shared pages count once
per process, as ``ps`` shows them). CPU is ``utime + stime`` from
``/proc/<pid>/stat`` (clock ticks, 10 ms each), and, to see below a tick,
the run time in nanoseconds from each thread's ``schedstat``.
"""

from __future__ import annotations

import os
from pathlib import Path

TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def tree(root: int) -> list[int]:
    """``root`` and every descendant still alive."""
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if not Path(f"/proc/{pid}").exists():
            continue
        found.append(pid)
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def cpu_ns(pids: list[int]) -> tuple[int, int]:
    """(utime + stime from /proc/<pid>/stat, in ns; the sum of threads' schedstat)."""
    ticks = fine = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            for task in Path(f"/proc/{pid}/task").iterdir():
                fine += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return ticks * TICK_NS, fine


def context_switches(pids: list[int]) -> int:
    """Voluntary and involuntary context switches so far, summed over the live threads."""
    total = 0
    for pid in pids:
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass  # a process or thread that ended meanwhile
    return total


def threads(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            pass
    return total
