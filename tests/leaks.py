"""What a test leaves behind: threads, file descriptors and processes it started.

``Leaks()`` notes what is there now; its ``*_since`` methods tell what was
added since and is still there. The ``no_leaks`` fixture in ``conftest.py``
runs every test between the two.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

#: prctl(2) option: orphaned descendants are re-parented to this process
#: instead of init, so a grandchild left running by a test stays visible.
_PR_SET_CHILD_SUBREAPER = 36

FdKey = tuple[int, str, int, int]
ProcKey = tuple[int, int]


def _fds() -> set[FdKey]:
    """Open fds as ``(number, target, device, inode)``.

    Listing ``/proc/self/fd`` opens a fd of its own (the lowest free number)
    and lists it; it is closed again by the time each entry is stat'ed, so it
    drops out here. Were it kept, a test's first leaked fd would reuse its
    number and hide behind it.
    """
    found = set()
    for name in os.listdir("/proc/self/fd"):
        path = f"/proc/self/fd/{name}"
        try:
            target = os.readlink(path)
            st = os.stat(path)
        except OSError:
            continue
        found.add((int(name), target, st.st_dev, st.st_ino))
    return found


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            pass
    return found


def _descendants() -> dict[ProcKey, str]:
    """Every process below this one, as ``(pid, start time)`` -> state letter.

    As a subreaper this process inherits orphaned grandchildren, so walking
    the children lists from here finds them too. The start time tells a
    recycled pid from the process that had it before.
    """
    found: dict[ProcKey, str] = {}
    todo = _children(os.getpid())
    while todo:
        pid = todo.pop()
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        found[(pid, int(fields[19]))] = fields[0]
        todo.extend(_children(pid))
    return found


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class Leaks:
    """What is open now, to tell later what was opened since and is still there."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.fds = _fds()
        self.procs = set(_descendants())

    def threads_since(self) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in self.threads and t.is_alive()]

    def fds_since(self) -> dict[int, str]:
        return {fd: target for fd, target, _, _ in sorted(_fds() - self.fds)}

    def procs_since(self) -> dict[int, str]:
        """New descendants still running (pid: state); new ones that exited are reaped."""
        running = {}
        for key, status in _descendants().items():
            if key in self.procs:
                continue
            if status == "Z":
                # an orphan re-parented here has nobody else to reap it
                _reap(key[0])
            else:
                running[key[0]] = status
        return running


def become_subreaper() -> None:
    """Adopt orphaned descendants (prctl ``PR_SET_CHILD_SUBREAPER``) instead of init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
