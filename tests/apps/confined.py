"""Run a command (a test's gunicorn) under a real restriction, then ``exec`` it.

The fault tests need the kernel to refuse things for real, on a machine where
tests run as root:

- ``--no-dac-override``: drop ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH``
  from the capability bounding set before ``exec``. Root then gets no
  capabilities for them after ``exec`` and obeys file modes like any user: a
  ``chmod 000`` file is ``EACCES``. (Switching the worker to ``nobody`` does
  not work here: the interpreter lives under ``/root``, mode 0700.)
- ``--exhaust-inotify N``: run inside a new user namespace (start this script
  with ``unshare --user --map-root-user``), set that namespace's
  ``user.max_inotify_instances`` to ``N`` (it caps this namespace only, so
  other programs of the machine keep theirs), open inotify instances until
  the kernel says ``EMFILE``, and keep them open across ``exec``: the server
  starts with the instance limit already used up.

Usage: ``confined.py [--no-dac-override] [--exhaust-inotify N] -- COMMAND...``
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if "--exhaust-inotify" in options:
        limit = int(options[options.index("--exhaust-inotify") + 1])
        with open("/proc/sys/user/max_inotify_instances", "w") as f:
            f.write(str(limit))
        held = []
        while True:
            fd = libc.inotify_init1(0)  # no O_CLOEXEC: the server inherits them
            if fd < 0:
                err = ctypes.get_errno()
                assert err == errno.EMFILE, os.strerror(err)
                break
            held.append(fd)
            assert len(held) <= limit, "the namespace's inotify limit did not hold"
        print(f"confined: {len(held)} inotify instances held, the next one: EMFILE",
              flush=True)
    if "--no-dac-override" in options:
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
        print("confined: no CAP_DAC_OVERRIDE, no CAP_DAC_READ_SEARCH", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
