"""``watch_file``: stream a growing file over a connection, following it by name as ``tail -F``.

This module owns the life of one watcher: check the request (arguments, the
allowed roots), register with the path's :mod:`.feed`, let a
:class:`~.follower.FileFollower` read, send what it reads, and release
everything when the client leaves or the server stops. It reads no file
itself and watches no directory itself; it only sends.

One watcher blocks one thread and waits on one :class:`threading.Event`, set
by its feed (the file may have changed; or go on reading from an offset) and
by the connection (a message came, the peer left, the server closed it with
1001): no polling per connection, and a client that leaves is noticed at
once. A watcher caught up with the file joins its feed, whose one thread
reads and frames each append once for every caught-up watcher; the feed
hands it back, with the offset to go on from, when its socket cannot take a
frame at once (``PINE_WS_BROADCAST``).

Two wire formats:

- Plain (no subprotocol): only the file's content, as text messages (or
  binary ones with ``binary=True``).
- Framed, when the client asked for the ``pine.watch.v1`` subprotocol (the
  browser viewer does): binary messages carry the file's exact bytes, and
  text messages carry JSON notices::

      {"event": "open", "file": "<dev>:<ino>" | null, "offset": N, "size": S}
      {"event": "rotated", "how": "renamed" | "removed" | "truncated" | "replaced",
       "file": "<dev>:<ino>", "offset": 0}
      {"event": "waiting"}

  ``open`` comes first. ``rotated`` comes before the first byte of another
  file (``replaced``: a file appeared where there was none, or a resuming
  client named another file), and after a truncation. ``waiting`` is sent
  when the path does not exist, once per period of absence. A client resumes
  without gap or duplicate by reconnecting with the ``file`` it read and the
  count of bytes it received as ``offset``.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flask import current_app, has_app_context

from . import feed
from .config import setting
from .errors import ConnectionClosed
from .flasksock import as_conn
from .follower import Chunk, FileFollower, NotRegularFile, PathRefused, Rotated, Waiting
from .protocol import PayloadKind
from .watchtable import Subscription, WatchTable

if TYPE_CHECKING:
    from .conn import Conn  # a Conn delegates to watch_file: it imports this module

#: The subprotocol of the framed format (see the module docstring).
FRAMED_SUBPROTOCOL = "pine.watch.v1"

#: Close reason for a path outside the allowed roots (at most 123 bytes).
REFUSED_REASON = "path outside the allowed watch roots"

#: Close reason for a path with a NUL byte: no file system names one.
NUL_REASON = "path contains a NUL byte"

#: Inbound messages read and dropped per wake-up: a chatty client cannot pin the watcher.
_DRAIN_LIMIT = 256

RootsArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None


def watch_file(path: str | os.PathLike[str], conn: Conn, *, offset: int | None = None,
               lines: int | None = None, binary: bool = False, root: RootsArg = None,
               file_id: str | None = None) -> None:
    """Stream ``path`` to ``conn`` live, following it by name as ``tail -F``; block until the end.

    What the client receives, concatenated, is exactly the file's bytes from
    the start position on, in order, nothing lost, nothing twice. On rename
    or removal the old file is drained to its end, then the new file at the
    path is read from byte 0; a truncated file is read again from 0; a path
    (or directory) that does not exist yet is waited for.

    Returns when the client goes away or the server shuts down (the
    connection is then closed with 1001); the thread, the watch and the file
    descriptor are released on return.

    :param path: the file to follow; relative paths are taken from the
        process's working directory. Never pass a path a client chose
        without ``root=``.
    :param conn: the connection to stream to.
    :param offset: begin at this byte (a client resuming). An offset past
        the end means the file was truncated or replaced: begin at 0.
    :param lines: begin at the last ``lines`` lines, as ``tail -n`` (``0``:
        only what is appended from now on). The backwards scan stops after
        ``PINE_WS_BACKLOG_BYTES``: at most that window is sent.
    :param binary: send binary messages with the exact bytes, instead of text
        (where bytes that are not UTF-8 arrive as U+FFFD). Messages never
        split a UTF-8 sequence in text mode.
    :param root: a directory, or several, that the path must resolve into
        (symlinks followed); defaults to ``PINE_WS_WATCH_ROOTS``. A path
        outside is refused with close code 1008 before anything is sent. An
        empty list refuses every path.
    :param file_id: the ``"<dev>:<ino>"`` a resuming client read (framed
        mode gives it in ``open``/``rotated``); if the path now names another
        file, begin at 0.

    With neither ``offset`` nor ``lines``, the whole file is sent if it is at
    most ``PINE_WS_BACKLOG_BYTES``, else the last such window from its first
    line break (Pine's 5 MB window). Messages carry at most
    ``PINE_WS_CHUNK_BYTES`` bytes of the file; ``conn.viewed_bytes`` counts
    the file bytes delivered.

    :raises ValueError: ``offset`` or ``lines`` is negative, or both are
        given (raised before anything is sent).
    :raises TypeError: an argument has the wrong type.
    """
    conn = as_conn(conn)  # flask-sock's ws is accepted too (see .flasksock)
    _check_arguments(offset, lines, binary, file_id)
    target = os.path.abspath(os.fspath(path))
    if "\0" in target:
        # A client's path, most likely (a test or a forged link): the system
        # calls refuse it with ValueError, which is no server fault.
        _logger().warning("watch_file: refused a path with a NUL byte: %r", target)
        conn.close(1008, NUL_REASON)
        return
    roots = _roots(root)
    real = os.path.realpath(target)  # one walk of the path's links, for both uses below
    if roots is not None and not _inside(real, roots):
        conn.close(1008, REFUSED_REASON)
        return
    framed = conn.subprotocol == FRAMED_SUBPROTOCOL
    chunk_bytes = int(setting("PINE_WS_CHUNK_BYTES"))
    follower = FileFollower(
        target, binary=binary or framed, chunk_bytes=chunk_bytes,
        backlog_bytes=int(setting("PINE_WS_BACKLOG_BYTES")),
        guard=None if roots is None else (lambda real: _inside(real, roots)))
    # A path through a symlink changes where the link points, in another
    # directory the watch on the path's own directory never hears of: such a
    # watcher also watches its target (moved when the link is repointed), and
    # reads on its own, since its feed is woken by the path's directory only.
    linked = real != target
    # Caught up, the watcher joins the file's feed, which reads and frames
    # each append once for all its live readers (see .feed).
    kind: PayloadKind = "bytes" if binary or framed else "text"
    shared = bool(setting("PINE_WS_BROADCAST")) and not linked
    table = WatchTable.current()
    reader: feed.Reader | None = None
    target_sub: Subscription | None = None
    conn.discard_inbound()  # never read here: nothing the client sends is held
    try:
        # Register (the feed subscribes the path) before opening: a change
        # between the two is not missed.
        reader = feed.register(conn, target, kind, chunk_bytes, shared=shared)
        wake = reader.event
        conn.add_listener(reader.wake)
        # Cleared before start() reads the file (the first read hands out
        # what start() read): a change after it is noticed, not lost.
        wake.clear()
        opened = follower.start(offset=offset, lines=lines, file_id=file_id)
        if framed:
            conn.send_json({"event": "open", "file": opened.file_id, "offset": opened.offset,
                            "size": opened.size})
            if opened.reset is not None:
                conn.send_json({"event": "rotated", "how": opened.reset,
                                "file": opened.file_id, "offset": 0})
        # A hang guard only: the table's safety check and the connection's
        # listener are what wake a watcher.
        bound = max(60.0, 2 * table.safety_interval)
        while True:
            _drain_inbound(conn)
            step = reader.step()
            if step == feed.LIVE:
                wake.wait(bound)  # the feed sends; it or the connection wakes us
                wake.clear()
                continue
            assert isinstance(step, feed.CatchUp)
            if step.offset is not None:
                # Handed back: the rest of a frame the socket took in part
                # first, then on from where the feed stopped for us.
                conn.flush()
                conn.add_viewed_bytes(step.viewed)
                follower.skip_to(step.offset)
            reader.refresh_watch(missing=follower.position is None)
            if linked:
                target_sub = _follow_link_target(table, target_sub, target, wake)
            for item in follower.read():
                if isinstance(item, Waiting) and item.refused is not None:
                    # Mid-stream: wait (as for a missing file) until a
                    # regular file is at the path again.
                    _logger().warning("watch_file: %s is %s, not a regular file; waiting for "
                                      "one", target, item.refused)
                if isinstance(item, Chunk):
                    conn.send(item.data)
                    conn.add_viewed_bytes(item.nbytes)
                elif not framed:
                    continue  # plain mode: the content only
                elif isinstance(item, Rotated):
                    conn.send_json({"event": "rotated", "how": item.how, "file": item.file_id,
                                    "offset": 0})
                elif isinstance(item, Waiting):
                    conn.send_json({"event": "waiting"})
            if target_sub is not None:
                target_sub.known = follower.position
            reader.caught_up(follower)
            wake.wait(bound)
            wake.clear()  # before the next read
    except PathRefused:
        conn.close(1008, REFUSED_REASON)
    except ConnectionClosed:
        pass  # the client left, or the server closed it for shutdown
    except OSError as exc:
        # The path names something this process cannot read: a file it may
        # not open (permissions), a directory. Not a bug of the server: say
        # why instead of a traceback and "internal server error". A client
        # that reconnects (1011: retry with backoff) gets the file once it is
        # readable again.
        _logger().warning("watch_file: cannot read %s: %s", target, exc)
        conn.close(1011, unreadable_reason(exc))
    finally:
        if reader is not None:
            conn.remove_listener(reader.wake)
            reader.close()
        if target_sub is not None:
            table.unsubscribe(target_sub)
        follower.close()


def _logger() -> logging.Logger:
    return current_app.logger if has_app_context() else logging.getLogger(__name__)


def _follow_link_target(table: WatchTable, current: Subscription | None, path: str,
                        wake: threading.Event) -> Subscription | None:
    """Keep a subscription on where ``path``'s symlinks lead now (None: nowhere else)."""
    real = os.path.realpath(path)
    if current is not None and current.path == real:
        return current
    if current is not None:
        table.unsubscribe(current)
    return None if real == path else table.subscribe(real, wake)


def unreadable_reason(exc: OSError) -> str:
    """The close reason for a path that cannot be read (no path in it: the client sees it)."""
    if isinstance(exc, NotRegularFile):
        why = f"it is {exc.kind}, not a regular file"
    elif exc.errno == errno.EISDIR:
        why = "it is a directory"
    else:
        why = exc.strerror or str(exc)
    return f"cannot read the file: {why}"[:123]


def _check_arguments(offset: int | None, lines: int | None, binary: bool,
                     file_id: str | None) -> None:
    for name, value in (("offset", offset), ("lines", lines)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if offset is not None and lines is not None:
        raise ValueError("give offset or lines, not both")
    if not isinstance(binary, bool):
        raise TypeError(f"binary must be a bool, not {type(binary).__name__}")
    if file_id is not None and not isinstance(file_id, str):
        raise TypeError(f"file_id must be a str or None, not {type(file_id).__name__}")


def _roots(root: RootsArg) -> list[str] | None:
    value = root if root is not None else setting("PINE_WS_WATCH_ROOTS")
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    return [os.path.realpath(os.fspath(r)) for r in value]


def _inside(real: str, roots: list[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _drain_inbound(conn: Conn) -> None:
    """Drop what the client sent, so it does not pile up; raises once the connection is gone."""
    for _ in range(_DRAIN_LIMIT):
        if conn.receive(timeout=0) is None:
            return
