"""A raw inotify instance, read by whoever waits on it: no thread, no queue of its own.

:class:`Inotify` owns one inotify descriptor (``inotify_init1``, through
ctypes on the C library), its watches (``inotify_add_watch`` /
``inotify_rm_watch``) and an ``eventfd`` that wakes a thread waiting on it;
:func:`parse` turns what ``read`` returns into :class:`InotifyEvent` records.
It knows nothing of files followed or subscribers: :mod:`.watchtable` waits on
it on its one thread and dispatches each event itself, so an append reaches
the thread that sends it through one hop (this thread, then the watcher's
``Event``), where watchdog's observer takes four (its reader thread, a delay
queue, the emitter thread, the dispatcher thread).

Linux only (:data:`AVAILABLE`); every failing call raises :class:`OSError`
with the kernel's ``errno`` (``EMFILE`` at the instance limit, ``ENOSPC`` at
the watch limit, ``ENOENT`` / ``ENOTDIR`` for a path that is not a
directory), so that a caller can tell a refusal from a mistake.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import errno
import math
import os
import select
import struct
import sys
from dataclasses import dataclass


class Mask(enum.IntFlag):
    """The ``inotify(7)`` bits this package uses."""

    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    ISDIR = 0x40000000


#: What a watched directory reports: its entries written, closed after
#: writing, changed (``touch``), created, removed and renamed, and itself
#: removed or renamed. Not ``IN_OPEN`` nor ``IN_CLOSE_NOWRITE``: the watchers'
#: own reads would wake them. ``IN_ONLYDIR``: a path that is not a directory
#: is refused (``ENOTDIR``) rather than watched.
DIRECTORY_MASK = (Mask.MODIFY | Mask.ATTRIB | Mask.CLOSE_WRITE | Mask.MOVED_FROM | Mask.MOVED_TO
                  | Mask.CREATE | Mask.DELETE | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR)

#: The watched directory itself is gone from its path: removed, renamed, its
#: file system unmounted, or its watch dropped by the kernel.
SELF_GONE = Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.UNMOUNT | Mask.IGNORED

_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
#: ``struct inotify_event`` without its name: wd, mask, cookie, len.
_HEADER = struct.Struct("iIII")
#: One read takes what fits: a record is 16 bytes plus its name (at most NAME_MAX + 1, padded).
_READ_SIZE = 64 * 1024


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
        if not hasattr(libc, name):
            return None
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.inotify_rm_watch.restype = ctypes.c_int
    return libc


_libc = _load_libc()

#: Can this process use :class:`Inotify` (Linux, a C library with the calls, ``os.eventfd``)?
AVAILABLE = _libc is not None and hasattr(os, "eventfd")


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One ``struct inotify_event``: ``name`` is empty for the watched directory itself."""

    wd: int
    mask: int
    cookie: int
    name: bytes


def parse(data: bytes) -> list[InotifyEvent]:
    """The records in ``data`` (what one ``read`` of an inotify descriptor returned).

    The kernel returns whole records only; the name is NUL-padded.

    :raises ValueError: ``data`` ends inside a record.
    """
    events: list[InotifyEvent] = []
    size, unpack = _HEADER.size, _HEADER.unpack_from
    at, end = 0, len(data)
    while at < end:
        if end - at < size:
            raise ValueError(f"an inotify record cut short at byte {at} of {end}")
        wd, mask, cookie, length = unpack(data, at)
        at += size
        if at + length > end:
            raise ValueError(f"an inotify name cut short at byte {at} of {end}")
        name = data[at:at + length].rstrip(b"\0") if length else b""
        at += length
        events.append(InotifyEvent(wd, mask, cookie, name))
    return events


def _raise(call: str, path: str | None = None) -> None:
    err = ctypes.get_errno()
    # OSError(errno, ...) builds the matching subclass (FileNotFoundError, ...).
    if path is None:
        raise OSError(err, f"{call}: {os.strerror(err)}")
    raise OSError(err, f"{call}: {os.strerror(err)}", path)


class Inotify:
    """One inotify instance, non-blocking, with a wake-up descriptor. Thread-safe.

    Watches may be added and removed from any thread while one thread waits
    in :meth:`wait` (the kernel serialises them).

    :raises OSError: ``inotify_init1`` or ``eventfd`` refused (``EMFILE``,
        ``ENFILE``: the per-user instance limit or the descriptor limit);
        ``ENOSYS`` where inotify is not available.
    """

    def __init__(self) -> None:
        if _libc is None or not AVAILABLE:
            raise OSError(errno.ENOSYS, "inotify is not available on this platform")
        fd: int = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            _raise("inotify_init1")
        try:
            self._wake: int = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int = fd
        # poll, not select: in a server with thousands of sockets the
        # descriptor, created on first use, is often above select's 1024
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._wake, select.POLLIN)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: str, mask: int = DIRECTORY_MASK) -> int:
        """Watch ``path``; its watch descriptor (the same one for a directory watched already).

        A second call for the same inode replaces that watch's mask: use one
        mask for every watch of an instance.
        """
        assert _libc is not None
        wd: int = _libc.inotify_add_watch(self._fd, os.fsencode(path), mask)
        if wd < 0:
            _raise("inotify_add_watch", path)
        return wd

    def rm_watch(self, wd: int) -> None:
        """Stop watch ``wd``. A watch the kernel dropped already (``EINVAL``) is no error."""
        assert _libc is not None
        if _libc.inotify_rm_watch(self._fd, wd) < 0:
            if ctypes.get_errno() == errno.EINVAL:
                return  # its directory was removed: the kernel dropped the watch (IN_IGNORED)
            _raise("inotify_rm_watch")

    def read(self) -> list[InotifyEvent]:
        """The events queued now, without blocking (none: an empty list).

        One ``read``: what did not fit waits for the next call (the
        descriptor stays readable), so a burst costs no extra system call.
        """
        try:
            return parse(os.read(self._fd, _READ_SIZE))
        except BlockingIOError:
            return []

    def wait(self, timeout: float | None) -> list[InotifyEvent]:
        """Block until events, :meth:`wake` or ``timeout`` seconds; the events read (maybe none)."""
        if self._fd < 0:
            return []
        ready = self._poll.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        events: list[InotifyEvent] = []
        for fd, _ in ready:
            if fd == self._wake:
                try:
                    os.eventfd_read(self._wake)
                except BlockingIOError:
                    pass
            elif fd == self._fd:
                events = self.read()
        return events

    def wake(self) -> None:
        """Make a :meth:`wait` under way (or the next one) return now."""
        if self._wake >= 0:
            os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        """Close both descriptors (the kernel drops every watch). Idempotent."""
        fd, wake = self._fd, self._wake
        self._fd = self._wake = -1
        if fd >= 0:
            os.close(fd)
        if wake >= 0:
            os.close(wake)

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
