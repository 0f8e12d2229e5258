"""The file follower: one followed path, read by offset, followed by name as ``tail -F``.

:class:`FileFollower` owns everything about the *bytes* of one watched path
and nothing about how changes are noticed (that is :mod:`.watchtable`) or
where the bytes go (that is :mod:`.watch`). Each call to :meth:`FileFollower.read`
is idempotent and offset based: it reads what lies between the last position
and the end of the file, so a duplicate or a lost change notification costs
nothing and loses nothing (duplicate "modified" events).

Why it is built this way:

- Reads are ``os.pread`` from the last offset, at most one chunk at a time:
  the work per append is proportional to the bytes appended, never to the
  size of the file, and the memory held is one chunk whatever the client's
  speed. The file is the buffer.
- The start position never reads the whole file either: ``lines=N`` scans
  backwards in blocks and stops after ``PINE_WS_BACKLOG_BYTES``.
- Following by name (GNU ``tail -F``): after reading to the end of the open
  file, the path is ``stat``-ed and compared with the open descriptor's
  ``(st_dev, st_ino)``. A different file at the path means a rotation: the
  old descriptor is drained to its end first, then the new file is read from
  byte 0. A size below the offset means truncation (``copytruncate``, a
  rewrite with shorter content): go on from 0. So does a change of the last
  bytes read, which catches a truncation followed by a quick write past the
  offset before the follower looked (GNU tail misses that one). A missing path (or missing
  directory) is waited for, never an error.
- Text mode never splits a UTF-8 sequence: an incomplete sequence at the end
  of a read is carried (at most 3 bytes) to the next read; invalid bytes are
  decoded as U+FFFD, but only once the sequence is known to be complete.
  Binary mode hands out the file's bytes exactly.
- One descriptor per open file in the process, whatever the number of its
  followers: every read is a ``pread`` at the follower's own offset, so the
  followers of one file share one open file description (reference counted
  by ``(st_dev, st_ino)``, which an open file keeps its own). A watcher holds
  its socket and, with 10,000 watchers of one file, not 10,000 more
  descriptors: the per-process limit (often 1,024 soft, 20,000 or so hard)
  would otherwise refuse one watcher in two long before the memory runs out.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

#: Bytes read per block while searching for line breaks (start positions).
_SCAN_BLOCK = 64 * 1024

#: Bytes before the offset compared on each read to notice a rewrite (see ``_sig``).
_SIG_BYTES = 32

#: Errors of ``open``/``stat`` meaning "the path is not there (yet)":
#: missing file, missing directory, or a directory component replaced by a file.
_MISSING = (errno.ENOENT, errno.ENOTDIR)


#: What became of the file a follower read before it reads another from byte 0
#: (the ``how`` of :class:`Rotated`, and of the framed ``rotated`` notice).
RotationHow = Literal["renamed", "removed", "truncated", "replaced"]

#: Why a resuming client's start could not be honoured (:attr:`Opened.reset`).
ResetHow = Literal["replaced", "truncated"]


class Position(NamedTuple):
    """Where a follower is: which file, read up to where, and as of which modification.

    The watch table compares it with ``stat(path)`` to wake only followers
    that really have something to read (the polling and safety checks); the
    modification time tells a rewrite to the same size from no change.
    """

    dev: int
    ino: int
    offset: int
    mtime_ns: int

    @property
    def ident(self) -> tuple[int, int]:
        """``(st_dev, st_ino)``: the file's identity."""
        return (self.dev, self.ino)


@dataclass(frozen=True)
class Chunk:
    """File content for one message.

    :ivar data: ``str`` in text mode, ``bytes`` in binary mode.
    :ivar nbytes: how many bytes of the file it carries (for ``viewed_bytes``
        and resuming; differs from ``len(data)`` in text mode).
    """

    data: str | bytes
    nbytes: int


@dataclass(frozen=True)
class Rotated:
    """A new file is followed from byte 0 (or the same file after truncation).

    :ivar how: ``"renamed"`` (the old file was moved away), ``"removed"`` (it
        was deleted), ``"truncated"`` (same file, now shorter than what was
        read), ``"replaced"`` (a file appeared at a path that had none, or a
        resuming client named another file).
    :ivar file_id: ``"<st_dev>:<st_ino>"`` of the file now followed.
    """

    how: RotationHow
    file_id: str


@dataclass(frozen=True)
class Waiting:
    """The path has no file to read (yet); given once per missing period.

    :ivar refused: ``None`` when nothing is at the path; else what is there
        instead of a regular file (``"a FIFO"``, ``"a device"``, ...), which
        the follower does not open for reading (see :class:`NotRegularFile`).
    """

    refused: str | None = None


Item = Chunk | Rotated | Waiting


@dataclass(frozen=True)
class Opened:
    """Where :meth:`FileFollower.start` begins.

    :ivar file_id: the file's ``"<st_dev>:<st_ino>"``, or ``None`` when missing.
    :ivar offset: the first byte that will be read.
    :ivar size: the file's size at start (0 when missing).
    :ivar reset: ``"replaced"`` or ``"truncated"`` when a resuming client's
        ``file_id``/``offset`` could not be honoured and reading starts at 0.
    """

    file_id: str | None
    offset: int
    size: int
    reset: ResetHow | None = None


class PathRefused(Exception):
    """The file opened at the path resolves outside the allowed roots."""


class NotRegularFile(OSError):
    """The path names something other than a regular file: a FIFO, a device, a socket.

    Only regular files are followed. Reading a FIFO blocks until a writer
    comes (and takes its bytes from whoever else reads it), a device such as
    ``/dev/zero`` never ends, and a socket cannot be opened at all: none is a
    log. :meth:`FileFollower.start` raises it; a path that turns into one
    later is waited past (:class:`Waiting` with ``refused``) until a regular
    file is there again.

    :ivar kind: what the path names, for a reason a client may see (``"a FIFO"``).
    """

    def __init__(self, path: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file but {kind}", path)
        self.kind = kind


def file_id(st: os.stat_result) -> str:
    """The identity of a file as a resuming client names it: ``"<dev>:<ino>"``."""
    return f"{st.st_dev}:{st.st_ino}"


def file_kind(mode: int) -> str:
    """What a ``st_mode`` names, in words: ``"a regular file"``, ``"a FIFO"``, ``"a device"``..."""
    if stat_mod.S_ISREG(mode):
        return "a regular file"
    if stat_mod.S_ISDIR(mode):
        return "a directory"
    if stat_mod.S_ISFIFO(mode):
        return "a FIFO"
    if stat_mod.S_ISCHR(mode) or stat_mod.S_ISBLK(mode):
        return "a device"
    if stat_mod.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def utf8_safe_cut(buf: bytes | bytearray) -> int:
    """Return the length of the longest prefix of ``buf`` not ending inside a UTF-8 sequence.

    Only an incomplete sequence at the very end is held back (at most 3
    bytes); invalid bytes anywhere else stay in the prefix and decode as
    U+FFFD. A lead byte whose continuation bytes are missing but which could
    never start a valid sequence (0xC0, 0xC1, 0xF5-0xFF) is not held back.
    """
    n = len(buf)
    # Walk back over at most 3 continuation bytes to the lead byte.
    i = n - 1
    while i >= 0 and n - i <= 4 and 0x80 <= buf[i] <= 0xBF:
        i -= 1
    if i < 0 or n - i > 4:
        return n
    lead = buf[i]
    if 0xC2 <= lead <= 0xDF:
        need = 2
    elif 0xE0 <= lead <= 0xEF:
        need = 3
    elif 0xF0 <= lead <= 0xF4:
        need = 4
    else:
        return n  # ASCII or a byte that starts nothing: complete as far as decoding goes
    return i if n - i < need else n


class _SharedFiles:
    """The open descriptors of the followed files, one per file, with their reference counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._open: dict[tuple[int, int], list[int]] = {}  # ident: [fd, references]

    def _locked(self) -> threading.Lock:
        if self._pid != os.getpid():  # a child inherits the descriptors, not the lock's holder
            self._pid, self._lock = os.getpid(), threading.Lock()
        return self._lock

    def adopt(self, fd: int, ident: tuple[int, int]) -> int:
        """The descriptor to read ``ident`` with: ``fd``, or the one open already."""
        with self._locked():
            entry = self._open.get(ident)
            if entry is None:
                self._open[ident] = [fd, 1]
                return fd
            entry[1] += 1
            shared = entry[0]
        os.close(fd)
        return shared

    def share(self, ident: tuple[int, int]) -> int | None:
        """The descriptor open already for ``ident``, one reference more; ``None``: none is."""
        with self._locked():
            entry = self._open.get(ident)
            if entry is None:
                return None
            entry[1] += 1
            return entry[0]

    def release(self, fd: int, ident: tuple[int, int]) -> None:
        """One follower less on ``ident``; the last one closes the descriptor."""
        with self._locked():
            entry = self._open.get(ident)
            if entry is not None and entry[0] == fd:
                entry[1] -= 1
                if entry[1]:
                    return
                del self._open[ident]
        os.close(fd)


_shared = _SharedFiles()


class FileFollower:
    """Follow one path by name and hand out its bytes from a start position on.

    Not thread-safe: one watcher thread owns it. Use :meth:`start` once, then
    :meth:`read` whenever the file may have changed, then :meth:`close`.

    :param path: the path to follow (by name: what it names may change).
    :param binary: hand out ``bytes`` exactly instead of decoded text.
    :param chunk_bytes: the most file bytes in one :class:`Chunk`.
    :param backlog_bytes: the largest window read back at start (the default
        start, and the cap of the backwards scan of ``lines=N``).
    :param guard: called with each opened file's resolved path; returns
        ``False`` to refuse it (the ``root=`` check), which raises
        :class:`PathRefused` out of :meth:`start` or :meth:`read`.
    """

    def __init__(self, path: str, *, binary: bool = False, chunk_bytes: int = 64 * 1024,
                 backlog_bytes: int = 5 * 1024 * 1024,
                 guard: Callable[[str], bool] | None = None) -> None:
        if chunk_bytes < 4:
            raise ValueError("chunk_bytes must be at least 4 (one UTF-8 sequence)")
        self.path = path
        self.binary = binary
        self.chunk_bytes = chunk_bytes
        self.backlog_bytes = max(0, backlog_bytes)
        self._guard = guard
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._offset = 0  # next byte to read from the open file
        self._carry = b""  # text mode: an incomplete UTF-8 sequence read but not handed out
        # The last bytes read (up to _SIG_BYTES): if they are no longer in the
        # file before the offset, it was truncated and rewritten past the
        # offset between two looks (copytruncate then a quick write), which a
        # size check alone misses.
        self._sig = b""
        self._mtime_ns = 0  # of the file when last seen at its end
        self._stat: os.stat_result | None = None  # of the file as _open found it
        # The bytes from the offset on that start() read already (the tail's
        # last block): the first read hands them out instead of reading them
        # again. Read after the caller's "look again" event was cleared (see
        # start()), so they are as fresh as a read would be.
        self._ahead: bytes | None = None
        self._waiting_told = False
        self._next_how: RotationHow = "replaced"  # how to announce the next file at the path

    # -- state ---------------------------------------------------------------

    @property
    def position(self) -> Position | None:
        """Where the follower is in the open file (see :class:`Position`), or ``None``."""
        if self._ident is None:
            return None
        return Position(self._ident[0], self._ident[1], self._offset, self._mtime_ns)

    @property
    def delivered(self) -> int:
        """The offset of the first byte not yet handed out (what a client resumes from)."""
        return self._offset - len(self._carry)

    @property
    def current_id(self) -> str | None:
        """``"<dev>:<ino>"`` of the file being read, or ``None``."""
        return None if self._ident is None else f"{self._ident[0]}:{self._ident[1]}"

    def skip_to(self, offset: int) -> None:
        """Go on from ``offset`` of the open file: someone else delivered the bytes before it.

        A file's feed (:mod:`.feed`) sends a live watcher's bytes for it;
        when the watcher reads on its own again, it starts where the feed
        stopped for it. Only forward, in the same file, with no carried UTF-8
        sequence (a watcher joins a feed only then).

        :raises ValueError: no file is open, a sequence is carried, or
            ``offset`` is behind the current one.
        """
        if self._fd is None or self._carry or offset < self._offset:
            raise ValueError(f"cannot skip from {self._offset} to {offset}")
        if offset == self._offset:
            return
        self._offset = offset
        self._ahead = None
        # The rewrite check compares the bytes before the offset: take them
        # at the new one (as start() does).
        self._sig = self._pread(min(offset, _SIG_BYTES), offset - min(offset, _SIG_BYTES))

    def close(self) -> None:
        """Close the open file, if any. Idempotent."""
        self._ahead = None
        if self._fd is not None:
            assert self._ident is not None  # set with the descriptor
            _shared.release(self._fd, self._ident)
            self._fd = None
            self._ident = None

    # -- start ---------------------------------------------------------------

    def start(self, *, offset: int | None = None, lines: int | None = None,
              file_id: str | None = None) -> Opened:
        """Open the path, if it exists, and choose the first byte to read.

        :param offset: begin at this byte (a client resuming); past the end of
            the file, begin at 0 (``reset="truncated"``).
        :param lines: begin at the last ``lines`` lines, as ``tail -n``;
            ``0``: only what is appended from now on.
        :param file_id: the file a resuming client read before; another file
            at the path means it was replaced: begin at 0 (``reset="replaced"``).
        :returns: where reading begins. A missing path gives ``file_id=None``
            and is reported by the first :meth:`read` as :class:`Waiting`.
        """
        if not self._open(strict=True):
            return Opened(None, 0, 0)
        assert self._stat is not None
        size = self._stat.st_size
        current = self.current_id
        reset: ResetHow | None = None
        tail: tuple[int, bytes] | None = None  # the file's last block, if read: (at, bytes)
        if file_id is not None and file_id != current:
            start, reset = 0, "replaced"
        elif offset is not None:
            start = offset
            if offset > size:
                start, reset = 0, "truncated"
        elif lines is not None:
            start, tail = self._tail_lines(lines, size)
        else:
            start = self._window_start(size)
        self._offset = start
        if tail is not None and tail[0] + _SIG_BYTES <= start <= tail[0] + len(tail[1]):
            lo, block = tail
            self._sig = block[start - lo - _SIG_BYTES:start - lo]
            self._ahead = block[start - lo:]
        else:
            self._sig = self._pread(min(start, _SIG_BYTES), start - min(start, _SIG_BYTES))
        return Opened(current, start, size, reset)

    def _window_start(self, size: int) -> int:
        """Pine's start: the whole file if small, else the last window from a line start."""
        if size <= self.backlog_bytes:
            return 0
        low = size - self.backlog_bytes
        # From the byte before the window: a window that begins right after a
        # line break begins at a line start already.
        pos = low - 1
        while pos < size:
            block = self._pread(min(_SCAN_BLOCK, size - pos), pos)
            if not block:
                break
            nl = block.find(b"\n")
            if nl >= 0:
                return pos + nl + 1
            pos += len(block)
        return low  # no line break in the window: it starts mid-line

    def _tail_lines(self, lines: int, size: int) -> tuple[int, tuple[int, bytes] | None]:
        """``tail -n lines``: scan backwards in blocks, never past the backlog window.

        :returns: the start, and the file's last block ``(at, bytes)`` when one
            was read (the lines asked for are most often all in it: start()
            hands it to the first read).
        """
        if lines == 0 or size == 0:
            return size, None
        low = max(0, size - self.backlog_bytes)
        found = 0
        hi = size
        last: tuple[int, bytes] | None = None
        while hi > low:
            lo = max(low, hi - _SCAN_BLOCK)
            block = self._pread(hi - lo, lo)
            idx = len(block)
            if hi == size:
                last = (lo, block)
                if block.endswith(b"\n"):
                    idx -= 1  # a final line break ends the last line; it does not start another
            while True:
                idx = block.rfind(b"\n", 0, idx)
                if idx < 0:
                    break
                found += 1
                if found == lines:
                    return lo + idx + 1, last
            hi = lo
        if low == 0:
            return 0, last
        # fewer lines than asked in the window: its first line
        return self._window_start(size), last

    # -- reading -------------------------------------------------------------

    def read(self) -> Generator[Item, None, None]:
        """Yield everything available now: chunks, and notices of rotation or absence.

        Lazy: one chunk is read per item taken, so a consumer that stops
        (a slow client) leaves the rest in the file. Ends when the followed
        path has nothing more to give for now.
        """
        # Each turn either returns or moves to another file (or to byte 0 of a
        # truncated one) after yielding a notice, so the consumer keeps control.
        while True:
            if self._fd is None:
                refused: list[str] = []
                if not self._open(refused=refused):
                    if not self._waiting_told:
                        self._waiting_told = True
                        yield Waiting(refused[0] if refused else None)
                    return
                self._offset, self._sig = 0, b""
                yield Rotated(self._next_how, self.current_id or "")
            fresh = self._ahead is not None
            if not fresh and self._rewritten():
                yield from self._restart()
                continue
            yield from self._drain()
            assert self._fd is not None
            if fresh and self._ahead is None and self._stat is not None:
                # What start() read, to the end start() saw: its stat (taken
                # just before) stands for the file's. A change since then is
                # the caller's next read, as after any read.
                self._mtime_ns = self._stat.st_mtime_ns
                return
            st = os.fstat(self._fd)
            self._mtime_ns = st.st_mtime_ns
            if st.st_size < self._offset:
                yield from self._restart()
                continue
            try:
                now = os.stat(self.path)
            except OSError as exc:
                if exc.errno not in _MISSING:
                    raise
                if st.st_nlink > 0:
                    # Renamed away and nothing at the path yet: keep reading the
                    # old file (its writer may not have reopened yet).
                    return
                yield from self._switch("removed")
                continue
            if (now.st_dev, now.st_ino) == self._ident:
                return
            yield from self._switch("renamed" if st.st_nlink > 0 else "removed")

    def _rewritten(self) -> bool:
        """Was the open file truncated (and maybe written again) under our offset?"""
        assert self._fd is not None
        if os.fstat(self._fd).st_size < self._offset:
            return True
        sig = self._sig
        return bool(sig) and self._pread(len(sig), self._offset - len(sig)) != sig

    def _restart(self) -> Iterator[Item]:
        """Truncated in place (copytruncate, a shorter rewrite): go on from byte 0."""
        yield from self._flush_carry()
        self._offset, self._sig = 0, b""
        yield Rotated("truncated", self.current_id or "")

    def _switch(self, how: RotationHow) -> Iterator[Item]:
        """Drain the old file to its end, close it, and announce the next as ``how``."""
        yield from self._drain()
        yield from self._flush_carry()
        self.close()
        self._next_how = how

    def _drain(self) -> Iterator[Chunk]:
        """Read the open file from the offset to its end, one chunk per item."""
        while self._fd is not None:
            want = self.chunk_bytes - len(self._carry)
            ahead = self._ahead
            if ahead is not None:
                # What start() read from the offset on: no second read. A file
                # that grew since is read on the next pass, as after any read.
                data, rest = ahead[:want], ahead[want:]
                self._ahead = rest or None
                if not data:
                    return
                if not rest:
                    want = len(data) + 1  # counts as a short read: the end as start() saw it
            else:
                data = self._pread(want, self._offset)
            if not data:
                return
            self._offset += len(data)
            self._sig = (self._sig + data[-_SIG_BYTES:])[-_SIG_BYTES:]
            chunk = self._chunk(data)
            if chunk is not None:
                yield chunk
            if len(data) < want:
                return  # short read: at the end for now

    def _chunk(self, data: bytes) -> Chunk | None:
        if self.binary:
            return Chunk(data, len(data))
        buf = self._carry + data
        cut = utf8_safe_cut(buf)
        self._carry = buf[cut:]
        if cut == 0:
            return None
        return Chunk(buf[:cut].decode("utf-8", errors="replace"), cut)

    def _flush_carry(self) -> Iterator[Chunk]:
        """The old file ended inside a sequence that will never complete: hand it out as U+FFFD."""
        if self._carry:
            carry, self._carry = self._carry, b""
            yield Chunk(carry.decode("utf-8", errors="replace"), len(carry))

    def _pread(self, size: int, offset: int) -> bytes:
        assert self._fd is not None
        return os.pread(self._fd, size, offset)

    def _open(self, *, strict: bool = False, refused: list[str] | None = None) -> bool:
        """Open the path; ``False`` when it has no regular file. Runs the guard on what was opened.

        Never blocks and never opens anything but a regular file: the path is
        ``stat``-ed first (a device is not even opened: opening some has
        effects), then opened with ``O_NONBLOCK`` (a FIFO swapped in after
        the ``stat``, through a symlink or not, opens at once instead of
        waiting for a writer) and checked again with ``fstat``. A file's feed
        opens under its lock: a blocking open there would hang every watcher
        of the path.

        :param strict: raise :class:`NotRegularFile` for something else than a
            regular file (at start); else treat it as missing, its kind
            appended to ``refused``.
        """
        fd = -1
        try:
            found = os.stat(self.path)
            mode = found.st_mode
            if self._guard is None and stat_mod.S_ISREG(mode):
                # A file this process has open already (another watcher's):
                # its descriptor, without an open, an fstat and a close. The
                # identity is the file's own as long as that descriptor is
                # open (an inode is not reused while open). Not with a guard,
                # which checks the name this very open went through.
                ident = (found.st_dev, found.st_ino)
                shared = _shared.share(ident)
                if shared is not None:
                    self._ident, self._fd, self._stat = ident, shared, found
                    self._waiting_told = False
                    return True
            if stat_mod.S_ISREG(mode) or stat_mod.S_ISDIR(mode):
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
                             | getattr(os, "O_NOCTTY", 0))
        except OSError as exc:
            if exc.errno in _MISSING:
                return False
            if exc.errno != errno.ENXIO:  # ENXIO: a socket (swapped in after the stat)
                raise
            mode = stat_mod.S_IFSOCK
        if fd < 0:
            kind = file_kind(mode)
            if strict:
                raise NotRegularFile(self.path, kind)
            if refused is not None:
                refused.append(kind)
            return False
        try:
            st = os.fstat(fd)
            if stat_mod.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "cannot follow a directory", self.path)
            if not stat_mod.S_ISREG(st.st_mode):
                raise NotRegularFile(self.path, file_kind(st.st_mode))
            if self._guard is not None and not self._guard(_resolved(fd, self.path)):
                raise PathRefused(self.path)
        except NotRegularFile as exc:
            os.close(fd)
            if strict:
                raise
            if refused is not None:
                refused.append(exc.kind)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._ident = (st.st_dev, st.st_ino)
        self._stat = st
        self._fd = _shared.adopt(fd, self._ident)
        self._waiting_told = False
        return True


def _resolved(fd: int, path: str) -> str:
    """The real path of an open file: from ``/proc`` (no symlink-swap race), else realpath."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
